"""Offline evaluation protocols for top-K recommendation, on any interactions frame
(DataFrame[user_id, item_id, event_timestamp, ...]; nothing here knows a dataset).

The RecBole protocol (RecBole's defaults, recbole/properties/overall.yaml: ``eval_args: split
{RS: [0.8, 0.1, 0.1]}, order RO, group_by user, mode full``; metrics Recall, MRR, NDCG, Hit,
Precision; valid_metric MRR@10, stopping_step 10): every interaction is a positive (RecBole's
ml-100k ``threshold: ~``), user x item pairs are deduplicated, each user's pairs are shuffled and cut
8:1:1, and a model ranks ALL items for every user with test pairs, the user's train and valid items
masked (valid ranking masks train only).

    random_split_per_user(inter, ratios=(0.8, 0.1, 0.1), seed=2020) -> (train, valid, test)
    time_split(inter, test_days, valid_days) -> (train, valid, test)
    IndexMap.from_frames(*frames)         user_id/item_id <-> integer index; .matrix(frame) -> csr
    full_ranking_metrics(score_fn, mapping, test, exclude=(), ks=(10, 20)) -> dict
    Pop(mapping), ItemKNN(mapping, k=100, shrink=0.0), BPR(mapping, ...)
        .fit(train, valid) -> self;  .score(user_idx) -> ndarray [len(user_idx), n_items]
    evaluate_recbole(inter, models=("pop", "itemknn", "bpr"), seed=2020, extra=None) -> DataFrame

A ``score_fn`` maps an int array of user indexes to a float score matrix over all items (the
mapping's item order); higher is better. Metrics (binary relevance, RecBole's definitions) for a
user with test items T and top-k list L (masked items never in L):

    recall@k = |L ∩ T| / |T|          precision@k = |L ∩ T| / k          hit@k = [|L ∩ T| > 0]
    mrr@k    = 1 / rank of the first hit in L (0 without one)
    ndcg@k   = sum over hits at rank r of 1/log2(r + 1), divided by the ideal DCG of min(|T|, k) hits

each averaged over the users with at least one test pair.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

KEYS = ["user_id", "item_id"]
METRICS = ("recall", "ndcg", "hit", "mrr", "precision")
TABLE_COLUMNS = ["model", "recall@10", "ndcg@10", "hit@10", "mrr@10", "precision@10", "recall@20", "ndcg@20", "seconds"]
_CELLS_PER_BATCH = 1 << 24  # users x items scored at once (64 MiB of float32)

ScoreFn = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------- splits


def _dedup(inter: pd.DataFrame) -> pd.DataFrame:
    """One row per user x item: the earliest interaction."""
    missing = [c for c in (*KEYS, "event_timestamp") if c not in inter.columns]
    if missing:
        raise ValueError(f"interactions lack columns {missing}")
    ordered = inter.sort_values(["event_timestamp", *KEYS], kind="stable")
    return ordered.drop_duplicates(KEYS).reset_index(drop=True)


def split_counts(totals: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """Rows per part for groups of ``totals`` rows: RecBole's ``Dataset._calcu_split_ids``.

    Every part but the first gets floor(ratio x total), the first the rest; then, from the last part
    backwards and while the first keeps more than one row, a part whose exact share is in (0, 1)
    gets one row from the first ("make sure every part is not empty"). For 8:1:1: 10 -> 8/1/1,
    3 -> 1/1/1, 2 -> 1/0/1, 1 -> 1/0/0. Returns int64 [len(totals), len(ratios)].
    """
    totals = np.asarray(totals, dtype=np.int64)
    ratios = [r / sum(ratios) for r in ratios]
    counts = np.stack([(r * totals).astype(np.int64) for r in ratios], axis=1)
    counts[:, 0] = totals - counts[:, 1:].sum(axis=1)
    for part in range(len(ratios) - 1, 0, -1):
        share = ratios[part] * totals
        bump = (counts[:, 0] > 1) & (share > 0) & (share < 1)
        counts[bump, part] += 1
        counts[bump, 0] -= 1
    return counts


def random_split_per_user(
    inter: pd.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 2020
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """RecBole's ``RS`` split grouped by user in random order: each user's distinct items shuffled
    (seeded) and cut by ``ratios`` with RecBole's rounding (``split_counts``). Returns
    (train, valid, test), the deduplicated rows (earliest interaction per pair) sorted by user_id,
    event_timestamp. The shuffle is numpy's, so the assignment differs from RecBole's own draw."""
    if len(ratios) != 3 or min(ratios) < 0 or not sum(ratios) > 0:
        raise ValueError(f"ratios must be three non-negative numbers, not {ratios}")
    pairs = _dedup(inter)
    user = pd.factorize(pairs["user_id"])[0]
    totals = np.bincount(user)
    order = np.lexsort((np.random.default_rng(seed).permutation(len(pairs)), user))  # users, shuffled
    first = np.r_[0, np.cumsum(totals)[:-1]]  # where each user starts in that order
    position = np.empty(len(pairs), np.int64)  # a pair's place in its user's shuffled list
    position[order] = np.arange(len(pairs)) - first[user[order]]
    ends = np.cumsum(split_counts(totals, ratios), axis=1)[user]
    part = (position[:, None] >= ends[:, :2]).sum(axis=1)
    return tuple(pairs[part == p].sort_values(["user_id", "event_timestamp"], kind="stable").reset_index(drop=True) for p in range(3))


def time_split(inter: pd.DataFrame, test_days: float, valid_days: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Global time split: test = the last ``test_days`` of the log, valid = the ``valid_days`` before,
    train = earlier. Each part is deduplicated to user x item, and valid/test keep only pairs new to
    the user (not in an earlier part): masked items can never be hit, as in RecBole's full ranking.
    Users or items absent from train stay (cold start); filter them for a warm-only protocol."""
    stamps = pd.to_datetime(inter["event_timestamp"], utc=True)
    test_start = stamps.max() - pd.Timedelta(days=test_days)
    valid_start = test_start - pd.Timedelta(days=valid_days)
    parts, seen = [], pd.DataFrame(columns=KEYS)
    for mask in (stamps <= valid_start, (stamps > valid_start) & (stamps <= test_start), stamps > test_start):
        part = _dedup(inter[mask])
        new = part.merge(seen, on=KEYS, how="left", indicator=True)["_merge"].eq("left_only").to_numpy()
        parts.append(part[new].reset_index(drop=True))
        seen = pd.concat([seen, part[KEYS]], ignore_index=True)
    return tuple(parts)


