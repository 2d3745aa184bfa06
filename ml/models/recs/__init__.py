"""Recommendation: candidates -> rankers (``recs_widedeep``, ``recs_lgbm``, ``recs_fm``) -> batch top-K
served from Feast, plus the item embeddings that semantic search and cold-start candidates share.

Cut by stage (each module's docstring has the details):

    data.py        inputs (the dbt exports, item embeddings) and frames: weekly cutoffs, labels,
                   candidates, pair features; ``load_config``, the model names, ``RecsError``
    candidates.py  candidate sources: co-visitation, popularity by segment, content kNN, own history
    ranking.py     the rankers: Wide & Deep, LightGBM LambdaRank, Factorization Machine
    embeddings.py  all-MiniLM-L6-v2 item text embeddings, cached by text hash
    metrics.py     top-K ranking metrics (Recall, NDCG, MRR, ...)
    evaluation.py  the purchase protocols and the plain references every ranker must beat
                   (popularity, item-kNN, own history), and the test-week evaluation of the rankers
    training.py    train(settings): cutoffs -> candidates -> Feast features -> rankers -> evaluation
                   against the references -> report, MLflow, promotion
    scoring.py     score(settings): champion ranker + business rules -> top K per user -> Feast view
                   user_recommendations
    serving.py     recommend (one user's stored list), Reranker (request-time FM re-ranking),
                   search_items (semantic search and BM25)
    search.py      semantic search vs BM25 on search -> purchase pairs

This package is the family's API: ``from ml.models import recs`` then ``recs.train(settings)``,
``recs.score(...)``, ``recs.recommend(...)``, ``recs.MODEL_NAME``: a name is looked up in the stage
modules, in the order above, when first used (importing the package imports none of them).
"""

from __future__ import annotations

import importlib

_STAGES = ("data", "evaluation", "training", "scoring", "serving")


def __getattr__(name: str):
    if not name.startswith("__"):
        for stage in _STAGES:
            module = importlib.import_module(f"{__name__}.{stage}")
            if name in vars(module):
                return vars(module)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
