"""Rankers over candidate pair frames: Wide & Deep (PyTorch), LightGBM LambdaRank, a Factorization
Machine (PyTorch, NumPy at predict time).

A pair frame has one row per (query group, candidate): user_id, item_id, group_id (int; one group =
one user at one cutoff), label (graded int: 0 none, 1 view/click, 2 add_to_cart, 3 purchase) and the
feature columns a ``FeatureSpec`` names. Unknown categories (and nulls never seen in training) map
to index 0, whose weights are zero; numeric nulls are allowed everywhere. Training is seeded and
single-process on CPU: the same data, spec and config give the same scores.

    FeatureSpec(numeric, categorical, crosses, embedding, item_columns, user_columns)
    sample_negatives(frame, spec, n_per_positive, seed) -> DataFrame   random items as label-0 rows
    fit_widedeep(train, valid, spec, config=None) -> WideDeepModel     .predict, .predict_heads, .history
    fit_lambdarank(train, valid, spec, config=None) -> LambdaRankModel .predict, .booster, .history
    fit_fm(train, valid, spec, config=None) -> FMModel                 .predict, .score, .user_fields, .history

Wide & Deep: wide = a linear model (EmbeddingBag sum) over one-hot categoricals and the hashed
crosses (``wide_buckets``); deep = categorical embeddings + standardised numerics with missing
flags + the item embedding (reduced to ``item_embedding_pca`` principal components fitted on the
training items, then a learned projection to ``item_embedding_dim``) -> MLP. Wide and deep logits are
summed per head; three heads (label >= 1, >= 2, >= 3) trained jointly, loss = sum of
``head_weights`` x BCE; score = ``score_weights`` . head probabilities. Early stopping on the
validation NDCG@10 (rank_metrics.group_ndcg, graded gains), best epoch restored.

LambdaRank: LightGBM ``objective: lambdarank`` over the numeric and categorical columns (pandas
category with the training categories; unknown -> missing); crosses and the embedding column are
not used (trees find interactions; pass content similarity as a numeric). LightGBM's ndcg@10 counts
a group without a relevant row as 1, group_ndcg leaves it out: compare rankers with group_ndcg.

FM: one field per categorical and per numeric (quantile buckets; bucket 0 = missing); crosses
and embedding unused (the factors model pairwise interactions). Trained BPR (a positive row against
a label-0 row of its group) or pointwise (BCE on label > 0). The fitted model holds NumPy tables
only: ``predict(frame)`` and the request-time ``score(user_row, candidates)`` share one kernel.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ml.models.lifecycle.config import as_config
from ml.models.recs.metrics import group_ndcg

NONE = "<none>"  # the token of a null categorical value
N_HEADS = 3  # label >= 1 (click), >= 2 (cart), >= 3 (purchase)
_MIX = np.uint64(0x9E3779B97F4A7C15)


# ------------------------------------------------------------------------------------ spec, config


@dataclass(frozen=True)
class FeatureSpec:
    """The feature columns of a pair frame.

    numeric: float columns (nulls allowed). categorical: columns of categories (any values, compared
    as strings). crosses: (col_a, col_b) pairs hashed into Wide & Deep's wide part. embedding: a
    column of equal-length float arrays belonging to the item (e.g. the text embedding; null = no
    text), used by Wide & Deep. item_columns / user_columns: which feature columns describe the item /
    the user; ``sample_negatives`` copies them, every other feature of a random negative is missing.
    """

    numeric: tuple = ()
    categorical: tuple = ()
    crosses: tuple = ()
    embedding: str | None = None
    item_columns: tuple = ()
    user_columns: tuple = ()

    def __post_init__(self):
        for name in ("numeric", "categorical", "item_columns", "user_columns"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "crosses", tuple((str(a), str(b)) for a, b in self.crosses))

    @property
    def columns(self) -> list[str]:
        cols = [*self.numeric, *self.categorical, *(c for pair in self.crosses for c in pair)]
        cols += [self.embedding] if self.embedding else []
        return list(dict.fromkeys(cols))


@dataclass(frozen=True)
class WideDeepConfig:
    """recs_widedeep hyperparameters (defaults = recs.yaml ``widedeep``)."""

    wide_buckets: int = 16384
    embedding_dim: int = 8
    item_embedding_pca: int = 32
    item_embedding_dim: int = 16
    hidden: tuple = (64, 32)
    dropout: float = 0.1
    head_weights: tuple = (1.0, 1.0, 1.0)
    score_weights: tuple = (0.2, 0.3, 0.5)
    random_negatives: int = 1
    epochs: int = 12
    patience: int = 3
    batch_size: int = 4096
    lr: float = 0.005
    weight_decay: float = 1e-6
    seed: int = 42
    num_threads: int = 1

    def __post_init__(self):
        for name in ("hidden", "head_weights", "score_weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.head_weights) != N_HEADS or len(self.score_weights) != N_HEADS:
            raise ValueError(f"head_weights and score_weights need {N_HEADS} values (click, cart, purchase)")
        _check_positive(self, "wide_buckets", "item_embedding_pca", "epochs", "patience", "batch_size", "num_threads")


@dataclass(frozen=True)
class LambdaRankConfig:
    """recs_lambdarank hyperparameters (defaults = recs.yaml ``lambdarank``)."""

    params: dict = field(
        default_factory=lambda: {
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "verbosity": -1,
            "num_threads": 2,
            "seed": 42,
            "deterministic": True,
        }
    )
    num_boost_round: int = 500
    early_stopping_rounds: int = 30
    eval_at: int = 10

    def __post_init__(self):
        _check_positive(self, "num_boost_round", "early_stopping_rounds", "eval_at")


@dataclass(frozen=True)
class FMConfig:
    """recs_fm hyperparameters (defaults = recs.yaml ``fm``)."""

    factors: int = 16
    numeric_bins: int = 10
    loss: str = "bpr"
    epochs: int = 30
    patience: int = 3
    batch_size: int = 1024
    lr: float = 0.01
    weight_decay: float = 1e-5
    seed: int = 42
    num_threads: int = 1

    def __post_init__(self):
        if self.loss not in ("bpr", "pointwise"):
            raise ValueError(f"fm.loss must be bpr or pointwise, not {self.loss!r}")
        _check_positive(self, "factors", "numeric_bins", "epochs", "patience", "batch_size", "num_threads")


def _check_positive(config, *names):
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be >= 1, not {getattr(config, name)}")


# ------------------------------------------------------------------------------------ encoding


def _check(frame: pd.DataFrame, spec: FeatureSpec, name: str, labelled: bool = True) -> None:
    missing = [c for c in [*(["group_id", "label"] if labelled else []), *spec.columns] if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}")
    if labelled and not frame["label"].isin(range(N_HEADS + 1)).all():
        raise ValueError(f"{name} labels must be integers 0..{N_HEADS}")
    if labelled and not frame["label"].gt(0).any():
        raise ValueError(f"{name} frame has no positive label (of {len(frame)} rows): nothing to learn or stop on")


def _tokens(values: pd.Series) -> np.ndarray:
    return values.astype(object).where(values.notna(), NONE).astype(str).to_numpy(object)


def _token(value) -> str:
    return NONE if pd.isna(value) else str(value)


def _numeric(frame: pd.DataFrame, columns) -> np.ndarray:
    """[n, len(columns)] float64; non-numeric values -> NaN."""
    if not columns:
        return np.zeros((len(frame), 0))
    return np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64) for c in columns])


def _vocab(values: pd.Series) -> list[str]:
    """Sorted distinct tokens; a token's index is its position + 1 (0 = unknown)."""
    return sorted(set(_tokens(values)))


