"""bench/protocols.py: the RecBole split rule, full-ranking metrics on hand-computed cases, and
the reference models (Pop, ItemKNN, BPR with real torch) on tiny frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch  # noqa: F401 - a pinned dependency: a broken install fails here, not as a skip

from bench import protocols as P  # noqa: E402

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def inter(pairs, hours=None):
    """Interactions from (user_id, item_id) pairs, one hour apart (or at the given hours)."""
    df = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    df["event_timestamp"] = T0 + pd.to_timedelta(hours if hours is not None else range(len(df)), unit="h")
    df["event_type"] = "view"
    return df


def user_items(user, n, prefix="i"):
    return [(user, f"{prefix}{j:03d}") for j in range(n)]


# ------------------------------------------------------------------------------------- splits


def test_split_counts_follow_recbole_rounding():
    counts = P.split_counts(np.array([10, 20, 15, 4, 3, 2, 1]), (0.8, 0.1, 0.1))
    assert counts.tolist() == [[8, 1, 1], [16, 2, 2], [13, 1, 1], [2, 1, 1], [1, 1, 1], [1, 0, 1], [1, 0, 0]]


def test_random_split_per_user_sizes_dedup_and_partition():
    rows = user_items("a", 10) + user_items("b", 3) + user_items("c", 1) + user_items("d", 2)
    rows += [("d", "i000"), ("d", "i001")]  # repeats: counted once, the earliest row kept
    frame = inter(rows)
    train, valid, test = P.random_split_per_user(frame, seed=7)

    sizes = pd.DataFrame({name: part.groupby("user_id").size() for name, part in zip("tvs", (train, valid, test))})
    sizes = sizes.fillna(0).astype(int).reindex(list("abcd"))
    assert sizes.values.tolist() == [[8, 1, 1], [1, 1, 1], [1, 0, 0], [1, 0, 1]]

    both = pd.concat([train, valid, test])
    assert not both.duplicated(["user_id", "item_id"]).any()
    assert len(both) == 16
    assert both.loc[both["user_id"] == "d", "event_timestamp"].max() < T0 + pd.Timedelta(hours=16)
    assert list(train.columns) == list(frame.columns)


def test_random_split_per_user_is_seeded():
    frame = inter(user_items("a", 50) + user_items("b", 30))
    first = P.random_split_per_user(frame, seed=1)
    again = P.random_split_per_user(frame, seed=1)
    other = P.random_split_per_user(frame, seed=2)
    for x, y in zip(first, again):
        pd.testing.assert_frame_equal(x, y)
    assert set(first[2]["item_id"]) != set(other[2]["item_id"])
    # not a time cut: the test items are not simply each user's latest ones
    assert set(first[2]["item_id"]) != {"i045", "i046", "i047", "i048", "i049", "i025", "i026", "i027", "i028", "i029"}


def test_time_split_by_days_keeps_only_new_pairs_after_train():
    frame = inter(
        [("a", "x"), ("a", "y"), ("a", "x"), ("a", "z"), ("b", "y"), ("b", "y")],
        hours=[0, 24, 24 * 5, 24 * 6, 24 * 8, 24 * 9],
    )
    train, valid, test = P.time_split(frame, test_days=2, valid_days=3)  # test after day 7, valid after day 4
    assert train[["user_id", "item_id"]].values.tolist() == [["a", "x"], ["a", "y"]]
    assert valid[["user_id", "item_id"]].values.tolist() == [["a", "z"]]  # the repeat of (a, x) dropped
    assert test[["user_id", "item_id"]].values.tolist() == [["b", "y"]]  # deduplicated


# ------------------------------------------------------------------------------------ metrics

ITEMS = [f"i{j}" for j in range(5)]
SCORES = np.array([[10, 9, 8, 7, 6], [5, 4, 3, 2, 1], [1, 2, 3, 4, 5]], dtype=float)
TRAIN = inter([("u0", "i0"), ("u2", "i1"), ("u1", "i2")])
TEST = inter([("u0", "i1"), ("u0", "i3"), ("u1", "i4")])  # u2 has no test pair: not evaluated
MAPPING = P.IndexMap.from_frames(TRAIN, TEST)


def hand_metrics():
    d2, d3 = 1 / math.log2(3), 1 / math.log2(4)
    return {
        # u0: i0 masked, ranking i1 (hit), i2, i3 (hit), i4;  u1: i2 masked, ranking i0, i1, i3, i4 (hit)
        # k below |T|: the ideal DCG counts min(|T|, k) hits, so u0's ndcg@1 is 1
        "recall@1": (0.5 + 0) / 2,
        "precision@1": 0.5,
        "hit@1": 0.5,
        "mrr@1": 0.5,
        "ndcg@1": 0.5,
        "recall@2": (0.5 + 0) / 2,
        "precision@2": (0.5 + 0) / 2,
        "hit@2": 0.5,
        "mrr@2": 0.5,
        "ndcg@2": (1 / (1 + d2)) / 2,
        "recall@3": (1 + 0) / 2,
        "precision@3": (2 / 3) / 2,
        "hit@3": 0.5,
        "mrr@3": 0.5,
        "ndcg@3": ((1 + d3) / (1 + d2)) / 2,
        # k beyond the catalogue: u1's hit at rank 4, precision still over k
        "recall@10": 1.0,
        "hit@10": 1.0,
        "mrr@10": (1 + 1 / 4) / 2,
        "precision@10": (2 / 10 + 1 / 10) / 2,
        "ndcg@10": ((1 + d3) / (1 + d2) + 1 / math.log2(5)) / 2,
    }


@pytest.mark.parametrize("batch_users", [None, 1])
def test_full_ranking_metrics_hand_computed(batch_users):
    assert list(MAPPING.items) == ITEMS and list(MAPPING.users) == ["u0", "u1", "u2"]
    got = P.full_ranking_metrics(lambda u: SCORES[u], MAPPING, TEST, exclude=(TRAIN,), ks=(1, 2, 3, 10), batch_users=batch_users)
    assert got["n_users"] == 2
    for name, value in hand_metrics().items():
        assert got[name] == pytest.approx(value), name


def test_full_ranking_metrics_masks_only_what_is_excluded():
    unmasked = P.full_ranking_metrics(lambda u: SCORES[u], MAPPING, TEST, ks=(2,))
    assert unmasked["recall@2"] == pytest.approx(0.25)  # u0: i0 ranks first, i1 second
    assert unmasked["mrr@2"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="score_fn returned shape"):
        P.full_ranking_metrics(lambda u: SCORES[u][:, :4], MAPPING, TEST)


def test_index_map_names_unknown_ids():
    with pytest.raises(ValueError, match="not_there"):
        MAPPING.matrix(inter([("u0", "not_there")]))


# ------------------------------------------------------------------------------------- models


def test_pop_ranks_items_by_train_count():
    train = inter([("a", "x"), ("b", "x"), ("c", "x"), ("a", "y"), ("b", "y"), ("c", "z")])
    mapping = P.IndexMap.from_frames(train)
    scores = P.Pop(mapping).fit(train).score(np.array([0, 2]))
    assert scores.shape == (2, 3)
    assert (scores[0] == scores[1]).all()
    assert mapping.items[np.argsort(-scores[0])].tolist() == ["x", "y", "z"]


def test_itemknn_recommends_the_co_consumed_item_and_keeps_k_neighbours():
    # A and B together twice, A and C once, D alone with E
    train = inter(
        [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B"), ("u3", "A"), ("u3", "C"), ("u4", "D"), ("u4", "E"), ("u5", "A"), ("u6", "C")]
    )
    mapping = P.IndexMap.from_frames(train)
    knn = P.ItemKNN(mapping).fit(train)
    a, b, c = mapping.item_index(["A", "B", "C"])
    scores = knn.score(mapping.user_index(["u5", "u6"]))
    assert mapping.items[np.argmax(np.where(np.arange(5) == a, -np.inf, scores[0]))] == "B"
    assert knn.weights[b, a] == pytest.approx(2 / (2 * math.sqrt(2)), rel=1e-5)  # cos(A, B): A has 4 users
    assert scores[1, a] == pytest.approx(1 / (2 * math.sqrt(2)), rel=1e-5)  # u6 has C: cos(A, C)

    one = P.ItemKNN(mapping, k=1).fit(train)  # column A keeps only B, its nearest neighbour
    assert one.weights[:, a].nnz == 1 and one.weights[b, a] > 0
    assert one.score(mapping.user_index(["u6"]))[0, a] == 0.0


def planted(n_users=40, n_items=40, per_user=10, seed=0):
    """Two taste groups: even users pick items from the first half, odd users from the second."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    rows = []
    for u in range(n_users):
        block = rng.choice(half, per_user, replace=False) + (u % 2) * half
        rows += [(f"u{u:02d}", f"i{j:02d}") for j in block]
    return inter(rows)


