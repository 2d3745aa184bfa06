"""The whole chain through a real Airflow: `airflow standalone` (API server, scheduler, dag-processor,
triggerer; LocalExecutor; SQLite metadata) in a temp AIRFLOW_HOME on an ephemeral port, started once
per session in tests/e2e/conftest.py and shared with test_airflow_recovery.py (which runs after).

The ingest DAG is triggered through the REST API (/api/v2, JWT from /auth/token with the generated
admin password); the warehouse (dbt through Cosmos, watcher mode) and feature-store DAGs must then
run by themselves off the Assets and succeed; the features are then readable online and task logs
are reachable through the API. DuckDB's single writer under overlapping runs is exercised on the
production stack, across two Celery workers (test_production_stack.py). Everything started is
stopped (process-group kill) even on failure.
"""

from __future__ import annotations

import pytest

from tests.e2e.airflow_api import lock_errors

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
    errors = [e for dag_id, run in runs.items() for e in lock_errors(client, dag_id, run["dag_run_id"])]
    assert not errors, "DuckDB lock errors in task logs:\n" + "\n".join(errors)
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
