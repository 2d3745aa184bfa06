"""# forecast_demand

Runs when the `feature_store` Asset (new demand) or the `demand_model` Asset (a new champion) is
updated: forecasts every item x warehouse and turns the forecast into an inventory plan.

* **forecast_and_plan** — champion `demand_lgbm` forecasts the horizon after the history (future
  promotions from `mart_promotion_calendar`; other regressors by documented fills); series too short
  for it get a moving average, all-zero series 0 -> safety stock, reorder point, order-up-to level,
  suggested order and projected stock-out date per series (stock and lead times from
  `mart_inventory_position`) -> Parquet partitions `forecast_date=D` under `SCORES_DIR/demand_forecast`
  and `SCORES_DIR/demand_plan` (rewritten on a re-run for the same date). Returns `no_champion` while
  no forecaster has been promoted.
* **serve_demand_plan** — materializes Feast view `item_warehouse_plan` (pool `feast_writer`);
  planners' tools read it online by item_id + warehouse_id (service `demand_plan_v1`).
* emits `demand_plan`.
"""

from __future__ import annotations

from _platform import DEFAULT_ARGS, DEMAND_MODEL, DEMAND_PLAN, FEATURE_STORE, SETTINGS, START_DATE, TAGS_PLATFORM
from airflow.sdk import dag, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.FORECAST_DEMAND_DAG,
    description="Demand champion -> quantile forecast + inventory plan -> served online (item_warehouse_plan)",
    schedule=(FEATURE_STORE | DEMAND_MODEL),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "models", "forecasting", "scoring"],
)
def forecast_demand():
    @task
    def forecast_and_plan() -> dict:
        return tasks.forecast_demand(SETTINGS)

    @task(pool=SETTINGS.feast_pool, outlets=[DEMAND_PLAN])
    def serve_demand_plan(planned: dict, outlet_events=None) -> dict:
        served = tasks.serve_demand_plan(SETTINGS, planned)
        outlet_events[DEMAND_PLAN].extra = {"status": served["status"], "forecast_date": planned.get("forecast_date")}
        return served

    serve_demand_plan(forecast_and_plan())


forecast_demand()
