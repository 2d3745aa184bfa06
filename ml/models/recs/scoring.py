"""Batch scoring: the champion ranker ranks every active user's candidates at the lake's end,
business rules apply, top K per user (plus the fallback list) -> one partition per scoring date ->
Feast view user_recommendations (``score``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ml.models.recs import data
from ml.models.recs.evaluation import predict
from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)


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
        bought = history[(history["event_type"] == "purchase") & (history["event_timestamp"] >= now - data.days_delta(float(days)))]
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
        before = before[before["event_timestamp"] >= now - data.days_delta(float(active_days))]
    return sorted(before["user_id"].dropna().unique())


@dataclass
class Served:
    """What ``score`` serves, frame-level: the top K per user after the rules (``lists``), the same
    restricted to items the user never bought (``new_lists``), both [user_id, item_id, score, source,
    rank], and the candidate frames they came from."""

    lists: "pd.DataFrame"
    new_lists: "pd.DataFrame"
    cf: data.CutoffFrames


def serving_pairs(
    inter: "pd.DataFrame",
    items: "pd.DataFrame",
    now: "pd.Timestamp",
    config: dict,
    item_matrix=None,
    settings: Settings | None = None,
    users=None,
) -> "tuple[pd.DataFrame, data.CutoffFrames]":
    """The candidates of ``users`` (default ``serving_users``) at ``now`` with their pair features
    (and the Feast features when ``settings`` is given and the config names a feature service)."""
    users = serving_users(inter, now, config["serving"].get("active_days")) if users is None else sorted(users)
    cf = data.cutoff_candidates(inter, items, users, now, config, item_matrix)
    pairs = data.pair_features(cf.candidates, cf.history, items, now, item_matrix, cf.own_history)
    pairs["event_timestamp"] = now
    if settings is not None and config.get("feature_service"):
        pairs = data.add_feast_features(settings, pairs, config["feature_service"])
    return data.categorize(pairs, list(config["features"]["categorical"]) + list(config["fm_features"]["categorical"])), cf


def serve_lists(model, pairs: "pd.DataFrame", cf: data.CutoffFrames, items: "pd.DataFrame", config: dict) -> Served:
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
    references (``ml.models.recs.evaluation``: popularity, item-kNN, own history) on the purchases of the
    next ``horizon_days``: {"table", "coverage", "losses" (per model, the gate's lines), "note"}.
    With fewer than ``promotion.min_reference_users`` buyers in the horizon the table is still
    computed but no model is held back (the note says so)."""
    from ml.models.recs import evaluation as recs_eval

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
    served = {name: serve_lists(model, pairs, cf, items, config) for name, model in models.items() if name != data.FM_NAME}
    if data.FM_NAME in models:  # the FM serves by re-ranking the served model's stored lists at request time: measured so
        base = served.get(config["serving"]["model"])
        if base is None:
            served[data.FM_NAME] = serve_lists(models[data.FM_NAME], pairs, cf, items, config)
        else:
            fm = pairs[["user_id", "item_id"]].assign(score=predict(models[data.FM_NAME], pairs) if len(pairs) else [])

            def reranked(lst):
                return lst.drop(columns="score").merge(fm, on=["user_id", "item_id"])

            served[data.FM_NAME] = Served(reranked(base.lists), reranked(base.new_lists), cf)
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

    from ml.models.lifecycle import outputs, registry
    from ml.models.recs import candidates as cand

    say = echo or (lambda _m: None)
    config = config or data.load_config()
    serve = config["serving"]
    model, version = registry.load_champion(settings, serve["model"])
    inter, items = data.load_interactions(settings), data.load_items(settings)
    if inter.empty:
        raise data.RecsError(f"{data.INTERACTIONS_MART} is empty: nothing to recommend from")
    now = data.lake_end(inter)
    pairs, cf = serving_pairs(inter, items, now, config, data.load_item_matrix(settings), settings)
    served = serve_lists(model, pairs, cf, items, config)
    k = int(serve["k"])
    popular = cand.popular_candidates([data.FALLBACK_USER], served.cf.pop_table, None, n=k * 5).assign(source="popularity")
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
    path = outputs.write_partition(settings, data.MODEL_NAME, lists, now.date())
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