def _encode(values: pd.Series, vocab: list[str]) -> np.ndarray:
    return pd.Index(vocab).get_indexer(_tokens(values)) + 1  # -1 (unknown) -> 0


def _cross_index(frame: pd.DataFrame, crosses: tuple, buckets: int) -> np.ndarray:
    """[n, n_crosses] bucket of each cross value (stable hash: the same in every process)."""
    out = np.zeros((len(frame), len(crosses)), np.int64)
    for i, (a, b) in enumerate(crosses):
        ha, hb = (pd.util.hash_array(_tokens(frame[c])) for c in (a, b))
        with np.errstate(over="ignore"):  # uint64 wrap-around is the hash
            mixed = (ha * _MIX) ^ (hb + np.uint64(i + 1) * _MIX)
        out[:, i] = (mixed % np.uint64(buckets)).astype(np.int64)
    return out


def _item_vectors(frame: pd.DataFrame, column: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row -> item position, item matrix): one vector per item_id (its first row's); a value that
    is not an array (null) gives zeros."""
    codes, _ = pd.factorize(frame["item_id"])
    first = frame[column].to_numpy(object)[np.unique(codes, return_index=True)[1]]
    vectors = [np.asarray(v, np.float32) if isinstance(v, (list, tuple, np.ndarray)) else None for v in first]
    dim = dim or next((len(v) for v in vectors if v is not None), 0)
    matrix = np.zeros((len(vectors), dim), np.float32)
    for i, v in enumerate(vectors):
        if v is not None:
            if len(v) != dim:
                item = frame["item_id"].iloc[np.flatnonzero(codes == i)[0]]
                raise ValueError(f"{column}: item {item!r} has a vector of length {len(v)}, expected {dim}")
            matrix[i] = v
    return codes.astype(np.int64), matrix


def _epoch(epoch: int, train_loss: float, ndcg: float, started: float, is_best: bool) -> dict:
    """One history row of the torch rankers."""
    seconds = time.perf_counter() - started
    return {"epoch": epoch, "train_loss": train_loss, "valid_ndcg@10": ndcg, "seconds": seconds, "is_best": is_best}


@contextlib.contextmanager
def _threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def sample_negatives(frame: pd.DataFrame, spec: FeatureSpec, n_per_positive: int, seed: int = 42) -> pd.DataFrame:
    """``n_per_positive`` label-0 rows per positive row (label > 0): the positive's user_id,
    group_id and ``spec.user_columns``, a uniformly drawn item of the frame with its
    ``spec.item_columns`` and embedding (from one of its rows), every other feature column missing.
    Draws that are already a candidate of the group are dropped. Columns follow ``frame``."""
    positives = frame[frame["label"] > 0]
    if n_per_positive < 1 or not len(positives):
        return frame.iloc[:0]
    item_cols = ["item_id", *dict.fromkeys([*spec.item_columns, *([spec.embedding] if spec.embedding else [])])]
    items = frame.drop_duplicates("item_id")[item_cols].reset_index(drop=True)
    draw = np.random.default_rng(seed).integers(len(items), size=len(positives) * n_per_positive)
    users = positives[["user_id", "group_id", *spec.user_columns]].iloc[np.repeat(np.arange(len(positives)), n_per_positive)]
    negatives = pd.concat([users.reset_index(drop=True), items.iloc[draw].reset_index(drop=True)], axis=1).assign(label=0)
    seen = frame[["group_id", "item_id"]].drop_duplicates().assign(_seen=True)
    negatives = negatives.merge(seen, on=["group_id", "item_id"], how="left")
    negatives = negatives[negatives.pop("_seen").isna()]
    return negatives.reindex(columns=frame.columns)


# ------------------------------------------------------------------------------------ Wide & Deep


class _WideDeepNet(nn.Module):
    def __init__(self, vocab_sizes, n_numeric, wide_size, emb_in, cfg: WideDeepConfig):
        super().__init__()
        self.wide = nn.EmbeddingBag(wide_size, N_HEADS, mode="sum")
        nn.init.zeros_(self.wide.weight)
        self.wide_bias = nn.Parameter(torch.zeros(N_HEADS))
        self.embeddings = nn.ModuleList(nn.Embedding(v + 1, cfg.embedding_dim, padding_idx=0) for v in vocab_sizes)
        self.project = nn.Linear(emb_in, cfg.item_embedding_dim) if emb_in else None
        width = len(vocab_sizes) * cfg.embedding_dim + n_numeric + (cfg.item_embedding_dim if emb_in else 0)
        layers = []
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        self.deep = nn.Sequential(*layers, nn.Linear(width, N_HEADS))

    def forward(self, wide, cat, num, emb):
        parts = [e(cat[:, i]) for i, e in enumerate(self.embeddings)] + [num]
        if self.project is not None:
            parts.append(self.project(emb))
        return self.wide(wide) + self.wide_bias + self.deep(torch.cat(parts, dim=1))


def _pca(train: pd.DataFrame, spec: FeatureSpec, cfg: WideDeepConfig) -> dict | None:
    """Principal axes of the training items' vectors (items with one), scaled to unit variance:
    the deep part sees ``item_embedding_pca`` numbers per item instead of the full vector."""
    if not spec.embedding:
        return None
    items = _item_vectors(train, spec.embedding)[1]
    items = items[items.any(axis=1)]
    if not len(items):
        return None
    mean = items.mean(axis=0)
    _, sv, vt = np.linalg.svd(items - mean, full_matrices=False)
    k = min(cfg.item_embedding_pca, len(sv))
    scale = np.where(sv[:k] > 1e-9, sv[:k] / np.sqrt(len(items)), 1.0)
    return {"mean": mean, "basis": (vt[:k].T / scale).astype(np.float32)}


class WideDeepModel:
    """A fitted Wide & Deep ranker (picklable): spec, config, vocabularies, numeric scalers, the
    item-vector PCA (mean, basis [dim, item_embedding_pca]; fitted on the training items), net."""

    def __init__(self, spec: FeatureSpec, config: WideDeepConfig, vocab: dict, scaler: dict, pca: dict | None):
        self.spec, self.config, self.vocab, self.scaler, self.pca = spec, config, vocab, scaler, pca
        sizes = [len(vocab[c]) for c in spec.categorical]
        self.offsets = np.cumsum([0, *(s + 1 for s in sizes)])  # wide index: categoricals, then crosses
        emb_in = pca["basis"].shape[1] if pca else 0
        self.net = _WideDeepNet(sizes, 2 * len(spec.numeric), int(self.offsets[-1]) + config.wide_buckets, emb_in, config)
        self.history: list[dict] = []

    def _tensors(self, frame: pd.DataFrame) -> dict:
        """The frame encoded: wide/cat index tensors, numeric tensor, per-row item vectors."""
        spec = self.spec
        cat = np.zeros((len(frame), 0), np.int64)
        if spec.categorical:
            cat = np.stack([_encode(frame[c], self.vocab[c]) for c in spec.categorical], axis=1).astype(np.int64)
        crosses = _cross_index(frame, spec.crosses, self.config.wide_buckets) + self.offsets[-1]
        wide = np.concatenate([cat + self.offsets[:-1], crosses], axis=1)
        raw = _numeric(frame, spec.numeric)
        scaled = (raw - self.scaler["mean"]) / self.scaler["std"]
        num = np.concatenate([np.nan_to_num(scaled, nan=0.0), np.isnan(raw)], axis=1).astype(np.float32)
        out = {"wide": torch.from_numpy(wide), "cat": torch.from_numpy(cat), "num": torch.from_numpy(num)}
        if self.pca:
            rows, items = _item_vectors(frame, spec.embedding, self.pca["basis"].shape[0])
            reduced = ((items - self.pca["mean"]) @ self.pca["basis"]) * items.any(axis=1, keepdims=True)  # no vector -> 0
            out["emb"], out["emb_rows"] = torch.from_numpy(reduced.astype(np.float32)), torch.from_numpy(rows)
        return out

    def _forward(self, t: dict, rows) -> torch.Tensor:
        emb = t["emb"][t["emb_rows"][rows]] if self.pca else None
        return self.net(t["wide"][rows], t["cat"][rows], t["num"][rows], emb)

    def _heads(self, t: dict, n: int, batch_size: int = 8192) -> np.ndarray:
        self.net.eval()
        with torch.no_grad(), _threads(self.config.num_threads):
            out = [torch.sigmoid(self._forward(t, rows)) for rows in torch.arange(n).split(batch_size)]
        return torch.cat(out).double().numpy() if out else np.zeros((0, N_HEADS))

    def predict_heads(self, frame: pd.DataFrame) -> np.ndarray:
        """[n, 3] probabilities of click (label >= 1), cart (>= 2), purchase (>= 3)."""
        _check(frame, self.spec, "scoring", labelled=False)
        return self._heads(self._tensors(frame), len(frame))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Ranking scores: score_weights . head probabilities."""
        return self.predict_heads(frame) @ np.asarray(self.config.score_weights)


def fit_widedeep(train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, config: WideDeepConfig | dict | None = None) -> WideDeepModel:
    """Wide & Deep on ``train`` plus ``random_negatives`` sampled negatives per positive
    (``sample_negatives``), Adam on the weighted head BCEs, seeded mini-batches; early stopping on
    ``valid`` NDCG@10 (``patience`` epochs), best epoch restored. history: epoch, train_loss,
    valid_ndcg@10, seconds, is_best."""
    cfg = as_config(WideDeepConfig, config)
    _check(train, spec, "train")
    _check(valid, spec, "valid")
    train = pd.concat([train, sample_negatives(train, spec, cfg.random_negatives, cfg.seed)], ignore_index=True)
    vocab = {c: _vocab(train[c]) for c in spec.categorical}
    raw = _numeric(train, spec.numeric)
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(raw, axis=0)) if raw.size else np.zeros(0)
        std = np.nan_to_num(np.nanstd(raw, axis=0)) if raw.size else np.zeros(0)
    with _threads(cfg.num_threads):
        torch.manual_seed(cfg.seed)
        model = WideDeepModel(spec, cfg, vocab, {"mean": mean, "std": np.where(std > 0, std, 1.0)}, _pca(train, spec, cfg))
        t_train, t_valid = model._tensors(train), model._tensors(valid)
        labels = torch.from_numpy(train["label"].to_numpy(np.int64))
        targets = torch.stack([(labels >= h).float() for h in range(1, N_HEADS + 1)], dim=1)
        head_weights = torch.tensor(cfg.head_weights, dtype=torch.float32)
        optimizer = torch.optim.Adam(model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        shuffle = torch.Generator().manual_seed(cfg.seed)
        loss_fn = nn.BCEWithLogitsLoss(reduction="none")
        best, best_state, stale = None, None, 0
        for epoch in range(1, cfg.epochs + 1):
            started, total = time.perf_counter(), 0.0
            model.net.train()
            for rows in torch.randperm(len(train), generator=shuffle).split(cfg.batch_size):
                optimizer.zero_grad()
                loss = (loss_fn(model._forward(t_train, rows), targets[rows]).mean(0) * head_weights).sum()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            scores = model._heads(t_valid, len(valid)) @ np.asarray(cfg.score_weights)
            ndcg = group_ndcg(valid["group_id"], valid["label"], scores)
            improved = best is None or ndcg > best
            model.history.append(_epoch(epoch, total / len(train), ndcg, started, improved))
            if improved:
                best, best_state, stale = ndcg, copy.deepcopy(model.net.state_dict()), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        model.net.load_state_dict(best_state)
        model.net.eval()
    return model


# ------------------------------------------------------------------------------------ LambdaRank


def _lgb_features(frame: pd.DataFrame, spec: FeatureSpec, categories: dict) -> pd.DataFrame:
    missing = [c for c in (*spec.numeric, *spec.categorical) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    x = pd.DataFrame(_numeric(frame, spec.numeric), columns=list(spec.numeric), index=frame.index)
    for c in spec.categorical:
        x[c] = pd.Categorical(_tokens(frame[c]), categories=categories[c])  # unknown -> missing
    return x


@dataclass
class LambdaRankModel:
    """A fitted LambdaRank ranker: the booster, the spec, the training categories per categorical
    column, and history (valid ndcg@eval_at per boosting round)."""

    booster: object
    spec: FeatureSpec
    categories: dict
    history: list

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = _lgb_features(frame, self.spec, self.categories)
        if not len(x):  # LightGBM refuses an empty frame
            return np.zeros(0)
        return self.booster.predict(x, num_iteration=self.booster.best_iteration or None)


def fit_lambdarank(
    train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, config: LambdaRankConfig | dict | None = None
) -> LambdaRankModel:
    """LightGBM lambdarank with query groups from group_id (rows sorted by it here), early stopping
    on the valid ndcg@eval_at (callbacks=[lgb.early_stopping(n)])."""
    import lightgbm as lgb

    cfg = as_config(LambdaRankConfig, config)
    _check(train, spec, "train")
    _check(valid, spec, "valid")
    categories = {c: _vocab(train[c]) for c in spec.categorical}

    def dataset(frame, reference=None):
        frame = frame.sort_values("group_id", kind="stable")
        sizes = frame.groupby("group_id", sort=True).size().to_numpy()
        x = _lgb_features(frame, spec, categories)
        return lgb.Dataset(x, label=frame["label"].to_numpy(), group=sizes, reference=reference, free_raw_data=False)

    params = {**cfg.params, "objective": "lambdarank", "metric": "ndcg", "eval_at": [cfg.eval_at]}
    train_set = dataset(train)
    evals: dict = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=cfg.num_boost_round,
        valid_sets=[dataset(valid, train_set)],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False),
            lgb.record_evaluation(evals),
        ],
    )
    return LambdaRankModel(booster, spec, categories, list(evals["valid"][f"ndcg@{cfg.eval_at}"]))


