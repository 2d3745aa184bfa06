"""Candidate generation for the recommender: three sources merged into one candidate set per user.

Frames are the shared vocabulary: interactions/history carry user_id, item_id, session_id,
event_type (view | add_to_cart | purchase; other types are ignored) and event_timestamp (UTC).
Every source returns DataFrame[user_id, item_id, score] (at most n rows per user, higher score =
better, sorted by user, score descending, item_id). All functions are pure: frames in, frames out.

    CandidateConfig                                     hyperparameters (recs.yaml ``candidates``)
    recent_history(history, ...) -> [user_id, item_id, weight]
        each user's ``recent_items`` most recently touched items, weight = event weight of the
        strongest event on the item x recency_decay ** (0 for the latest item, 1 for the next, ...)
    covisitation(interactions, ...) -> [item_id, neighbor_id, score]
        item pairs in the same session, plus the same user's purchases in different sessions within
        ``order_window_days``; a pair counts the neighbour's event weight; the sum is divided by
        sqrt(freq(item) * freq(neighbor)) (freq = summed event weight over sessions) so very popular
        items do not dominate; the best ``top_n_per_item`` neighbours per item
    covisit_candidates(history, covis, n, ...)          sum over recent items of weight x covis score
    item_knn_weights(r, k, shrink) -> item x item sparse W   cosine of the binary user x item columns,
        each item's k nearest (RecBole's ItemKNN; also the reference in ml.models.recs.evaluation)
    knn_scores(pairs, users, n, ...)                    item-kNN over the users' whole item sets: score =
        sum over the user's items of W[item, candidate] (the reference in ml.models.recs.evaluation too)
    knn_candidates(history, users, n, ...)              knn_scores of the weighted interactions, the items
        the user has left out
    repeat_candidates(history, now, n, ...)             "buy again": the user's own items, score = sum
        over the user's events on the item of event weight x 0.5 ** (age / repeat_half_life_days)
        (frequency and recency in one number); real shops' customers mostly rebuy
    popularity(interactions, now, ...) -> pop table [segment, item_id, score]
        recency-decayed (half-life) weighted interaction share, overall (segment ALL) and per
        segment, each segment shrunk towards the overall share (``segment_prior``)
    popular_candidates(users, pop_table, segments, n)   the user's segment list, else ALL (unknown users)
    content_candidates(history, item_matrix, n, ...)    cosine to the recency-weighted mean embedding
        of the user's recent items; recommends items never interacted with (cold-start items)
    generate(users, history, now, config, covis, pop_table, segments, item_matrix)
        -> [user_id, item_id, rank, source, n_sources, covis_score, knn_score, repeat_score, content_score, pop_score]
    recall_by_source(candidates, truth, k=100) -> [source, recall@k, n_users]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.models.lifecycle.config import as_config
from ml.models.recs.metrics import ranking_metrics

ALL = "__all__"  # the overall popularity list in a pop table (users without a known segment)
SOURCES = {
    "covis": "covis_score",
    "knn": "knn_score",
    "repeat": "repeat_score",
    "content": "content_score",
    "popularity": "pop_score",
}  # priority order
EVENT_WEIGHTS = {"view": 1.0, "add_to_cart": 3.0, "purchase": 6.0}
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class CandidateConfig:
    """Candidate hyperparameters (defaults = recs.yaml ``candidates``)."""

    event_weights: dict = field(default_factory=lambda: dict(EVENT_WEIGHTS))
    max_items_per_session: int = 30
    order_window_days: float = 30.0
    top_n_per_item: int = 40
    recent_items: int = 20
    recency_decay: float = 0.8
    half_life_days: float = 14.0
    segment_prior: float = 50.0
    n_covis: int = 60
    n_knn: int = 40
    knn_neighbours: int = 100
    knn_max_items: int = 20000
    n_repeat: int = 40
    repeat_half_life_days: float = 90.0
    n_content: int = 30
    n_popular: int = 30
    n_total: int = 100

    def __post_init__(self):
        for name in ("max_items_per_session", "top_n_per_item", "recent_items", "n_total"):
            if getattr(self, name) < 1:
                raise ValueError(f"candidates.{name} must be >= 1, not {getattr(self, name)}")
        if not 0 < self.recency_decay <= 1:
            raise ValueError(f"candidates.recency_decay must be in (0, 1], not {self.recency_decay}")


def as_candidate_config(config) -> CandidateConfig:
    """The ``candidates`` section as a CandidateConfig (unknown keys raise)."""
    return as_config(CandidateConfig, config)


def _utc(now) -> pd.Timestamp:
    now = pd.Timestamp(now)
    return now.tz_localize("UTC") if now.tz is None else now


def _weighted(interactions: pd.DataFrame, event_weights: dict | None) -> pd.DataFrame:
    """Rows with a user, an item and a weighted event type, plus ``weight``."""
    weights = interactions["event_type"].map(event_weights or EVENT_WEIGHTS).astype(float)
    keep = weights.gt(0) & interactions["user_id"].notna() & interactions["item_id"].notna()
    return interactions.loc[keep].assign(weight=weights[keep])


def _best(frame: pd.DataFrame, by: str, n: int) -> pd.DataFrame:
    """The n highest-scored rows per ``by`` (ties: item_id ascending), sorted."""
    frame = frame.sort_values([by, "score", "item_id"], ascending=[True, False, True], kind="stable")
    return frame[frame.groupby(by, sort=False).cumcount() < n].reset_index(drop=True)


def recent_history(
    history: pd.DataFrame, *, recent_items: int = 20, recency_decay: float = 0.8, event_weights: dict | None = None
) -> pd.DataFrame:
    """Each user's ``recent_items`` most recently touched distinct items with a weight (module doc)."""
    per = (
        _weighted(history, event_weights)
        .groupby(["user_id", "item_id"], sort=False)
        .agg(weight=("weight", "max"), last=("event_timestamp", "max"))
        .reset_index()
        .sort_values(["user_id", "last", "item_id"], ascending=[True, False, True], kind="stable")
    )
    recency = per.groupby("user_id", sort=False).cumcount().to_numpy()
    per = per.assign(weight=per["weight"].to_numpy() * recency_decay**recency)[recency < recent_items]
    return per[["user_id", "item_id", "weight"]].reset_index(drop=True)