# ------------------------------------------------------------------------------------- indexing


@dataclass(frozen=True)
class IndexMap:
    """user_id / item_id <-> 0-based index (sorted ids): the row and column order of every
    score matrix. Build it from all frames of a split, as RecBole remaps ids before splitting."""

    users: pd.Index
    items: pd.Index

    @classmethod
    def from_frames(cls, *frames: pd.DataFrame) -> "IndexMap":
        both = pd.concat([f[KEYS] for f in frames], ignore_index=True)
        return cls(pd.Index(np.sort(both["user_id"].unique())), pd.Index(np.sort(both["item_id"].unique())))

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def _index(self, index: pd.Index, ids, name: str) -> np.ndarray:
        idx = index.get_indexer(pd.Index(ids))
        if (idx < 0).any():
            unknown = pd.Index(ids)[idx < 0].unique()[:5].tolist()
            raise ValueError(f"{name} not in the mapping: {unknown} (build it from every frame)")
        return idx.astype(np.int64)

    def user_index(self, user_ids) -> np.ndarray:
        return self._index(self.users, user_ids, "user_id")

    def item_index(self, item_ids) -> np.ndarray:
        return self._index(self.items, item_ids, "item_id")

    def matrix(self, frame: pd.DataFrame) -> sp.csr_matrix:
        """Binary user x item matrix (float32) of the frame's pairs."""
        rows, cols = self.user_index(frame["user_id"]), self.item_index(frame["item_id"])
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(self.n_users, self.n_items))
        m.data[:] = 1.0  # duplicate pairs summed: back to binary
        return m


