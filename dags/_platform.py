"""Shared DAG plumbing, defined once: settings, default_args, the Assets chaining the DAGs, and the
Cosmos (dbt) configuration. DAG files import from here; this module is not a DAG file
(.airflowignore keeps the dag-processor from parsing it on its own).

Nothing here touches a database, the network, Feast or pandas: it reads the settings (environment)
and checks whether dbt's manifest.json exists.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset

from ml.orchestration import tasks
from ml.settings import get_settings

SETTINGS = get_settings()

START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=60),
    "on_failure_callback": tasks.log_failure,
}

# The chain: ingest -> LAKE -> warehouse -> FEATURE_WAREHOUSE -> feature_store -> FEATURE_STORE ->
# train_user_models -> USER_MODELS -> score_user_models (also on FEATURE_STORE) -> USER_SCORES, and
# FEATURE_STORE -> train_recommender -> RECOMMENDER -> score_recommender (also on FEATURE_STORE) -> RECOMMENDATIONS,
# FEATURE_STORE -> train_demand -> DEMAND_MODEL -> forecast_demand (also on FEATURE_STORE) -> DEMAND_PLAN.
# Each event carries the ingest run's data interval in its `extra` (tasks.interval_extra).
LAKE = Asset(name="lake", uri=SETTINGS.lake_dir.as_uri(), group="ecomml")
FEATURE_WAREHOUSE = Asset(name="feature_warehouse", uri=SETTINGS.features_dir.as_uri(), group="ecomml")
FEATURE_STORE = Asset(name="feature_store", uri=(SETTINGS.data_dir / "feast").as_uri(), group="ecomml")
# A new champion of a user-behaviour model (MLflow registry), and the batch scores it produced.
USER_MODELS = Asset(name="user_models", uri=(SETTINGS.data_dir / "mlflow").as_uri(), group="ecomml")
USER_SCORES = Asset(name="user_scores", uri=SETTINGS.scores_dir.as_uri(), group="ecomml")
# A new champion ranker (train_recommender -> score_recommender) and the recommendations it served.
RECOMMENDER = Asset(name="recommender", uri=(SETTINGS.data_dir / "mlflow" / "recs_widedeep").as_uri(), group="ecomml")
RECOMMENDATIONS = Asset(name="recommendations", uri=(SETTINGS.scores_dir / "recs_widedeep").as_uri(), group="ecomml")
# A new champion demand forecaster and the inventory plan it produced.
DEMAND_MODEL = Asset(name="demand_model", uri=(SETTINGS.data_dir / "mlflow" / "demand_lgbm").as_uri(), group="ecomml")
DEMAND_PLAN = Asset(name="demand_plan", uri=(SETTINGS.scores_dir / "demand_plan").as_uri(), group="ecomml")

TAGS_PLATFORM = "ecomml"


def dbt_task_group(group_id: str = "dbt"):
    """The dbt project as Airflow tasks (astronomer-cosmos), rendered from manifest.json; None when
    the manifest is missing (the warehouse DAG then falls back to one `dbt build` task; run
    `ecomml warehouse parse` to get per-node tasks).

    DBT_EXECUTION_MODE=watcher (default): one producer task runs a single `dbt build` inside the
    DuckDB writer pool; one sensor per model (and per model's tests) mirrors its node's result.
    DBT_EXECUTION_MODE=local: one `dbt build --select <model>` (model + its tests) per task, each in
    the pool. Measured in docs/operations.md.
    """
    manifest = tasks.manifest_file(SETTINGS)
    if not manifest.exists():
        return None
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

    from ml.warehouse import dbt_command

    watcher = SETTINGS.dbt_execution_mode == "watcher"
    project = ProjectConfig(
        dbt_project_path=SETTINGS.dbt_project_dir,
        manifest_path=manifest,
        env_vars=tasks.dbt_task_env(SETTINGS),
        install_dbt_deps=False,
    )
    profile = ProfileConfig(
        profile_name="ecom_warehouse",
        target_name=SETTINGS.dbt_target,
        profiles_yml_filepath=SETTINGS.dbt_profiles_dir / "profiles.yml",
    )
    execution = ExecutionConfig(
        execution_mode=ExecutionMode.WATCHER if watcher else ExecutionMode.LOCAL,
        invocation_mode=InvocationMode.SUBPROCESS,  # never dbt in-process: it would keep the DuckDB file open
        dbt_executable_path=dbt_command()[0],
        # watcher: only the producer writes, so only it holds the single DuckDB-writer slot; it does
        # not support Airflow retries (re-run = clear the producer)
        setup_operator_args={"pool": SETTINGS.duckdb_pool, "retries": 0} if watcher else None,
    )
    render = RenderConfig(
        load_method=LoadMode.DBT_MANIFEST,
        test_behavior=TestBehavior.AFTER_EACH if watcher else TestBehavior.BUILD,
        emit_datasets=False,  # the DAG emits one FEATURE_WAREHOUSE Asset event instead
        # local: a relationships test needs both models built; run it in its own task after both
        should_detach_multiple_parents_tests=not watcher,
    )
    # Watcher sensors only read XCom. They get retries because Airflow 3.3 can mark a deferrable task
    # FAILED when its trigger fires within about a second ("finished with state success, but the task
    # instance's state attribute is queued"; apache/airflow#66374, fix pending) even though dbt passed.
    # A retried sensor whose producer has finished re-runs its own node (`dbt run/test --select`),
    # which is idempotent; a DuckDB lock clash with another retry is absorbed by the next retry.
    operator_args = (
        {"retries": 2, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": 2.0} if watcher else {"pool": SETTINGS.duckdb_pool}
    )
    return DbtTaskGroup(
        group_id=group_id,
        project_config=project,
        profile_config=profile,
        execution_config=execution,
        render_config=render,
        operator_args=operator_args,
    )
