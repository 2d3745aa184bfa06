"""Online: one user's stored list from the online store (``recommend``), request-time re-ranking by
the FM (``Reranker``), and product search over the item embeddings (``search_items``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ml.models.recs import data
from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)


# --- online ----------------------------------------------------------------------------------------

REC_FIELDS = ("rec_item_ids", "rec_scores", "rec_sources", "new_item_ids", "new_scores", "model_name", "model_version")


def recommend(settings: Settings, user_id: str, store=None, new_only: bool = False) -> "pd.DataFrame":
    """A user's current list from the online store in one read (the user and the fallback row);
    unknown users, users without a list and expired lists get the fallback (``is_fallback``).
    ``new_only``: the list of items the user never bought (its ``source`` is not stored: empty)."""
    import pandas as pd

    from ml.features.repo import get_store
    from ml.features.serving import get_online_features

    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(f"user_id must be a non-empty string, got {user_id!r}")
    store = store or get_store(settings)
    refs = [f"{data.SCORE_VIEW}:{f}" for f in REC_FIELDS]
    rows = get_online_features(store, refs, [{"user_id": user_id}, {"user_id": data.FALLBACK_USER}])
    pick = 0 if rows["rec_item_ids"][0] else 1
    ids_col, scores_col = ("new_item_ids", "new_scores") if new_only else ("rec_item_ids", "rec_scores")
    ids = rows[ids_col][pick] or []
    sources = [""] * len(ids) if new_only else (rows["rec_sources"][pick] or [])
    return pd.DataFrame(
        {
            "rank": range(1, len(ids) + 1),
            "item_id": ids,
            "score": rows[scores_col][pick] or [],
            "source": sources,
            "is_fallback": pick == 1,
            "model_version": rows["model_version"][pick],
        }
    )


class Reranker:
    """Request-time re-ranking with the champion FM (``recs_fm``): ONE online read returns the user's
    stored list and the user's features; the FM scores the list (or given ``item_ids``) with them and
    the item attributes stored in the model. Unknown users get the fallback list, scored with null
    user features. Build once per process (loads the model, resolves the Feast refs)."""

    def __init__(self, settings: Settings, model=None, store=None, config: dict | None = None):
        from ml.features.repo import get_store
        from ml.features.training import service_requirements
        from ml.models.lifecycle import registry

        config = config or data.load_config()
        self.store = store or get_store(settings)
        self.model = model if model is not None else registry.load_champion(settings, data.FM_NAME)[0]
        refs = service_requirements(self.store, config["feature_service"], keys=("user_id",))["refs"]
        by_name = {data.prefixed(ref.split(":", 1)[1], "user_"): ref for ref in refs}
        missing = [f for f in self.model.user_fields if f not in by_name]
        if missing:
            raise data.RecsError(f"{data.FM_NAME} needs user features {missing} that service {config['feature_service']} does not serve")
        self.refs = {f: by_name[f] for f in self.model.user_fields}
        self.features = [f"{data.SCORE_VIEW}:rec_item_ids", *dict.fromkeys(self.refs.values())]

    def rerank(self, user_id: str, item_ids: list[str] | None = None) -> "pd.DataFrame":
        import numpy as np
        import pandas as pd

        from ml.features.serving import get_online_features

        online = get_online_features(self.store, self.features, [{"user_id": user_id}, {"user_id": data.FALLBACK_USER}])
        if item_ids is None:
            item_ids = online["rec_item_ids"][0] or online["rec_item_ids"][1] or []
        user_row = {field: online[ref.split(":", 1)[1]][0] for field, ref in self.refs.items()}
        scores = np.asarray(self.model.score(user_row, list(item_ids)), dtype=float)
        order = np.argsort(-scores, kind="stable")
        return pd.DataFrame(
            {"rank": np.arange(1, len(order) + 1), "item_id": np.asarray(item_ids, dtype=object)[order], "score": scores[order]}
        )


# --- search ----------------------------------------------------------------------------------------


def search_items(settings: Settings, query: str, k: int = 10, method: str = "semantic") -> "pd.DataFrame":
    """Top-``k`` items for a query: ``semantic`` (embeddings, exact cosine) or ``bm25`` (keywords).
    A semantic answer below the index's confidence floor (e.g. a language the model does not know)
    falls back to BM25 when BM25 finds anything; the ``method`` column says which answered. Raises
    ``search.SearchError`` for an empty query, RecsError when there are no embeddings yet."""
    import pandas as pd

    from ml.models.recs import search

    search.check_query(query)
    items = data.load_items(settings)
    if method not in ("semantic", "bm25"):
        raise ValueError(f"method must be 'semantic' or 'bm25', got {method!r}")
    result = pd.DataFrame()
    if method == "semantic":
        if not data.embeddings_path(settings).exists():
            raise data.RecsError(f"no item embeddings at {data.embeddings_path(settings)}: run `ecomml recs embed` first")
        embeddings = pd.read_parquet(data.embeddings_path(settings))
        if embeddings.empty:
            raise data.RecsError(
                f"no item in {data.ITEMS_MART} has text, so there is nothing to search: map a title or description "
                "column to item text in the ingestion mapping"
            )
        result = search.SemanticIndex(embeddings).search(query, k).assign(method="semantic")
    if method == "bm25" or result.empty or bool(result["is_low_confidence"].all()):
        keyword = search.BM25Index(items["item_id"].tolist(), items["item_text"].tolist()).search(query, k).assign(method="bm25")
        if method == "bm25" or not keyword.empty:
            result = keyword
    titles = items.set_index("item_id")["title"]
    return result.assign(title=result["item_id"].map(titles))[["rank", "item_id", "score", "title", "method", "is_low_confidence"]]


def sample_query(settings: Settings) -> str:
    """A query to show search with: the lake's first logged search, else an item's leaf category."""
    import pandas as pd

    path = Path(settings.exports_dir) / f"{data.SEARCH_MART}.parquet"
    if path.exists():
        queries = pd.read_parquet(path, columns=["search_query"])["search_query"]
        if len(queries):
            return str(queries.iloc[0])
    items = data.load_items(settings)
    for col in ("category_l3", "title"):
        values = items[col].dropna() if col in items else []
        if len(values):
            return str(values.iloc[0])
    return "gift"
