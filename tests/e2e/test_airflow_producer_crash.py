"""A crash of the dbt producer under a real Airflow, and the operator's recovery (soak test).

Marked ``soak``: `make test` deselects it (about 8 minutes on 2 cores: its own Airflow, a baseline
build, a killed build and a node-by-node rebuild); `make test-soak` runs it. The overlap of
writers is covered in the default run by tests/e2e/test_airflow_e2e.py, a crash of the whole
Airflow mid-run by tests/e2e/test_airflow_recovery.py.

One ``airflow standalone`` (temp AIRFLOW_HOME, ephemeral port, LocalExecutor, scale tiny). The dbt
project is copied into the temp folder first, so the manifest the DAG renders and the SQL that dbt
runs cannot change under the test. The ``feature_store`` DAG stays paused: the feature marts are
dbt's Parquet files, which is what is checked here.

Baseline: ingest(generate tiny) -> warehouse (Asset-triggered), once; its outputs are fingerprinted
(row count of every warehouse table, sha256 of every feature mart's sorted rows).

A warehouse run is triggered; once its ``dbt build`` has written models, the producer's task
process (``airflow worker -- <ti id>``) and its ``dbt build`` child are SIGKILLed. The producer has
``retries=0`` by design (Cosmos watcher mode: a retried producer skips itself rather than run a
second full build), so the run fails; the operator then clears the producer with its downstream
tasks through the API (docs/operations.md, "Re-run a failed task"): every node task rebuilds its
own node, each dbt call waiting for the warehouse's file lock (ml/dbt_locked.py). The run must
complete with no DuckDB lock error in any task log, unique keys in fct_orders / fct_events and
every warehouse row count and mart checksum equal to the clean baseline build's.

Everything started is stopped (process-group kill, plus any dbt process of ours left behind) in
the fixture's teardown, even on failure.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone

import pytest

from ml.settings import PROJECT_ROOT, settings_for
from tests.e2e.airflow_api import (
    PRODUCER,
    clear_tasks,
    dbt_children,
    kill_all,
    lock_errors,
    our_dbt_processes,
    settle_failed,
    task,
    task_process,
    ts,
    wait_end,
    wait_until,
)
from tests.e2e.test_airflow_recovery import mart_checksums, warehouse_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.soak]

MID_BUILD_MODELS = 12  # kill the producer once dbt has created this many models (of ~32)


# --------------------------------------------------------------------------------------------------
# fingerprints (the warehouse and mart fingerprints of test_airflow_recovery.py; no online store here)
# --------------------------------------------------------------------------------------------------


def duplicated_keys(settings) -> dict[str, int]:
    """Rows beyond the first per key in the fact tables (read-only connection to the warehouse)."""
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        out = {}
        for table, key in (("fct_orders", "order_id"), ("fct_events", "event_id")):
            schema = con.execute(
                "select table_schema from information_schema.tables where table_name = ? order by 1 limit 1", [table]
            ).fetchone()
            assert schema, f"{table} missing from {settings.warehouse_path}"
            out[table] = con.execute(f'select count(*) - count(distinct "{key}") from "{schema[0]}"."{table}"').fetchone()[0]
        return out
    finally:
        con.close()


def fingerprint(settings) -> dict:
    return {"warehouse": warehouse_rows(settings), "marts": mart_checksums(settings)}


def assert_same(before: dict, after: dict) -> None:
    """Same row count in every warehouse table, same rows in every feature mart."""
    assert after["warehouse"] == before["warehouse"], (
        f"warehouse row counts changed:\nbefore {before['warehouse']}\nafter  {after['warehouse']}"
    )
    changed = sorted(name for name in before["marts"] if after["marts"].get(name) != before["marts"][name])
    assert not changed, f"feature marts changed content: {changed}"


# --------------------------------------------------------------------------------------------------
# API helpers
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# one Airflow for the module
# --------------------------------------------------------------------------------------------------


class Env:
    def __init__(self, settings, airflow, baseline_run, baseline):
        self.settings, self.airflow, self.baseline_run, self.baseline = settings, airflow, baseline_run, baseline

    def client(self):
        return self.airflow.client()


@pytest.fixture(scope="module")
def crash(tmp_path_factory):
    from ml.orchestration import chain, local_airflow

    root = tmp_path_factory.mktemp("airflow_producer_crash")
    ignore = shutil.ignore_patterns("__pycache__", "target", "logs", "dbt_packages", ".user.yml")
    repo = shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo", ignore=ignore)
    project = shutil.copytree(PROJECT_ROOT / "dbt_project", root / "dbt_project", ignore=ignore)
    settings = settings_for(
        data_dir=root / "data",
        feast_repo_dir=repo,
        dbt_project_dir=project,
        dbt_profiles_dir=project,
        dbt_execution_mode="watcher",
        airflow_port=0,
    )
    airflow = local_airflow.LocalAirflow(settings)
    try:
        airflow.start(timeout=300)
        client = airflow.client()
        client.wait_for_dags(chain.CHAIN)
        client.set_paused("ingest", False)
        client.set_paused("warehouse", False)  # feature_store stays paused (see the module docstring)
        started = datetime.now(timezone.utc)
        run = client.trigger("ingest", conf={"generate_scale": "tiny"})
        ingest = wait_end(client, "ingest", run["dag_run_id"])
        assert ingest["state"] == "success", ingest
        first = wait_until(
            lambda: next((r for r in client.runs("warehouse") if ts(r.get("queued_at") or r["run_after"]) >= started), None),
            120,
            "the Asset-triggered warehouse run",
        )
        baseline_run = settle_failed(client, "warehouse", first["dag_run_id"])
        assert baseline_run["state"] == "success", baseline_run
        yield Env(settings, airflow, baseline_run, fingerprint(settings))
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- airflow standalone log tail ---\n{airflow.log_tail(80)}") from exc
    finally:
        airflow.stop()
        kill_all(our_dbt_processes(settings))


def test_baseline_is_clean(crash):
    assert crash.baseline_run["run_type"] == "asset_triggered"
    assert crash.baseline["marts"], "no feature marts written"
    assert len(crash.baseline["marts"]) >= 6, crash.baseline["marts"]
    assert duplicated_keys(crash.settings) == {"fct_orders": 0, "fct_events": 0}


def test_killed_producer_cleared_by_operator_completes_without_duplicates(crash):
    airflow, settings = crash.airflow, crash.settings
    client = crash.client()
    run_id = client.trigger("warehouse")["dag_run_id"]

    def building():
        ti = task(client, "warehouse", run_id, PRODUCER)
        if ti is None:
            return None
        if ti["state"] in ("success", "failed", "skipped", "upstream_failed"):
            pytest.fail(f"producer of {run_id} ended ({ti['state']}) before it could be killed")
        if ti["state"] != "running":
            return None
        proc = task_process(airflow, ti["id"])
        dbt = dbt_children(proc) if proc else []
        if not dbt:
            return None
        # mid-build: dbt has replaced some models already, others not yet. The task's log file is read
        # from AIRFLOW_HOME directly (same machine): the API serves a running task's log too late.
        path = airflow.home / "logs" / "dag_id=warehouse" / f"run_id={run_id}" / f"task_id={PRODUCER}" / f"attempt={ti['try_number']}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return (ti, proc, dbt) if text.count("OK created") >= MID_BUILD_MODELS else None

    ti, proc, dbt = wait_until(building, 240, f"{PRODUCER} of {run_id} to be mid-build", poll=0.25)
    print(f"killing task process {proc.pid} (ti {ti['id']}) and dbt {[p.pid for p in dbt]}")
    kill_all([proc, *dbt])

    run = wait_end(client, "warehouse", run_id)
    producer = task(client, "warehouse", run_id, PRODUCER)
    print(f"after the kill: run {run['state']}, producer {producer['state']} (try {producer['try_number']})")
    assert producer["state"] == "failed", producer
    assert run["state"] == "failed", "the run succeeded although its dbt build was killed"
    assert not our_dbt_processes(settings), "a dbt process outlived the killed producer"

    cleared = clear_tasks(client, "warehouse", run_id, task_ids=[PRODUCER], downstream=True)
    assert any(t["task_id"] == PRODUCER for t in cleared), cleared
    time.sleep(3)
    run = settle_failed(client, "warehouse", run_id)
    tis = client.task_instances("warehouse", run_id)
    assert run["state"] == "success", [(t["task_id"], t["state"], t["try_number"]) for t in tis if t["state"] != "success"]
    print("after the clear: " + ", ".join(sorted({f"{t['task_id']}={t['state']}" for t in tis if t["state"] != "success"})))

    errors = lock_errors(client, "warehouse", run_id)
    assert not errors, "DuckDB lock errors in task logs:\n" + "\n".join(errors)
    assert duplicated_keys(settings) == {"fct_orders": 0, "fct_events": 0}
    assert_same(crash.baseline, fingerprint(settings))
