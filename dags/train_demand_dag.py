"""# train_demand

Runs when the `feature_store` Asset is updated (the warehouse rebuilt the demand marts): backtests
the demand forecasters on the dbt export `mart_demand_series` and registers the serving one.

* **backtest_and_train** — bad-input rules (each counted in the report) -> rolling-origin backtest
  (several cut-offs; seasonal-naive, moving average, global LightGBM, Prophet on the volume head,
  global LSTM; WAPE / MASE / bias / interval coverage; the model per series chosen on validation
  origins only) -> the global LightGBM fitted on all history -> MLflow run + registered version of
  `demand_lgbm`, promoted when its test WAPE is not worse than the champion's (pool `model_training`).
* **publish_demand_model** — emits `demand_model` when the forecaster was promoted (skipped
  otherwise), which makes `forecast_demand` forecast with it.

Reports: `ecomml models reports`; MLflow UI: `ecomml models ui`. Config: ml/models/configs/demand.yaml.
"""

from __future__ import annotations

from datetime import timedelta

from _platform import DEFAULT_ARGS, DEMAND_MODEL, FEATURE_STORE, SETTINGS, START_DATE, TAGS_PLATFORM
from airflow.sdk import dag, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.TRAIN_DEMAND_DAG,
    description="Rolling-origin backtest, demand_lgbm fitted + registered, promoted if it beats its references",
    schedule=[FEATURE_STORE],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "models", "forecasting"],
)
def train_demand():
    @task(execution_timeout=timedelta(minutes=90), pool=SETTINGS.training_pool)
    def backtest_and_train() -> dict:
        return tasks.train_demand(SETTINGS)

    @task(outlets=[DEMAND_MODEL])
    def publish_demand_model(summary: dict, outlet_events=None) -> dict:
        tasks.require_promotion(summary)  # skips this task when nothing was promoted
        outlet_events[DEMAND_MODEL].extra = {summary["model"]: summary["version"], "test_wape": summary["test_wape"]}
        return outlet_events[DEMAND_MODEL].extra

    publish_demand_model(backtest_and_train())


train_demand()