# -------------------------------------------------------------------------------------- metrics


def _batches(n: int, n_items: int, batch_users: int | None) -> Iterable[slice]:
    size = batch_users or max(1, _CELLS_PER_BATCH // max(n_items, 1))
    return (slice(lo, min(lo + size, n)) for lo in range(0, n, size))


def _ranking_metrics(score_fn: ScoreFn, truth: sp.csr_matrix, mask: sp.csr_matrix, ks, batch_users=None) -> dict:
    """Full-ranking metrics of score_fn for the users with a truth item (index matrices)."""
    ks = sorted(set(int(k) for k in ks))
    if ks[0] < 1:
        raise ValueError(f"k must be >= 1, not {ks[0]}")
    n_items = truth.shape[1]
    users = np.flatnonzero(truth.getnnz(axis=1))
    top = min(ks[-1], n_items)
    discount = 1.0 / np.log2(np.arange(2, ks[-1] + 2))
    ideal = np.cumsum(discount)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in METRICS}
    for rows in _batches(len(users), n_items, batch_users):
        u = users[rows]
        scores = np.array(score_fn(u), dtype=np.float64)
        if scores.shape != (len(u), n_items):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(len(u), n_items)}")
        masked = mask[u].tocoo()
        scores[masked.row, masked.col] = -np.inf
        best = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        best = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, 1), axis=1, kind="stable"), 1)
        t = truth[u]
        hits = np.take_along_axis(t.toarray() > 0, best, 1)
        n_true = t.getnnz(axis=1)
        for k in ks:
            h = hits[:, :k]
            n_hit = h.sum(axis=1)
            first = np.where(n_hit > 0, 1.0 / (h.argmax(axis=1) + 1), 0.0)
            sums[f"recall@{k}"] += (n_hit / n_true).sum()
            sums[f"precision@{k}"] += n_hit.sum() / k
            sums[f"hit@{k}"] += (n_hit > 0).sum()
            sums[f"mrr@{k}"] += first.sum()
            sums[f"ndcg@{k}"] += ((h * discount[: h.shape[1]]).sum(axis=1) / ideal[np.minimum(n_true, k) - 1]).sum()
    out = {name: (float(value) / len(users) if len(users) else float("nan")) for name, value in sums.items()}
    out["n_users"] = len(users)
    return out


def full_ranking_metrics(
    score_fn: ScoreFn,
    mapping: IndexMap,
    test: pd.DataFrame,
    exclude: Sequence[pd.DataFrame] = (),
    ks: Sequence[int] = (10, 20),
    batch_users: int | None = None,
) -> dict:
    """RecBole full-sort evaluation: each user with test pairs gets ALL items scored by
    ``score_fn`` (indexes of ``mapping``), the pairs in ``exclude`` (train, valid) masked, top-k
    taken. Returns recall@k, ndcg@k, hit@k, mrr@k, precision@k for each k (means over those users,
    see the module docstring) and n_users. Users are scored in batches (``batch_users``, default
    about 16M cells per batch)."""
    mask = sp.csr_matrix((mapping.n_users, mapping.n_items), dtype=np.float32)
    for frame in exclude:
        mask = mask + mapping.matrix(frame)
    return _ranking_metrics(score_fn, mapping.matrix(test), mask.tocsr(), ks, batch_users)


# --------------------------------------------------------------------------------------- models


