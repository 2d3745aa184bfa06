"""Recommendation: candidates -> rankers (``recs_widedeep``, ``recs_lgbm``, ``recs_fm``) -> batch top-K
served from Feast, plus the item embeddings that semantic search and cold-start candidates share.

    embed_items(settings)  item texts (dbt export mart_item_catalogue) -> all-MiniLM-L6-v2 embeddings,
                           cached by text hash -> $SCORES_DIR/item_embeddings.parquet (Feast view
                           item_embeddings)
    train(settings)        interactions (dbt export mart_interactions) -> weekly cutoffs (time split:
                           train cutoffs, one validation and one test cutoff; the week after a cutoff
                           holds its labels) -> candidates from the history before each cutoff
                           (co-visitation, popularity by segment, content kNN) -> pair features
                           (history crosses + user and item features through the Feast service
                           recs_widedeep_v1 at the cutoff) -> Wide & Deep, LightGBM LambdaRank and a
                           Factorization Machine -> full ranking of the candidate set on the test
                           week against popularity and item-kNN baselines (cold-start users and
                           items apart) -> semantic search vs BM25 on search -> purchase pairs ->
                           report, MLflow runs and registered versions, each promoted if not worse
                           than its champion on the same test pairs.
    score(settings)        the champion ranker ranks every active user's candidates at the lake's
                           end; business rules (no recent purchases, no out-of-stock items, at most
                           M per brand) -> top K per user and a ``__fallback__`` list -> one
                           partition per scoring date -> Feast view user_recommendations.
    recommend(...)         one user's list from the online store (fallback for unknown users);
    Reranker(...)          request-time re-ranking of a user's stored list by the FM with the user's
                           online features (one Feast online read).

The frame-level stages (``cutoff_pairs``, ``pair_features``, ``feature_spec``) carry no I/O, so the
MovieLens protocol (``ml.models.protocols``) and tests reuse them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

MODEL_NAME = "recs_widedeep"
LGBM_NAME = "recs_lgbm"
FM_NAME = "recs_fm"
RANKERS = (MODEL_NAME, LGBM_NAME, FM_NAME)
CONFIG_PATH = Path(__file__).parent / "configs" / "recs.yaml"
INTERACTIONS_MART = "mart_interactions"
ITEMS_MART = "mart_item_catalogue"
SEARCH_MART = "mart_search_purchases"
EMBEDDINGS_FILE = "item_embeddings.parquet"
SCORE_VIEW = "user_recommendations"
FALLBACK_USER = "__fallback__"
GRADES = {"view": 1, "add_to_cart": 2, "purchase": 3}
DAY = 86400


class RecsError(RuntimeError):
    """Training or scoring cannot proceed (missing mart, no interactions, ...); nothing was written."""


def load_config(path: Path | str | None = None, **overrides) -> dict:
    config = yaml.safe_load(Path(path or CONFIG_PATH).read_text())
    config.update(overrides)
    return config


# --- inputs ----------------------------------------------------------------------------------------


def _export(settings: Settings, name: str, what: str) -> "pd.DataFrame":
    import pandas as pd

    path = Path(settings.exports_dir) / f"{name}.parquet"
    if not path.exists():
        raise RecsError(f"{path} is missing: build the warehouse first (dbt model {name}, {what})")
    return pd.read_parquet(path)


def load_interactions(settings: Settings) -> "pd.DataFrame":
    import pandas as pd

    inter = _export(settings, INTERACTIONS_MART, "the interactions")
    inter["event_timestamp"] = pd.to_datetime(inter["event_timestamp"], utc=True)
    return inter


def load_items(settings: Settings) -> "pd.DataFrame":
    return _export(settings, ITEMS_MART, "the item catalogue")


def embeddings_path(settings: Settings) -> Path:
    return Path(settings.scores_dir) / EMBEDDINGS_FILE


def embed_items(
    settings: Settings, items: "pd.DataFrame | None" = None, progress: bool = True, echo: Callable[[str], None] | None = print
) -> dict:
    """Embed every item text (cached by text hash) and rewrite the Feast source of ``item_embeddings``."""
    from ml.models import embeddings

    say = echo or (lambda _m: None)
    items = load_items(settings) if items is None else items
    frame, stats = embeddings.item_embeddings(
        items[["item_id", "item_text"]], Path(settings.data_dir) / "cache" / "item_text_embeddings.parquet", progress=progress
    )
    path = embeddings.write_embeddings(frame, embeddings_path(settings), datetime.now(timezone.utc))
    say(f"item embeddings: {len(frame):,} items ({stats}) -> {path}")
    return {"path": str(path), "rows": len(frame), **stats}


def load_item_matrix(settings: Settings) -> "tuple[np.ndarray, np.ndarray] | None":
    """(item_ids, L2-normalised matrix) from the embeddings file; None when there are none."""
    import numpy as np
    import pandas as pd

    path = embeddings_path(settings)
    if not path.exists():
        return None
    frame = pd.read_parquet(path, columns=["item_id", "embedding"])
    if frame.empty:
        return None
    return frame["item_id"].to_numpy(dtype=object), np.vstack(frame["embedding"].to_numpy()).astype(np.float32)


# --- frames: cutoffs, labels, candidates, features -------------------------------------------------


def lake_end(inter: "pd.DataFrame") -> "pd.Timestamp":
    """Midnight UTC after the last interaction day: "now" for a daily-fed lake."""
    return inter["event_timestamp"].max().floor("D") + _days(1)


def _days(n: float) -> "pd.Timedelta":
    import pandas as pd

    return pd.Timedelta(days=n)


def split_cutoffs(end: "pd.Timestamp", config: dict) -> dict:
    """Weekly cutoffs counted back from ``end``: test = end - window, valid = test - window, train the
    ``n_train`` before. The window after a cutoff holds its labels, so no label leaks across cutoffs."""
    split = config["split"]
    window = _days(int(split["window_days"]))
    test = end - window
    valid = test - window
    train = [valid - window * (i + 1) for i in range(int(split["n_train"]))][::-1]
    return {"train": train, "valid": valid, "test": test, "window_days": int(split["window_days"])}


def window_truth(inter: "pd.DataFrame", start: "pd.Timestamp", days: int) -> "pd.DataFrame":
    """[user_id, item_id, label]: the strongest interaction grade (view 1, cart 2, purchase 3) of each
    user x item in [start, start + days)."""
    in_window = inter[(inter["event_timestamp"] >= start) & (inter["event_timestamp"] < start + _days(days))]
    graded = in_window.assign(label=in_window["event_type"].map(GRADES)).dropna(subset=["label"])
    return graded.groupby(["user_id", "item_id"], as_index=False)["label"].max().astype({"label": "int64"})


def user_segments(history: "pd.DataFrame", items: "pd.DataFrame") -> "pd.Series":
    """user_id -> the category_l1 the user interacted with most (the popularity segment)."""
    joined = history[["user_id", "item_id"]].merge(items[["item_id", "category_l1"]], on="item_id").dropna(subset=["category_l1"])
    if joined.empty:
        import pandas as pd

        return pd.Series(dtype=object)
    counts = joined.groupby(["user_id", "category_l1"]).size().rename("n").reset_index()
    top = counts.sort_values(["user_id", "n", "category_l1"], ascending=[True, False, True]).drop_duplicates("user_id")
    return top.set_index("user_id")["category_l1"]


@dataclass
class CutoffFrames:
    """Everything computed from the history before one cutoff (reused for training and scoring)."""

    cutoff: "pd.Timestamp"
    history: "pd.DataFrame"
    candidates: "pd.DataFrame"
    pop_table: "pd.DataFrame"
    covis: "pd.DataFrame"
    segments: "pd.Series"
    seconds: dict = field(default_factory=dict)
    own_history: "pd.DataFrame | None" = None  # the users' whole history before the cutoff (repeat source, rebuy features)


def cutoff_candidates(
    inter: "pd.DataFrame", items: "pd.DataFrame", users, cutoff: "pd.Timestamp", config: dict, item_matrix=None
) -> CutoffFrames:
    """Candidates for ``users`` from the interactions strictly before ``cutoff``: co-visitation,
    popularity and content read the last ``split.history_days``; the repeat source ("buy again")
    and the rebuy features read each user's whole history."""
    from ml.models import candidates as cand

    cfg = cand.as_candidate_config(config.get("candidates"))
    lookback = _days(float(config["split"].get("history_days", 180)))
    before = inter[inter["event_timestamp"] < cutoff]
    history = before[before["event_timestamp"] >= cutoff - lookback]
    own = before[before["user_id"].isin(users)]
    t = {}
    t0 = time.perf_counter()
    covis = cand.covisitation(
        history,
        event_weights=cfg.event_weights,
        max_items_per_session=cfg.max_items_per_session,
        order_window_days=cfg.order_window_days,
        top_n_per_item=cfg.top_n_per_item,
    )
    t["covisitation"] = time.perf_counter() - t0
    segments = user_segments(history, items)
    pop_table = cand.popularity(
        history,
        cutoff,
        half_life_days=cfg.half_life_days,
        segments=segments,
        n=max(cfg.n_popular * 3, cfg.n_total),
        segment_prior=cfg.segment_prior,
        event_weights=cfg.event_weights,
    )
    t0 = time.perf_counter()
    cands = cand.generate(users, history, cutoff, cfg, covis, pop_table, segments, item_matrix, own_history=own)
    t["generate"] = time.perf_counter() - t0
    return CutoffFrames(cutoff, history, cands, pop_table, covis, segments, t, own)