def covisitation(
    interactions: pd.DataFrame,
    *,
    event_weights: dict | None = None,
    max_items_per_session: int = 30,
    order_window_days: float = 30.0,
    top_n_per_item: int = 40,
) -> pd.DataFrame:
    """Item -> neighbour co-visitation scores (module doc). A session keeps its
    ``max_items_per_session`` most recent items, and a purchase pairs with at most that many later
    purchases of the same user, which bounds the self-joins: rows <= n_events x the cap."""
    weights = event_weights or EVENT_WEIGHTS
    raw = _weighted(interactions, weights)
    item, items = pd.factorize(raw["item_id"])
    ev = pd.DataFrame(
        {
            "user": pd.factorize(raw["user_id"])[0],
            "session": pd.factorize(raw["session_id"])[0],
            "item": item,
            "weight": raw["weight"].to_numpy(),
            "day": ((raw["event_timestamp"] - raw["event_timestamp"].min()) / DAY).to_numpy(float),
            "is_purchase": raw["event_type"].eq("purchase").to_numpy(),
        }
    )
    # Same session: one row per (session, item) with its strongest event, the most recent items kept.
    s = ev.groupby(["session", "item"], sort=False).agg(weight=("weight", "max"), day=("day", "max")).reset_index()
    s = s.sort_values(["session", "day"], ascending=[True, False], kind="stable")
    s = s[s.groupby("session", sort=False).cumcount() < max_items_per_session][["session", "item", "weight"]]
    pairs = s.merge(s, on="session", suffixes=("", "_n"))
    pairs = pairs.loc[pairs["item"] != pairs["item_n"], ["item", "item_n", "weight_n"]]
    freq = np.bincount(s["item"], weights=s["weight"], minlength=len(items))

    # Orders: a user's purchases in different sessions within the window, paired both ways. Rows are
    # sorted by (user, day), so once a lag finds no same-user pair inside the window no larger one can.
    order_pairs = []
    p = ev[ev["is_purchase"]].groupby(["user", "session", "item"], sort=False)["day"].min().reset_index()
    p = p.sort_values(["user", "day"], kind="stable")
    user, session, item_p, day = (p[c].to_numpy() for c in ("user", "session", "item", "day"))
    for lag in range(1, max_items_per_session + 1):
        near = (user[lag:] == user[:-lag]) & (day[lag:] - day[:-lag] <= order_window_days)
        if not near.any():
            break
        keep = near & (session[lag:] != session[:-lag]) & (item_p[lag:] != item_p[:-lag])
        a, b = item_p[:-lag][keep], item_p[lag:][keep]
        both = {"item": np.r_[a, b], "item_n": np.r_[b, a], "weight_n": float(weights["purchase"])}
        order_pairs.append(pd.DataFrame(both))

    pairs = pd.concat([pairs, *order_pairs], ignore_index=True)
    agg = pairs.groupby(["item", "item_n"], sort=False)["weight_n"].sum().reset_index()
    norm = np.sqrt(freq[agg["item"].to_numpy()] * freq[agg["item_n"].to_numpy()])
    out = pd.DataFrame(
        {
            "item_id": items[agg["item"].to_numpy()],
            "neighbor_id": items[agg["item_n"].to_numpy()],
            "score": agg["weight_n"].to_numpy() / np.maximum(norm, 1e-12),
        }
    )
    out = out.sort_values(["item_id", "score", "neighbor_id"], ascending=[True, False, True], kind="stable")
    return out[out.groupby("item_id", sort=False).cumcount() < top_n_per_item].reset_index(drop=True)


