"""# ingest

Daily: bring new raw data into the lake, then announce it (Asset `lake`) so the warehouse rebuilds.

* **ingest_new_files** — every export in `LANDING_DIR` not ingested before goes through the mapping
  (param `mapping`, else the `INGEST_MAPPING` setting); the ingestion ledger makes re-runs no-ops.
  With param `generate_scale` (tiny | small | medium | large) it first (re)generates the synthetic
  lake (deterministic for a `seed`). A bad file fails the task at once (no retry) with the file and
  reason; the warehouse and online store keep their last good state.
* **publish_lake** — emits the `lake` Asset event carrying this run's data interval, or is skipped
  when nothing new arrived (then nothing downstream runs).

Runs in the `duckdb_writer` pool: lake files never change under a running dbt build.
"""

from __future__ import annotations

from _platform import DEFAULT_ARGS, LAKE, SETTINGS, START_DATE, TAGS_PLATFORM
from airflow.sdk import Param, dag, task

from ml import orchestration


@dag(
    dag_id=orchestration.INGEST_DAG,
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "ingest"],
    params={
        "mapping": Param(SETTINGS.ingest_mapping, type=["null", "string"], description="Mapping preset or YAML path"),
        "generate_scale": Param(
            None, type=["null", "string"], enum=[None, "tiny", "small", "medium", "large"],
            description="Regenerate the synthetic lake at this scale first (demo)",
        ),
        "seed": Param(None, type=["null", "integer"], description="Generator seed (default: SEED setting)"),
    },
)
def ingest():
    @task(pool=SETTINGS.duckdb_pool)
    def ingest_new_files(params=None) -> dict:
        from airflow.exceptions import AirflowFailException

        from ml.ingest import IngestError

        try:
            return orchestration.run_ingest(SETTINGS, params["mapping"], params["generate_scale"], params["seed"])
        except IngestError as exc:  # bad data does not get better on retry
            raise AirflowFailException(f"ingest failed: {exc}") from exc

    @task(outlets=[LAKE])
    def publish_lake(result: dict, outlet_events=None, **context) -> dict:
        from airflow.exceptions import AirflowSkipException

        if not result["new_data"]:
            raise AirflowSkipException("no new data in the landing folder: nothing downstream to run")
        extra = orchestration.interval_extra(*orchestration.run_interval(context))
        outlet_events[LAKE].extra = extra
        return extra

    publish_lake(ingest_new_files())


ingest()