ITEM_ATTRS = ("category_l1", "brand", "price_band")


def pair_features(
    cands: "pd.DataFrame",
    history: "pd.DataFrame",
    items: "pd.DataFrame",
    cutoff: "pd.Timestamp",
    item_matrix=None,
    own_history: "pd.DataFrame | None" = None,
) -> "pd.DataFrame":
    """Candidate pairs plus features known at ``cutoff``: item attributes, the user's history with the
    item, its category and brand (shares), the user's top category and brand (wide crosses), item age,
    the rebuy features (``rebuy_features`` over ``own_history``, default ``history``) and the item's
    text embedding (zeros when it has none, flagged by ``has_text``)."""
    import numpy as np
    import pandas as pd

    attrs = items[["item_id", *ITEM_ATTRS, "price", "launch_date"]].copy()
    frame = cands.merge(attrs, on="item_id", how="left")
    for col in ITEM_ATTRS:
        frame[col] = frame[col].fillna("unknown").astype(str)
    launch = pd.to_datetime(frame.pop("launch_date"), utc=True)
    frame["item_age_days"] = ((cutoff - launch).dt.total_seconds() / DAY).astype(float)

    hist = history[["user_id", "item_id", "event_type", "event_timestamp"]].merge(
        items[["item_id", "category_l1", "brand"]], on="item_id", how="left"
    )
    n_user = hist.groupby("user_id").size().rename("user_history_count")
    ui = (
        hist.assign(is_purchase=(hist["event_type"] == "purchase").astype(float))
        .groupby(["user_id", "item_id"])
        .agg(
            user_item_count=("item_id", "size"),
            user_item_purchased=("is_purchase", "max"),
            user_item_last=("event_timestamp", "max"),
        )
        .reset_index()
    )
    frame = frame.merge(ui, on=["user_id", "item_id"], how="left")
    frame["days_since_user_item"] = (cutoff - frame.pop("user_item_last")).dt.total_seconds() / DAY
    frame[["user_item_count", "user_item_purchased"]] = frame[["user_item_count", "user_item_purchased"]].fillna(0.0)
    for col, name in (("category_l1", "user_category_share"), ("brand", "user_brand_share")):
        per = hist.dropna(subset=[col]).groupby(["user_id", col]).size().rename("n").reset_index()
        per = per.merge(n_user.reset_index(), on="user_id")
        per[name] = per["n"] / per["user_history_count"]
        frame = frame.merge(per[["user_id", col, name]], on=["user_id", col], how="left")
        frame[name] = frame[name].fillna(0.0)
        top = per.sort_values(["user_id", "n", col], ascending=[True, False, True]).drop_duplicates("user_id").set_index("user_id")[col]
        frame[f"user_top_{col}"] = frame["user_id"].map(top).fillna("none").astype(str)
    frame["user_history_count"] = frame["user_id"].map(n_user).fillna(0).astype(float)
    frame = rebuy_features(frame, history if own_history is None else own_history, history, cutoff)
    if item_matrix is not None:
        ids, matrix = item_matrix
        index = pd.Series(np.arange(len(ids)), index=ids)
        pos = frame["item_id"].map(index)
        frame["has_text"] = pos.notna().astype(float)
        padded = np.vstack([matrix, np.zeros((1, matrix.shape[1]), np.float32)])
        rows = padded[pos.fillna(len(ids)).astype(int).to_numpy()]
        frame["item_embedding"] = list(rows)
    return frame