def covisit_candidates(
    history: pd.DataFrame,
    covis: pd.DataFrame,
    n: int,
    *,
    recent_items: int = 20,
    recency_decay: float = 0.8,
    event_weights: dict | None = None,
) -> pd.DataFrame:
    """Neighbours of each user's recent items: score = sum over the recent items of the item's
    recency weight x the pair's covisitation score; the best n per user."""
    profile = recent_history(history, recent_items=recent_items, recency_decay=recency_decay, event_weights=event_weights)
    joined = profile.merge(covis, on="item_id")
    joined = joined.assign(score=joined["weight"] * joined["score"])
    agg = joined.groupby(["user_id", "neighbor_id"], sort=False)["score"].sum().reset_index()
    return _best(agg.rename(columns={"neighbor_id": "item_id"}), "user_id", n)


def item_knn_weights(r, k: int = 100, shrink: float = 0.0, cells_per_block: int = 1 << 24):
    """Cosine similarity of the item columns of the binary user x item matrix ``r`` (scipy sparse),
    sim(i, j) = <r_i, r_j> / (|r_i| |r_j| + shrink + 1e-6), no self-similarity; each item j keeps its
    ``k`` most similar items i as W[i, j] (csr, items x items). Dense column blocks of at most
    ``cells_per_block`` cells bound the memory."""
    from scipy import sparse

    r = sparse.csr_matrix(r, dtype=np.float32)
    n = r.shape[1]
    k = min(k, n)
    if n == 0 or k < 1:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    norms = np.sqrt(np.asarray(r.multiply(r).sum(axis=0)).ravel()).astype(np.float32)
    rt, r_csc = r.T.tocsr(), r.tocsc()
    rows, cols, vals = [], [], []
    size = max(1, cells_per_block // n)
    for lo in range(0, n, size):
        j = np.arange(lo, min(lo + size, n))
        sim = (rt @ r_csc[:, j]).toarray()
        sim /= norms[:, None] * norms[None, j] + shrink + 1e-6
        sim[j, np.arange(len(j))] = 0.0
        nearest = np.argpartition(-sim, k - 1, axis=0)[:k]
        value = np.take_along_axis(sim, nearest, 0)
        keep = value != 0
        rows.append(nearest[keep])
        cols.append(np.broadcast_to(j, nearest.shape)[keep])
        vals.append(value[keep])
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def knn_scores(
    pairs: pd.DataFrame,
    users,
    n: int,
    *,
    neighbours: int = 100,
    max_items: int | None = None,
    exclude_own: bool = True,
    batch_users: int = 1024,
) -> pd.DataFrame:
    """Item-kNN over the binary user x item matrix of ``pairs`` [user_id, item_id] (the ``max_items``
    items with the most users; None: all): W = item_knn_weights, score(u, j) = sum over the user's
    items i of W[i, j], the best ``n`` per user of ``users`` that ``pairs`` knows (positive scores);
    ``exclude_own`` leaves out the items the user has."""
    from scipy import sparse

    pairs = pairs[["user_id", "item_id"]].drop_duplicates()
    if max_items is not None:
        pairs = pairs[pairs["item_id"].isin(pairs["item_id"].value_counts(sort=True).index[:max_items])]
    empty = pd.DataFrame({"user_id": [], "item_id": [], "score": []}).astype({"user_id": object, "item_id": object, "score": float})
    if pairs.empty or n < 1:
        return empty
    user, user_ids = pd.factorize(pairs["user_id"])
    item, item_ids = pd.factorize(pairs["item_id"])
    r = sparse.csr_matrix((np.ones(len(pairs), np.float32), (user, item)), shape=(len(user_ids), len(item_ids)))
    w = item_knn_weights(r, neighbours)
    wanted = pd.Index(user_ids).get_indexer(pd.unique(pd.Series(users, dtype=object)))
    wanted = wanted[wanted >= 0]
    parts = []
    for lo in range(0, len(wanted), batch_users):
        idx = wanted[lo : lo + batch_users]
        scores = (r[idx] @ w).tocsr()
        if exclude_own:
            scores = scores - scores.multiply(r[idx])
        coo = scores.tocoo()
        keep = coo.data > 0
        parts.append(
            pd.DataFrame(
                {"user_id": user_ids[idx[coo.row[keep]]], "item_id": item_ids[coo.col[keep]], "score": coo.data[keep].astype(float)}
            )
        )
    return _best(pd.concat(parts, ignore_index=True), "user_id", n) if parts else empty


def knn_candidates(
    history: pd.DataFrame, users, n: int, *, neighbours: int = 100, max_items: int = 20000, event_weights: dict | None = None
) -> pd.DataFrame:
    """Item-kNN candidates (``knn_scores``) over the users' weighted interactions; items the user
    already has are not proposed (the repeat source covers them)."""
    return knn_scores(_weighted(history, event_weights), users, n, neighbours=neighbours, max_items=max_items)


def repeat_candidates(
    history: pd.DataFrame, now, n: int, *, half_life_days: float = 90.0, event_weights: dict | None = None
) -> pd.DataFrame:
    """ "Buy again": each user's own items, score = sum over the user's events on the item of event
    weight x 0.5 ** (age in days / half_life_days), so an item bought often and lately scores highest;
    the best n per user. ``history`` is the user's whole history before ``now`` (not only recent items)."""
    now = _utc(now)
    ev = _weighted(history[history["event_timestamp"] < now], event_weights)
    decayed = ev["weight"] * 0.5 ** (((now - ev["event_timestamp"]) / DAY) / half_life_days)
    agg = decayed.groupby([ev["user_id"], ev["item_id"]], sort=False).sum().rename("score").reset_index()
    return _best(agg, "user_id", n)


def popularity(
    interactions: pd.DataFrame,
    now,
    *,
    half_life_days: float = 14.0,
    segments: pd.Series | None = None,
    n: int = 100,
    segment_prior: float = 50.0,
    event_weights: dict | None = None,
) -> pd.DataFrame:
    """Pop table [segment, item_id, score]: the n most popular items overall (segment ALL) and per
    segment. Popularity = sum of event weight x 0.5 ** (age in days / half_life_days) over the
    interactions before ``now``; overall score = the item's share of the total. ``segments`` maps
    user_id -> segment (any values, compared as strings; users without one count only overall); a
    segment's score is (segment weight + segment_prior x overall share) / (segment total +
    segment_prior), so a small segment leans on the overall list."""
    now = _utc(now)
    ev = _weighted(interactions[interactions["event_timestamp"] < now], event_weights)
    decayed = ev["weight"] * 0.5 ** (((now - ev["event_timestamp"]) / DAY) / half_life_days)
    overall = decayed.groupby(ev["item_id"]).sum()
    share = overall / overall.sum() if len(overall) else overall
    table = [_best(pd.DataFrame({"segment": ALL, "item_id": share.index, "score": share.to_numpy()}), "segment", n)]
    if segments is not None:
        seg = ev["user_id"].map(segments.dropna().astype(str)).rename("segment")
        per = decayed.groupby([seg, ev["item_id"]]).sum().rename("weight").reset_index()
        # Every segment may also take the overall top n (weight 0 in the segment).
        filler = pd.MultiIndex.from_product([per["segment"].unique(), table[0]["item_id"]], names=["segment", "item_id"])
        per = pd.concat([per, filler.to_frame(index=False).assign(weight=0.0)])
        per = per.groupby(["segment", "item_id"], sort=False)["weight"].sum().reset_index()
        total = per.groupby("segment")["weight"].transform("sum")
        per["score"] = (per["weight"] + segment_prior * per["item_id"].map(share)) / (total + segment_prior)
        table.append(_best(per.drop(columns="weight"), "segment", n))
    return pd.concat(table, ignore_index=True)


def popular_candidates(users, pop_table: pd.DataFrame, segments: pd.Series | None = None, n: int = 30) -> pd.DataFrame:
    """The n most popular items of each user's segment; users without a segment, or with one the
    table does not know (including users unknown to ``segments``), get the overall list."""
    users = pd.Series(pd.unique(pd.Series(users, dtype=object)), name="user_id", dtype=object)
    seg = users.map(segments.dropna().astype(str)) if segments is not None else users.map({})
    seg = seg.astype(object).where(seg.isin(pop_table["segment"].unique()), ALL)
    frame = pd.DataFrame({"user_id": users, "segment": seg}).merge(pop_table, on="segment")
    return _best(frame[["user_id", "item_id", "score"]], "user_id", n)


def content_candidates(
    history: pd.DataFrame,
    item_matrix: tuple,
    n: int,
    *,
    recent_items: int = 20,
    recency_decay: float = 0.8,
    event_weights: dict | None = None,
    batch_users: int = 1024,
) -> pd.DataFrame:
    """Items closest (cosine) to each user's profile: the recency-weighted mean embedding of the
    user's recent items. ``item_matrix`` = (item_ids, matrix [n_items, dim]); every listed item is a
    possible candidate, interacted with or not, so pass only recommendable items (in catalogue, with
    text). Users whose recent items have no embedding get nothing from this source."""
    from scipy import sparse

    ids, matrix = pd.Index(item_matrix[0]), np.asarray(item_matrix[1], dtype=np.float32)
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    profile = recent_history(history, recent_items=recent_items, recency_decay=recency_decay, event_weights=event_weights)
    pos = ids.get_indexer(profile["item_id"])
    profile = profile[pos >= 0]
    user, users = pd.factorize(profile["user_id"])
    n = min(n, len(ids))
    if not len(users) or n < 1:
        empty = {"user_id": [], "item_id": [], "score": []}
        return pd.DataFrame(empty).astype({"user_id": object, "item_id": object, "score": float})
    weights = sparse.csr_matrix((profile["weight"].to_numpy(np.float32), (user, pos[pos >= 0])), shape=(len(users), len(ids)))
    vectors = np.asarray(weights @ matrix)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    parts = []
    for lo in range(0, len(users), batch_users):
        sims = vectors[lo : lo + batch_users] @ matrix.T
        top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        parts.append(
            pd.DataFrame(
                {
                    "user_id": np.repeat(users[lo : lo + batch_users], n),
                    "item_id": ids[top.ravel()],
                    "score": np.take_along_axis(sims, top, axis=1).ravel().astype(float),
                }
            )
        )
    return _best(pd.concat(parts, ignore_index=True), "user_id", n)


def generate(
    users,
    history: pd.DataFrame,
    now,
    config: CandidateConfig | dict | None,
    covis: pd.DataFrame | None,
    pop_table: pd.DataFrame,
    segments: pd.Series | None = None,
    item_matrix: tuple | None = None,
    own_history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Up to ``n_total`` candidates per user from the sources (covis and content when given,
    repeat and popularity always), only ``history`` strictly before ``now`` used; the repeat source
    reads ``own_history`` (the users' whole history, default ``history``). One row per (user, item):
    ``rank`` (1..n_total, the merged order), ``source`` (the source that ranked the item best; ties
    in priority covis, content, popularity), ``n_sources`` and the per-source scores
    covis_score/content_score/pop_score (NaN when that source did not propose the item: fill as
    the ranker needs). The merged order interleaves the sources by their own rank, items proposed
    by more sources first among equal ranks. Users without history get popularity only (their
    segment's list when ``segments`` knows them); ``n_knn: 0`` / ``n_repeat: 0`` turn those sources off."""
    cfg = as_candidate_config(config)
    now = _utc(now)
    users = pd.unique(pd.Series(users, dtype=object))
    history = history[(history["event_timestamp"] < now) & history["user_id"].isin(users)]
    shared = dict(recent_items=cfg.recent_items, recency_decay=cfg.recency_decay, event_weights=cfg.event_weights)
    sources = {"popularity": popular_candidates(users, pop_table, segments, cfg.n_popular)}
    if covis is not None:
        sources["covis"] = covisit_candidates(history, covis, cfg.n_covis, **shared)
    if cfg.n_knn > 0:
        sources["knn"] = knn_candidates(
            history, users, cfg.n_knn, neighbours=cfg.knn_neighbours, max_items=cfg.knn_max_items, event_weights=cfg.event_weights
        )
    if cfg.n_repeat > 0:
        own = history if own_history is None else own_history[own_history["user_id"].isin(users)]
        sources["repeat"] = repeat_candidates(
            own, now, cfg.n_repeat, half_life_days=cfg.repeat_half_life_days, event_weights=cfg.event_weights
        )
    if item_matrix is not None:
        sources["content"] = content_candidates(history, item_matrix, cfg.n_content, **shared)
    priority = {name: i for i, name in enumerate(SOURCES)}
    long = pd.concat(
        [
            frame.assign(source=name, source_rank=frame.groupby("user_id", sort=False).cumcount(), priority=priority[name])
            for name, frame in sources.items()
        ],
        ignore_index=True,
    )
    scores = long.set_index(["user_id", "item_id", "source"])["score"].unstack("source")
    scores = scores.reindex(columns=list(SOURCES)).rename(columns=SOURCES)
    best = long.sort_values(["user_id", "item_id", "source_rank", "priority"], kind="stable")
    best = best.drop_duplicates(["user_id", "item_id"])
    merged = best.merge(scores.reset_index(), on=["user_id", "item_id"])
    merged["n_sources"] = merged[list(SOURCES.values())].notna().sum(axis=1)
    merged = merged.sort_values(
        ["user_id", "source_rank", "n_sources", "priority", "item_id"], ascending=[True, True, False, True, True], kind="stable"
    )
    merged["rank"] = merged.groupby("user_id", sort=False).cumcount() + 1
    merged = merged[merged["rank"] <= cfg.n_total]
    return merged[["user_id", "item_id", "rank", "source", "n_sources", *SOURCES.values()]].reset_index(drop=True)


def recall_by_source(candidates: pd.DataFrame, truth: pd.DataFrame, k: int = 100) -> pd.DataFrame:
    """Recall@k of each source alone (its proposals in ``candidates``, ranked by its own score) and
    of the merged list (by ``rank``), over the users in ``truth`` (users without candidates count 0)."""
    rows = []
    for name, column in SOURCES.items():
        if column not in candidates.columns:
            continue
        own = candidates.loc[candidates[column].notna(), ["user_id", "item_id", column]].rename(columns={column: "score"})
        rows.append({"source": name, **_recall(own, truth, k)})
    rows.append({"source": "merged", **_recall(candidates[["user_id", "item_id", "rank"]], truth, k)})
    return pd.DataFrame(rows)


def _recall(ranked: pd.DataFrame, truth: pd.DataFrame, k: int) -> dict:
    metrics = ranking_metrics(ranked, truth, ks=(k,))
    return {f"recall@{k}": metrics.get(f"recall@{k}", float("nan")), "n_users": metrics["n_users"]}
