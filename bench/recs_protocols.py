"""The recommender's candidates + rankers (``ml.models.recs``) under the offline protocols of
``bench.protocols``, on any interactions frame (mart_interactions: user_id, item_id, session_id,
event_type, event_timestamp) and item catalogue (mart_item_catalogue). Nothing here knows a dataset.

    candidate_ranker(items, config, model=...) -> build(train, valid, mapping) -> score_fn
        a two-stage model for ``protocols.evaluate_recbole(extra=...)``: candidates from the train
        part, a ranker (LambdaRank, Wide & Deep or the FM) trained on them with the valid part as
        labels, then candidates from train + valid ranked for the test part (full ranking: every
        item outside a user's candidates ranks below all of them, by popularity)
    candidate_pairs(history, users, items, config, exclude=...) -> (pairs, CutoffFrames)
        recs.cutoff_candidates + recs.pair_features over a whole history, masked pairs left out
    fit_ranker(model, train, valid, config)             recs_lgbm | recs_widedeep | recs_fm
    source_recall(train, valid, items, config) / scored_recall(info, test)   candidate recall
    pick_window_days(inter, choices=(7, 14, 28), min_users=200) -> int
        the shortest label window whose last one holds at least ``min_users`` users
    time_split_evaluation(inter, items, config, ...) -> TimeSplitResult
        the project's own time split (weekly cutoffs, recs.training_frames) without Feast or MLflow:
        rankers against popularity and item-kNN on the test window, as recs.train reports them

Grades: an interaction's label is recs.GRADES of its event type (view 1, add_to_cart 2, purchase 3);
a user x item pair keeps its strongest.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bench.protocols import IndexMap, ScoreFn
from ml.models import recs

KEYS = ["user_id", "item_id"]
# A random split has no time order: recency and time decay carry no signal there, so candidate_ranker
# reads a user's whole train history with equal weights and popularity undecayed (half-life of
# ~270 years), and co-visitation keeps longer sessions and more neighbours per item. The protocol masks
# every item a user has, so the repeat source ("buy again") has nothing to offer there.
UNORDERED_CANDIDATES = {
    "half_life_days": 1e5,
    "recency_decay": 1.0,
    "recent_items": 100,
    "max_items_per_session": 100,
    "top_n_per_item": 100,
    "n_repeat": 0,
}
FITS = {recs.MODEL_NAME: ("fit_widedeep", "widedeep"), recs.LGBM_NAME: ("fit_lambdarank", "lambdarank"), recs.FM_NAME: ("fit_fm", "fm")}


def grades(frame: pd.DataFrame) -> pd.DataFrame:
    """[user_id, item_id, label]: the strongest grade of each pair (unknown event types dropped)."""
    graded = frame.assign(label=frame["event_type"].map(recs.GRADES)).dropna(subset=["label"])
    return graded.groupby(KEYS, as_index=False)["label"].max().astype({"label": "int64"})


def _anti_join(frame: pd.DataFrame, exclude: pd.DataFrame) -> pd.DataFrame:
    marked = frame.merge(exclude[KEYS].drop_duplicates(), on=KEYS, how="left", indicator=True)
    return marked[marked.pop("_merge").eq("left_only")]


def candidate_pairs(
    history: pd.DataFrame,
    users,
    items: pd.DataFrame,
    config: dict,
    item_matrix=None,
    exclude: pd.DataFrame | None = None,
    oversample: int = 3,
) -> tuple[pd.DataFrame, recs.CutoffFrames]:
    """Candidates and pair features for ``users`` from the whole of ``history`` (a random split has
    no time cut: the cutoff is the day after its last interaction and the look-back covers it all).
    ``exclude``: pairs that may not be candidates (items the protocol masks); the sources are asked
    for ``oversample`` x their usual numbers, the excluded pairs dropped, and the merged list cut back
    to ``candidates.n_total`` in its own order, so masked items do not take the slots."""
    cutoff = recs.lake_end(history)
    cfg = copy.deepcopy(config)
    span = (cutoff - history["event_timestamp"].min()) / pd.Timedelta(days=1)
    cfg["split"] = {**cfg["split"], "history_days": float(np.ceil(span)) + 1}
    n_total = int(cfg["candidates"]["n_total"])
    if exclude is not None and oversample > 1:
        for key in ("n_covis", "n_content", "n_popular", "n_total"):
            cfg["candidates"][key] = int(cfg["candidates"][key]) * oversample
    cf = recs.cutoff_candidates(history, items, users, cutoff, cfg, item_matrix)
    cands = cf.candidates if exclude is None else _anti_join(cf.candidates, exclude)
    cands = cands.sort_values(["user_id", "rank"], kind="stable")
    cands = cands.assign(rank=cands.groupby("user_id", sort=False).cumcount() + 1)
    cands = cands[cands["rank"] <= n_total].reset_index(drop=True)
    pairs = recs.pair_features(cands, cf.history, items, cutoff, item_matrix, cf.own_history)
    pairs["event_timestamp"] = cutoff
    categorical = list(config["features"]["categorical"]) + list(config.get("fm_features", {}).get("categorical", []))
    return recs.categorize(pairs, categorical), cf


def fit_ranker(model: str, train: pd.DataFrame, valid: pd.DataFrame, config: dict):
    """Fit ``model`` (recs_lgbm, recs_widedeep or recs_fm) on labelled pair frames with its config
    section; the spec is recs.feature_spec (recs.fm_spec for the FM)."""
    from ml.models.recs import ranking

    if model not in FITS:
        raise ValueError(f"model must be one of {sorted(FITS)}, not {model!r}")
    fit, section = FITS[model]
    spec = recs.fm_spec(train, config) if model == recs.FM_NAME else recs.feature_spec(train, config)
    return getattr(ranking, fit)(train, valid, spec, config[section])


def _recall(pairs: pd.DataFrame, truth: pd.DataFrame) -> float:
    """Share of the truth pairs that are candidates (micro-averaged)."""
    if not len(truth):
        return float("nan")
    return float(truth[KEYS].merge(pairs[KEYS], on=KEYS).shape[0] / len(truth))


def candidate_ranker(
    items: pd.DataFrame,
    config: dict | None = None,
    model: str = recs.LGBM_NAME,
    item_matrix=None,
    *,
    candidates: dict | None = UNORDERED_CANDIDATES,
    stop_share: float = 0.2,
    seed: int = 0,
    test_history: str = "train+valid",
    info: dict | None = None,
) -> Callable[[pd.DataFrame, pd.DataFrame, IndexMap], ScoreFn]:
    """A builder for ``protocols.evaluate_recbole(extra={name: builder})``.

    Stage 1 (fit): candidates for the users with valid pairs from the train part (train pairs
    excluded), labels = their valid pairs' grades (0 otherwise), users whose candidates miss every
    valid pair left out; ``stop_share`` of the users (seeded) hold the ranker's early-stopping set.
    Stage 2 (score): candidates for every user from ``test_history`` ("train+valid", or "train" to
    give the ranker exactly the input the protocol's other models see), train and valid pairs
    excluded; the ranker's scores order a user's candidates, every other item follows in order of
    its popularity in that history. ``info`` (a dict) receives rows, positives, candidate recall of
    the valid and the test-time candidates (the latter filled by ``score_fn``'s first call), and
    seconds per stage. ``candidates``: overrides of the config's candidates section
    (UNORDERED_CANDIDATES by default)."""
    if test_history not in ("train+valid", "train"):
        raise ValueError(f"test_history must be 'train+valid' or 'train', not {test_history!r}")
    config = copy.deepcopy(config or recs.load_config())
    config["candidates"] = {**config["candidates"], **(candidates or {})}
    info = info if info is not None else {}

    def build(train: pd.DataFrame, valid: pd.DataFrame, mapping: IndexMap) -> ScoreFn:
        t0 = time.perf_counter()
        truth = grades(valid)
        users = np.sort(truth["user_id"].unique())
        pairs, _ = candidate_pairs(train, users, items, config, item_matrix, exclude=train)
        info["valid_candidate_recall"] = _recall(pairs, truth)
        pairs = pairs.merge(truth, on=KEYS, how="left")
        pairs["label"] = pairs["label"].fillna(0).astype("int64")
        pairs = pairs[pairs.groupby("user_id")["label"].transform("max") > 0]
        labelled = pairs["user_id"].unique()
        stop = set(np.random.default_rng(seed).choice(labelled, max(1, int(round(len(labelled) * stop_share))), replace=False))
        pairs = pairs.assign(group_id=pd.factorize(pairs["user_id"])[0]).sort_values(["group_id", "rank"], kind="stable")
        is_stop = pairs["user_id"].isin(stop)
        t1 = time.perf_counter()
        ranker = fit_ranker(model, pairs[~is_stop].reset_index(drop=True), pairs[is_stop].reset_index(drop=True), config)
        t2 = time.perf_counter()
        info.update(
            fit_rows=int((~is_stop).sum()),
            stop_rows=int(is_stop.sum()),
            fit_positives=int((pairs["label"] > 0).sum()),
            fit_users=int(len(labelled)),
            frames_seconds=round(t1 - t0, 1),
            fit_seconds=round(t2 - t1, 1),
        )
        info["history"] = getattr(ranker, "history", None)

        seen = pd.concat([train[KEYS], valid[KEYS]], ignore_index=True)
        history = pd.concat([train, valid], ignore_index=True) if test_history == "train+valid" else train
        scored, _ = candidate_pairs(history, mapping.users, items, config, item_matrix, exclude=seen)
        scored = scored[scored["item_id"].isin(mapping.items)]
        raw = np.asarray(ranker.predict(scored), dtype=np.float64)
        lo, hi = (raw.min(), raw.max()) if len(raw) else (0.0, 1.0)
        values = 2.0 + (raw - lo) / max(hi - lo, 1e-12)  # candidates in [2, 3] ...
        candidates = sp.csr_matrix(
            (values, (mapping.user_index(scored["user_id"]), mapping.item_index(scored["item_id"]))),
            shape=(mapping.n_users, mapping.n_items),
        )
        counts = np.asarray(mapping.matrix(history).sum(axis=0), dtype=np.float64).ravel()
        fallback = counts / (counts.max() + 1.0)  # ... every other item in [0, 1), by popularity
        info.update(score_rows=int(len(scored)), score_seconds=round(time.perf_counter() - t2, 1), test_history=test_history)
        info["_scored"] = scored[KEYS]

        def score_fn(user_idx: np.ndarray) -> np.ndarray:
            dense = candidates[user_idx].toarray()
            return np.where(dense > 0, dense, fallback[None, :])

        return score_fn

    return build


def scored_recall(info: dict, test: pd.DataFrame) -> float:
    """Share of the test pairs among the stage-2 candidates of a built ``candidate_ranker``."""
    return _recall(info["_scored"], test)


def source_recall(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    items: pd.DataFrame,
    config: dict | None = None,
    item_matrix=None,
    candidates: dict | None = UNORDERED_CANDIDATES,
    k: int = 100,
) -> pd.DataFrame:
    """candidate_ranker's stage-1 candidates (train history, train pairs excluded) scored against the
    valid pairs: recall@k of each source alone and merged (candidates.recall_by_source)."""
    from ml.models.recs import candidates as cand

    config = copy.deepcopy(config or recs.load_config())
    config["candidates"] = {**config["candidates"], **(candidates or {})}
    truth = grades(valid)
    pairs, _ = candidate_pairs(train, np.sort(truth["user_id"].unique()), items, config, item_matrix, exclude=train)
    return cand.recall_by_source(pairs, truth, k=k)


# ------------------------------------------------------------------------------------ time split


def pick_window_days(inter: pd.DataFrame, choices=(7, 14, 28), min_users: int = 200) -> int:
    """The shortest label window (days) whose last window before the lake's end holds at least
    ``min_users`` users (the largest choice when none does): enough test users for a stable mean."""
    end = recs.lake_end(inter)
    for days in sorted(choices):
        if inter.loc[inter["event_timestamp"] >= end - pd.Timedelta(days=days), "user_id"].nunique() >= min_users:
            return int(days)
    return int(max(choices))


@dataclass
class TimeSplitResult:
    metrics: pd.DataFrame
    candidate_recall: pd.DataFrame
    cold: pd.DataFrame
    cutoffs: dict
    rows: dict
    seconds: dict = field(default_factory=dict)


def time_split_evaluation(
    inter: pd.DataFrame,
    items: pd.DataFrame,
    config: dict | None = None,
    item_matrix=None,
    models=(recs.LGBM_NAME, recs.MODEL_NAME),
    say: Callable[[str], None] | None = None,
) -> TimeSplitResult:
    """recs.train's split and test, frame-level: ``recs.training_frames`` without the Feast service
    (pair features only), ``models`` fitted on the train cutoffs with early stopping on the valid
    one, then the test window's full ranking of the candidate set against recs.baselines
    (popularity, item-kNN), candidate recall per source and the cold-start cuts."""
    from ml.models.recs import candidates as cand

    say = say or (lambda _m: None)
    config = {**(config or recs.load_config()), "feature_service": None}
    t0 = time.perf_counter()
    frames = recs.training_frames(None, config, inter, items, item_matrix, say)
    seconds = {"frames": time.perf_counter() - t0}
    fitted = {}
    for name in models:
        t = time.perf_counter()
        fitted[name] = fit_ranker(name, frames["train"], frames["valid"], config)
        seconds[f"fit_{name}"] = time.perf_counter() - t
    truth, cf = frames["test_truth"], frames["test_cf"]
    truth = truth[truth["label"] >= int(config["evaluation"]["min_label"])]
    test = frames["test"]
    rankings = {name: test[KEYS].assign(score=m.predict(test)) for name, m in fitted.items()}
    rankings.update(recs.baselines(cf, truth["user_id"].unique()))
    metrics, cold = recs.evaluate_rankings(rankings, truth, cf.history, int(items["item_id"].nunique()))
    recall = cand.recall_by_source(cf.candidates, truth, k=100)
    seconds["total"] = time.perf_counter() - t0
    rows = {k: int(len(frames[k])) for k in ("train", "valid", "test")}
    rows["test_users"] = int(truth["user_id"].nunique())
    return TimeSplitResult(metrics, recall, cold, frames["cutoffs"], rows, seconds)