def rebuy_features(frame: "pd.DataFrame", own: "pd.DataFrame", history: "pd.DataFrame", cutoff: "pd.Timestamp") -> "pd.DataFrame":
    """The repurchase cycle, from purchases before ``cutoff`` counted by distinct purchase day:
    per pair ``user_item_purchase_days``, ``days_since_user_item_purchase``, ``user_item_cycle_days``
    (mean gap between the user's purchase days of the item; NaN below two) and
    ``user_item_cycle_ratio`` (days since / cycle: ~1 = due again); per user (``own``, the whole
    history) ``user_purchase_days``, ``user_days_since_purchase`` and ``user_repeat_share`` (share of
    the user's item purchase days that rebought an item); per item (``history``, all users)
    ``item_repeat_rate`` (share of the item's buyers who bought it on two or more days)."""

    def days(frame):
        bought = frame.loc[frame["event_type"].eq("purchase"), ["user_id", "item_id", "event_timestamp"]]
        return bought.assign(day=bought["event_timestamp"].dt.floor("D")).drop_duplicates(["user_id", "item_id", "day"])

    mine = days(own)
    pairs = mine.groupby(["user_id", "item_id"]).agg(n=("day", "size"), first=("day", "min"), last=("day", "max")).reset_index()
    pairs["user_item_purchase_days"] = pairs["n"].astype(float)
    pairs["days_since_user_item_purchase"] = (cutoff - pairs["last"]).dt.total_seconds() / DAY
    span = (pairs["last"] - pairs["first"]).dt.total_seconds() / DAY
    pairs["user_item_cycle_days"] = (span / (pairs["n"] - 1)).where(pairs["n"] > 1)
    pairs["user_item_cycle_ratio"] = pairs["days_since_user_item_purchase"] / pairs["user_item_cycle_days"].clip(lower=1.0)
    cols = ["user_item_purchase_days", "days_since_user_item_purchase", "user_item_cycle_days", "user_item_cycle_ratio"]
    frame = frame.merge(pairs[["user_id", "item_id", *cols]], on=["user_id", "item_id"], how="left")
    frame["user_item_purchase_days"] = frame["user_item_purchase_days"].fillna(0.0)
    per_user = pairs.groupby("user_id").agg(n=("n", "sum"), items=("n", "size"), last=("last", "max"))
    user_days = mine.groupby("user_id")["day"].nunique()
    frame["user_purchase_days"] = frame["user_id"].map(user_days).fillna(0.0).astype(float)
    frame["user_days_since_purchase"] = frame["user_id"].map((cutoff - per_user["last"]).dt.total_seconds() / DAY).astype(float)
    frame["user_repeat_share"] = frame["user_id"].map((per_user["n"] - per_user["items"]) / per_user["n"]).astype(float)
    everyone = days(history).groupby(["item_id", "user_id"]).size()
    rate = (everyone > 1).groupby(level="item_id").mean()
    frame["item_repeat_rate"] = frame["item_id"].map(rate).astype(float)
    return frame


def add_feast_features(settings: Settings, pairs: "pd.DataFrame", service: str, store=None) -> "pd.DataFrame":
    """User and item features of ``service`` at each pair's cutoff (``event_timestamp``), retrieved
    per entity (distinct user x cutoff, item x cutoff) and joined back: ``user_*`` / ``item_*``."""
    from ml.features.repo import get_store
    from ml.features.training import build_training_set

    store = store or get_store(settings)
    out = pairs
    for key, prefix in (("user_id", "user_"), ("item_id", "item_")):
        entities = pairs[[key, "event_timestamp"]].drop_duplicates().reset_index(drop=True)
        got = build_training_set(settings, entities, service, store=store, keys=(key,), chunk_rows=None)
        renamed = {c: _prefixed(c, prefix) for c in got.columns if c not in (key, "event_timestamp")}
        out = out.merge(got.rename(columns=renamed), on=[key, "event_timestamp"], how="left")
    return out


# Pair-level features (the user x item relation), neither a user nor an item attribute: a random
# negative (ranking.sample_negatives) does not copy them.
PAIR_COLUMNS = (
    "source",
    "n_sources",
    "covis_score",
    "knn_score",
    "repeat_score",
    "content_score",
    "pop_score",
    "user_item_count",
    "user_item_purchased",
    "days_since_user_item",
    "user_category_share",
    "user_brand_share",
    "user_item_purchase_days",
    "days_since_user_item_purchase",
    "user_item_cycle_days",
    "user_item_cycle_ratio",
)
ITEM_COLUMNS = (*ITEM_ATTRS, "price", "item_age_days", "has_text")


def feature_spec(pairs: "pd.DataFrame", config: dict):
    """The ranking FeatureSpec over the columns a pair frame has: numeric features are every numeric
    column that is not a key or the label; categoricals and crosses come from the config; item and
    user columns (copied onto random negatives) are the item attributes / ``item_*`` and ``user_*``
    columns that are not pair-level."""
    import pandas as pd

    from ml.models.ranking import FeatureSpec

    skip = {"user_id", "item_id", "group_id", "label", "event_timestamp", "rank", "item_embedding"}
    categorical = [c for c in config["features"]["categorical"] if c in pairs.columns]
    numeric = [
        c
        for c in pairs.columns
        if c not in skip and c not in categorical and (pd.api.types.is_numeric_dtype(pairs[c]) or pd.api.types.is_bool_dtype(pairs[c]))
    ]
    used = set(numeric) | set(categorical)
    items = [c for c in used if c in ITEM_COLUMNS or c.startswith("item_")]
    users = [c for c in used if c.startswith("user_") and c not in PAIR_COLUMNS]
    crosses = [tuple(x) for x in config["features"]["crosses"] if all(c in pairs.columns for c in x)]
    embedding = "item_embedding" if "item_embedding" in pairs.columns else None
    return FeatureSpec(
        numeric=numeric,
        categorical=categorical,
        crosses=crosses,
        embedding=embedding,
        item_columns=sorted(items),
        user_columns=sorted(users),
    )


def fm_spec(pairs: "pd.DataFrame", config: dict):
    """The FM's FeatureSpec: only what is known at request time (the user's online features and the
    item attributes the model stores)."""
    from ml.models.ranking import FeatureSpec

    fm = config["fm_features"]
    categorical = [c for c in fm["categorical"] if c in pairs.columns]
    numeric = [c for c in fm["numeric"] if c in pairs.columns]
    used = categorical + numeric
    return FeatureSpec(
        numeric=numeric,
        categorical=categorical,
        item_columns=[c for c in used if c in ITEM_COLUMNS],
        user_columns=[c for c in used if c.startswith("user_")],
    )


def categorize(pairs: "pd.DataFrame", categorical: list[str]) -> "pd.DataFrame":
    for col in categorical:
        if col in pairs.columns:
            pairs[col] = pairs[col].astype(object).where(pairs[col].notna(), "unknown").astype(str)
    return pairs


