"""The chain under `airflow dags test` (in-process runs, temp AIRFLOW_HOME, SQLite metadata):
ingest (generate tiny) -> warehouse (dbt through Cosmos) -> feature_store, then the features are
readable online. A bad raw file then stops the chain at ingest with a readable error and leaves the
warehouse and the online store as they were.

`dags test` runs one task at a time and runs deferred triggers inline, so Cosmos' watcher mode
(whose node sensors wait for a producer running beside them) cannot progress there, and the local
mode (one `dbt build --select <model>` process per node) took 6.5 of this module's 8.5 minutes on 2
busy cores. So this chain runs the warehouse DAG's manifest-less path (one task, one `dbt build`);
tests/e2e runs the default watcher mode under a real scheduler and test_dags.py checks that both
Cosmos modes render a task per dbt node.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from ml.settings import PROJECT_ROOT, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = "2026-11-28T00:00:00+00:00"


def dags_test(settings, env, dag_id: str, conf: str | None = None) -> subprocess.CompletedProcess:
    from ml.orchestration import local_airflow

    args = [local_airflow.airflow_bin(), "dags", "test", dag_id, DAY] + (["-c", conf] if conf else [])
    proc = subprocess.run(args, env=env, cwd=str(PROJECT_ROOT), capture_output=True, text=True, timeout=600)
    (settings.data_dir / f"{dag_id}.dags-test.log").write_text(proc.stdout + proc.stderr)
    return proc


def online_row(settings):
    import duckdb

    from ml.features.serving import get_online_features

    path = settings.features_dir / "feat_user_rfm.parquet"
    user_id = duckdb.connect().execute("select min(user_id) from read_parquet(?)", [str(path)]).fetchone()[0]
    # a fixed request time: on-demand `*_now` features are computed against it
    return user_id, get_online_features(settings, "propensity_lgbm_v1", {"user_id": user_id}, request_time=DAY)


def checksum(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from ml.orchestration import local_airflow

    root = tmp_path_factory.mktemp("dags_chain")
    repo = shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    settings = settings_for(data_dir=root / "data", feast_repo_dir=repo)
    env = local_airflow.airflow_env(settings, port=local_airflow.free_port())
    local_airflow.setup(settings, env=env, manifest=False)  # no manifest: the warehouse DAG's one-task path
    results = {}
    for dag_id, conf in (("ingest", '{"generate_scale": "tiny"}'), ("warehouse", None), ("feature_store", None)):
        proc = dags_test(settings, env, dag_id, conf)
        results[dag_id] = proc
        assert proc.returncode == 0, f"{dag_id} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return settings, env, results


def test_chain_succeeds(chain):
    _, _, results = chain
    for dag_id, proc in results.items():
        assert "state=success" in proc.stdout + proc.stderr, dag_id
    warehouse_log = results["warehouse"].stdout + results["warehouse"].stderr
    assert "dbt_build" in warehouse_log and "fct_orders" in warehouse_log  # the one-task build ran the project


def test_features_readable_online(chain):
    settings = chain[0]
    user_id, row = online_row(settings)
    assert row["user_id"] == [user_id]
    assert any(v[0] is not None for k, v in row.items() if k != "user_id"), row


def test_same_interval_twice_gives_equal_online_store(chain):
    settings, env, _ = chain
    before = checksum(settings.feast_online_path)
    proc = dags_test(settings, env, "feature_store")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert checksum(settings.feast_online_path) == before


def test_bad_raw_file_stops_the_chain_at_ingest(chain):
    settings, env, _ = chain
    warehouse_before = checksum(settings.warehouse_path)
    online_before = checksum(settings.feast_online_path)
    _, row_before = online_row(settings)
    bad = settings.landing_dir / "broken_export.csv"
    bad.write_text("this,is,not\nan,online,retail export\n")
    try:
        env_bad = {**env, "INGEST_MAPPING": "online_retail_ii"}
        proc = dags_test(settings, env_bad, "ingest")
        output = proc.stdout + proc.stderr
        assert "state=failed" in output or proc.returncode != 0
        assert "broken_export.csv" in output and "failed and moved" in output  # check_failed_files names it
        assert "DagRun failed" in output or "state=failed" in output  # nothing new: publish_lake skipped, no lake event
        assert (settings.landing_dir / "_failed" / "broken_export.csv").exists() and not bad.exists()
    finally:
        bad.unlink(missing_ok=True)
        shutil.rmtree(settings.landing_dir / "_failed", ignore_errors=True)
    assert checksum(settings.warehouse_path) == warehouse_before
    assert checksum(settings.feast_online_path) == online_before
    assert online_row(settings)[1] == row_before


def test_model_dags_train_register_score_and_serve(chain):
    """train_user_models then score_user_models (what the feature_store / user_models Assets trigger):
    a champion in the MLflow registry, a report, a scoring-date partition, scores online."""
    import pandas as pd

    from ml.features.serving import get_online_features
    from ml.models.lifecycle import registry
    from ml.models.lifecycle.outputs import scores_root
    from ml.models.lifecycle.report import list_reports
    from ml.models.user.propensity import MODEL_NAME

    settings, env, _ = chain
    for dag_id in ("train_user_models", "score_user_models"):
        proc = dags_test(settings, env, dag_id)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "state=success" in output, f"{dag_id}:\n{output[-4000:]}"
    assert registry.champion(settings, MODEL_NAME) is not None
    assert registry.champion(settings, "propensity_gru") is not None
    assert any(r["model"] == MODEL_NAME for r in list_reports(settings))
    assert any(r["model"] == "cart_abandonment" for r in list_reports(settings))
    (partition,) = scores_root(settings, MODEL_NAME).glob("scoring_date=*/part.parquet")
    scores = pd.read_parquet(partition)
    assert len(scores) > 50 and scores["propensity_score"].between(0, 1).all()
    row = scores.iloc[0]
    online = get_online_features(settings, "propensity_scores_v1", {"user_id": row["user_id"]})
    assert online["propensity_score"][0] == pytest.approx(row["propensity_score"])
    assert list((settings.scores_dir / "cart_at_risk").glob("scoring_date=*/part.parquet"))


def test_recommender_dags_train_register_score_and_serve(chain):
    """train_recommender then score_recommender: embeddings, three registered rankers (two promoted), a report, a
    scoring-date partition with a fallback row, one user's list online."""
    import pandas as pd

    from ml.models import recs
    from ml.models.lifecycle import registry
    from ml.models.lifecycle.outputs import scores_root

    settings, env, _ = chain
    for dag_id in ("train_recommender", "score_recommender"):
        proc = dags_test(settings, env, dag_id)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "state=success" in output, f"{dag_id}:\n{output[-4000:]}"
    for name in (recs.MODEL_NAME, recs.LGBM_NAME):  # the served rankers beat their references and are promoted
        assert registry.champion(settings, name) is not None, name
    assert registry.load_version(settings, recs.FM_NAME, 1) is not None  # registered; blind to rebuying, the gate refuses it
    assert len(pd.read_parquet(recs.embeddings_path(settings))) > 0
    (partition,) = scores_root(settings, recs.MODEL_NAME).glob("scoring_date=*/part.parquet")
    lists = pd.read_parquet(partition)
    assert recs.FALLBACK_USER in set(lists["user_id"]) and len(lists) > 10
    user = lists[lists["user_id"] != recs.FALLBACK_USER].iloc[0]
    online = recs.recommend(settings, user["user_id"])
    assert online["item_id"].tolist() == list(user["rec_item_ids"])


