"""Top-K metrics (ml/models/recs/metrics.py) against hand-computed values on tiny frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.models.recs import metrics as M

L2, L3, L4 = math.log2(2), math.log2(3), math.log2(4)


def frame(rows, cols=("user_id", "item_id", "rank")):
    return pd.DataFrame(rows, columns=list(cols))


TRUTH = frame([("u1", "A"), ("u1", "B"), ("u2", "C"), ("u3", "D")], ("user_id", "item_id"))
RANKED = frame(
    [
        ("u1", "A", 1),
        ("u1", "X", 2),
        ("u1", "B", 3),
        ("u2", "Y", 1),
        ("u2", "Z", 2),
        ("u4", "W", 1),  # not in truth: ignored everywhere, coverage included
    ]
)  # u3 has no recommendations: counts as zero


def test_hand_computed_metrics():
    pop = pd.Series({"A": 10, "B": 5, "C": 1, "X": 3, "Y": 2, "D": 4})  # percentiles: C 1/6, Y 2/6, X 3/6, D 4/6, B 5/6, A 1
    m = M.ranking_metrics(RANKED, TRUTH, ks=(2, 3), item_popularity=pop, n_items=10)
    assert m["n_users"] == 3
    # k=2: u1 hits A at 1 (B at 3 is outside): recall 1/2, dcg 1, ideal 1 + 1/log2(3); u2, u3: nothing
    assert m["recall@2"] == pytest.approx((1 / 2) / 3)
    assert m["ndcg@2"] == pytest.approx((1 / L2) / (1 / L2 + 1 / L3) / 3)
    assert m["hit_rate@2"] == pytest.approx(1 / 3)
    # k=3: u1 hits A at 1 and B at 3
    assert m["recall@3"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx((1 / L2 + 1 / L4) / (1 / L2 + 1 / L3) / 3)
    assert m["mrr"] == pytest.approx(1 / 3)
    assert m["coverage@2"] == pytest.approx(4 / 10)  # A, X, Y, Z; u4's W is not an evaluated user
    assert m["popularity_percentile@2"] == pytest.approx((1 + 3 / 6 + 2 / 6 + 0) / 4)  # Z unknown -> 0
    assert m["truth_popularity_percentile"] == pytest.approx((1 + 5 / 6 + 1 / 6 + 4 / 6) / 4)


def test_ideal_dcg_caps_at_k_and_mrr_uses_the_first_hit():
    truth = frame([("u", i) for i in "ABCDE"], ("user_id", "item_id"))
    ranked = frame([("u", "Q", 1), ("u", "B", 2), ("u", "A", 3)])
    m = M.ranking_metrics(ranked, truth, ks=(2,))
    assert m["ndcg@2"] == pytest.approx((1 / L3) / (1 / L2 + 1 / L3))  # ideal over min(5, 2) = 2 hits
    assert m["recall@2"] == pytest.approx(1 / 5)
    assert m["mrr"] == pytest.approx(1 / 2)


def test_scores_without_rank_are_ranked_and_duplicated_truth_counts_once():
    scored = pd.DataFrame({"user_id": ["u", "u", "u"], "item_id": ["A", "B", "C"], "score": [0.1, 0.9, 0.5]})
    truth = frame([("u", "A"), ("u", "A")], ("user_id", "item_id"))
    m = M.ranking_metrics(scored, truth, ks=(1, 3))
    assert m["hit_rate@1"] == 0 and m["recall@3"] == 1 and m["mrr"] == pytest.approx(1 / 3)


def test_no_truth_users():
    assert M.ranking_metrics(RANKED, TRUTH.iloc[:0]) == {"n_users": 0}


def test_top_k_ties_exclusion_and_rank():
    scores = pd.DataFrame({"user_id": ["a", "a", "a", "a", "b"], "item_id": ["z", "y", "x", "w", "x"], "score": [1.0, 1.0, 0.5, 2.0, 0.3]})
    top = M.top_k(scores, 2, exclude=frame([("a", "w"), ("b", "q")], ("user_id", "item_id")))
    assert top.values.tolist() == [["a", "y", 1.0, 1], ["a", "z", 1.0, 2], ["b", "x", 0.3, 1]]  # tie -> item_id order
    with pytest.raises(ValueError):
        M.top_k(scores, 0)


def test_group_ndcg_graded_and_pessimistic_ties():
    group = [1, 1, 1, 2, 2]
    label = [0, 3, 1, 0, 0]  # group 2 has nothing relevant: left out
    ideal = 7 / L2 + 1 / L3
    got = M.group_ndcg(group, label, [0.9, 0.5, 0.1, 0.3, 0.2], k=10)
    assert got == pytest.approx((7 / L3 + 1 / L4) / ideal)
    assert M.group_ndcg(group, label, [0.0] * 5) == pytest.approx((1 / L3 + 7 / L4) / ideal)  # ties: worst first
    assert M.group_ndcg(group, label, [0.1, 0.9, 0.5, 0, 0], k=1) == pytest.approx(1.0)
    assert np.isnan(M.group_ndcg([1], [0], [0.5]))
