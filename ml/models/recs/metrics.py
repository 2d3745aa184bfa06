"""Top-K recommendation metrics, vectorised over users (pandas/NumPy, no loops over users).

    top_k(scores, k, exclude=None) -> DataFrame[user_id, item_id, score, rank]
    ranking_metrics(ranked, truth, ks=(10, 20), item_popularity=None, n_items=None) -> dict
    group_ndcg(group_id, label, score, k=10) -> float      graded NDCG@k over query groups (rankers)

``ranked`` holds a user's recommendations with ``rank`` (1 = best); ``truth`` the (user_id, item_id)
pairs the user actually interacted with in the evaluation window. Metrics are means over the users
in ``truth``: a user with no recommendations counts as zero, recommendations of users not in
``truth`` are ignored. Relevance is binary, as in RecBole's full-ranking protocol:

    recall@k    hits in the top k / |truth_u|
    ndcg@k      sum over hits at rank r <= k of 1/log2(r + 1), divided by the ideal DCG over
                min(|truth_u|, k) hits
    hit_rate@k  1 when at least one hit in the top k
    mrr         1 / rank of the first hit in the whole ranked list (0 without a hit)
    coverage@k  distinct items in the evaluated users' top k / n_items
    popularity_percentile@k   mean popularity percentile (0..1, 1 = the most popular item; items
                absent from ``item_popularity`` count 0) of the recommended top-k rows;
                truth_popularity_percentile is the same over the truth pairs, for reference
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["user_id", "item_id"]


def top_k(scores: pd.DataFrame, k: int, exclude: pd.DataFrame | None = None) -> pd.DataFrame:
    """The k best-scored items per user (higher score = better; ties broken by item_id ascending),
    without the (user_id, item_id) pairs in ``exclude``; adds ``rank`` (1 = best)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    frame = scores[[*KEYS, "score"]]
    if exclude is not None and len(exclude):
        marked = frame.merge(exclude[KEYS].drop_duplicates(), on=KEYS, how="left", indicator=True)
        frame = marked[marked.pop("_merge").eq("left_only")]
    frame = frame.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    rank = frame.groupby("user_id", sort=False).cumcount() + 1
    return frame.assign(rank=rank.to_numpy())[rank.to_numpy() <= k].reset_index(drop=True)


def _ranked(ranked: pd.DataFrame) -> pd.DataFrame:
    if "rank" in ranked.columns:
        return ranked[[*KEYS, "rank"]]
    if "score" not in ranked.columns:
        raise ValueError("ranked needs a rank or a score column")
    return top_k(ranked, k=len(ranked) or 1)[[*KEYS, "rank"]]


def _percentiles(item_popularity: pd.Series, items: pd.Series) -> np.ndarray:
    pct = item_popularity.rank(pct=True, method="average")
    return items.map(pct).fillna(0.0).to_numpy(float)


def ranking_metrics(
    ranked: pd.DataFrame,
    truth: pd.DataFrame,
    ks=(10, 20),
    item_popularity: pd.Series | None = None,
    n_items: int | None = None,
) -> dict:
    """recall@k, ndcg@k, hit_rate@k, coverage@k (with ``n_items``), popularity_percentile@k (with
    ``item_popularity``: item_id -> interaction count or any popularity measure) for each k, mrr,
    truth_popularity_percentile and n_users (users in ``truth``). See the module docstring."""
    truth = truth[KEYS].drop_duplicates()
    users = pd.Index(truth["user_id"].unique())
    n_users = len(users)
    out: dict = {"n_users": n_users}
    if n_users == 0:
        return out
    ranked = _ranked(ranked)
    ranked = ranked[ranked["user_id"].isin(users)]
    u_truth = users.get_indexer(truth["user_id"])
    n_truth = np.bincount(u_truth, minlength=n_users)
    hits = ranked.merge(truth, on=KEYS, how="inner")
    u_hit = users.get_indexer(hits["user_id"])
    r_hit = hits["rank"].to_numpy(float)

    first = np.full(n_users, np.inf)
    np.minimum.at(first, u_hit, r_hit)
    out["mrr"] = float(np.where(np.isfinite(first), 1.0 / first, 0.0).mean())
    for k in ks:
        at_k = r_hit <= k
        n_hit = np.bincount(u_hit[at_k], minlength=n_users)
        dcg = np.bincount(u_hit[at_k], weights=1.0 / np.log2(r_hit[at_k] + 1.0), minlength=n_users)
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(n_truth, k) - 1]
        out[f"recall@{k}"] = float((n_hit / n_truth).mean())
        out[f"ndcg@{k}"] = float((dcg / ideal).mean())
        out[f"hit_rate@{k}"] = float((n_hit > 0).mean())
        top = ranked[ranked["rank"] <= k]
        if n_items:
            out[f"coverage@{k}"] = float(top["item_id"].nunique() / n_items)
        if item_popularity is not None:
            pct = _percentiles(item_popularity, top["item_id"])
            out[f"popularity_percentile@{k}"] = float(pct.mean()) if len(pct) else float("nan")
    if item_popularity is not None:
        out["truth_popularity_percentile"] = float(_percentiles(item_popularity, truth["item_id"]).mean())
    return out


def group_ndcg(group_id, label, score, k: int = 10) -> float:
    """Mean NDCG@k over query groups with at least one relevant row (label > 0), graded gains
    2^label - 1 as LightGBM's lambdarank uses. Tied scores are ordered worst label first, so a
    constant score is not rewarded."""
    g = pd.factorize(np.asarray(group_id))[0]
    y = np.asarray(label, float)
    s = np.asarray(score, float)
    n_groups = g.max() + 1 if len(g) else 0
    if n_groups == 0:
        return float("nan")
    starts = np.r_[0, np.cumsum(np.bincount(g, minlength=n_groups))[:-1]]

    def dcg(order):
        gs = g[order]
        pos = np.arange(len(order)) - starts[gs]
        keep = pos < k
        gains = (2.0 ** y[order][keep] - 1.0) / np.log2(pos[keep] + 2.0)
        return np.bincount(gs[keep], weights=gains, minlength=n_groups)

    actual = dcg(np.lexsort((y, -s, g)))
    ideal = dcg(np.lexsort((-y, g)))
    has = ideal > 0
    return float((actual[has] / ideal[has]).mean()) if has.any() else float("nan")