def test_demand_dags_backtest_register_forecast_and_serve(chain):
    """train_demand then forecast_demand: a backtest report, a registered champion demand_lgbm, a
    forecast-date partition of the plan covering every demand series, one plan row online."""
    import pandas as pd

    from ml.models import demand
    from ml.models.lifecycle import registry
    from ml.models.lifecycle.outputs import scores_root

    settings, env, _ = chain
    for dag_id in ("train_demand", "forecast_demand"):
        proc = dags_test(settings, env, dag_id)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "state=success" in output, f"{dag_id}:\n{output[-4000:]}"
    assert registry.champion(settings, "demand_lgbm") is not None
    overall, _, report = demand.latest_backtest(settings)
    assert {"demand_seasonal_naive", "demand_lgbm"} <= set(overall.index) and report.exists()
    (partition,) = scores_root(settings, demand.PLAN_OUTPUT).glob("forecast_date=*/part.parquet")
    plan = pd.read_parquet(partition)
    series = pd.read_parquet(settings.exports_dir / "mart_demand_series.parquet", columns=["item_id", "warehouse_id"])
    assert len(plan) == len(series.drop_duplicates())  # every series planned (short / all-zero ones too)
    row = plan.sort_values("forecast_units").iloc[-1]
    online = demand.plan_online(settings, [(row["item_id"], row["warehouse_id"])])
    assert online["reorder_point"][0] == pytest.approx(row["reorder_point"])


def test_ingest_dag_lands_monthly_exports_and_reports_a_broken_one(tmp_path):
    """The ingest DAG over a landing folder of monthly Online Retail exports, an overlapping re-export
    and a broken file: every good file is one commit, the broken one moves to _failed/ and fails
    check_failed_files (red in the UI) while publish_lake still announces the new data."""
    import pandas as pd

    from ml.lake import read_commits
    from ml.orchestration import local_airflow
    from tests.conftest import shared_file

    frame = pd.read_parquet(shared_file("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet"))
    when = pd.to_datetime(frame["InvoiceDate"])
    settings = settings_for(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    for month in ("2009-12", "2010-01", "2010-02"):
        frame[when.dt.strftime("%Y-%m") == month].to_parquet(settings.landing_dir / f"export_{month}.parquet", index=False)
    frame[(when >= "2010-01-15") & (when < "2010-02-15")].to_parquet(settings.landing_dir / "export_2010-02_resend.parquet", index=False)
    (settings.landing_dir / "export_2010-03.csv").write_text("not,an\nexport,at all\n")
    env = {**local_airflow.airflow_env(settings, port=local_airflow.free_port()), "INGEST_MAPPING": "online_retail_ii"}
    local_airflow.setup(settings, env=env, manifest=False)
    proc = dags_test(settings, env, "ingest")
    output = proc.stdout + proc.stderr
    assert "check_failed_files" in output and "export_2010-03.csv" in output and "failed and moved" in output
    commits = [c for c in read_commits(settings.lake_dir) if c["kind"] == "ingest"]
    assert sorted(c["source"].rsplit("/", 1)[-1] for c in commits) == [
        "export_2009-12.parquet",
        "export_2010-01.parquet",
        "export_2010-02.parquet",
        "export_2010-02_resend.parquet",
    ]
    assert (settings.landing_dir / "_failed" / "export_2010-03.csv").exists()
    # publish_lake returned the lake event's extra (it pushes its XCom only when it succeeds)
    assert any("Pushing xcom" in line and "task_id='publish_lake'" in line for line in output.splitlines())
