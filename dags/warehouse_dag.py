"""# warehouse

Runs when the `lake` Asset is updated: dbt builds the DuckDB warehouse and the feature marts
(Parquet) through astronomer-cosmos, then announces them (Asset `feature_warehouse`).

* **mark_build_start** — remembers when this build began; the feature-store DAG refuses marts that
  were not rewritten since (stale).
* **dbt** — one task per dbt model plus one per model's data tests, rendered from
  `manifest.json` (`LoadMode.DBT_MANIFEST`: parsing this file never runs dbt). In the default
  `watcher` mode a single `dbt build` (the `dbt_producer_watcher` task, in the `duckdb_writer` pool)
  does the work and each node task mirrors its node's result, so a failing model or test fails its
  own task and the run stops before `publish`. Without a manifest (fresh clone) this is one
  `dbt_build` task; `ecomml warehouse parse` (or any build) writes the manifest.
* **publish_warehouse** — emits `feature_warehouse` with the chain's data interval.
"""

from __future__ import annotations

from _platform import DEFAULT_ARGS, FEATURE_WAREHOUSE, LAKE, SETTINGS, START_DATE, TAGS_PLATFORM, dbt_task_group
from airflow.sdk import dag, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.WAREHOUSE_DAG,
    description="dbt build on DuckDB (one task per model, Cosmos): staging -> marts -> feature Parquet (pool duckdb_writer)",
    schedule=[LAKE],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "dbt", "warehouse"],
)
def warehouse():
    @task
    def mark_build_start(run_id=None) -> dict:
        return tasks.record_build_start(SETTINGS, run_id)

    @task(outlets=[FEATURE_WAREHOUSE])
    def publish_warehouse(outlet_events=None, **context) -> dict:
        extra = tasks.interval_extra(*tasks.run_interval(context))
        outlet_events[FEATURE_WAREHOUSE].extra = extra
        return extra

    dbt = dbt_task_group()
    if dbt is None:  # no manifest at parse time: one task runs the whole project

        @task(pool=SETTINGS.duckdb_pool)
        def dbt_build() -> dict:
            from ml.warehouse import build

            summary = build(SETTINGS, echo=print)
            return {k: summary[k] for k in ("nodes", "by_status", "seconds")}

        dbt = dbt_build()

    mark_build_start() >> dbt >> publish_warehouse()


warehouse()
