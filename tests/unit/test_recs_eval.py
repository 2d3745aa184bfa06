"""The purchase protocols and plain references (ml/models/recs/evaluation.py) on hand-made purchases with
known answers, and the reference gate in the registry's promotion."""

from __future__ import annotations

import pandas as pd
import pytest

from ml.models.recs import evaluation as E

CUT = pd.Timestamp("2026-02-01", tz="UTC")


def buys(rows, event_type="purchase"):
    """Purchases from (user_id, item_id, days relative to the cutoff) tuples."""
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "days"])
    df["event_timestamp"] = CUT + pd.to_timedelta(df.pop("days"), unit="D")
    return df.assign(event_type=event_type, session_id=df["user_id"] + df["event_timestamp"].astype(str))


INTER = buys(
    [
        # history: u rebuys A on three days, bought B once; w bought A and C; x bought C once
        ("u", "A", -30),
        ("u", "A", -20),
        ("u", "A", -10),
        ("u", "B", -5),
        ("w", "A", -40),
        ("w", "C", -40),
        ("x", "C", -3),
        # the horizon: u rebuys A and tries C (new to u); newbie buys A; x buys nothing
        ("u", "A", 2),
        ("u", "C", 3),
        ("newbie", "A", 1),
        ("u", "D", 40),  # after a 28-day horizon
    ]
)


def test_purchase_split_truth_segments_and_customers():
    split = E.purchase_split(INTER, CUT, 28)
    assert sorted(map(tuple, split.truth.values.tolist())) == [("newbie", "A"), ("u", "A"), ("u", "C")]
    assert split.bought.set_index(["user_id", "item_id"])["days"].to_dict() == {
        ("u", "A"): 3,
        ("u", "B"): 1,
        ("w", "A"): 1,
        ("w", "C"): 1,
        ("x", "C"): 1,
    }
    assert split.heavy_days == 3  # at least 3 purchase days
    assert split.segment.to_dict() == {"newbie": "new", "u": "heavy", "w": "returning", "x": "returning"}
    assert sorted(split.customers) == ["u", "w", "x"]


def test_references_and_protocols():
    split = E.purchase_split(INTER, CUT, 28)
    refs = E.references(split, k=3)
    own = refs["own_history"]
    assert own[own["user_id"] == "u"]["item_id"].tolist()[:2] == ["A", "B"]  # most purchase days first
    assert own[own["user_id"] == "newbie"]["item_id"].tolist() == E.popularity(split)["item_id"].tolist()[:3]  # filled
    knn = refs["item_knn"]
    assert knn[knn["user_id"] == "x"]["item_id"].iloc[0] == "A"  # C's neighbour

    table = E.evaluate(refs, split).set_index(["model", "protocol", "segment"])
    # repeats (k=10): u's truth {A, C}: own history has A; item-kNN for u has C first (w bought A and C)
    assert table.loc[("own_history", "repeats", "heavy"), "recall"] == pytest.approx(1.0)  # A, then popular C fills
    # new items (k=20): u's new truth is {C} and the list without A, B; newbie's is {A}
    assert table.loc[("item_knn", "new_items", "heavy"), "n_users"] == 1
    assert table.loc[("item_knn", "new_items", "heavy"), "recall"] == pytest.approx(1.0)
    assert table.loc[("popularity", "new_items", "new"), "recall"] == pytest.approx(1.0)
    assert set(table.index.get_level_values("segment")) == {"all", "new", "heavy"}  # no returning buyer in the horizon


def test_new_items_protocol_drops_bought_items_from_lists():
    split = E.purchase_split(INTER, CUT, 28)
    # a list that puts u's bought A, B first and the new C third: for new_items C is first
    lists = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["A", "B", "C"], "score": [3.0, 2.0, 1.0]})
    got = E.evaluate({"m": lists}, split, segments=("heavy",)).set_index("protocol")
    assert got.loc["new_items", "ndcg"] == pytest.approx(1.0)  # C at rank 1 once A, B are gone
    assert got.loc["repeats", "recall"] == pytest.approx(1.0)  # A and C in the top 10


def test_coverage_counts_earlier_customers_with_a_list():
    split = E.purchase_split(INTER, CUT, 28)
    lists = pd.DataFrame({"user_id": ["u", "newbie"], "item_id": ["A", "A"], "score": [1.0, 1.0]})
    assert E.coverage(lists, split) == pytest.approx(1 / 3)  # u of u, w, x


def test_beats_names_every_lost_comparison():
    table = pd.DataFrame(
        [
            ("ours", "repeats", "all", 0.20),
            ("own_history", "repeats", "all", 0.25),
            ("popularity", "repeats", "all", 0.05),
            ("ours", "new_items", "all", 0.10),
            ("item_knn", "new_items", "all", 0.08),
            ("ours", "repeats", "heavy", 0.0),
        ],
        columns=["model", "protocol", "segment", "recall"],
    )
    ok, losses = E.beats(table, "ours")
    assert not ok and losses == ["repeats: recall 0.2000 < own_history 0.2500"]
    assert E.beats(table, "ours", references=("popularity", "item_knn")) == (True, [])
    assert E.beats(table, "ours", references=("item_knn",), margin=0.03)[1] == ["new_items: recall 0.1000 < item_knn 0.0800 + margin 0.03"]
