"""Product search: a query string -> the top-K items, semantic (embeddings) or keyword (BM25).

    SemanticIndex(embeddings)   exact cosine search: the query's normalised embedding times the item
                                matrix (one matrix product), top-K by ``argpartition``; also
                                ``similar_items`` (item -> item) for content kNN
    BM25Index(item_ids, texts)  the keyword baseline: Okapi BM25 (k1 1.5, b 0.75) over lower-cased
                                word tokens; only items sharing a term with the query are returned
    evaluate(index, pairs)      MRR, Recall@K and HitRate@K on search -> purchase pairs
    compare(pairs, ...)         the two indexes on the same pairs, one row each
    latency(index, queries)     per-query p50 / p99 in ms, query encoding included

The search is exact (NumPy) rather than Feast's ``retrieve_online_documents_v2``: of the online stores
this project runs, Redis has no vector search in Feast 0.67 and the SQLite store's (sqlite-vec) does
not run here (Feast loads the extension only on Python 3.10, this Python's sqlite3 cannot load
extensions, and sqlite-vec's KNN ``LIMIT`` needs SQLite >= 3.41).

Bad input: an empty or blank query raises ``SearchError`` (a ``ValueError`` naming the query); any
other string is answered, and when the query's best score is below the index's ``min_score`` every
row of its result has ``is_low_confidence`` true, so a caller can fall back (a query in a language
the model does not know scores low). An index over zero items raises ``SearchError``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable, Sequence

from ml.models.recs.embeddings import Encode, embed_texts, embedding_matrix

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

# Best cosine below which a semantic answer is flagged low-confidence. On an 8-item hand-made
# catalogue all-MiniLM-L6-v2 gave the right item to English queries at 0.29-0.70 ("espresso" 0.29,
# "jogging sneakers" 0.64) and 0.09-0.24 to gibberish, emoji, single stop words and Chinese, Russian
# or German queries.
DEFAULT_MIN_SCORE = 0.25
RESULT_COLUMNS = {
    "query_index": "int64",
    "query": object,
    "item_id": object,
    "score": "float64",
    "rank": "int64",
    "is_low_confidence": bool,
}
SIMILAR_COLUMNS = {"item_id": object, "similar_item_id": object, "score": "float64", "rank": "int64"}
QUERY_BATCH = 128  # queries scored per matrix product (bounds memory at QUERY_BATCH x n_items floats)


class SearchError(ValueError):
    """A query or an index cannot be searched (empty query, index without items); names the input."""


def check_query(query, position: int | None = None) -> str:
    where = "" if position is None else f" at position {position}"
    if not isinstance(query, str) or not query.strip():
        raise SearchError(f"search query{where} is empty: {query!r}")
    return query


class _Index:
    """Top-K over a dense score matrix (queries x items) that subclasses compute in ``_scores``."""

    name: str
    item_ids: list[str]
    min_score: float

    def _scores(self, queries: list[str]) -> "np.ndarray":  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_items(self, item_ids: list[str], what: str) -> None:
        import numpy as np

        if not item_ids:
            raise SearchError(f"{self.name} index has zero items ({what})")
        self.item_ids, self._ids = item_ids, np.asarray(item_ids, dtype=object)

    def __len__(self) -> int:
        return len(self.item_ids)

    def search(self, query: str, k: int = 10) -> "pd.DataFrame":
        """The top ``k`` items for one query: item_id, score, rank (1 = best), is_low_confidence."""
        return self.search_many([query], k).drop(columns=["query_index", "query"])

    def search_many(self, queries: Sequence[str], k: int = 10) -> "pd.DataFrame":
        """The top ``k`` items of every query (scored in batches), long format with query_index
        (position in ``queries``) and query; ordered by query_index, rank."""
        import numpy as np
        import pandas as pd

        queries = [check_query(q, i) for i, q in enumerate(queries)]
        parts = []
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start : start + QUERY_BATCH]
            scores = self._scores(batch)
            top, top_scores = _top_k(scores, k)
            for row, query in enumerate(batch):
                keep = np.isfinite(top_scores[row])  # BM25 marks non-matching items -inf
                idx, sc = top[row][keep], top_scores[row][keep]
                parts.append(
                    pd.DataFrame(
                        {
                            "query_index": start + row,
                            "query": query,
                            "item_id": self._ids[idx],
                            "score": sc.astype(np.float64),
                            "rank": np.arange(1, len(idx) + 1),
                            "is_low_confidence": bool(len(sc) == 0 or sc[0] < self.min_score),
                        }
                    )
                )
        return pd.concat(parts, ignore_index=True) if parts else _empty(RESULT_COLUMNS)


def _empty(columns: dict) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def _top_k(scores: "np.ndarray", k: int) -> tuple["np.ndarray", "np.ndarray"]:
    """Per row, the column indexes of the ``k`` highest scores, best first, and those scores."""
    import numpy as np

    k = max(0, min(int(k), scores.shape[1]))
    if k == 0:
        empty = np.zeros((scores.shape[0], 0))
        return empty.astype(int), empty
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(np.arange(k), (len(scores), 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


class SemanticIndex(_Index):
    """Exact cosine search over item embeddings (rows of ``embeddings`` with no vector are left out).

    ``matrix`` (float32, n_items x dim, L2-normalised) and ``item_ids`` are public for content kNN;
    ``encode`` (texts -> vectors) defaults to the real model."""

    name = "semantic"

    def __init__(self, embeddings: "pd.DataFrame", encode: Encode | None = None, min_score: float = DEFAULT_MIN_SCORE):
        frame = embeddings[embeddings["embedding"].notna()]
        item_ids, self.matrix = embedding_matrix(frame)
        self._set_items(item_ids, "no item has an embedding")
        self._position = {item: i for i, item in enumerate(self.item_ids)}
        self._encode = encode
        self.min_score = float(min_score)

    def embed(self, queries: list[str]) -> "np.ndarray":
        return embed_texts(queries, progress=False, encode=self._encode)

    def _scores(self, queries: list[str]) -> "np.ndarray":
        return self.embed(queries) @ self.matrix.T

    def similar_items(self, item_ids: Iterable[str], k: int = 10) -> "pd.DataFrame":
        """For each known item, the ``k`` most similar other items: item_id, similar_item_id, score,
        rank. Items without an embedding (unseen, no text) get no rows."""
        import numpy as np
        import pandas as pd

        known = [str(i) for i in item_ids if str(i) in self._position]
        rows = np.array([self._position[i] for i in known], dtype=int)
        parts = []
        for start in range(0, len(rows), QUERY_BATCH):
            batch = rows[start : start + QUERY_BATCH]
            scores = self.matrix[batch] @ self.matrix.T
            scores[np.arange(len(batch)), batch] = -np.inf  # never the item itself
            top, top_scores = _top_k(scores, k)
            keep = np.isfinite(top_scores)
            parts.append(
                pd.DataFrame(
                    {
                        "item_id": np.repeat(np.asarray(known[start : start + len(batch)], dtype=object), keep.sum(axis=1)),
                        "similar_item_id": self._ids[top[keep]],
                        "score": top_scores[keep].astype(np.float64),
                        "rank": np.tile(np.arange(1, top.shape[1] + 1), (len(batch), 1))[keep],
                    }
                )
            )
        return pd.concat(parts, ignore_index=True) if parts else _empty(SIMILAR_COLUMNS)


class BM25Index(_Index):
    """Okapi BM25 over lower-cased word tokens (``\\w+``); items whose text is null or blank are left
    out. score(q, d) = sum over the query's terms t (counted with their multiplicity in q) of
    idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl)), with the non-negative
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)). Items with no query term are not returned."""

    name = "bm25"

    def __init__(self, item_ids: Sequence[str], texts: Sequence[str | None], k1: float = 1.5, b: float = 0.75, min_score: float = 0.0):
        import numpy as np
        from scipy import sparse
        from sklearn.feature_extraction.text import CountVectorizer

        kept = [(str(i), t) for i, t in zip(item_ids, texts) if isinstance(t, str) and t.strip()]
        self._set_items([i for i, _ in kept], "no item has text")
        self.min_score = float(min_score)
        self._vectorizer = CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float64)
        try:
            tf = sparse.csr_matrix(self._vectorizer.fit_transform([t for _, t in kept]))
        except ValueError as exc:  # every text is punctuation only
            raise SearchError(f"bm25 index has zero items with a word token ({exc})") from exc
        n_docs = tf.shape[0]
        doc_len = np.asarray(tf.sum(axis=1)).ravel()
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * doc_len / doc_len.mean())
        weights = tf.copy()
        rows = np.repeat(np.arange(n_docs), np.diff(tf.indptr))
        weights.data = idf[tf.indices] * tf.data * (k1 + 1) / (tf.data + norm[rows])
        self._weights_t = weights.T.tocsr()  # terms x items

    def _scores(self, queries: list[str]) -> "np.ndarray":
        import numpy as np

        scores = (self._vectorizer.transform(queries) @ self._weights_t).toarray()
        scores[scores <= 0] = -np.inf  # every shared term adds a positive amount: <= 0 means no match
        return scores


def evaluate(index: _Index, pairs: "pd.DataFrame", k: int = 10, max_rank: int = 100) -> dict:
    """Search quality on search -> purchase pairs (search_id, search_query, item_id; a search may
    have several purchased items). Per search: reciprocal rank of the first purchased item within
    ``max_rank`` (0 when none), share of its purchased items in the top ``k``, whether any is there;
    averaged over searches. Searches with an empty query are skipped and counted."""
    import numpy as np

    blank = pairs["search_query"].isna() | pairs["search_query"].astype("string").str.strip().fillna("").eq("")
    grouped = (
        pairs[~blank].astype({"item_id": str}).groupby("search_id", sort=True).agg(query=("search_query", "first"), items=("item_id", set))
    )
    result = {"n_searches": int(len(grouped)), "n_skipped_empty_query": int(pairs.loc[blank, "search_id"].nunique())}
    names = ("mrr", f"recall_at_{k}", f"hit_rate_at_{k}")
    if grouped.empty:
        return {**{n: None for n in names}, **result}
    queries = grouped["query"].unique().tolist()
    ranked = index.search_many(queries, k=max(k, max_rank))
    ranks = {q: dict(zip(g["item_id"], g["rank"])) for q, g in ranked.groupby("query", sort=False)}
    rr, recall, hit = [], [], []
    for query, items in zip(grouped["query"], grouped["items"]):
        found = [ranks.get(query, {}).get(i) for i in items]
        found = [r for r in found if r is not None]
        rr.append(1.0 / min(found) if found and min(found) <= max_rank else 0.0)
        in_top = sum(r <= k for r in found)
        recall.append(in_top / len(items))
        hit.append(float(in_top > 0))
    return {"mrr": float(np.mean(rr)), f"recall_at_{k}": float(np.mean(recall)), f"hit_rate_at_{k}": float(np.mean(hit)), **result}


def compare(
    pairs: "pd.DataFrame", embeddings: "pd.DataFrame", items: "pd.DataFrame", k: int = 10, max_rank: int = 100, encode: Encode | None = None
) -> "pd.DataFrame":
    """Semantic search against the BM25 baseline on the same pairs: one row per method with
    evaluate()'s metrics. ``items`` needs item_id and item_text."""
    import pandas as pd

    indexes = [SemanticIndex(embeddings, encode=encode), BM25Index(items["item_id"].tolist(), items["item_text"].tolist())]
    return pd.DataFrame([{"method": index.name, "n_items": len(index), **evaluate(index, pairs, k, max_rank)} for index in indexes])


def latency(index: _Index, queries: Sequence[str], k: int = 10) -> dict:
    """Wall time of ``index.search(q, k)`` per query (query encoding included), after one warm-up."""
    import numpy as np

    queries = [check_query(q, i) for i, q in enumerate(queries)]
    if not queries:
        raise SearchError("latency needs at least one query")
    index.search(queries[0], k)
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, k)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "n_queries": len(times)}
