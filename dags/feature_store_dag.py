"""# feature_store

Runs when the `feature_warehouse` Asset is updated: registers the Feast definitions and loads the
latest feature values into the online store, then announces it (Asset `feature_store`; the model
DAGs schedule on it).

* **check_sources** — the quality gate: every feature view's Parquet mart exists, has rows, has the
  declared columns and types, no null or duplicate keys (`validate_sources`), and was rewritten by
  the last warehouse build (not stale). A failure stops the run before the registry or the online
  store is touched.
* **feast_apply** — `feast apply` (contract with dbt's manifest checked first).
* **materialize** — one mapped task per feature view (dynamic task mapping over the views
  `check_sources` returns), the fast path of `ml.features.materialize`. Window (param `window`):
  `full` = latest row per entity up to the chain's data-interval end (idempotent; a backfill never
  writes older over newer), `interval` = only rows inside the chain's data interval.
* **publish_feature_store** — emits `feature_store`.

Registry and online-store writers share the `feast_writer` pool (size 1): the embedded file
registry and SQLite store take one writer at a time.
"""

from __future__ import annotations

from _platform import DEFAULT_ARGS, FEATURE_STORE, FEATURE_WAREHOUSE, SETTINGS, START_DATE, TAGS_PLATFORM
from airflow.sdk import Param, dag, get_current_context, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.FEATURE_STORE_DAG,
    description="Feast apply + materialize the feature marts into the online store (pool feast_writer)",
    schedule=[FEATURE_WAREHOUSE],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "feast", "features"],
    params={"window": Param("full", enum=["full", "interval"], description="Materialization window")},
)
def feature_store():
    @task
    def check_sources() -> list[str]:
        return tasks.check_feature_sources(SETTINGS)

    @task(pool=SETTINGS.feast_pool)
    def feast_apply() -> float:
        from ml.features.repo import apply

        return apply(SETTINGS, validate=False, echo=print)["seconds"]

    @task(pool=SETTINGS.feast_pool, map_index_template="{{ feature_view }}")
    def materialize(view: str, params=None) -> dict:
        context = get_current_context()
        context["feature_view"] = view  # names the mapped task in the UI and in log_failure
        start, end = tasks.materialize_window(context, params["window"])
        return tasks.materialize_view(SETTINGS, view, start, end)

    @task(outlets=[FEATURE_STORE])
    def publish_feature_store(stats: list[dict], outlet_events=None, **context) -> dict:
        extra = tasks.interval_extra(*tasks.run_interval(context))
        outlet_events[FEATURE_STORE].extra = {**extra, "rows": sum(s.get("rows") or 0 for s in stats)}
        return outlet_events[FEATURE_STORE].extra

    views = check_sources()
    applied = feast_apply()
    views >> applied
    loaded = materialize.expand(view=views)
    applied >> loaded
    publish_feature_store(loaded)


feature_store()
