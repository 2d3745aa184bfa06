"""What a shop asks of its recommender, on its own purchases: the purchase protocols and the plain
references every ranker must beat before it is promoted (``recs.train``) or called done (bench).

A cutoff splits the interactions (mart_interactions: user_id, item_id, event_type,
event_timestamp): everything before it is history, the purchases in the ``horizon_days`` after it
are the truth. Lists are [user_id, item_id, score] frames (best first by score, any length).

    purchase_split(inter, cutoff, horizon_days) -> PurchaseSplit
    references(split, k=100) -> {"popularity", "item_knn", "own_history"}: lists
        popularity   distinct buyers per item in the ``popular_days`` before the cutoff
        item_knn     cosine item-kNN over the binary customer x item purchase matrix of the history
                     (RecBole's ItemKNN, 100 neighbours): score = sum of the similarities of an item to
                     the customer's items
        own_history  "buy again": the customer's items by purchase days, then by the latest purchase
        every list is completed with popularity, so each customer has ``k`` items
    evaluate(lists, split, ...) -> DataFrame [model, protocol, segment, n_users, metric columns]
        repeats    truth = every item bought in the horizon; Recall@10, NDCG@10, HitRate@10
        new_items  truth = items bought in the horizon that the customer never bought before; the
                   list without those items too; Recall@20, NDCG@20, HitRate@20
        segments   all, new (no purchase before the cutoff), returning, heavy (the top fifth of
                   earlier customers by purchase days, at least 3)
    coverage(lists, split) -> share of the earlier customers with a personal list
    beats(table, model, references) -> (bool, reasons)   the promotion gate

Nothing here knows a dataset; ``bench/bench_recs_real.py`` runs it on the shared Online Retail II
sample and ``recs.train`` on its test cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.models.recs.data import SEARCH_MART, CutoffFrames, embeddings_path, load_items
from ml.models.recs.metrics import ranking_metrics, top_k
from ml.settings import Settings

KEYS = ["user_id", "item_id"]
PROTOCOLS = {"repeats": 10, "new_items": 20}  # protocol -> its k
SEGMENTS = ("all", "new", "returning", "heavy")


@dataclass
class PurchaseSplit:
    cutoff: pd.Timestamp
    horizon_days: int
    history: pd.DataFrame  # every interaction before the cutoff
    bought: pd.DataFrame  # [user_id, item_id, days, last]: purchases before the cutoff, by distinct day
    truth: pd.DataFrame  # [user_id, item_id]: purchases in the horizon
    segment: pd.Series  # user_id -> new | returning | heavy (every truth user and earlier customer)
    heavy_days: int  # purchase days from which an earlier customer is heavy

    @property
    def customers(self) -> pd.Index:
        """Users with a purchase before the cutoff."""
        return pd.Index(self.bought["user_id"].unique())


def purchase_split(inter: pd.DataFrame, cutoff, horizon_days: int = 28) -> PurchaseSplit:
    cutoff = pd.Timestamp(cutoff)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tz is None else cutoff
    history = inter[inter["event_timestamp"] < cutoff]
    buys = history[history["event_type"].eq("purchase")]
    buys = buys.assign(day=buys["event_timestamp"].dt.floor("D"))
    bought = buys.groupby(KEYS).agg(days=("day", "nunique"), last=("event_timestamp", "max")).reset_index()
    end = cutoff + pd.Timedelta(days=horizon_days)
    window = inter[(inter["event_timestamp"] >= cutoff) & (inter["event_timestamp"] < end) & inter["event_type"].eq("purchase")]
    truth = window[KEYS].drop_duplicates().reset_index(drop=True)
    user_days = buys.groupby("user_id")["day"].nunique()
    heavy = int(max(3, np.ceil(user_days.quantile(0.8)))) if len(user_days) else 3
    users = pd.Index(truth["user_id"].unique()).union(user_days.index)
    days = pd.Series(user_days.reindex(users).fillna(0).to_numpy(), index=users)
    segment = pd.Series(np.where(days.eq(0), "new", np.where(days.ge(heavy), "heavy", "returning")), index=users)
    return PurchaseSplit(cutoff, int(horizon_days), history, bought, truth, segment, heavy)


def popularity(split: PurchaseSplit, popular_days: int = 90, n: int = 500) -> pd.DataFrame:
    """[item_id, score]: distinct buyers per item in the ``popular_days`` before the cutoff."""
    buys = split.history[
        split.history["event_type"].eq("purchase") & (split.history["event_timestamp"] >= split.cutoff - pd.Timedelta(days=popular_days))
    ]
    counts = buys.groupby("item_id")["user_id"].nunique().rename("score").reset_index()
    return counts.sort_values(["score", "item_id"], ascending=[False, True]).head(n).reset_index(drop=True)


def complete(lists: pd.DataFrame, users, popular: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each user's list, then popular items not in it, to ``k`` items; users without a list get the
    popular list. Scores: the list's, then below its minimum in popularity order."""
    users = pd.Index(pd.unique(pd.Series(users, dtype=object)))
    own = lists.loc[lists["user_id"].isin(users), [*KEYS, "score"]]
    floor = float(own["score"].min()) if len(own) else 0.0
    fill = popular.head(k * 2)
    filler = pd.DataFrame(
        {
            "user_id": np.repeat(users.to_numpy(dtype=object), len(fill)),
            "item_id": np.tile(fill["item_id"].to_numpy(dtype=object), len(users)),
            "score": np.tile(floor - 1.0 - np.arange(len(fill), dtype=float), len(users)),
        }
    )
    both = pd.concat([own, filler], ignore_index=True).drop_duplicates(KEYS)
    return top_k(both, k)[[*KEYS, "score"]]


