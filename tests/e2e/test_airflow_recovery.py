"""Recovery through a real Airflow: backfill and crash/restart, against the session's ONE `airflow
standalone` (tests/e2e/conftest.py: temp AIRFLOW_HOME, ephemeral port, scale tiny; shared with
test_airflow_e2e.py, which runs first).

1. Baseline: ingest(generate tiny) -> warehouse -> feature_store, triggered once through the API.
   Its outputs are fingerprinted: lake row counts (``_lake.json``), warehouse table row counts,
   feature-mart Parquet checksums, and online values of a sample of entities read with a FIXED
   request time.
2. Backfill: ``ingest`` is the only date-scheduled DAG (warehouse and feature_store are scheduled on
   Assets and follow through them), so an Airflow 3 backfill of ``ingest`` over two days
   (``AirflowClient.backfill``, POST /api/v2/backfills) re-runs already-processed intervals: both
   runs must succeed as backfill runs, find no new data (the ingestion ledger), skip
   ``publish_lake`` so nothing downstream is triggered, and leave every fingerprint unchanged.
3. Crash and restart: a feature_store run is triggered; while one of its mapped ``materialize``
   tasks is running, the whole Airflow process group (API server, scheduler, dag-processor,
   triggerer, task processes) is SIGKILLed, then Airflow is started again on the same AIRFLOW_HOME
   and port. The interrupted run must finish successfully by itself (the orphaned task is detected
   through its heartbeat timeout, lowered to 30 s here, and retried) and every output must equal the
   baseline: same lake and warehouse row counts, marts unique on (join keys, event_timestamp), same
   mart checksums and online values.

Not covered here: a crash during ``ingest_new_files`` (≈1-3 s at tiny: no reliable window) or
during the warehouse's dbt producer (no retries in watcher mode: recovery is a manual clear).

The baseline's warehouse run is cleared and re-awaited once if it fails: Airflow 3.3's
deferral race (see ``airflow_api.run_chain_clearing_once``) can fail a watcher-mode dbt sensor whose
node succeeded.

Everything started is stopped (process-group kill) in the fixture's teardown, even on failure.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.e2e.airflow_api import wait_until as _wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN_TIMEOUT_S = 300
REQUEST_TIME = datetime(2030, 1, 1, tzinfo=timezone.utc)  # fixed: online reads do not depend on "now"
SAMPLE = 25


# --------------------------------------------------------------------------------------------------
# fingerprints of the chain's outputs
# --------------------------------------------------------------------------------------------------


def lake_rows(settings) -> dict[str, int]:
    from ml.contract import lake_status

    return {name: t["rows"] for name, t in lake_status(settings.lake_dir)["tables"].items()}


def warehouse_rows(settings) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE' order by 1, 2"
        ).fetchall()
        return {f"{s}.{t}": con.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0] for s, t in tables}
    finally:
        con.close()


def mart_checksums(settings) -> dict[str, str]:
    """sha256 of each feature mart's rows (sorted, all columns): independent of Parquet file layout."""
    import duckdb

    out = {}
    con = duckdb.connect()
    for path in sorted(settings.features_dir.glob("*.parquet")):
        rows = con.execute("select * from read_parquet(?) order by all", [str(path)]).fetchall()
        out[path.stem] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


def view_specs(settings):
    from pathlib import Path

    from ml.features.contract import read_view_specs

    return read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")


def duplicate_keys(settings) -> dict[str, int]:
    """For each feature view's mart: how many (join keys, event_timestamp) occur more than once."""
    import duckdb

    from ml.features.repo import source_file

    con = duckdb.connect()
    out = {}
    for name, spec in view_specs(settings).items():
        path = source_file(settings, spec.dbt_model or name)
        keys = ", ".join(f'"{k}"' for k in (*spec.join_keys, "event_timestamp"))
        out[name] = con.execute(
            f"select count(*) from (select {keys} from read_parquet(?) group by all having count(*) > 1)", [str(path)]
        ).fetchone()[0]
    return out


def online_values(settings) -> dict:
    """Online values of the first SAMPLE users (by id) of feat_user_rfm, read at REQUEST_TIME."""
    import duckdb

    from ml.features.serving import get_online_features

    path = settings.features_dir / "feat_user_rfm.parquet"
    users = [
        r[0]
        for r in duckdb.connect().execute("select distinct user_id from read_parquet(?) order by 1 limit ?", [str(path), SAMPLE]).fetchall()
    ]
    values = get_online_features(settings, "propensity_lgbm_v1", [{"user_id": u} for u in users], request_time=REQUEST_TIME)
    return {k: [repr(v) for v in vs] for k, vs in values.items()}


def fingerprint(settings) -> dict:
    return {
        "lake": lake_rows(settings),
        "warehouse": warehouse_rows(settings),
        "marts": mart_checksums(settings),
        "online": online_values(settings),
    }