# ------------------------------------------------------------------------------------ FM


class _FMNet(nn.Module):
    def __init__(self, size: int, factors: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.linear = nn.Embedding(size, 1)
        self.factors = nn.Embedding(size, factors)
        nn.init.zeros_(self.linear.weight)
        nn.init.normal_(self.factors.weight, std=0.01)

    def forward(self, idx):
        v = self.factors(idx)
        pair = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1)
        return self.bias + self.linear(idx).sum((1, 2)) + pair


class FMModel:
    """A fitted Factorization Machine: per field a vocabulary (categorical) or bucket edges
    (numeric), a global index offset, the NumPy tables bias, linear [size], factors [size, k], and
    the training items' encoded ``spec.item_columns`` fields (for ``score`` with bare item ids)."""

    def __init__(self, spec: FeatureSpec, config: FMConfig, vocab: dict, edges: dict):
        self.spec, self.config, self.vocab, self.edges = spec, config, vocab, edges
        sizes = [len(vocab[c]) + 1 for c in spec.categorical] + [len(edges[c]) + 2 for c in spec.numeric]
        self.fields = [*spec.categorical, *spec.numeric]
        self.offsets = np.cumsum([0, *sizes])[:-1]
        self.size = int(sum(sizes))
        self._lookup = {c: {token: i + 1 for i, token in enumerate(vocab[c])} for c in spec.categorical}
        self.bias, self.linear, self.factors = 0.0, np.zeros(self.size), np.zeros((self.size, config.factors))
        self.item_fields = [c for c in self.fields if c in spec.item_columns]
        self.item_rows: dict = {}  # item_id -> row of item_codes
        self.item_codes = np.zeros((0, len(self.item_fields)), np.int64)  # local (un-offset) indices
        self.history: list[dict] = []

    @property
    def user_fields(self) -> list[str]:
        """Fields ``score`` expects in ``user_row`` (``spec.user_columns``)."""
        return [c for c in self.fields if c in self.spec.user_columns]

    def _bucket(self, column: str, values) -> np.ndarray:
        x = np.asarray(values, dtype=float)
        return np.where(np.isnan(x), 0, np.searchsorted(self.edges[column], x, side="right") + 1)

    def _local(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.fields if c not in frame.columns]
        if missing:
            raise ValueError(f"scoring frame lacks columns {missing}")
        cols = [_encode(frame[c], self.vocab[c]) for c in self.spec.categorical]
        cols += [self._bucket(c, pd.to_numeric(frame[c], errors="coerce")) for c in self.spec.numeric]
        return np.stack(cols, axis=1).astype(np.int64) if cols else np.zeros((len(frame), 0), np.int64)

    def _values(self, column: str, values) -> np.ndarray:
        """Local indices of raw values (plain Python/NumPy: the request-time path)."""
        if column in self._lookup:
            lookup = self._lookup[column]
            return np.array([lookup.get(_token(v), 0) for v in values], np.int64)
        return self._bucket(column, [np.nan if v is None else v for v in values])

    def _kernel(self, idx: np.ndarray) -> np.ndarray:
        v = self.factors[idx]  # [n, fields, k]
        return self.bias + self.linear[idx].sum(1) + 0.5 * (v.sum(1) ** 2 - (v**2).sum(1)).sum(1)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """FM scores (logits; higher = better) of a pair frame's rows."""
        return self._kernel(self._local(frame) + self.offsets)

    def score(self, user_row: dict, candidates) -> np.ndarray:
        """Request-time scores of one user's candidates (a DataFrame with item_id and any feature
        columns, or a list of item_ids). Each field comes from the candidates' column when present,
        else from the stored training item table (``spec.item_columns``; unknown items -> index 0),
        else from ``user_row`` (the user's online features; None = missing). Plain dict/NumPy work,
        no pandas encoding; equals ``predict`` on the same rows."""
        if isinstance(candidates, pd.DataFrame):
            frame, ids = candidates, (list(candidates["item_id"]) if "item_id" in candidates.columns else None)
        else:
            frame, ids = None, list(candidates)
        n = len(ids) if frame is None else len(frame)
        rows = None
        idx = np.empty((n, len(self.fields)), np.int64)
        for j, c in enumerate(self.fields):
            if frame is not None and c in frame.columns:
                idx[:, j] = self._values(c, frame[c].to_numpy())
            elif c in self.item_fields and ids is not None:
                if rows is None:
                    rows = np.array([self.item_rows.get(i, -1) for i in ids], np.int64)
                idx[:, j] = np.where(rows >= 0, self.item_codes[rows, self.item_fields.index(c)], 0)
            elif c in user_row:
                idx[:, j] = self._values(c, [user_row[c]])[0]
            else:
                raise KeyError(f"feature {c!r} is neither a candidates column, a stored item field nor in user_row")
        return self._kernel(idx + self.offsets)

    def _set(self, net: _FMNet) -> None:
        self.bias = float(net.bias.detach()[0])
        self.linear = net.linear.weight.detach().double().numpy()[:, 0].copy()
        self.factors = net.factors.weight.detach().double().numpy().copy()