def test_bpr_learns_planted_groups_and_beats_pop():
    train, valid, test = P.random_split_per_user(planted(), seed=3)
    mapping = P.IndexMap.from_frames(train, valid, test)
    pop = P.full_ranking_metrics(P.Pop(mapping).fit(train).score, mapping, test, exclude=(train, valid))
    bpr = P.BPR(mapping, embedding_size=8, lr=0.05, batch_size=64, epochs=40, patience=5, seed=1).fit(train, valid)
    got = P.full_ranking_metrics(bpr.score, mapping, test, exclude=(train, valid))
    assert got["ndcg@10"] > pop["ndcg@10"] + 0.1
    assert bpr.history[0]["train_loss"] > bpr.history[-1]["train_loss"]
    assert "valid_mrr@10" in bpr.history[0]


def test_bpr_is_deterministic_for_a_seed():
    train, valid, _ = P.random_split_per_user(planted(n_users=12, n_items=12, per_user=5), seed=3)
    mapping = P.IndexMap.from_frames(train, valid)
    users = np.arange(mapping.n_users)

    def fit(seed):
        return P.BPR(mapping, embedding_size=4, lr=0.05, batch_size=16, epochs=3, seed=seed).fit(train, valid)

    first, again, other = fit(5), fit(5), fit(6)
    np.testing.assert_array_equal(first.score(users), again.score(users))
    assert first.history[-1]["train_loss"] == again.history[-1]["train_loss"]
    assert not np.allclose(first.score(users), other.score(users))