def assert_same(before: dict, after: dict) -> None:
    for part in before:
        assert after[part] == before[part], f"{part} changed:\nbefore {before[part]}\nafter  {after[part]}"


# --------------------------------------------------------------------------------------------------
# one Airflow for the module
# --------------------------------------------------------------------------------------------------


class Env:
    def __init__(self, settings, airflow, baseline_runs, baseline):
        self.settings, self.airflow, self.baseline_runs, self.baseline = settings, airflow, baseline_runs, baseline

    def client(self):
        return self.airflow.client()


@pytest.fixture(scope="module")
def recovery(shared_airflow):
    """The session's Airflow (tests/e2e/conftest.py), fingerprinted now: the e2e module's runs
    before this one re-ran intervals idempotently, so the fingerprint is that of the chain's output."""
    return Env(shared_airflow.settings, shared_airflow.airflow, shared_airflow.runs, fingerprint(shared_airflow.settings))


def test_baseline_is_clean(recovery):
    for dag_id, run in recovery.baseline_runs.items():
        assert run["state"] == "success", (dag_id, run)
    base = recovery.baseline
    assert base["lake"] and sum(base["lake"].values()) > 0
    assert base["marts"], "no feature marts written"
    assert any(v is not None and v != "None" for k, vs in base["online"].items() if k != "user_id" for v in vs)
    assert all(n == 0 for n in duplicate_keys(recovery.settings).values()), duplicate_keys(recovery.settings)


def test_backfill_of_processed_interval_changes_nothing(recovery):
    client = recovery.client()
    before_downstream = {d: {r["dag_run_id"] for r in client.runs(d)} for d in ("warehouse", "feature_store")}
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=3), today - timedelta(days=2)
    backfill = client.backfill("ingest", start, end, max_active_runs=1, reprocess="completed")
    backfill_id = backfill["id"]

    def done():
        runs = [r for r in client.runs("ingest") if r.get("run_type") == "backfill"]
        if len(runs) >= 2 and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        return None

    runs = _wait(done, RUN_TIMEOUT_S, f"backfill {backfill_id} of ingest [{start:%Y-%m-%d}, {end:%Y-%m-%d}]")
    assert len(runs) == 2, [(r["dag_run_id"], r["logical_date"]) for r in runs]
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], r["state"]) for r in runs]
    assert sorted(r["logical_date"][:10] for r in runs) == [f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"]
    for run in runs:
        states = {t["task_id"]: t["state"] for t in client.task_instances("ingest", run["dag_run_id"])}
        assert states == {"ingest_new_files": "success", "publish_lake": "skipped", "check_failed_files": "success"}, states
    _wait(
        lambda: client.request("GET", f"/backfills/{backfill_id}").get("completed_at"), 60, f"backfill {backfill_id} to be marked completed"
    )
    time.sleep(5)  # an (erroneous) Asset-triggered run would be queued by now
    after_downstream = {d: {r["dag_run_id"] for r in client.runs(d)} for d in ("warehouse", "feature_store")}
    assert after_downstream == before_downstream, "a no-new-data backfill triggered downstream DAGs"
    assert_same(recovery.baseline, fingerprint(recovery.settings))


def _kill_group(airflow) -> None:
    """Crash: SIGKILL every process of the local Airflow (no graceful shutdown of anything)."""
    pgid = os.getpgid(airflow.proc.pid)
    os.killpg(pgid, signal.SIGKILL)
    airflow.proc.wait(timeout=30)
    airflow.stop()  # closes the log; kills stragglers of the group


def test_crash_mid_run_and_restart_completes_without_duplicates(recovery):
    airflow, settings = recovery.airflow, recovery.settings
    client = airflow.client()
    run_id = client.trigger("feature_store")["dag_run_id"]

    def materializing():
        run = client.run("feature_store", run_id)
        tis = client.task_instances("feature_store", run_id)
        if any(t["task_id"] == "materialize" and t["state"] == "running" for t in tis):
            return True
        if run["state"] in ("success", "failed"):
            pytest.fail(f"feature_store run {run_id} ended ({run['state']}) before a materialize task was seen running")
        return None

    _wait(materializing, RUN_TIMEOUT_S, "a running feature_store materialize task", poll=0.5)
    _kill_group(airflow)
    airflow.start(timeout=240, setup_first=False)
    client = airflow.client()
    run = client.wait_for_run("feature_store", run_id, timeout=RUN_TIMEOUT_S)
    assert run["state"] == "success"
    tis = client.task_instances("feature_store", run_id)
    assert all(t["state"] == "success" for t in tis), [(t["task_id"], t.get("map_index"), t["state"]) for t in tis]
    tries = {(t["task_id"], t.get("map_index")): t.get("try_number") for t in tis if t["task_id"] == "materialize"}
    print(f"feature_store run {run_id} recovered; materialize tries: {tries}")

    assert all(n == 0 for n in duplicate_keys(settings).values()), duplicate_keys(settings)
    assert_same(recovery.baseline, fingerprint(settings))
