"""# train_recommender

Runs when the `feature_store` Asset is updated: trains the recommendation rankers on a time split of
the dbt export `mart_interactions` (weekly cutoffs; the week after a cutoff holds its labels) with
user and item features from the Feast service `recs_widedeep_v1` at each cutoff.

* **embed_items** — sentence embeddings (all-MiniLM-L6-v2, offline) of every item text in
  `mart_item_catalogue`, cached by text hash: the source of Feast view `item_embeddings`, of
  cold-start candidates and of semantic search.
* **train_rankers** — candidates (co-visitation, item-kNN, buy again, popularity by segment, content
  kNN) -> Wide & Deep (`recs_widedeep`), LightGBM LambdaRank (`recs_lgbm`, served) and a
  Factorization Machine (`recs_fm`) -> full ranking of the test week against popularity and item-kNN
  baselines, the served lists against plain references on the test week's purchases, semantic search
  vs BM25 -> report, MLflow runs, registered versions, each promoted only if its test NDCG@10 is not
  worse than its champion's on the same pairs and it does not lose to a plain reference.
* **publish_recommender** — emits `recommender` when the served ranker was promoted (skipped
  otherwise), which makes `score_recommender` re-rank with it.

Reports: `ecomml models reports`; MLflow UI: `ecomml models ui`.
"""

from __future__ import annotations

from datetime import timedelta

from _platform import DEFAULT_ARGS, FEATURE_STORE, RECOMMENDER, SETTINGS, START_DATE, TAGS_PLATFORM
from airflow.sdk import dag, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.TRAIN_RECOMMENDER_DAG,
    description="Item embeddings, Wide & Deep / LambdaRank / FM rankers, promoted if they beat popularity, item-kNN, buy again",
    schedule=[FEATURE_STORE],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "models", "recommendation"],
)
def train_recommender():
    @task
    def embed_items() -> dict:
        return tasks.embed_items(SETTINGS)

    @task(execution_timeout=timedelta(minutes=90), pool=SETTINGS.training_pool)
    def train_rankers(embedded: dict) -> dict:
        return tasks.train_recommender(SETTINGS)

    @task(outlets=[RECOMMENDER])
    def publish_recommender(summary: dict, outlet_events=None) -> dict:
        tasks.require_promotion(summary)  # skips this task when nothing was promoted
        outlet_events[RECOMMENDER].extra = {summary["model"]: summary["version"]}
        return outlet_events[RECOMMENDER].extra

    publish_recommender(train_rankers(embed_items()))


train_recommender()