def cutoff_pairs(
    inter: "pd.DataFrame",
    items: "pd.DataFrame",
    cutoff: "pd.Timestamp",
    config: dict,
    item_matrix=None,
    *,
    max_users: int | None = None,
    only_positive_groups: bool = True,
    seed: int = 0,
):
    """One cutoff's labelled pair frame: users with interactions in the window after ``cutoff`` (at
    most ``max_users``, sampled), their candidates and features, ``label`` = the window's grade (0 when
    not interacted). Returns (pairs, truth of those users, CutoffFrames)."""
    import numpy as np

    truth = window_truth(inter, cutoff, int(config["split"]["window_days"]))
    users = np.sort(truth["user_id"].unique())
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        truth = truth[truth["user_id"].isin(users)]
    cf = cutoff_candidates(inter, items, users, cutoff, config, item_matrix)
    pairs = pair_features(cf.candidates, cf.history, items, cutoff, item_matrix, cf.own_history)
    pairs = pairs.merge(truth, on=["user_id", "item_id"], how="left")
    pairs["label"] = pairs["label"].fillna(0).astype("int64")
    if only_positive_groups:
        positive = pairs.groupby("user_id")["label"].transform("max") > 0
        pairs = pairs[positive]
    pairs["event_timestamp"] = cutoff
    return pairs.reset_index(drop=True), truth.reset_index(drop=True), cf


def _with_groups(frames: list["pd.DataFrame"]) -> "pd.DataFrame":
    import pandas as pd

    pairs = pd.concat(frames, ignore_index=True)
    pairs["group_id"] = pd.factorize(pairs["user_id"].astype(str) + "|" + pairs["event_timestamp"].astype(str))[0]
    return pairs.sort_values(["group_id", "rank"], kind="stable").reset_index(drop=True)


def with_new_item_groups(pairs: "pd.DataFrame") -> "pd.DataFrame":
    """The pairs plus a second query group per user x cutoff holding only the items the user never
    bought: the served list mixes rebuys and new items, the new-items list (``recs show --new-only``)
    ranks new items alone, and one ranker trained on both kinds of group serves both (measured on
    Online Retail II: new-items Recall@20 0.085 -> 0.091 at the same repeats Recall@10)."""
    import pandas as pd

    new = pairs[pairs["user_item_purchase_days"].eq(0)]
    new = new[new.groupby("group_id")["label"].transform("max") > 0]
    new = new.assign(group_id=new["group_id"] + int(pairs["group_id"].max()) + 1)
    return pd.concat([pairs, new], ignore_index=True).sort_values(["group_id", "rank"], kind="stable").reset_index(drop=True)


def predict(model, pairs: "pd.DataFrame") -> "np.ndarray":
    """Scores of any ranker (recs_widedeep, recs_lgbm, recs_fm) for the pair rows."""
    return model.predict(pairs)


def _ranked(pairs: "pd.DataFrame", scores) -> "pd.DataFrame":
    return pairs[["user_id", "item_id"]].assign(score=scores)


@dataclass
class Evaluation:
    """Test-week results: metrics per model/baseline, per-source candidate recall, cold-start cuts."""

    metrics: "pd.DataFrame"
    candidate_recall: "pd.DataFrame"
    cold: "pd.DataFrame"
    search: "pd.DataFrame | None" = None
    purchases: dict | None = None  # purchase_evaluation: served lists vs the plain references


def evaluate_rankings(
    rankings: dict[str, "pd.DataFrame"], truth: "pd.DataFrame", history: "pd.DataFrame", n_items: int, ks=(10, 20)
) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """Full ranking of each model's scored pairs against the test week's truth (users without any
    ranked item count as misses). Returns (metrics per model, cold-start metrics per model): cold
    users have no history before the cutoff; cold items had no interaction before it."""
    import pandas as pd

    from ml.models.rank_metrics import ranking_metrics, top_k

    popularity = history.groupby("item_id").size()
    known_users = set(history["user_id"].unique())
    cold_user_truth = truth[~truth["user_id"].isin(known_users)]
    cold_item_truth = truth[~truth["item_id"].isin(popularity.index)]
    rows, cold = [], []
    for name, scored in rankings.items():
        top = top_k(scored, max(ks))
        rows.append({"model": name, **ranking_metrics(top, truth, ks=ks, item_popularity=popularity, n_items=n_items)})
        for cut, cut_truth in (("cold_users", cold_user_truth), ("cold_items", cold_item_truth)):
            if len(cut_truth):
                m = ranking_metrics(top[top["user_id"].isin(cut_truth["user_id"])], cut_truth, ks=ks)
                cold.append(
                    {
                        "model": name,
                        "cut": cut,
                        "n_users": m.get("n_users"),
                        **{k: m[k] for k in (f"recall@{ks[0]}", f"recall@{ks[-1]}", f"ndcg@{ks[0]}") if k in m},
                    }
                )
    return pd.DataFrame(rows).set_index("model"), pd.DataFrame(cold)


def baselines(cf: CutoffFrames, users, k: int = 100) -> dict[str, "pd.DataFrame"]:
    """Popularity (the overall recency-decayed list for everyone) and item-kNN as a textbook has it
    (RecBole's ItemKNN: cosine of the binary user x item columns of the history, 100 neighbours per
    item, every item scored; ``recs_protocols.itemknn_rankings``) as scored pairs."""
    from ml.models import candidates as cand
    from ml.models.recs_protocols import itemknn_rankings

    popular = cand.popular_candidates(users, cf.pop_table, None, n=k)
    knn = itemknn_rankings(cf.history, users, k=k)
    return {"popularity": popular[["user_id", "item_id", "score"]], "item_knn": knn[["user_id", "item_id", "score"]]}


def evaluate_search(settings: Settings, config: dict) -> "pd.DataFrame | None":
    """Semantic search vs BM25 on the lake's search -> purchase pairs (None without searches)."""
    import pandas as pd

    from ml.models import search

    path = Path(settings.exports_dir) / f"{SEARCH_MART}.parquet"
    if not path.exists() or not embeddings_path(settings).exists():
        return None
    pairs = pd.read_parquet(path)
    if pairs.empty:
        return None
    embeddings = pd.read_parquet(embeddings_path(settings))
    if embeddings.empty:  # a catalogue without item text: nothing to search semantically
        return None
    cfg = config.get("search", {})
    ids = pairs["search_id"].drop_duplicates()
    if len(ids) > int(cfg.get("max_eval_searches", 2000)):
        ids = ids.sample(int(cfg.get("max_eval_searches", 2000)), random_state=0)
    pairs = pairs[pairs["search_id"].isin(ids)]
    return search.compare(pairs, embeddings, load_items(settings), k=int(cfg.get("k", 10)))


# --- training --------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    versions: dict
    decisions: dict
    evaluation: Evaluation
    report: Path
    rows: dict
    seconds: dict
    served_model: str = LGBM_NAME  # config serving.model: the ranker whose champion `score` serves

    def summary(self) -> dict:
        cols = ["recall@10", "recall@20", "ndcg@10", "hit_rate@10", "coverage@20"]
        metrics = self.evaluation.metrics
        return {
            "model": self.served_model,
            "versions": self.versions,
            "promoted": {k: bool(getattr(d, "promoted", False)) for k, d in self.decisions.items()},
            "rows": self.rows,
            "test": {m: {c: round(float(metrics.loc[m, c]), 4) for c in cols if c in metrics.columns} for m in metrics.index},
            "candidate_recall@100": {
                r["source"]: round(float(r["recall@100"]), 4) for r in self.evaluation.candidate_recall.to_dict("records")
            },
            "search": None if self.evaluation.search is None else self.evaluation.search.round(4).to_dict("index"),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "report": str(self.report),
        }


