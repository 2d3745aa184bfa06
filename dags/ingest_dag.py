"""# ingest

Daily: bring new raw data into the lake, then announce it (Asset `lake`) so the warehouse rebuilds.

* **ingest_new_files** — every export in `LANDING_DIR` not ingested before goes through the mapping
  (param `mapping`, else the `INGEST_MAPPING` setting); the ingestion ledger makes re-runs no-ops.
  With param `generate_scale` (tiny | small | medium | large) it first (re)generates the synthetic
  lake (deterministic for a `seed`). Each file is one commit of the lake; a file that fails moves
  to `LANDING_DIR/_failed/` (with `<name>.error.txt`) and the others go on.
* **publish_lake** — emits the `lake` Asset event carrying this run's data interval, or is skipped
  when nothing new arrived (then nothing downstream runs).
* **check_failed_files** — fails (red, no retry) listing every file that failed and why, so ops see
  it; the good files of the same run still flow downstream. Fix a file and move it back to retry.

Runs in the `duckdb_writer` pool: lake files never change under a running dbt build.
"""

from __future__ import annotations

from _platform import DEFAULT_ARGS, LAKE, SETTINGS, START_DATE, TAGS_PLATFORM
from airflow.sdk import Param, dag, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.INGEST_DAG,
    description="Land shop exports (LANDING_DIR) or generate a synthetic shop -> one atomic lake commit each",
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
            None,
            type=["null", "string"],
            enum=[None, "tiny", "small", "medium", "large"],
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
            return tasks.run_ingest(SETTINGS, params["mapping"], params["generate_scale"], params["seed"])
        except IngestError as exc:  # bad data does not get better on retry
            raise AirflowFailException(f"ingest failed: {exc}") from exc

    @task(outlets=[LAKE])
    def publish_lake(result: dict, outlet_events=None, **context) -> dict:
        from airflow.exceptions import AirflowSkipException

        if not result["new_data"]:
            raise AirflowSkipException("no new data in the landing folder: nothing downstream to run")
        extra = tasks.interval_extra(*tasks.run_interval(context))
        outlet_events[LAKE].extra = extra
        return extra

    @task
    def check_failed_files(result: dict) -> int:
        from airflow.exceptions import AirflowFailException

        if result.get("failed"):  # one line: the task log's error line shows it whole
            files = "; ".join(f"{f['file']}: {f['reason']}".replace("\n", " ") for f in result["failed"])
            raise AirflowFailException(
                f"{len(result['failed'])} file(s) failed and moved to the landing folder's "
                f"_failed/ ({len(result['ingested'])} ingested): {files}"
            )
        return len(result["ingested"])

    result = ingest_new_files()
    publish_lake(result)
    check_failed_files(result)


ingest()
