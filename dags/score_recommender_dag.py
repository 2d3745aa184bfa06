"""# score_recommender

Runs when the `feature_store` Asset (new features) or the `recommender` Asset (a new champion) is
updated: ranks every known user's candidates with the champion ranker and serves the lists online.

* **score_recommendations** — the champion of the served ranker (`serving.model`, `recs_lgbm`) ranks
  the candidates of every known user; business rules (none out of stock, at most M per brand; items
  bought in the last N days only if configured) -> top K per user, the top K never-bought items, and
  the `__fallback__` list for unknown users; one Parquet partition
  per scoring date under `SCORES_DIR` (overwritten on a re-run). Returns `no_champion` while no
  ranker has been promoted; a champion that fails to load fails the task and keeps the old lists.
* **serve_recommendations** — materializes Feast views `user_recommendations` and
  `item_embeddings` (pool `feast_writer`): one `get_online_features` call returns a user's list.
* emits `recommendations`.
"""

from __future__ import annotations

from _platform import DEFAULT_ARGS, FEATURE_STORE, RECOMMENDATIONS, RECOMMENDER, SETTINGS, START_DATE, TAGS_PLATFORM
from airflow.sdk import dag, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.SCORE_RECOMMENDER_DAG,
    description="Champion ranker -> top-K per user + fallback -> served online (user_recommendations)",
    schedule=(FEATURE_STORE | RECOMMENDER),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "models", "scoring", "recommendation"],
)
def score_recommender():
    @task
    def score_recommendations() -> dict:
        return tasks.score_recommender(SETTINGS)

    @task(pool=SETTINGS.feast_pool, outlets=[RECOMMENDATIONS])
    def serve_recommendations(scored: dict, outlet_events=None) -> dict:
        served = tasks.serve_recommendations(SETTINGS, scored)
        outlet_events[RECOMMENDATIONS].extra = {"status": served["status"], "scored": scored}
        return served

    serve_recommendations(score_recommendations())


score_recommender()
