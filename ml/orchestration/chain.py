"""The chain, defined once: the DAG ids in run order and the model families' task bodies.

    ingest -> warehouse -> feature_store                     (CHAIN: the data DAGs)
    feature_store -> train_<family> -> score_<family>        (FAMILIES: user, recs, demand)

The DAGs' Assets encode this order for Airflow (dags/_platform.py); ``run_chain`` waits for these
DAGs in this order; ``ecomml pipeline`` runs each family's task bodies in this order without
Airflow (``run_family``); tests/integration/test_dags.py checks that the DAG files follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ml.orchestration import tasks
from ml.settings import Settings

INGEST_DAG = "ingest"
WAREHOUSE_DAG = "warehouse"
FEATURE_STORE_DAG = "feature_store"
CHAIN = (INGEST_DAG, WAREHOUSE_DAG, FEATURE_STORE_DAG)
TRAIN_USER_MODELS_DAG = "train_user_models"
SCORE_USER_MODELS_DAG = "score_user_models"
TRAIN_RECOMMENDER_DAG = "train_recommender"
SCORE_RECOMMENDER_DAG = "score_recommender"
TRAIN_DEMAND_DAG = "train_demand"
FORECAST_DEMAND_DAG = "forecast_demand"


@dataclass(frozen=True)
class Step:
    """One task body; ``then`` (a serving body) takes its result, as the DAG passes it by XCom."""

    run: Callable[[Settings], dict]
    then: Callable[[Settings, dict], dict] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.run.__name__,) + ((self.then.__name__,) if self.then else ())


@dataclass(frozen=True)
class ModelFamily:
    """A model family's training DAG and the scoring DAG its promotion triggers, with their task
    bodies in order."""

    name: str
    train_dag: str
    score_dag: str
    train: tuple[Step, ...]
    score: tuple[Step, ...]


FAMILIES = (
    ModelFamily(
        "user behaviour",
        TRAIN_USER_MODELS_DAG,
        SCORE_USER_MODELS_DAG,
        train=(Step(tasks.train_user_models), Step(tasks.cart_analytics)),
        score=(Step(tasks.score_propensity, tasks.serve_scores), Step(tasks.cart_at_risk)),
    ),
    ModelFamily(
        "recommendation",
        TRAIN_RECOMMENDER_DAG,
        SCORE_RECOMMENDER_DAG,
        train=(Step(tasks.embed_items), Step(tasks.train_recommender)),
        score=(Step(tasks.score_recommender, tasks.serve_recommendations),),
    ),
    ModelFamily(
        "demand",
        TRAIN_DEMAND_DAG,
        FORECAST_DEMAND_DAG,
        train=(Step(tasks.train_demand),),
        score=(Step(tasks.forecast_demand, tasks.serve_demand_plan),),
    ),
)
# (training DAG, the scoring DAG its promotion triggers)
MODEL_DAG_PAIRS = tuple((f.train_dag, f.score_dag) for f in FAMILIES)
MODEL_DAGS = tuple(d for pair in MODEL_DAG_PAIRS for d in pair)


def run_family(settings: Settings, family: ModelFamily, stage: str) -> dict[str, dict]:
    """Run the family's ``stage`` ("train" or "score") task bodies in order, in this process.
    Returns {task body name: its result}."""
    results: dict[str, dict] = {}
    for step in getattr(family, stage):
        results[step.run.__name__] = out = step.run(settings)
        if step.then is not None:
            results[step.then.__name__] = step.then(settings, out)
    return results