def training_frames(settings: Settings, config: dict, inter, items, item_matrix, say) -> dict:
    """Pair frames of every cutoff (train, valid, test) with Feast features, and the test cutoff's
    truth and candidate frames (for baselines and cold-start cuts)."""
    cuts = split_cutoffs(lake_end(inter), config)
    first = inter["event_timestamp"].min()
    if cuts["train"][0] - first < _days(int(config["split"]["window_days"])):
        raise RecsError(
            f"the interactions span {first:%Y-%m-%d}..{lake_end(inter):%Y-%m-%d} is too short for "
            f"{len(cuts['train'])} training weeks + validation + test; lower split.n_train"
        )
    split = config["split"]
    out: dict[str, Any] = {"cutoffs": cuts}
    for name, cutoffs in (("train", cuts["train"]), ("valid", [cuts["valid"]]), ("test", [cuts["test"]])):
        parts = []
        for i, c in enumerate(cutoffs):
            test = name == "test"
            pairs, truth, cf = cutoff_pairs(
                inter,
                items,
                c,
                config,
                item_matrix,
                max_users=None if test else int(split["max_users_per_cutoff"]),
                only_positive_groups=not test,
                seed=int(split.get("seed", 0)) + i,
            )
            parts.append(pairs)
            if test:
                out["test_truth"], out["test_cf"] = truth, cf
        pairs = _with_groups(parts)
        if not test and split.get("new_item_groups", True):
            pairs = with_new_item_groups(pairs)
        if config.get("feature_service"):
            pairs = add_feast_features(settings, pairs, config["feature_service"])
        out[name] = categorize(pairs, list(config["features"]["categorical"]) + list(config["fm_features"]["categorical"]))
        say(f"recs: {name} {len(pairs):,} pairs, {pairs['group_id'].nunique():,} user-weeks, positives {int((pairs['label'] > 0).sum()):,}")
    return out


def _champion_ndcg(settings: Settings, model_name: str, test: "pd.DataFrame", truth, history, n_items) -> float | None:
    from ml.models import registry

    try:
        model, _ = registry.load_champion(settings, model_name)
    except registry.ModelLoadError:
        return None
    try:
        metrics, _ = evaluate_rankings({model_name: _ranked(test, predict(model, test))}, truth, history, n_items)
    except Exception as exc:  # noqa: BLE001 - a champion that cannot score these features is replaced
        log.warning("champion %s cannot score the test pairs (%s): treated as absent", model_name, exc)
        return None
    return float(metrics.loc[model_name, "ndcg@10"])


