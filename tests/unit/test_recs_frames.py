"""The recommender's frame-level stages on hand-made frames: labels, cutoffs, pair features, the
feature spec, business rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.models import recs


def T(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


INTER = pd.DataFrame(
    [
        ("u1", "i1", "s1", "view", T("2024-01-01 10:00")),
        ("u1", "i1", "s1", "purchase", T("2024-01-01 10:05")),
        ("u1", "i2", "s1", "view", T("2024-01-01 10:06")),
        ("u2", "i2", "s2", "add_to_cart", T("2024-01-02 09:00")),
        ("u1", "i3", "s3", "view", T("2024-01-08 09:00")),  # in the window after the 2024-01-08 cutoff
        ("u1", "i3", "s3", "add_to_cart", T("2024-01-08 09:01")),
        ("u2", "i1", "s4", "view", T("2024-01-14 23:59")),
        ("u2", "i2", "s5", "purchase", T("2024-01-15 00:00")),  # after the window
    ],
    columns=["user_id", "item_id", "session_id", "event_type", "event_timestamp"],
)
ITEMS = pd.DataFrame(
    {
        "item_id": ["i1", "i2", "i3", "i4"],
        "category_l1": ["home", "home", "beauty", None],
        "brand": ["A", "B", "A", None],
        "price_band": ["low", "mid", "high", None],
        "price": [1.0, 2.0, 3.0, np.nan],
        "launch_date": pd.to_datetime(["2023-01-01", "2023-06-01", "2024-01-05", "2023-01-01"]).date,
        "is_in_stock": [True, False, None, True],
    }
)


def test_window_truth_takes_the_strongest_grade_inside_the_window():
    truth = recs.window_truth(INTER, T("2024-01-08"), 7).sort_values(["user_id", "item_id"])
    assert truth.values.tolist() == [["u1", "i3", 2], ["u2", "i1", 1]]  # cart beats view; 01-15 is outside


def test_split_cutoffs_are_weekly_and_disjoint():
    cuts = recs.split_cutoffs(T("2024-03-01"), {"split": {"window_days": 7, "n_train": 2}})
    assert cuts["test"] == T("2024-02-23") and cuts["valid"] == T("2024-02-16")
    assert cuts["train"] == [T("2024-02-02"), T("2024-02-09")]  # oldest first; each window ends at the next cutoff


def test_lake_end_is_the_midnight_after_the_last_interaction():
    assert recs.lake_end(INTER) == T("2024-01-16")


def test_pair_features_describe_the_users_history_with_the_item():
    history = INTER[INTER["event_timestamp"] < T("2024-01-08")]
    cands = pd.DataFrame({"user_id": ["u1", "u1", "u1", "u9"], "item_id": ["i1", "i3", "i4", "i1"], "rank": [1, 2, 3, 1]})
    ids = np.array(["i1", "i3"], dtype=object)
    matrix = np.eye(2, 4, dtype=np.float32)
    f = recs.pair_features(cands, history, ITEMS, T("2024-01-08"), (ids, matrix)).set_index(["user_id", "item_id"])
    u1i1, u1i3, u1i4, u9 = (f.loc[k] for k in [("u1", "i1"), ("u1", "i3"), ("u1", "i4"), ("u9", "i1")])
    assert u1i1["user_item_count"] == 2 and u1i1["user_item_purchased"] == 1.0
    assert u1i1["days_since_user_item"] == pytest.approx((T("2024-01-08") - T("2024-01-01 10:05")).total_seconds() / 86400)
    assert u1i1["user_category_share"] == pytest.approx(1.0)  # all 3 of u1's events are on home items
    assert u1i1["user_brand_share"] == pytest.approx(2 / 3)
    assert u1i1["user_top_category_l1"] == "home" and u1i1["user_top_brand"] == "A"
    assert u1i3["user_item_count"] == 0 and np.isnan(u1i3["days_since_user_item"]) and u1i3["user_category_share"] == 0
    assert u1i3["item_age_days"] == pytest.approx(3.0)
    assert u1i4["category_l1"] == "unknown" and u1i4["has_text"] == 0.0 and not np.any(u1i4["item_embedding"])
    assert u9["user_history_count"] == 0 and u9["user_top_category_l1"] == "none"  # a user with no history
    assert list(u1i3["item_embedding"]) == [0.0, 1.0, 0.0, 0.0]


def test_feature_spec_separates_pair_user_and_item_columns():
    pairs = pd.DataFrame(
        {
            "user_id": ["u"],
            "item_id": ["i"],
            "group_id": [0],
            "label": [1],
            "rank": [1],
            "event_timestamp": [T("2024-01-01")],
            "covis_score": [0.1],
            "user_item_count": [1.0],
            "user_category_share": [0.5],
            "user_view_count_30d": [3.0],
            "item_view_count_30d": [5.0],
            "price": [1.0],
            "category_l1": ["home"],
            "user_top_category_l1": ["home"],
            "source": ["covis"],
            "item_embedding": [np.zeros(2)],
        }
    )
    config = {
        "features": {
            "categorical": ["source", "category_l1", "user_top_category_l1"],
            "crosses": [["user_top_category_l1", "category_l1"], ["x", "y"]],
        }
    }
    spec = recs.feature_spec(pairs, config)
    assert set(spec.numeric) == {
        "covis_score",
        "user_item_count",
        "user_category_share",
        "user_view_count_30d",
        "item_view_count_30d",
        "price",
    }
    assert spec.crosses == (("user_top_category_l1", "category_l1"),)  # a cross of absent columns is dropped
    assert set(spec.user_columns) == {"user_view_count_30d", "user_top_category_l1"}  # pair-level columns excluded
    assert set(spec.item_columns) == {"item_view_count_30d", "price", "category_l1"}
    assert spec.embedding == "item_embedding"


def test_business_rules_run_after_ranking():
    scored = pd.DataFrame(
        {
            "user_id": ["u1"] * 5 + ["u2"],
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i1"],
            "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
            "source": ["covis"] * 6,
        }
    )
    items = pd.DataFrame(
        {"item_id": ["i1", "i2", "i3", "i4", "i5"], "brand": ["A", "A", "A", None, None], "is_in_stock": [True, False, None, True, True]}
    )
    history = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i1"],
            "event_type": ["purchase", "purchase"],
            "event_timestamp": [T("2024-01-09"), T("2023-12-01")],
        }
    )
    out = recs.apply_rules(scored, items, history, T("2024-01-10"), {"exclude_purchased_days": 14, "max_per_brand": 1}, k=2)
    # u1: i1 bought 1 day ago, i2 out of stock; i3 (unknown stock) kept; brand A capped at one; items
    # without a brand are not capped together; k = 2. u2 bought i1 40 days ago: kept.
    assert out[["user_id", "item_id", "rank"]].values.tolist() == [["u1", "i3", 1], ["u1", "i4", 2], ["u2", "i1", 1]]


def test_rebuy_features_measure_the_repurchase_cycle():
    days = [0, 10, 20, 30]
    own = pd.DataFrame(
        {
            "user_id": ["u"] * 6 + ["v"],
            "item_id": ["A"] * 4 + ["A", "B"] + ["A"],
            "event_type": ["purchase"] * 4 + ["purchase", "purchase", "purchase"],
            "event_timestamp": [T("2024-01-01") + pd.Timedelta(days=d) for d in days]
            + [T("2024-01-31 18:00"), T("2024-01-20"), T("2024-01-05")],  # a second line of A on day 30: one purchase day
        }
    )
    cands = pd.DataFrame({"user_id": ["u", "u", "u", "w"], "item_id": ["A", "B", "C", "A"]})
    f = recs.rebuy_features(cands, own, own, T("2024-02-10")).set_index(["user_id", "item_id"])
    a, b, c = f.loc[("u", "A")], f.loc[("u", "B")], f.loc[("u", "C")]
    assert a["user_item_purchase_days"] == 4 and a["user_item_cycle_days"] == pytest.approx(10.0)
    assert a["days_since_user_item_purchase"] == pytest.approx(10.0) and a["user_item_cycle_ratio"] == pytest.approx(1.0)  # due again
    assert (
        b["user_item_purchase_days"] == 1
        and np.isnan(b["user_item_cycle_days"])
        and b["days_since_user_item_purchase"] == pytest.approx(21.0)
    )
    assert c["user_item_purchase_days"] == 0 and np.isnan(c["days_since_user_item_purchase"])
    assert a["user_purchase_days"] == 5 and a["user_repeat_share"] == pytest.approx(3 / 5)  # 5 item purchase days of 2 items
    assert a["user_days_since_purchase"] == pytest.approx(10.0)
    assert a["item_repeat_rate"] == pytest.approx(0.5) and np.isnan(c["item_repeat_rate"])  # u rebuys A, v does not
    assert f.loc[("w", "A"), "user_purchase_days"] == 0


def test_new_item_groups_add_a_group_of_never_bought_candidates():
    pairs = pd.DataFrame(
        {
            "group_id": [0, 0, 0, 1, 1],
            "rank": [1, 2, 3, 1, 2],
            "user_id": ["u", "u", "u", "v", "v"],
            "item_id": ["A", "B", "C", "A", "D"],
            "user_item_purchase_days": [2.0, 0.0, 0.0, 1.0, 0.0],
            "label": [1, 1, 0, 1, 0],
        }
    )
    out = recs.with_new_item_groups(pairs)
    extra = out[out["group_id"] > 1]
    assert extra["item_id"].tolist() == ["B", "C"]  # u's never-bought items; v's new group has no positive: left out
    assert extra["group_id"].nunique() == 1 and len(out) == len(pairs) + 2
    assert out["group_id"].is_monotonic_increasing
