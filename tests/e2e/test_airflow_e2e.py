"""The whole chain through a real Airflow: `airflow standalone` (API server, scheduler, dag-processor,
triggerer; LocalExecutor; SQLite metadata) in a temp AIRFLOW_HOME on an ephemeral port, started once
per session in tests/e2e/conftest.py and shared with test_airflow_recovery.py (which runs after).

The ingest DAG is triggered through the REST API (/api/v2, JWT from /auth/token with the generated
admin password); the warehouse (dbt through Cosmos, watcher mode) and feature-store DAGs must then
run by themselves off the Assets and succeed; the features are then readable online and task logs
are reachable through the API. Then, on the same Airflow, DuckDB's single writer: a warehouse run
and an ingest run triggered while the warehouse's dbt producer holds the `duckdb_writer` slot must
both succeed, the ingest writer must have waited for the slot (seen `scheduled`), the writers'
intervals must be disjoint and no try of any task may log a DuckDB lock error. Everything started
is stopped (process-group kill) even on failure. Bounded: about 12 minutes at most.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.e2e.airflow_api import PRODUCER, RUN_TIMEOUT_S, lock_errors, settle_failed, task, wait_until, writer_intervals

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def airflow_chain(shared_airflow):
    """The session's Airflow after its chain run (tests/e2e/conftest.py)."""
    a = shared_airflow
    return a.settings, a.airflow, a.airflow.client(), a.runs, a.seconds


def test_chain_runs_through_assets(airflow_chain):
    _, _, client, runs, seconds = airflow_chain
    assert set(runs) == {"ingest", "warehouse", "feature_store"}
    for dag_id, run in runs.items():
        assert run["state"] == "success", (dag_id, run)
    assert runs["warehouse"]["run_type"] == "asset_triggered"
    assert runs["feature_store"]["run_type"] == "asset_triggered"
    print(f"chain through Airflow (start + 3 DAGs): {seconds:.0f} s")


def test_warehouse_tasks_mirror_dbt_nodes(airflow_chain):
    _, _, client, runs, _ = airflow_chain
    tis = client.task_instances("warehouse", runs["warehouse"]["dag_run_id"])
    ids = {t["task_id"] for t in tis}
    assert "dbt.dbt_producer_watcher" in ids
    assert {"dbt.fct_orders.run", "dbt.feat_user_rfm.run", "dbt.fct_orders.test"} <= ids
    assert all(t["state"] in ("success", "skipped") for t in tis), [(t["task_id"], t["state"]) for t in tis if t["state"] != "success"]


def test_features_readable_online(airflow_chain):
    import duckdb

    from ml.features.serving import get_online_features

    settings = airflow_chain[0]
    path = settings.features_dir / "feat_user_rfm.parquet"
    user_id = duckdb.connect().execute("select min(user_id) from read_parquet(?)", [str(path)]).fetchone()[0]
    row = get_online_features(settings, "propensity_lgbm_v1", {"user_id": user_id})
    assert row["user_id"] == [user_id]
    values = [v[0] for k, v in row.items() if k != "user_id"]
    assert any(v is not None for v in values), row


def test_task_logs_reachable_through_api(airflow_chain):
    _, _, client, runs, _ = airflow_chain
    text = client.task_log("feature_store", runs["feature_store"]["dag_run_id"], "materialize", map_index=0)
    assert "rows" in text and "written" in text, text[-2000:]
    text = client.task_log("warehouse", runs["warehouse"]["dag_run_id"], "dbt.dbt_producer_watcher")
    assert "dbt" in text.lower()


def test_overlapping_writers_are_serialised_by_the_pool(airflow_chain):
    """Two warehouse runs never overlap (max_active_runs=1), so the pool is exercised by the other
    writer: an ingest run triggered while the producer's `dbt build` holds the only slot."""
    _, _, client, _, _ = airflow_chain
    assert client.request("GET", "/pools/duckdb_writer")["slots"] == 1
    now = datetime.now(timezone.utc).replace(microsecond=0)
    run_w = client.trigger("warehouse", logical_date=now - timedelta(minutes=1))["dag_run_id"]

    def producer_running():
        ti = task(client, "warehouse", run_w, PRODUCER)
        if ti and ti["state"] in ("success", "failed", "skipped", "upstream_failed"):
            pytest.fail(f"producer of {run_w} ended ({ti['state']}) before it was seen running")
        return ti if ti and ti["state"] == "running" else None

    wait_until(producer_running, 180, f"{PRODUCER} of {run_w} to run", poll=0.5)
    run_i = client.trigger("ingest", logical_date=now)["dag_run_id"]
    waited = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        producer = task(client, "warehouse", run_w, PRODUCER)
        writer = task(client, "ingest", run_i, "ingest_new_files")
        if producer["state"] == "running" and writer and writer["state"] in ("scheduled", "queued", None):
            waited.append(writer["state"])
        if producer["state"] != "running" or (writer and writer["state"] in ("running", "success", "failed")):
            break
        time.sleep(0.5)

    runs = [("warehouse", run_w), ("ingest", run_i)]
    states = {f"{d}/{r}": settle_failed(client, d, r)["state"] for d, r in runs}
    assert all(s == "success" for s in states.values()), states
    intervals = writer_intervals(client, runs)
    print("writer intervals:\n  " + "\n  ".join(f"{n}: {s:%H:%M:%S.%f} -> {e:%H:%M:%S.%f}" for n, s, e in intervals))
    assert len(intervals) == 2, intervals
    (n1, s1, e1), (n2, s2, e2) = intervals
    assert e1 <= s2, f"writers overlapped: {n1} [{s1}, {e1}] and {n2} [{s2}, {e2}]"
    assert waited, "ingest_new_files never waited for the duckdb_writer slot while the producer held it"
    errors = [e for d, r in runs for e in lock_errors(client, d, r)]
    assert not errors, "DuckDB lock errors in task logs:\n" + "\n".join(errors)