def train(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> TrainResult:
    """Train, evaluate, report, register the three rankers; promote each if not worse (module doc)."""
    from ml.models import candidates as cand
    from ml.models import ranking, registry

    say = echo or (lambda _m: None)
    config = config or load_config()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    inter, items = load_interactions(settings), load_items(settings)
    if inter.empty:
        raise RecsError(f"{INTERACTIONS_MART} is empty: no interactions to learn from")
    embed_items(settings, items, progress=False, echo=say)  # cached by text hash: only new texts are encoded
    item_matrix = load_item_matrix(settings)
    if item_matrix is None:
        log.warning("no item text in %s: content candidates and semantic search are skipped", ITEMS_MART)
        say(f"recs: warning: no item has text in {ITEMS_MART}: content candidates, text features and semantic search are skipped")
    frames = training_frames(settings, config, inter, items, item_matrix, say)
    seconds["frames"] = time.perf_counter() - t0
    train_pairs, valid_pairs, test_pairs = frames["train"], frames["valid"], frames["test"]
    rows = {k: int(len(frames[k])) for k in ("train", "valid", "test")}

    specs = {MODEL_NAME: feature_spec(train_pairs, config), FM_NAME: fm_spec(train_pairs, config)}
    specs[LGBM_NAME] = specs[MODEL_NAME]
    models, fit_seconds = {}, {}
    for name, fit, section in (
        (MODEL_NAME, ranking.fit_widedeep, "widedeep"),
        (LGBM_NAME, ranking.fit_lambdarank, "lambdarank"),
        (FM_NAME, ranking.fit_fm, "fm"),
    ):
        model_spec = specs[name]
        t = time.perf_counter()
        models[name] = fit(train_pairs, valid_pairs, model_spec, config[section])
        fit_seconds[name] = seconds[f"fit_{name}"] = time.perf_counter() - t
        say(f"recs: {name} fitted in {fit_seconds[name]:.0f} s")

    truth, cf = frames["test_truth"], frames["test_cf"]
    min_label = int(config["evaluation"]["min_label"])
    eval_truth = truth[truth["label"] >= min_label]
    users = eval_truth["user_id"].unique()
    n_items = int(items["item_id"].nunique())
    rankings = {name: _ranked(test_pairs, predict(m, test_pairs)) for name, m in models.items()}
    rankings.update(baselines(cf, users))
    metrics, cold = evaluate_rankings(rankings, eval_truth, cf.history, n_items)
    recall = cand.recall_by_source(cf.candidates, eval_truth, k=100)
    t = time.perf_counter()
    search_table = evaluate_search(settings, config)
    seconds["search_eval"] = time.perf_counter() - t
    t = time.perf_counter()
    purchases = purchase_evaluation(
        settings, config, inter, items, models, frames["cutoffs"]["test"], frames["cutoffs"]["window_days"], item_matrix
    )
    seconds["purchase_eval"] = time.perf_counter() - t
    evaluation = Evaluation(metrics, recall, cold, search_table, purchases)
    say("recs test metrics:\n" + metrics[["recall@10", "recall@20", "ndcg@10", "hit_rate@10", "coverage@20"]].round(4).to_string())
    if purchases["table"] is not None:
        from ml.models.recs_eval import pivot

        say(f"recs: {purchases['note']} (recall):\n" + pivot(purchases["table"]).round(4).to_string())
    else:
        say(f"recs: {purchases['note']}")

    versions, decisions = {}, {}
    promotion = config["promotion"]
    report_run = None
    for name, model in models.items():
        model_spec = specs[name]
        params = {
            **{f"{k}": v for k, v in config[{MODEL_NAME: "widedeep", LGBM_NAME: "lambdarank", FM_NAME: "fm"}[name]].items()},
            **{f"rows_{k}": v for k, v in rows.items()},
            **{f"cutoff_{k}": str(v) for k, v in frames["cutoffs"].items() if k != "train"},
            "train_cutoffs": ",".join(f"{c:%Y-%m-%d}" for c in frames["cutoffs"]["train"]),
            "fit_seconds": round(fit_seconds[name], 1),
        }
        features = list(model_spec.numeric) + list(model_spec.categorical) + ([model_spec.embedding] if model_spec.embedding else [])
        with registry.training_run(
            settings,
            name,
            params=params,
            feature_service=config["feature_service"],
            features=features,
            snapshot={"interactions_rows": len(inter), "items": n_items},
        ) as run:
            registry.log_metrics({k: v for k, v in metrics.loc[name].items() if v == v}, prefix="test_")
            for base in ("popularity", "item_knn"):
                registry.log_metrics({k: v for k, v in metrics.loc[base].items() if v == v}, prefix=f"{base}_test_")
            if purchases["table"] is not None:
                for r in purchases["table"].query("segment == 'all'").to_dict("records"):
                    if r["model"] == name or r["model"] not in models:  # its own row and the references'
                        prefix = "" if r["model"] == name else f"{r['model']}_"
                        registry.log_metrics({f"{prefix}{r['protocol']}_recall_at_{r['k']}": r["recall"]})
                registry.log_metrics({"served_coverage": purchases["coverage"][name]})
            # the rankers are plain Python objects (a torch net or a LightGBM booster plus vocabularies,
            # scalers and categories): pickled whole, loaded back as the same class from ml.models.ranking
            version = registry.log_model(model, name, flavor="sklearn", serialization_format="cloudpickle")
            decision = registry.promote_if_not_worse(
                settings,
                name,
                version.version,
                metric=promotion["metric"],
                value=float(metrics.loc[name, "ndcg@10"]),
                higher_is_better=True,
                tolerance=float(promotion.get("tolerance", 0.0)),
                champion_value=_champion_ndcg(settings, name, test_pairs, eval_truth, cf.history, n_items),
                losses=purchases["losses"].get(name),
            )
            versions[name], decisions[name] = str(version.version), decision
            if name == MODEL_NAME:
                report_run = run.info.run_id
        say(f"recs: {name} version {version.version} {'promoted' if decision.promoted else 'not promoted'} ({decision.reason})")
    # the report, once every ranker is registered and decided, on the Wide & Deep run (where it always lived)
    path = _report(settings, config, evaluation, frames, rows, models, versions, decisions, fit_seconds, report_run)
    registry.log_report(settings, path, run_id=report_run)
    seconds["total"] = time.perf_counter() - t0
    return TrainResult(versions, decisions, evaluation, path, rows, seconds, config["serving"]["model"])


def _report(settings, config, evaluation: Evaluation, frames, rows, models, versions, decisions, fit_seconds, run_id) -> Path:
    from ml.models.report import Report, report_dir

    cuts = frames["cutoffs"]
    report = Report(f"{MODEL_NAME} — recommendations (candidates + rankers)", subtitle=f"MLflow run {run_id}")
    report.text(
        f"Time split by weekly cutoffs: train {', '.join(f'{c:%Y-%m-%d}' for c in cuts['train'])}; valid "
        f"{cuts['valid']:%Y-%m-%d}; test {cuts['test']:%Y-%m-%d} (labels: interactions in the {cuts['window_days']} days "
        f"after each cutoff; features: history before it + Feast service `{config['feature_service']}`). Pairs: {rows}. "
        f"Test: full ranking of the candidate set for every user active in the test week (truth = label >= "
        f"{config['evaluation']['min_label']}); users whose items the candidates miss count as misses."
    )
    report.table("Test metrics (models and baselines)", evaluation.metrics.round(4))
    report.table("Candidate recall@100 per source and merged", evaluation.candidate_recall.round(4))
    if len(evaluation.cold):
        report.table("Cold start: users without history / truth items without earlier interactions", evaluation.cold.round(4))
    purchases = evaluation.purchases or {}
    if purchases.get("table") is not None:
        from ml.models.recs_eval import pivot

        report.text(
            f"Purchase protocols: {purchases['note']}. repeats = every item bought in the horizon (Recall@10); new_items = items "
            f"the customer never bought before, with the served new-items list (Recall@20). Segments: new customers (no purchase "
            f"before), returning, heavy (>= {purchases['heavy_days']} purchase days before, the top fifth). References: popularity "
            f"(distinct buyers, last 90 days), item-kNN (cosine over customers' purchases), own history (buy again, by purchase "
            f"days then recency); every list is completed with popular items. Served coverage (customers with a list of their own): "
            + ", ".join(f"{m} {v:.1%}" for m, v in purchases["coverage"].items())
            + "."
        )
        report.table("Purchase protocols: recall per segment (served lists and plain references)", pivot(purchases["table"]).round(4))
        report.table("Purchase protocols: users per cell", pivot(purchases["table"], "n_users"))
        lost = {m: "; ".join(v) for m, v in purchases["losses"].items() if v}
        if not purchases.get("gate_applied", True):
            report.text("Reference gate: not applied (too few buyers in the test window to tell).")
        else:
            report.text(
                "Reference gate: "
                + (
                    "every model beats every reference on both protocols."
                    if not lost
                    else " / ".join(f"{m} not promoted: {v}" for m, v in lost.items())
                )
            )
    elif purchases.get("note"):
        report.text(f"Purchase protocols: {purchases['note']}.")
    if evaluation.search is not None:
        report.table("Semantic search vs BM25 on search -> purchase pairs", evaluation.search.round(4))
    for name, model in models.items():
        history = getattr(model, "history", None)
        if history and isinstance(history[0], dict):  # the torch rankers: one row per epoch
            import pandas as pd

            report.table(f"{name}: training history", pd.DataFrame(history).round(4))
        elif history:  # LambdaRank: the validation NDCG per boosting round
            best = max(range(len(history)), key=history.__getitem__)
            report.text(
                f"{name}: validation NDCG@{config['lambdarank'].get('eval_at', 10)} {history[best]:.4f} at round {best + 1} "
                f"of {len(history)} (early stopping)."
            )
    report.text(
        f"Served: `recs score` ranks with the champion of {config['serving']['model']}. "
        + "; ".join(
            f"{n}: version {versions[n]}, fit {fit_seconds[n]:.0f} s, "
            f"{'promoted' if decisions[n].promoted else 'not promoted'} ({decisions[n].reason})"
            for n in models
        )
    )
    return report.write(report_dir(settings, MODEL_NAME, run_id), model=MODEL_NAME, run_id=run_id)


# --- batch scoring ---------------------------------------------------------------------------------


def apply_rules(
    scored: "pd.DataFrame", items: "pd.DataFrame", history: "pd.DataFrame", now: "pd.Timestamp", rules: dict, k: int
) -> "pd.DataFrame":
    """Business rules after ranking, then the top ``k`` per user: drop items the user bought in the
    last ``exclude_purchased_days``, items out of stock (is_in_stock false; unknown stock is kept),
    and keep at most ``max_per_brand`` items per brand. Input [user_id, item_id, score, ...]."""
    frame = scored.merge(items[["item_id", "brand", "is_in_stock"]], on="item_id", how="left")
    frame = frame[frame["is_in_stock"].ne(False)]
    days = rules.get("exclude_purchased_days")
    if days:
        bought = history[(history["event_type"] == "purchase") & (history["event_timestamp"] >= now - _days(float(days)))]
        frame = frame.merge(bought[["user_id", "item_id"]].drop_duplicates().assign(_bought=True), on=["user_id", "item_id"], how="left")
        frame = frame[frame.pop("_bought").isna()]
    frame = frame.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    cap = rules.get("max_per_brand")
    if cap:
        brand = frame["brand"].fillna("__item__" + frame["item_id"].astype(str))
        frame = frame[frame.groupby([frame["user_id"], brand]).cumcount() < int(cap)]
    frame = frame[frame.groupby("user_id").cumcount() < k]
    return frame.drop(columns=["brand", "is_in_stock"]).assign(rank=lambda f: f.groupby("user_id").cumcount() + 1).reset_index(drop=True)


def serving_users(inter: "pd.DataFrame", now: "pd.Timestamp", active_days) -> list:
    """The users who get a personal list at ``now``: everyone with an interaction before it, or (when
    ``active_days`` is set) only those active in the last ``active_days``."""
    before = inter[inter["event_timestamp"] < now]
    if active_days:
        before = before[before["event_timestamp"] >= now - _days(float(active_days))]
    return sorted(before["user_id"].dropna().unique())


@dataclass
class Served:
    """What ``score`` serves, frame-level: the top K per user after the rules (``lists``), the same
    restricted to items the user never bought (``new_lists``), both [user_id, item_id, score, source,
    rank], and the candidate frames they came from."""

    lists: "pd.DataFrame"
    new_lists: "pd.DataFrame"
    cf: CutoffFrames


def serving_pairs(
    inter: "pd.DataFrame",
    items: "pd.DataFrame",
    now: "pd.Timestamp",
    config: dict,
    item_matrix=None,
    settings: Settings | None = None,
    users=None,
) -> "tuple[pd.DataFrame, CutoffFrames]":
    """The candidates of ``users`` (default ``serving_users``) at ``now`` with their pair features
    (and the Feast features when ``settings`` is given and the config names a feature service)."""
    users = serving_users(inter, now, config["serving"].get("active_days")) if users is None else sorted(users)
    cf = cutoff_candidates(inter, items, users, now, config, item_matrix)
    pairs = pair_features(cf.candidates, cf.history, items, now, item_matrix, cf.own_history)
    pairs["event_timestamp"] = now
    if settings is not None and config.get("feature_service"):
        pairs = add_feast_features(settings, pairs, config["feature_service"])
    return categorize(pairs, list(config["features"]["categorical"]) + list(config["fm_features"]["categorical"])), cf


def serve_lists(model, pairs: "pd.DataFrame", cf: CutoffFrames, items: "pd.DataFrame", config: dict) -> Served:
    """Rank ``serving_pairs`` with ``model`` and apply the serving rules: the frame-level heart of
    ``score``, so the purchase evaluation (``train``, bench) measures exactly what is served."""
    scored = pairs[["user_id", "item_id", "source"]].assign(score=predict(model, pairs) if len(pairs) else [])
    serve, now = config["serving"], cf.cutoff
    k = int(serve["k"])
    own = cf.own_history if cf.own_history is not None else cf.history
    bought = own.loc[own["event_type"].eq("purchase"), ["user_id", "item_id"]].drop_duplicates()
    fresh = scored.merge(bought.assign(_bought=True), on=["user_id", "item_id"], how="left")
    fresh = fresh[fresh.pop("_bought").isna()]
    return Served(apply_rules(scored, items, own, now, serve["rules"], k), apply_rules(fresh, items, own, now, serve["rules"], k), cf)


def purchase_evaluation(
    settings: Settings | None,
    config: dict,
    inter: "pd.DataFrame",
    items: "pd.DataFrame",
    models: dict,
    cutoff: "pd.Timestamp",
    horizon_days: int,
    item_matrix=None,
) -> dict:
    """The served lists of every model at ``cutoff`` (history before it only; the FM re-ranks the
    served model's lists, as ``Reranker`` does at request time) against the plain
    references (``ml.models.recs_eval``: popularity, item-kNN, own history) on the purchases of the
    next ``horizon_days``: {"table", "coverage", "losses" (per model, the gate's lines), "note"}.
    With fewer than ``promotion.min_reference_users`` buyers in the horizon the table is still
    computed but no model is held back (the note says so)."""
    from ml.models import recs_eval

    split = recs_eval.purchase_split(inter, cutoff, horizon_days)
    buyers = int(split.truth["user_id"].nunique())
    promotion = config.get("promotion", {})
    min_users = int(promotion.get("min_reference_users", 50))
    refs = promotion.get("references", ("popularity", "item_knn", "own_history"))
    out: dict[str, Any] = {
        "table": None,
        "coverage": {},
        "losses": {name: [] for name in models},
        "buyers": buyers,
        "cutoff": f"{cutoff:%Y-%m-%d}",
        "horizon_days": int(horizon_days),
        "heavy_days": split.heavy_days,
    }
    if not buyers:
        out["note"] = f"no purchases in the {horizon_days} days after {cutoff:%Y-%m-%d}: no purchase evaluation, no reference gate"
        return out
    before = inter[inter["event_timestamp"] < cutoff]
    pairs, cf = serving_pairs(before, items, cutoff, config, item_matrix, settings)
    lists = dict(recs_eval.references(split))
    served = {name: serve_lists(model, pairs, cf, items, config) for name, model in models.items() if name != FM_NAME}
    if FM_NAME in models:  # the FM serves by re-ranking the served model's stored lists at request time: measured so
        base = served.get(config["serving"]["model"])
        if base is None:
            served[FM_NAME] = serve_lists(models[FM_NAME], pairs, cf, items, config)
        else:
            fm = pairs[["user_id", "item_id"]].assign(score=predict(models[FM_NAME], pairs) if len(pairs) else [])

            def reranked(lst):
                return lst.drop(columns="score").merge(fm, on=["user_id", "item_id"])

            served[FM_NAME] = Served(reranked(base.lists), reranked(base.new_lists), cf)
    for name in models:
        lists[name] = {"repeats": served[name].lists, "new_items": served[name].new_lists}
        out["coverage"][name] = recs_eval.coverage(served[name].lists, split)
    table = recs_eval.evaluate(lists, split)
    out["table"] = table
    gate = out["gate_applied"] = buyers >= min_users
    for name in models:
        _, losses = recs_eval.beats(table, name, refs, margin=float(promotion.get("reference_margin", 0.0)))
        out["losses"][name] = losses if gate else []
    out["note"] = (
        f"served lists at {cutoff:%Y-%m-%d} vs the plain references on the purchases of the next {horizon_days} days "
        f"({buyers:,} buyers)" + ("" if gate else f"; fewer than {min_users} buyers: the reference gate is not applied")
    )
    return out


def score(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> dict:
    """Rank every known user's candidates (``serving.active_days`` may narrow that to the recently
    active) with the champion; write the partition and Feast source: per user the list and the
    new-items list (items the user never bought), plus the ``__fallback__`` row.

    Raises (writing nothing, so the previous lists stay served) when the champion is missing or
    fails to load or there are no interactions."""
    import pandas as pd

    from ml.models import candidates as cand
    from ml.models import outputs, registry

    say = echo or (lambda _m: None)
    config = config or load_config()
    serve = config["serving"]
    model, version = registry.load_champion(settings, serve["model"])
    inter, items = load_interactions(settings), load_items(settings)
    if inter.empty:
        raise RecsError(f"{INTERACTIONS_MART} is empty: nothing to recommend from")
    now = lake_end(inter)
    pairs, cf = serving_pairs(inter, items, now, config, load_item_matrix(settings), settings)
    served = serve_lists(model, pairs, cf, items, config)
    k = int(serve["k"])
    popular = cand.popular_candidates([FALLBACK_USER], served.cf.pop_table, None, n=k * 5).assign(source="popularity")
    fallback = apply_rules(popular, items, served.cf.history.iloc[0:0], now, serve["rules"], k)

    def as_lists(top, prefix):
        top = pd.concat([top, fallback], ignore_index=True)
        out = top.groupby("user_id", sort=True).agg(ids=("item_id", list), scores=("score", list), sources=("source", list))
        out["scores"] = out["scores"].map(lambda v: [round(float(x), 6) for x in v])
        return out.rename(columns={c: f"{prefix}_{c}" for c in out.columns})

    lists = as_lists(served.lists, "rec").rename(columns={"rec_ids": "rec_item_ids"})
    new = as_lists(served.new_lists, "new").rename(columns={"new_ids": "new_item_ids"})[["new_item_ids", "new_scores"]]
    lists = lists.join(new, how="left").reset_index()
    for col in ("new_item_ids", "new_scores"):  # a user whose every candidate was bought before: an empty new list
        lists[col] = lists[col].map(lambda v: v if isinstance(v, list) else [])
    lists.insert(1, "event_timestamp", now)
    lists["model_name"] = serve["model"]
    lists["model_version"] = str(version.version)
    path = outputs.write_partition(settings, MODEL_NAME, lists, now.date())
    say(
        f"recs: {len(lists) - 1:,} users + fallback, top {k} (and top {k} new items), scored with {serve['model']} version "
        f"{version.version} for {now:%Y-%m-%d} -> {path}"
    )
    return {
        "users": int(len(lists) - 1),
        "scoring_date": f"{now:%Y-%m-%d}",
        "model": serve["model"],
        "model_version": str(version.version),
        "path": str(path),
    }


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
    rows = get_online_features(store, [f"{SCORE_VIEW}:{f}" for f in REC_FIELDS], [{"user_id": user_id}, {"user_id": FALLBACK_USER}])
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
        from ml.models import registry

        config = config or load_config()
        self.store = store or get_store(settings)
        self.model = model if model is not None else registry.load_champion(settings, FM_NAME)[0]
        refs = service_requirements(self.store, config["feature_service"], keys=("user_id",))["refs"]
        by_name = {_prefixed(ref.split(":", 1)[1], "user_"): ref for ref in refs}
        missing = [f for f in self.model.user_fields if f not in by_name]
        if missing:
            raise RecsError(f"{FM_NAME} needs user features {missing} that service {config['feature_service']} does not serve")
        self.refs = {f: by_name[f] for f in self.model.user_fields}
        self.features = [f"{SCORE_VIEW}:rec_item_ids", *dict.fromkeys(self.refs.values())]

    def rerank(self, user_id: str, item_ids: list[str] | None = None) -> "pd.DataFrame":
        import numpy as np
        import pandas as pd

        from ml.features.serving import get_online_features

        online = get_online_features(self.store, self.features, [{"user_id": user_id}, {"user_id": FALLBACK_USER}])
        if item_ids is None:
            item_ids = online["rec_item_ids"][0] or online["rec_item_ids"][1] or []
        user_row = {field: online[ref.split(":", 1)[1]][0] for field, ref in self.refs.items()}
        scores = np.asarray(self.model.score(user_row, list(item_ids)), dtype=float)
        order = np.argsort(-scores, kind="stable")
        return pd.DataFrame(
            {"rank": np.arange(1, len(order) + 1), "item_id": np.asarray(item_ids, dtype=object)[order], "score": scores[order]}
        )


def _prefixed(name: str, prefix: str) -> str:
    return name if name.startswith(prefix) else prefix + name


# --- search ----------------------------------------------------------------------------------------


def search_items(settings: Settings, query: str, k: int = 10, method: str = "semantic") -> "pd.DataFrame":
    """Top-``k`` items for a query: ``semantic`` (embeddings, exact cosine) or ``bm25`` (keywords).
    A semantic answer below the index's confidence floor (e.g. a language the model does not know)
    falls back to BM25 when BM25 finds anything; the ``method`` column says which answered. Raises
    ``search.SearchError`` for an empty query, RecsError when there are no embeddings yet."""
    import pandas as pd

    from ml.models import search

    search.check_query(query)
    items = load_items(settings)
    if method not in ("semantic", "bm25"):
        raise ValueError(f"method must be 'semantic' or 'bm25', got {method!r}")
    result = pd.DataFrame()
    if method == "semantic":
        if not embeddings_path(settings).exists():
            raise RecsError(f"no item embeddings at {embeddings_path(settings)}: run `ecomml recs embed` first")
        embeddings = pd.read_parquet(embeddings_path(settings))
        if embeddings.empty:
            raise RecsError(
                f"no item in {ITEMS_MART} has text, so there is nothing to search: map a title or description "
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

    path = Path(settings.exports_dir) / f"{SEARCH_MART}.parquet"
    if path.exists():
        queries = pd.read_parquet(path, columns=["search_query"])["search_query"]
        if len(queries):
            return str(queries.iloc[0])
    items = load_items(settings)
    for col in ("category_l3", "title"):
        values = items[col].dropna() if col in items else []
        if len(values):
            return str(values.iloc[0])
    return "gift"
