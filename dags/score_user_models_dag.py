"""# score_user_models

Runs when the `feature_store` Asset (new features) or the `user_models` Asset (a new champion) is
updated: batch-scores the current users with the champion propensity model through the same Feast
feature service, and serves the scores online.

* **score_propensity** — champion `propensity_lgbm` scores every user known at the last cutoff, with
  its top SHAP contributions; one Parquet partition per scoring date under `SCORES_DIR`
  (overwritten on a re-run). Does nothing (returns `no_champion`) while no model has been promoted
  yet; a champion that fails to load fails the task and leaves the previous scores in place.
* **serve_propensity** — materializes Feast view `user_propensity` (pool `feast_writer`), so
  `get_online_features` returns the new scores.
* **cart_at_risk** — the day's users with open carts, scored by the conversion curve.
* emits `user_scores`.
"""

from __future__ import annotations

from _platform import DEFAULT_ARGS, FEATURE_STORE, SETTINGS, START_DATE, TAGS_PLATFORM, USER_MODELS, USER_SCORES
from airflow.sdk import dag, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.SCORE_USER_MODELS_DAG,
    description="Propensity champion -> batch scores with explanations, carts at risk -> served online",
    schedule=(FEATURE_STORE | USER_MODELS),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "models", "scoring"],
)
def score_user_models():
    @task
    def score_propensity() -> dict:
        return tasks.score_propensity(SETTINGS)

    @task(pool=SETTINGS.feast_pool)
    def serve_propensity(scored: dict) -> dict:
        return tasks.serve_scores(SETTINGS, scored)

    @task
    def cart_at_risk() -> dict:
        return tasks.cart_at_risk(SETTINGS)

    @task(outlets=[USER_SCORES], trigger_rule="none_failed")
    def publish_user_scores(served: dict, carts: dict, outlet_events=None) -> dict:
        outlet_events[USER_SCORES].extra = {"propensity": served, "cart_at_risk": carts}
        return outlet_events[USER_SCORES].extra

    scored = score_propensity()
    publish_user_scores(serve_propensity(scored), cart_at_risk())


score_user_models()