class Pop:
    """Item popularity: the number of train users per item (RecBole's Pop, up to a scale)."""

    def __init__(self, mapping: IndexMap):
        self.mapping = mapping

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None) -> "Pop":
        self.counts = np.asarray(self.mapping.matrix(train).sum(axis=0), dtype=np.float32).ravel()
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.repeat(self.counts[None, :], len(user_idx), axis=0)


class ItemKNN:
    """RecBole's ItemKNN: cosine similarity of item columns of the binary train matrix,
    sim(i, j) = <r_i, r_j> / (|r_i| |r_j| + shrink + 1e-6), no self-similarity; each item j keeps
    its ``k`` most similar items i as W[i, j]; score(u, j) = sum_i r_ui W[i, j]."""

    def __init__(self, mapping: IndexMap, k: int = 100, shrink: float = 0.0):
        self.mapping, self.k, self.shrink = mapping, k, shrink

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None) -> "ItemKNN":
        from ml.models.recs.candidates import item_knn_weights

        self.train = self.mapping.matrix(train)
        self.weights = item_knn_weights(self.train, self.k, self.shrink)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return (self.train[user_idx] @ self.weights).toarray()


class BPR:
    """Matrix factorisation trained with the BPR loss, as RecBole's BPR with its defaults:
    embedding_size 64 (xavier-normal init), score = <p_u, q_i>, loss -log(1e-10 + sigmoid(s_pos -
    s_neg)) averaged over the batch, Adam (lr 1e-3, no weight decay), batch 2048, every train pair
    once per epoch in a shuffled order with one negative drawn uniformly from the items the user has
    no train pair with. After each epoch the full-ranking ``valid_metric`` (RecBole's valid_metric,
    MRR@10) on valid, train masked; as RecBole's early stopping (stopping_step = ``patience``), an
    epoch at least as good as the best is the new best, and training stops once ``patience`` + 1
    epochs in a row fall below it (or at ``epochs``); the best epoch's weights are kept. Without
    valid it trains ``epochs`` epochs. Seeded (torch init generator, numpy shuffle and negatives:
    the same data give the same model); CPU; torch's thread count is ``num_threads`` during fit
    and restored afterwards. ``history``: one dict per epoch."""

    def __init__(
        self,
        mapping: IndexMap,
        embedding_size: int = 64,
        lr: float = 1e-3,
        batch_size: int = 2048,
        epochs: int = 300,
        patience: int = 10,
        valid_metric: str = "mrr@10",
        seed: int = 2020,
        num_threads: int = 1,
    ):
        metric, _, k = valid_metric.partition("@")
        if metric not in METRICS or not k.isdigit() or int(k) < 1:
            raise ValueError(f"valid_metric must be one of {METRICS} @ k, like 'mrr@10', not {valid_metric!r}")
        self.mapping, self.embedding_size, self.lr, self.batch_size = mapping, embedding_size, lr, batch_size
        self.epochs, self.patience, self.valid_metric = epochs, patience, valid_metric
        self.seed, self.num_threads = seed, num_threads
        self.history: list[dict] = []

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (self.user_emb[torch.as_tensor(user_idx)] @ self.item_emb.T).numpy()

    def _negatives(self, users: np.ndarray, train_keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n_items = self.mapping.n_items
        items = rng.integers(0, n_items, len(users))
        redraw = np.flatnonzero(np.isin(users * n_items + items, train_keys))
        while len(redraw):  # rejection sampling: rare redraws of items the user already has
            items[redraw] = rng.integers(0, n_items, len(redraw))
            redraw = redraw[np.isin(users[redraw] * n_items + items[redraw], train_keys)]
        return items

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None) -> "BPR":
        r = self.mapping.matrix(train).tocoo()
        users, items = r.row.astype(np.int64), r.col.astype(np.int64)
        if len(users) == 0:
            raise ValueError("train has no interactions")
        full = np.flatnonzero(np.bincount(users, minlength=self.mapping.n_users) >= self.mapping.n_items)
        if len(full):
            raise ValueError(f"users {self.mapping.users[full[:5]].tolist()} have every item: no negative to sample")
        train_keys = np.unique(users * self.mapping.n_items + items)
        truth = self.mapping.matrix(valid) if valid is not None and len(valid) else None
        seen, valid_k = r.tocsr(), [int(self.valid_metric.partition("@")[2])]
        rng, init = np.random.default_rng(self.seed), torch.Generator().manual_seed(self.seed)
        self.user_emb, self.item_emb = (
            nn.Parameter(nn.init.xavier_normal_(torch.empty(n, self.embedding_size), generator=init))
            for n in (self.mapping.n_users, self.mapping.n_items)
        )
        optimizer = torch.optim.Adam([self.user_emb, self.item_emb], lr=self.lr)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            best_value, best_state, stale, self.history = -np.inf, None, 0, []
            for epoch in range(1, self.epochs + 1):
                started = time.perf_counter()
                order = rng.permutation(len(users))
                negatives = self._negatives(users[order], train_keys, rng)
                total = 0.0
                for lo in range(0, len(order), self.batch_size):
                    rows = order[lo : lo + self.batch_size]
                    u = self.user_emb[torch.from_numpy(users[rows])]
                    pos = (u * self.item_emb[torch.from_numpy(items[rows])]).sum(1)
                    neg = (u * self.item_emb[torch.from_numpy(negatives[lo : lo + self.batch_size])]).sum(1)
                    loss = -torch.log(1e-10 + torch.sigmoid(pos - neg)).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(rows)
                entry = {"epoch": epoch, "train_loss": total / len(users)}
                if truth is not None:
                    value = _ranking_metrics(self.score, truth, seen, valid_k)[self.valid_metric]
                    entry[f"valid_{self.valid_metric}"] = value
                    if value >= best_value:
                        best_value, stale = value, 0
                        best_state = (self.user_emb.detach().clone(), self.item_emb.detach().clone())
                    else:
                        stale += 1
                entry["seconds"] = time.perf_counter() - started
                self.history.append(entry)
                if stale > self.patience:
                    break
            if best_state is not None:
                with torch.no_grad():
                    self.user_emb.copy_(best_state[0])
                    self.item_emb.copy_(best_state[1])
        finally:
            torch.set_num_threads(previous_threads)
        return self