def references(split: PurchaseSplit, users=None, k: int = 100, popular_days: int = 90, neighbours: int = 100) -> dict[str, pd.DataFrame]:
    """The plain references (module doc) for ``users`` (default: truth users and earlier customers)."""
    users = split.segment.index if users is None else pd.Index(users)
    popular = popularity(split, popular_days)
    own = split.bought.rename(columns={"days": "score"})
    latest = own["last"].rank(method="first", pct=True)  # recency breaks ties within a purchase-day count
    own = own.assign(score=own["score"] + 0.5 * latest)[[*KEYS, "score"]]
    knn = itemknn_rankings(split.bought[KEYS], users, k=k, neighbours=neighbours)
    pop_lists = popular.head(k).assign(_k=1).merge(pd.DataFrame({"user_id": users, "_k": 1}), on="_k")[[*KEYS, "score"]]
    return {
        "popularity": complete(pop_lists, users, popular, k),
        "item_knn": complete(knn, users, popular, k),
        "own_history": complete(own, users, popular, k),
    }


def _without(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    marked = frame.merge(pairs[KEYS].drop_duplicates().assign(_had=True), on=KEYS, how="left")
    return marked[marked.pop("_had").isna()]


def coverage(lists: pd.DataFrame, split: PurchaseSplit) -> float:
    """Share of the customers with a purchase before the cutoff who have a list of their own."""
    customers = split.customers
    return float(customers.isin(lists["user_id"].unique()).mean()) if len(customers) else float("nan")


def evaluate(lists: dict[str, pd.DataFrame], split: PurchaseSplit, popular: pd.DataFrame | None = None, segments=SEGMENTS) -> pd.DataFrame:
    """Every model's lists under both protocols, per segment (module doc); a model's lists may be one
    frame or {protocol: frame} (a served list and a served new-items list). Lists are completed with
    ``popular`` (default: the popularity reference's items) before they are cut, so a user without a
    list sees the popular items, as a served fallback does."""
    popular = popularity(split) if popular is None else popular
    bought = split.bought[KEYS]
    truths = {"repeats": split.truth, "new_items": _without(split.truth, bought)}
    rows = []
    for name, given in lists.items():
        for protocol, k in PROTOCOLS.items():
            frame = given[protocol] if isinstance(given, dict) else given
            truth = truths[protocol]
            users = truth["user_id"].unique()
            ranked = complete(frame[frame["user_id"].isin(users)], users, popular, k * 3)
            if protocol == "new_items":  # the list without the items the user bought before, then cut
                ranked = _without(ranked, bought)
            top = top_k(ranked, k)
            for seg in segments:
                seg_users = users if seg == "all" else split.segment.index[split.segment.eq(seg)]
                seg_truth = truth[truth["user_id"].isin(seg_users)]
                if seg_truth.empty:
                    continue
                m = ranking_metrics(top[top["user_id"].isin(seg_truth["user_id"])], seg_truth, ks=(k,))
                rows.append(
                    {
                        "model": name,
                        "protocol": protocol,
                        "segment": seg,
                        "n_users": int(m["n_users"]),
                        "recall": m[f"recall@{k}"],
                        "ndcg": m[f"ndcg@{k}"],
                        "hit_rate": m[f"hit_rate@{k}"],
                        "k": k,
                    }
                )
    return pd.DataFrame(rows)


def beats(
    table: pd.DataFrame, model: str, references=("popularity", "item_knn", "own_history"), metric: str = "recall", margin: float = 0.0
) -> tuple[bool, list[str]]:
    """Whether ``model`` is at least ``margin`` above every reference on both protocols (segment
    ``all``; equal passes at margin 0), and one line per lost comparison."""
    at = table[table["segment"].eq("all")].set_index(["protocol", "model"])[metric]
    losses = []
    for protocol in PROTOCOLS:
        if (protocol, model) not in at.index:
            continue
        ours = float(at[(protocol, model)])
        for ref in references:
            theirs = float(at[(protocol, ref)]) if (protocol, ref) in at.index else None
            if theirs is not None and ours < theirs + margin - 1e-12:
                losses.append(f"{protocol}: {metric} {ours:.4f} < {ref} {theirs:.4f}" + (f" + margin {margin:g}" if margin else ""))
    return not losses, losses


def pivot(table: pd.DataFrame, metric: str = "recall") -> pd.DataFrame:
    """model x (protocol, segment) of one metric, with the users per cell in the column names."""
    if table.empty:
        return table
    table = table.assign(cell=table["protocol"] + "@" + table["k"].astype(str) + " " + table["segment"])
    out = table.pivot_table(index="model", columns="cell", values=metric, aggfunc="first")
    return out[[c for c in dict.fromkeys(table["cell"]) if c in out.columns]]


# --- the test week: rankers and references on the training cutoffs ------------------------------


def predict(model, pairs: "pd.DataFrame") -> "np.ndarray":
    """Scores of any ranker (recs_widedeep, recs_lgbm, recs_fm) for the pair rows."""
    return model.predict(pairs)


def ranked_pairs(pairs: "pd.DataFrame", scores) -> "pd.DataFrame":
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

    from ml.models.recs.metrics import ranking_metrics, top_k

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
    item, every item scored; ``itemknn_rankings``) as scored pairs."""
    from ml.models.recs import candidates as cand

    popular = cand.popular_candidates(users, cf.pop_table, None, n=k)
    knn = itemknn_rankings(cf.history, users, k=k)
    return {"popularity": popular[["user_id", "item_id", "score"]], "item_knn": knn[["user_id", "item_id", "score"]]}


def evaluate_search(settings: Settings, config: dict) -> "pd.DataFrame | None":
    """Semantic search vs BM25 on the lake's search -> purchase pairs (None without searches)."""
    import pandas as pd

    from ml.models.recs import search

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


def itemknn_rankings(history: pd.DataFrame, users, k: int = 100, neighbours: int = 100) -> pd.DataFrame:
    """A reference item-kNN over the whole item set: RecBole's ItemKNN (cosine of the binary user x
    item columns of ``history``, ``neighbours`` per item; ``candidates.knn_scores``) scores every item
    for each of ``users`` found in ``history``, items the user already has included (nothing is masked
    in a time split, where repeats count). Returns the best ``k`` per user [user_id, item_id, score]."""
    from ml.models.recs.candidates import knn_scores

    return knn_scores(history, users, k, neighbours=neighbours, exclude_own=False)