def test_bpr_rejects_an_unknown_valid_metric():
    with pytest.raises(ValueError, match="valid_metric"):
        P.BPR(MAPPING, valid_metric="auc")


# ---------------------------------------------------------------------------------- end to end


def test_evaluate_recbole_table_and_extra_hook():
    seen = {}

    def build(train, valid, mapping):  # a lead-supplied model: popularity again, from the frames given
        seen.update(train=len(train), valid=len(valid), n_items=mapping.n_items)
        counts = mapping.matrix(train).sum(axis=0).A1
        return lambda u: np.tile(counts, (len(u), 1))

    table = P.evaluate_recbole(planted(), models=("pop", "itemknn"), seed=3, extra={"pop_again": build})
    assert list(table.columns) == P.TABLE_COLUMNS
    assert table["model"].tolist() == ["pop", "itemknn", "pop_again"]
    assert seen == {"train": 320, "valid": 40, "n_items": 40}  # 10 items per user: 8/1/1
    pop, knn, again = (table.iloc[i] for i in range(3))
    assert again["ndcg@10"] == pytest.approx(pop["ndcg@10"])
    assert knn["ndcg@10"] > pop["ndcg@10"]
    with pytest.raises(ValueError, match="unknown models"):
        P.evaluate_recbole(planted(), models=("svd",))
