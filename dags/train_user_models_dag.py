"""# train_user_models

Runs when the `feature_store` Asset is updated: trains the user-behaviour models from the Feast
feature service `propensity_lgbm_v3` (point in time) and the dbt label mart `mart_user_purchase_labels`,
on a time split (train on earlier weekly cutoffs, validate and test on later ones).

* **train_propensity** — LightGBM purchase propensity (and the GRU sequence model on the same split,
  compared in the same report) against the RFM-score baseline; logs the run to MLflow, registers a
  version and moves the `champion` alias only if the test ROC AUC is not worse than the current
  champion's on the same rows (tolerance in `ml/models/configs/propensity_lgbm.yaml`). Too few
  positive labels or a missing feature service fail the task; nothing is promoted.
* **cart_analytics** — the cart-abandonment conversion curve (with 95 % intervals) and the
  decay estimate from the dbt marts `mart_cart_conversions` / `mart_cart_conversion_curve` (skipped
  for orders-only data).
* **publish_user_models** — emits `user_models` when a new champion was promoted (skipped
  otherwise), which makes `score_user_models` re-score with it.

Reports: `ecomml models reports`; MLflow UI: `ecomml models ui`.
"""

from __future__ import annotations

from datetime import timedelta

from _platform import DEFAULT_ARGS, FEATURE_STORE, SETTINGS, START_DATE, TAGS_PLATFORM, USER_MODELS
from airflow.sdk import dag, task

from ml.orchestration import chain, tasks


@dag(
    dag_id=chain.TRAIN_USER_MODELS_DAG,
    description="Propensity (LightGBM vs logistic vs RFM rule) + cart-abandonment curve, promoted if not worse",
    schedule=[FEATURE_STORE],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    doc_md=__doc__,
    tags=[TAGS_PLATFORM, "models", "user-behaviour"],
)
def train_user_models():
    @task(execution_timeout=timedelta(minutes=90), pool=SETTINGS.training_pool)
    def train_propensity() -> dict:
        return tasks.train_user_models(SETTINGS)

    @task
    def cart_analytics() -> dict:
        return tasks.cart_analytics(SETTINGS)

    @task(outlets=[USER_MODELS])
    def publish_user_models(summary: dict, outlet_events=None) -> dict:
        tasks.require_promotion(summary)  # skips this task when nothing was promoted
        outlet_events[USER_MODELS].extra = {"propensity_lgbm": summary["version"]}
        return outlet_events[USER_MODELS].extra

    trained = train_propensity()
    trained >> cart_analytics()
    publish_user_models(trained)


train_user_models()
