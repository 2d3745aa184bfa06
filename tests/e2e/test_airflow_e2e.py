"""The whole chain through a real Airflow: `airflow standalone` (API server, scheduler, dag-processor,
triggerer; LocalExecutor; SQLite metadata) in a temp AIRFLOW_HOME on an ephemeral port.

The ingest DAG is triggered through the REST API (/api/v2, JWT from /auth/token with the generated
admin password); the warehouse (dbt through Cosmos, watcher mode) and feature-store DAGs must then
run by themselves off the Assets and succeed; the features are then readable online and task logs
are reachable through the API. Everything started is stopped (process-group kill) even on failure.
Bounded: about 10 minutes at most.
"""

from __future__ import annotations

import shutil
import time

import pytest

from ml.settings import PROJECT_ROOT, settings_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHAIN_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def airflow_chain(tmp_path_factory):
    from ml import orchestration

    root = tmp_path_factory.mktemp("airflow_e2e")
    repo = shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    settings = settings_for(data_dir=root / "data", feast_repo_dir=repo, dbt_execution_mode="watcher", airflow_port=0)
    airflow = orchestration.LocalAirflow(settings)
    started = time.monotonic()
    try:
        airflow.start(timeout=240)
        client = airflow.client()
        runs = orchestration.run_chain(client, conf={"generate_scale": "tiny"}, timeout=CHAIN_TIMEOUT_S, echo=None)
        yield settings, airflow, client, runs, time.monotonic() - started
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- airflow standalone log tail ---\n{airflow.log_tail(80)}") from exc
    finally:
        airflow.stop()


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
