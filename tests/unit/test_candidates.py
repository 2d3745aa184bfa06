"""Candidate sources (ml/models/recs/candidates.py) on hand-made interaction frames with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.models.recs import candidates as C

T0 = pd.Timestamp("2026-03-01", tz="UTC")
NOW = T0 + pd.Timedelta(days=100)


def events(rows):
    """Interactions from (user_id, session_id, item_id, event_type, days after T0) tuples."""
    df = pd.DataFrame(rows, columns=["user_id", "session_id", "item_id", "event_type", "days"])
    df["event_timestamp"] = T0 + pd.to_timedelta(df.pop("days"), unit="D")
    return df


def as_dict(covis):
    return {(a, b): s for a, b, s in covis[["item_id", "neighbor_id", "score"]].itertuples(index=False)}


def test_covisitation_sessions_weighted_and_normalised():
    x = events(
        [
            ("u1", "s1", "A", "view", 0),
            ("u1", "s1", "B", "view", 0.01),
            ("u2", "s2", "A", "view", 0),
            ("u2", "s2", "B", "purchase", 0.01),
            ("u2", "s2", "B", "view", 0.005),
            ("u3", "s3", "A", "view", 0),
            ("u3", "s3", "C", "view", 0.01),
            ("u3", "s4", "A", "search", 1),
            ("u3", "s4", "D", "search", 1),  # unweighted type: ignored
        ]
    )
    got = as_dict(C.covisitation(x))
    # A -> B counts B's strongest event per session (1 + 6); freq A = 3, B = 1 + 6, C = 1
    assert got == pytest.approx(
        {("A", "B"): 7 / math.sqrt(21), ("B", "A"): 2 / math.sqrt(21), ("A", "C"): 1 / math.sqrt(3), ("C", "A"): 1 / math.sqrt(3)}
    )
    top1 = C.covisitation(x, top_n_per_item=1)
    assert top1.loc[top1["item_id"] == "A", "neighbor_id"].tolist() == ["B"]


def test_covisitation_session_cap_keeps_the_most_recent_items():
    x = events([("u", "s", "A", "view", 0), ("u", "s", "B", "view", 1), ("u", "s", "C", "view", 2)])
    got = as_dict(C.covisitation(x, max_items_per_session=2))
    assert set(got) == {("B", "C"), ("C", "B")}


def test_covisitation_orders_pair_purchases_across_sessions_within_the_window():
    x = events(
        [
            ("u", "o1", "P", "purchase", 0),
            ("u", "o2", "Q", "purchase", 5),
            ("u", "o3", "R", "purchase", 40),  # 35 days after Q: outside the 30-day window
            ("v", "o4", "P", "purchase", 0),
            ("v", "o5", "P", "purchase", 1),  # the same item: no pair
        ]
    )
    got = as_dict(C.covisitation(x, order_window_days=30))
    # freq P = 6 x 3 orders, Q = 6; the pair weighs the neighbour's purchase (6)
    assert got == pytest.approx({("P", "Q"): 6 / math.sqrt(108), ("Q", "P"): 6 / math.sqrt(108)})


def test_covisit_candidates_weight_recent_items_more():
    history = events([("u", "s1", "X", "view", 1), ("u", "s2", "Y", "view", 2)])
    covis = pd.DataFrame({"item_id": ["X", "Y", "Y"], "neighbor_id": ["P", "Q", "P"], "score": [1.0, 1.0, 0.1]})
    got = C.covisit_candidates(history, covis, n=5, recency_decay=0.5)
    # Y is the latest item (weight 1), X the one before (0.5): Q = 1, P = 0.5 + 0.1
    assert got["item_id"].tolist() == ["Q", "P"]
    assert got["score"].tolist() == pytest.approx([1.0, 0.6])
    assert len(C.covisit_candidates(history, covis, n=1)) == 1


def test_popularity_decays_with_age_and_ignores_the_future():
    x = events(
        [("a", "s", "OLD", "view", 40)] * 5  # 60 days before NOW
        + [("b", "s", "NEW", "view", 99)] * 2  # 1 day before NOW
        + [("c", "s", "FUTURE", "purchase", 101)] * 9
    )
    short = C.popularity(x, NOW, half_life_days=7, n=10)
    assert short["item_id"].tolist() == ["NEW", "OLD"]
    assert short["score"].sum() == pytest.approx(1.0)  # overall scores are shares
    assert C.popularity(x, NOW, half_life_days=10_000, n=10)["item_id"].tolist() == ["OLD", "NEW"]


def test_popularity_per_segment_and_fallbacks():
    x = events(
        [("g1", "s", "G", "purchase", 99), ("g2", "s", "G", "purchase", 99)] + [(f"m{i}", "s", "M", "purchase", 99) for i in range(6)]
    )
    segments = pd.Series({"g1": "garden", "g2": "garden", "m0": "main"})
    table = C.popularity(x, NOW, segments=segments, n=2, segment_prior=1.0)
    overall = table[table["segment"] == C.ALL]
    garden = table[table["segment"] == "garden"]
    assert overall["item_id"].tolist() == ["M", "G"]
    assert garden["item_id"].tolist() == ["G", "M"]  # the segment's own taste wins, overall fills in
    got = C.popular_candidates(["g1", "m5", "stranger"], table, segments, n=1)
    assert dict(zip(got["user_id"], got["item_id"])) == {"g1": "G", "m5": "M", "stranger": "M"}


def test_content_candidates_recommend_an_item_nobody_touched():
    ids = ["A", "B", "C", "D", "NEW"]
    matrix = np.array([[1, 0.2, 0], [1, -0.2, 0], [0, 1, 0], [0, 0, 1], [2, 0, 0]], dtype=np.float32)  # rows renormalised
    history = events([("u", "s", "A", "view", 1), ("u", "s", "B", "view", 2), ("v", "s", "NO_TEXT", "view", 1)])
    got = C.content_candidates(history, (ids, matrix), n=3, recency_decay=1.0)
    # u's profile is the mean of A and B = the direction of NEW, never interacted with
    assert got["user_id"].unique().tolist() == ["u"]  # v's only item has no embedding: nothing
    assert got["item_id"].tolist() == ["NEW", "A", "B"]
    assert got["score"].tolist() == pytest.approx([1.0, 1 / math.sqrt(1.04), 1 / math.sqrt(1.04)], rel=1e-5)
    # recency: with decay, the latest item (B) pulls the profile its way
    assert C.content_candidates(history, (ids, matrix), n=3, recency_decay=0.5)["item_id"].tolist() == ["NEW", "B", "A"]


def test_generate_merges_sources_caps_and_serves_cold_users():
    history = events(
        [
            ("warm", "s1", "A", "view", 1),
            ("warm", "s1", "B", "add_to_cart", 1.1),
            ("x", "s2", "A", "view", 2),
            ("x", "s2", "C", "purchase", 2.1),
            ("x", "s2", "D", "view", 2.2),
            ("cold", "s9", "A", "purchase", 100.5),  # after now: must not make "cold" warm
        ]
    )
    covis = C.covisitation(history[history["event_timestamp"] < NOW])
    segments = pd.Series({"cold": "seg1", "x": "seg1"})
    pop = C.popularity(history, NOW, segments=segments, n=10)
    ids = ["A", "B", "C", "D", "E"]
    matrix = np.eye(5, dtype=np.float32)
    cfg = {"n_covis": 10, "n_content": 10, "n_popular": 10, "n_total": 3}
    got = C.generate(["warm", "cold", "nobody"], history, NOW, cfg, covis, pop, segments, (ids, matrix))
    assert list(got.columns) == [
        "user_id",
        "item_id",
        "rank",
        "source",
        "n_sources",
        "covis_score",
        "knn_score",
        "repeat_score",
        "content_score",
        "pop_score",
    ]
    assert got.groupby("user_id").size().to_dict() == {"cold": 3, "nobody": 3, "warm": 3}
    assert not got.duplicated(["user_id", "item_id"]).any()
    cold = got[got["user_id"] == "cold"]
    assert (cold["source"] == "popularity").all() and cold[["covis_score", "content_score"]].isna().all().all()
    seg_top = pop.loc[pop["segment"] == "seg1", "item_id"].tolist()[:3]
    assert cold["item_id"].tolist() == seg_top
    warm = got[got["user_id"] == "warm"]
    assert warm["rank"].tolist() == [1, 2, 3]
    assert set(warm["source"]) >= {"covis"} and warm["covis_score"].notna().any()
    assert (warm["n_sources"] == warm[list(C.SOURCES.values())].notna().sum(axis=1)).all()


def test_recall_by_source():
    cands = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "v"],
            "item_id": ["A", "B", "C", "A"],
            "rank": [1, 2, 3, 1],
            "covis_score": [0.9, np.nan, 0.1, np.nan],
            "content_score": [np.nan, np.nan, np.nan, np.nan],
            "pop_score": [np.nan, 0.5, 0.4, 0.3],
        }
    )
    truth = pd.DataFrame({"user_id": ["u", "u", "w"], "item_id": ["B", "C", "A"]})
    got = C.recall_by_source(cands, truth, k=2).set_index("source")["recall@2"].to_dict()
    # users u (truth B, C) and w (no candidates): covis finds C (1/2), popularity B and C (2/2), merged top 2 = A, B
    assert got == pytest.approx({"covis": 0.25, "content": 0.0, "popularity": 0.5, "merged": 0.25})


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="n_totl"):
        C.generate([], events([]), NOW, {"n_totl": 5}, None, pd.DataFrame(columns=["segment", "item_id", "score"]))


def test_repeat_candidates_weigh_frequency_and_recency():
    history = events(
        [
            ("u", "s1", "OLD_OFTEN", "purchase", 10),
            ("u", "s2", "OLD_OFTEN", "purchase", 20),
            ("u", "s3", "OLD_OFTEN", "purchase", 30),
            ("u", "s4", "RECENT_ONCE", "purchase", 99),
            ("u", "s5", "ANCIENT_ONCE", "purchase", 1),
            ("u", "s6", "VIEWED", "view", 99),
            ("v", "s7", "LATER", "purchase", 101),  # after now: not v's history
        ]
    )
    got = C.repeat_candidates(history, NOW, n=3, half_life_days=90)
    weight = lambda ages: 6 * sum(0.5 ** (a / 90) for a in ages)  # noqa: E731 - the documented score
    assert got["user_id"].unique().tolist() == ["u"]
    assert got["item_id"].tolist() == ["OLD_OFTEN", "RECENT_ONCE", "ANCIENT_ONCE"]  # n = 3 cuts the viewed item
    assert got["score"].tolist() == pytest.approx([weight([90, 80, 70]), weight([1]), weight([99])])
    # a short half-life lets recency win over frequency
    assert C.repeat_candidates(history, NOW, n=1, half_life_days=5)["item_id"].tolist() == ["RECENT_ONCE"]


def test_item_knn_weights_are_cosines_of_user_columns():
    from scipy import sparse

    # users x items: A and B share 2 users of their 2 each (cos 1), A and C share 1 of 2 x 1 (cos 1/sqrt2)
    r = sparse.csr_matrix(np.array([[1, 1, 1], [1, 1, 0]], dtype=np.float32))
    w = C.item_knn_weights(r, k=1).toarray()
    assert w[0, 1] == pytest.approx(1.0, rel=1e-4) and w[1, 0] == pytest.approx(1.0, rel=1e-4)
    assert np.count_nonzero(w[:, 2]) == 1 and w[0, 2] == pytest.approx(1 / math.sqrt(2), rel=1e-4)  # k=1 per item column
    assert np.diag(w).tolist() == [0.0, 0.0, 0.0]
    # small column blocks give the same weights as one block
    assert np.allclose(C.item_knn_weights(r, k=2, cells_per_block=3).toarray(), C.item_knn_weights(r, k=2).toarray())


def test_knn_candidates_propose_neighbours_of_all_the_users_items_not_the_items_themselves():
    history = events(
        [
            ("a", "s1", "X", "purchase", 1),
            ("a", "s2", "Y", "purchase", 50),
            ("b", "s3", "X", "purchase", 1),
            ("b", "s3", "P", "purchase", 1),
            ("c", "s4", "Y", "purchase", 2),
            ("c", "s4", "Q", "purchase", 2),
            ("c", "s4", "P", "purchase", 2),
        ]
    )
    got = C.knn_candidates(history, ["a", "unknown"], n=5)
    assert set(got["user_id"]) == {"a"}
    assert not set(got["item_id"]) & {"X", "Y"}  # a's own items are the repeat source's job
    scores = got.set_index("item_id")["score"]
    assert scores.index.tolist()[0] == "P"  # P neighbours both X and Y: the highest sum
    assert scores["P"] > scores["Q"] > 0
    # the reference form (recs.evaluation.itemknn_rankings) keeps the user's own items: Y neighbours X
    with_own = C.knn_scores(history, ["a"], 5, exclude_own=False).set_index("item_id")["score"]
    assert {"X", "Y"} <= set(with_own.index) and with_own["P"] == pytest.approx(scores["P"])