def _bpr_pairs(group: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(positive rows, a random label-0 row of the same group for each); positives of groups
    without a label-0 row are left out."""
    g = pd.factorize(group)[0]
    zeros = np.flatnonzero(label == 0)
    zeros = zeros[np.argsort(g[zeros], kind="stable")]
    count = np.bincount(g[zeros], minlength=g.max() + 1)
    start = np.cumsum(count) - count
    pos = np.flatnonzero((label > 0) & (count[g] > 0))
    pick = start[g[pos]] + (rng.random(len(pos)) * count[g[pos]]).astype(np.int64)
    return pos, zeros[pick]


def fit_fm(train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, config: FMConfig | dict | None = None) -> FMModel:
    """FM trained BPR (each epoch draws one label-0 partner per positive row in its group) or
    pointwise (BCE on label > 0), Adam, seeded; early stopping on ``valid`` NDCG@10, best epoch
    restored. history: epoch, train_loss, valid_ndcg@10, seconds, is_best."""
    cfg = as_config(FMConfig, config)
    _check(train, spec, "train")
    _check(valid, spec, "valid")
    qs = np.linspace(0, 1, cfg.numeric_bins + 1)[1:-1]
    edges = {}
    for c in spec.numeric:
        x = pd.to_numeric(train[c], errors="coerce").to_numpy(float)
        edges[c] = np.unique(np.quantile(x[~np.isnan(x)], qs)) if (~np.isnan(x)).any() else np.zeros(0)
    model = FMModel(spec, cfg, {c: _vocab(train[c]) for c in spec.categorical}, edges)
    local = model._local(train)
    items = ~train["item_id"].duplicated().to_numpy()
    model.item_rows = {item: i for i, item in enumerate(train["item_id"].to_numpy()[items])}
    model.item_codes = local[items][:, [model.fields.index(c) for c in model.item_fields]]
    idx, idx_valid = torch.from_numpy(local + model.offsets), model._local(valid) + model.offsets
    label = train["label"].to_numpy()
    rng = np.random.default_rng(cfg.seed)
    with _threads(cfg.num_threads):
        torch.manual_seed(cfg.seed)
        net = _FMNet(model.size, cfg.factors)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        target = torch.from_numpy((label > 0).astype(np.float32))
        best, best_state, stale = None, None, 0
        for epoch in range(1, cfg.epochs + 1):
            started, total = time.perf_counter(), 0.0
            if cfg.loss == "bpr":
                pos, neg = (torch.from_numpy(a) for a in _bpr_pairs(train["group_id"].to_numpy(), label, rng))
                if not len(pos):
                    raise ValueError("no train group has both a positive and a label-0 row: no BPR pairs (use loss: pointwise)")
            order = torch.from_numpy(rng.permutation(len(pos) if cfg.loss == "bpr" else len(train)))
            for rows in order.split(cfg.batch_size):
                optimizer.zero_grad()
                if cfg.loss == "bpr":
                    loss = -nn.functional.logsigmoid(net(idx[pos[rows]]) - net(idx[neg[rows]])).mean()
                else:
                    loss = nn.functional.binary_cross_entropy_with_logits(net(idx[rows]), target[rows])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            model._set(net)
            ndcg = group_ndcg(valid["group_id"], valid["label"], model._kernel(idx_valid))
            improved = best is None or ndcg > best
            model.history.append(_epoch(epoch, total / max(len(order), 1), ndcg, started, improved))
            if improved:
                best, best_state, stale = ndcg, copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        net.load_state_dict(best_state)
        model._set(net)
    return model
