"""propensity_gru: a GRU over each user's last N events, predicting the same purchase label as
propensity_lgbm.

Data: the dbt export ``mart_user_event_sequences`` ($EXPORTS_DIR/mart_user_event_sequences.parquet; one row per user
event: user_id, event_timestamp, event_type, category_l1, price_band). For every entity row
(user_id, event_timestamp = the prediction time, e.g. a label cutoff) ``build_sequences`` takes that
user's last ``n_last`` events *strictly before* the prediction time, so a sequence never sees its
label window. Each event becomes event type, category and price band ids (vocabularies fitted on the
training events; id 0 = padding, 1 = ``<unk>`` for values never seen in training) and two numeric
gaps: log1p(hours from the event to the prediction time) and log1p(hours since the user's previous
event).

    load_config(path=None, **overrides) -> SequenceConfig       hyperparameters (configs/propensity_gru.yaml)
    load_events(settings) -> DataFrame                         the mart_user_event_sequences export
    fit_vocab(events) -> dict[str, list[str]]                  token lists per categorical field
    build_sequences(events, entities, n_last=50, vocab=None, label_col=None) -> dict of arrays
    sequences_for(model, events, entities) -> dict              the same, with the model's vocab and n_last
    PropensityGRU(vocab, ...)                                   the torch.nn.Module (vocab stored on it)
    fit(train, valid, config=None) -> (model, history)          Adam + BCE, early stopping, fixed seed
    predict(model, sequences) -> ndarray of probabilities

The model is a plain ``nn.Module``: MLflow's pytorch flavor saves and loads it whole, and its
``state_dict`` carries the vocabularies and hyperparameters as extra state. This module imports
torch at import time (the module class needs it); callers that only sometimes train import it
inside functions.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ml.models.lifecycle.config import CONFIGS_DIR

MODEL_NAME = "propensity_gru"
EXPORT = "mart_user_event_sequences"
CONFIG_PATH = CONFIGS_DIR / f"{MODEL_NAME}.yaml"

FIELDS = ("event_type", "category_l1", "price_band")  # categorical inputs, one embedding each
PAD, UNK, NONE = "<pad>", "<unk>", "<none>"  # ids 0 and 1; NONE stands for a null value (searches)
PAD_ID, UNK_ID = 0, 1
ARRAYS = ("event_type", "category_l1", "price_band", "gap_to_cutoff", "gap_prev", "lengths", "n_events")
_MICROS_PER_HOUR = 3_600_000_000
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass(frozen=True)
class SequenceConfig:
    """Hyperparameters of propensity_gru (defaults = configs/propensity_gru.yaml)."""

    n_last: int = 50
    type_dim: int = 4
    category_dim: int = 8
    price_dim: int = 3
    hidden_size: int = 32
    dropout: float = 0.1
    epochs: int = 12
    patience: int = 2
    early_stopping: str = "log_loss"  # log_loss | roc_auc
    batch_size: int = 256
    lr: float = 0.003
    weight_decay: float = 0.0
    pos_weight: float | str | None = None  # None | "auto" | number
    seed: int = 42
    num_threads: int = 1

    def __post_init__(self):
        if self.early_stopping not in ("log_loss", "roc_auc"):
            raise ValueError(f"early_stopping must be log_loss or roc_auc, not {self.early_stopping!r}")
        if self.pos_weight is not None and self.pos_weight != "auto" and not float(self.pos_weight) > 0:
            raise ValueError(f"pos_weight must be null, 'auto' or a positive number, not {self.pos_weight!r}")
        for name in ("n_last", "epochs", "patience", "batch_size", "num_threads", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, **overrides) -> SequenceConfig:
    """The config file (default configs/propensity_gru.yaml) with keyword overrides; unknown keys raise."""
    import yaml

    values = yaml.safe_load(Path(path or CONFIG_PATH).read_text()) or {}
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(SequenceConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {MODEL_NAME} config keys {unknown}; known: {sorted(known)}")
    return SequenceConfig(**values)


def _as_config(config) -> SequenceConfig:
    if config is None:
        return load_config()
    if isinstance(config, SequenceConfig):
        return config
    return load_config(**dict(config))


# ----------------------------------------------------------------------------------------- data


def load_events(settings) -> pd.DataFrame:
    """The mart_user_event_sequences export (dbt), sorted by user_id, event_timestamp (UTC)."""
    path = Path(settings.exports_dir) / f"{EXPORT}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the warehouse first (`ecomml warehouse build`)")
    events = pd.read_parquet(path, columns=["user_id", "event_timestamp", *FIELDS])
    events = events[events["user_id"].notna() & events["event_timestamp"].notna()]
    events["event_timestamp"] = pd.to_datetime(events["event_timestamp"], utc=True)
    return events.reset_index(drop=True)


def _micros(values) -> np.ndarray:
    """Timestamps (naive = UTC) as int64 microseconds since the epoch."""
    stamps = pd.to_datetime(pd.Series(values), utc=True)
    if stamps.isna().any():
        raise ValueError("event_timestamp has nulls")
    return ((stamps - _EPOCH) // pd.Timedelta(microseconds=1)).to_numpy(np.int64)


def _tokens(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), NONE).astype(str)


def fit_vocab(events: pd.DataFrame) -> dict[str, list[str]]:
    """Token list per categorical field: [<pad>, <unk>, sorted values seen]; a null is the token <none>."""
    return {field: [PAD, UNK, *sorted(_tokens(events[field]).unique())] for field in FIELDS}


def _encode(values: pd.Series, tokens: list[str]) -> np.ndarray:
    lookup = {token: i for i, token in enumerate(tokens)}
    codes, uniques = pd.factorize(_tokens(values))
    ids = np.array([lookup.get(u, UNK_ID) for u in uniques], dtype=np.int32)  # one lookup per distinct value
    return ids[codes] if len(codes) else np.zeros(0, np.int32)


def build_sequences(
    events: pd.DataFrame,
    entities: pd.DataFrame,
    n_last: int = 50,
    vocab: dict[str, list[str]] | None = None,
    label_col: str | None = None,
    chunk_rows: int = 200_000,
) -> dict:
    """Each entity row's last ``n_last`` events strictly before its event_timestamp, as arrays.

    ``events``: user_id, event_timestamp, event_type, category_l1, price_band (any order).
    ``entities``: user_id, event_timestamp (the prediction time) and optionally ``label_col``.
    ``vocab``: token lists (from training); None fits them on the events before the latest entity
    time, which is what a training call wants. Rows come back in the order of ``entities``.

    Returns a dict: event_type, category_l1, price_band (int32 [n, n_last] ids), gap_to_cutoff and
    gap_prev (float32 [n, n_last], log1p hours), lengths (int64 [n], events used, <= n_last),
    n_events (int64 [n], all events before the cutoff), vocab, n_last, and label (float32 [n]) when
    ``label_col`` is given. Sequences are left-aligned in time order: the most recent event sits at
    position lengths - 1, padding (id 0, gap 0) after it.
    """
    if n_last < 1:
        raise ValueError("n_last must be >= 1")
    missing = [c for c in ("user_id", "event_timestamp", *FIELDS) if c not in events.columns]
    if missing:
        raise ValueError(f"events lack columns {missing}")
    if not {"user_id", "event_timestamp"} <= set(entities.columns):
        raise ValueError("entities need user_id and event_timestamp columns")

    ev_t = _micros(events["event_timestamp"])
    ent_t = _micros(entities["event_timestamp"])
    if vocab is None:
        cutoff = ent_t.max() if len(ent_t) else np.iinfo(np.int64).min
        vocab = fit_vocab(events.loc[ev_t < cutoff])
    missing_vocab = [f for f in FIELDS if f not in vocab]
    if missing_vocab:
        raise ValueError(f"vocab lacks fields {missing_vocab}")

    # One integer code per user across both frames, then the events sorted by (user, time).
    codes, _ = pd.factorize(pd.concat([events["user_id"], entities["user_id"]], ignore_index=True).astype(str))
    ev_code, ent_code = codes[: len(events)].astype(np.int64), codes[len(events) :].astype(np.int64)
    order = np.lexsort((ev_t, ev_code))
    ev_code, ev_t = ev_code[order], ev_t[order]
    ids = {f: _encode(events[f], vocab[f])[order] for f in FIELDS}

    # Dense time ranks over both frames make a sortable (user, time) key that cannot overflow:
    # searchsorted(side="left") on it counts a user's events strictly before the entity's time.
    ranks = np.unique(np.concatenate([ev_t, ent_t]), return_inverse=True)[1].astype(np.int64)
    width = np.int64(ranks.max() + 2) if len(ranks) else np.int64(1)
    ev_key = ev_code * width + ranks[: len(ev_t)]
    ent_key = ent_code * width + ranks[len(ev_t) :]
    end = np.searchsorted(ev_key, ent_key, side="left")
    start = np.searchsorted(ev_key, ent_code * width, side="left")
    n_events = (end - start).astype(np.int64)
    lengths = np.minimum(n_events, n_last)

    # Gap to the user's previous event (0 for a user's first event), in log1p hours.
    gap_prev_all = np.zeros(len(ev_t), np.float32)
    if len(ev_t) > 1:
        same_user = ev_code[1:] == ev_code[:-1]
        hours = np.maximum(ev_t[1:] - ev_t[:-1], 0) / _MICROS_PER_HOUR
        gap_prev_all[1:] = np.where(same_user, np.log1p(hours), 0.0)

    n = len(entities)
    out = {f: np.zeros((n, n_last), np.int32) for f in FIELDS}
    out["gap_to_cutoff"] = np.zeros((n, n_last), np.float32)
    out["gap_prev"] = np.zeros((n, n_last), np.float32)
    steps = np.arange(n_last)
    for lo in range(0, n if len(ev_t) else 0, chunk_rows):  # bounded temporaries for large populations
        hi = min(lo + chunk_rows, n)
        length = lengths[lo:hi, None]
        valid = steps[None, :] < length
        idx = np.where(valid, end[lo:hi, None] - length + steps[None, :], 0)
        for f in FIELDS:
            out[f][lo:hi] = np.where(valid, ids[f][idx], PAD_ID)
        hours = (ent_t[lo:hi, None] - ev_t[idx]) / _MICROS_PER_HOUR
        out["gap_to_cutoff"][lo:hi] = np.where(valid, np.log1p(np.maximum(hours, 0.0)), 0.0)
        out["gap_prev"][lo:hi] = np.where(valid, gap_prev_all[idx], 0.0)
    out["lengths"] = lengths
    out["n_events"] = n_events
    out["vocab"] = {f: list(vocab[f]) for f in FIELDS}
    out["n_last"] = n_last
    if label_col is not None:
        labels = pd.to_numeric(entities[label_col], errors="coerce").to_numpy(np.float32)
        if np.isnan(labels).any():
            raise ValueError(f"{label_col} has nulls: drop unlabelled rows before building training sequences")
        out["label"] = labels
    return out


def subset(sequences: dict, rows) -> dict:
    """The sequences of the given rows (boolean mask or positions)."""
    return {k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in sequences.items()}


# ---------------------------------------------------------------------------------------- model


class PropensityGRU(nn.Module):
    """Embeddings (event type, category, price band) + the two log gaps -> GRU -> last hidden state
    (packed, so padding never enters it) + log1p(event count) -> MLP -> purchase logit."""

    def __init__(
        self,
        vocab: dict[str, list[str]],
        n_last: int = 50,
        type_dim: int = 4,
        category_dim: int = 8,
        price_dim: int = 3,
        hidden_size: int = 32,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.vocab = {f: list(vocab[f]) for f in FIELDS}
        self.n_last = int(n_last)
        self.hparams = dict(
            n_last=n_last,
            type_dim=type_dim,
            category_dim=category_dim,
            price_dim=price_dim,
            hidden_size=hidden_size,
            dropout=dropout,
        )
        self.type_emb = nn.Embedding(len(self.vocab["event_type"]), type_dim, padding_idx=PAD_ID)
        self.category_emb = nn.Embedding(len(self.vocab["category_l1"]), category_dim, padding_idx=PAD_ID)
        self.price_emb = nn.Embedding(len(self.vocab["price_band"]), price_dim, padding_idx=PAD_ID)
        self.gru = nn.GRU(type_dim + category_dim + price_dim + 2, hidden_size, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size + 2, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 1))

    @classmethod
    def from_config(cls, vocab: dict[str, list[str]], config: SequenceConfig) -> "PropensityGRU":
        return cls(
            vocab,
            n_last=config.n_last,
            type_dim=config.type_dim,
            category_dim=config.category_dim,
            price_dim=config.price_dim,
            hidden_size=config.hidden_size,
            dropout=config.dropout,
        )

    def forward(self, event_type, category_l1, price_band, gap_to_cutoff, gap_prev, lengths, n_events):
        """Logits [batch] from id tensors [batch, steps], gap tensors [batch, steps], lengths/n_events [batch]."""
        x = torch.cat(
            [
                self.type_emb(event_type),
                self.category_emb(category_l1),
                self.price_emb(price_band),
                gap_to_cutoff.unsqueeze(-1) / 5.0,  # log1p hours: ~0..9 over a year
                gap_prev.unsqueeze(-1) / 5.0,
            ],
            dim=-1,
        )
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.gru(packed)
        has_events = (lengths > 0).float().unsqueeze(1)
        last = hidden[-1] * has_events  # no history: a zero state
        static = torch.cat([torch.log1p(n_events.float()).unsqueeze(1) / 5.0, has_events], dim=1)
        return self.head(torch.cat([last, static], dim=1)).squeeze(1)

    # The vocabularies and hyperparameters ride along in state_dict (torch.save / load_state_dict).
    def get_extra_state(self):
        return {"vocab": self.vocab, "n_last": self.n_last, "hparams": self.hparams}

    def set_extra_state(self, state):
        self.vocab = {f: list(state["vocab"][f]) for f in FIELDS}
        self.n_last = int(state["n_last"])
        self.hparams = dict(state["hparams"])


def sequences_for(model: PropensityGRU, events: pd.DataFrame, entities: pd.DataFrame, label_col: str | None = None) -> dict:
    """Sequences for scoring with ``model``: its vocabularies and its n_last."""
    return build_sequences(events, entities, n_last=model.n_last, vocab=model.vocab, label_col=label_col)


def _tensors(sequences: dict) -> dict:
    out = {f: torch.from_numpy(np.ascontiguousarray(sequences[f])).long() for f in FIELDS}
    for name in ("gap_to_cutoff", "gap_prev"):
        out[name] = torch.from_numpy(np.ascontiguousarray(sequences[name], dtype=np.float32))
    out["lengths"] = torch.from_numpy(np.asarray(sequences["lengths"], dtype=np.int64))
    out["n_events"] = torch.from_numpy(np.asarray(sequences["n_events"], dtype=np.int64))
    return out


def _batch(tensors: dict, rows) -> dict:
    lengths = tensors["lengths"][rows]
    steps = max(int(lengths.max()), 1) if len(lengths) else 1  # trim the batch's all-padding tail
    batch = {k: tensors[k][rows, :steps] for k in (*FIELDS, "gap_to_cutoff", "gap_prev")}
    batch["lengths"] = lengths
    batch["n_events"] = tensors["n_events"][rows]
    return batch


def _check_vocab(model: PropensityGRU, sequences: dict) -> None:
    if sequences.get("vocab") != model.vocab:
        raise ValueError("sequences were built with another vocabulary: use sequences_for(model, events, entities)")


def predict(model: PropensityGRU, sequences: dict, batch_size: int = 2048) -> np.ndarray:
    """Purchase probabilities, one per sequence row (float64)."""
    _check_vocab(model, sequences)
    tensors = _tensors(sequences)
    n = len(tensors["lengths"])
    by_length = torch.argsort(tensors["lengths"], stable=True)  # similar lengths share a batch: less padding
    out = torch.zeros(n, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            rows = by_length[lo : lo + batch_size]
            out[rows] = torch.sigmoid(model(**_batch(tensors, rows))).double()
    model.train(was_training)
    return out.numpy()


def _batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled mini-batches of rows; within pools of 32 batches rows are grouped by length so a batch
    is trimmed to little padding. Deterministic for a seeded generator."""
    order = torch.randperm(len(lengths), generator=generator)
    pool = batch_size * 32
    batches = []
    for lo in range(0, len(order), pool):
        rows = order[lo : lo + pool]
        rows = rows[torch.argsort(lengths[rows], stable=True)]
        batches.extend(rows.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def _metrics(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    auc = roc_auc_score(y, p) if len(np.unique(y)) == 2 else float("nan")
    return {"log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])), "roc_auc": float(auc)}


def fit(train: dict, valid: dict, config: SequenceConfig | dict | None = None) -> tuple[PropensityGRU, list[dict]]:
    """Train on ``train`` sequences (with label), early-stop on ``valid``; returns (model, history).

    Adam on BCE-with-logits (optional pos_weight), shuffled mini-batches, seeded (torch.manual_seed
    and a seeded shuffle: the same data and config give the same model). After each epoch the
    validation log loss and ROC AUC are recorded; training stops after ``patience`` epochs without a
    better ``early_stopping`` metric and the best epoch's weights are restored. torch's thread count
    is set to ``num_threads`` for the call and restored afterwards. history: one dict per epoch
    (epoch, train_loss, valid_log_loss, valid_roc_auc, seconds, is_best).
    """
    cfg = _as_config(config)
    for name, part in (("train", train), ("valid", valid)):
        if "label" not in part:
            raise ValueError(f"{name} sequences have no label: build them with label_col=...")
        if not len(part["label"]):
            raise ValueError(f"{name} sequences are empty")
    if valid["vocab"] != train["vocab"]:
        raise ValueError("valid sequences must be built with the train vocabulary (vocab=train['vocab'])")
    y = train["label"].astype(np.float32)
    positives = float(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError(f"train labels have a single class ({int(positives)} positives of {len(y)})")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        torch.manual_seed(cfg.seed)
        model = PropensityGRU.from_config(train["vocab"], cfg)
        if cfg.pos_weight is None:
            pos_weight = None
        elif cfg.pos_weight == "auto":
            pos_weight = torch.tensor((len(y) - positives) / positives)
        else:
            pos_weight = torch.tensor(float(cfg.pos_weight))
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        shuffle = torch.Generator().manual_seed(cfg.seed)
        tensors = _tensors(train)
        targets = torch.from_numpy(y)
        y_valid = valid["label"].astype(np.float32)
        higher_is_better = cfg.early_stopping == "roc_auc"
        best_value, best_state, stale, history = None, None, 0, []
        for epoch in range(1, cfg.epochs + 1):
            started = time.perf_counter()
            model.train()
            total = 0.0
            for rows in _batches(tensors["lengths"], cfg.batch_size, shuffle):
                optimizer.zero_grad()
                loss = loss_fn(model(**_batch(tensors, rows)), targets[rows])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            scores = _metrics(y_valid, predict(model, valid))
            value = scores[cfg.early_stopping]
            if math.isnan(value):  # a single-class validation set has no AUC: fall back to log loss
                value, higher_is_better = scores["log_loss"], False
            improved = best_value is None or (value > best_value if higher_is_better else value < best_value)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / len(y),
                    "valid_log_loss": scores["log_loss"],
                    "valid_roc_auc": scores["roc_auc"],
                    "seconds": time.perf_counter() - started,
                    "is_best": improved,
                }
            )
            if improved:
                best_value, best_state, stale = value, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        model.load_state_dict(best_state)
        model.eval()
    finally:
        torch.set_num_threads(previous_threads)
    return model, history