MODELS = {"pop": Pop, "itemknn": ItemKNN, "bpr": BPR}


def evaluate_recbole(
    inter: pd.DataFrame,
    models: Sequence[str] = ("pop", "itemknn", "bpr"),
    seed: int = 2020,
    extra: dict[str, Callable[[pd.DataFrame, pd.DataFrame, IndexMap], ScoreFn]] | None = None,
) -> pd.DataFrame:
    """The RecBole protocol end to end: ``random_split_per_user`` (seed), each model fitted on train
    (early stopping on valid where it has any) and ranked over all items on test with train and valid
    masked. ``extra``: name -> build(train, valid, mapping) returning a score_fn, evaluated alike.
    One row per model: TABLE_COLUMNS (seconds = fit + evaluation wall time)."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {sorted(MODELS)}")
    train, valid, test = random_split_per_user(inter, seed=seed)
    mapping = IndexMap.from_frames(train, valid, test)
    builders = {name: (lambda tr, va, m, name=name: _model(name, m, seed).fit(tr, va).score) for name in models}
    builders.update(extra or {})
    rows = []
    for name, build in builders.items():
        started = time.perf_counter()
        metrics = full_ranking_metrics(build(train, valid, mapping), mapping, test, exclude=(train, valid))
        rows.append({"model": name, **metrics, "seconds": time.perf_counter() - started})
    return pd.DataFrame(rows)[TABLE_COLUMNS]


def _model(name: str, mapping: IndexMap, seed: int):
    return BPR(mapping, seed=seed) if name == "bpr" else MODELS[name](mapping)
