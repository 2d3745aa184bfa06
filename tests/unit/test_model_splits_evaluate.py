"""Time splits and evaluation metrics on tiny hand-made frames (pure: no files, no services)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.models.lifecycle.evaluate import (
    InsufficientLabelsError,
    binary_metrics,
    calibration_table,
    check_labels,
    group_metrics,
    lift_table,
    top_mask,
)
from ml.models.lifecycle.splits import Split, time_split


def weekly(n_weeks: int, users: int = 3, start: str = "2024-01-01") -> pd.DataFrame:
    """``users`` rows per weekly cutoff (tz-aware), like mart_user_purchase_labels."""
    times = pd.date_range(start, periods=n_weeks, freq="7D", tz="UTC")
    return pd.DataFrame(
        {"user_id": [f"u{u}" for _ in times for u in range(users)], "event_timestamp": [t for t in times for _ in range(users)]}
    )


# --- splits ------------------------------------------------------------------------------------------


def test_split_without_gap_takes_last_times_for_test_and_valid():
    frame = weekly(6)
    split = time_split(frame, n_valid=1, n_test=2)
    times = sorted(frame["event_timestamp"].unique())
    assert isinstance(split, Split)
    assert set(split.test["event_timestamp"]) == set(times[-2:])
    assert set(split.valid["event_timestamp"]) == {times[-3]}
    assert set(split.train["event_timestamp"]) == set(times[:-3])
    assert len(split.train) + len(split.valid) + len(split.test) == len(frame)
    assert split.boundaries["test_start"] == times[-2].isoformat()
    assert split.boundaries["train_end"] == times[-4].isoformat()


def test_split_parts_do_not_overlap_and_keep_rows_intact():
    frame = weekly(8).assign(label=range(24))
    split = time_split(frame, n_valid=2, n_test=1, gap_days=7)
    parts = [split.train, split.valid, split.test]
    indexes = [set(p.index) for p in parts]
    assert not (indexes[0] & indexes[1]) and not (indexes[0] & indexes[2]) and not (indexes[1] & indexes[2])
    assert max(split.train["event_timestamp"]) < min(split.valid["event_timestamp"]) < min(split.test["event_timestamp"])
    for part in parts:  # rows are the frame's own rows, unchanged
        pd.testing.assert_frame_equal(part, frame.loc[part.index])


def test_gap_keeps_label_windows_from_crossing_boundaries():
    frame = weekly(10)
    split = time_split(frame, n_valid=1, n_test=1, gap_days=14)
    valid_start = min(split.valid["event_timestamp"])
    test_start = min(split.test["event_timestamp"])
    # a 14-day label window starting at any train (valid) time ends by the valid (test) start
    assert (split.train["event_timestamp"] + pd.Timedelta(days=14) <= valid_start).all()
    assert (split.valid["event_timestamp"] + pd.Timedelta(days=14) <= test_start).all()
    # weekly cutoffs and a 14-day gap: the cutoff just before each boundary falls in no part
    times = sorted(frame["event_timestamp"].unique())
    assert test_start == times[-1] and valid_start == times[-3]
    assert max(split.train["event_timestamp"]) == times[-5]
    used = set(split.train["event_timestamp"]) | set(split.valid["event_timestamp"]) | set(split.test["event_timestamp"])
    assert times[-2] not in used and times[-4] not in used


def test_gap_of_zero_includes_every_time():
    frame = weekly(4)
    split = time_split(frame, gap_days=0)
    assert len(split.train) + len(split.valid) + len(split.test) == len(frame)


def test_split_accepts_dates_and_naive_timestamps():
    frame = pd.DataFrame({"cutoff_date": [pd.Timestamp("2024-01-01").date() + pd.Timedelta(days=7 * i) for i in range(5)]})
    split = time_split(frame, time_col="cutoff_date", gap_days=7)  # a 7-day window ends at the next weekly cutoff
    assert len(split.test) == 1 and len(split.valid) == 1 and len(split.train) == 3
    split = time_split(frame, time_col="cutoff_date", gap_days=8)
    assert len(split.test) == 1 and list(split.valid.index) == [2] and list(split.train.index) == [0]


@pytest.mark.parametrize(
    ("n_weeks", "kwargs", "message"),
    [
        (2, {"n_valid": 1, "n_test": 1}, "training part would be empty"),
        (2, {"n_valid": 1, "n_test": 1, "gap_days": 8}, "validation would be empty"),
        (3, {"n_valid": 1, "n_test": 1, "gap_days": 8}, "training part would be empty"),
        (4, {"n_valid": 1, "n_test": 1, "gap_days": 14}, "training part would be empty"),
        (1, {"n_valid": 0, "n_test": 2}, "cannot hold out 2"),
    ],
)
def test_split_raises_when_a_part_would_be_empty(n_weeks, kwargs, message):
    with pytest.raises(ValueError, match=message):
        time_split(weekly(n_weeks), **kwargs)


def test_split_rejects_missing_column_and_null_times():
    with pytest.raises(ValueError, match="not in frame"):
        time_split(weekly(4), time_col="cutoff_date")
    frame = weekly(4)
    frame.loc[0, "event_timestamp"] = pd.NaT
    with pytest.raises(ValueError, match="null"):
        time_split(frame)


# --- metrics -----------------------------------------------------------------------------------------


def test_perfect_ranking_has_auc_one_and_known_values():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = binary_metrics(y, p)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["n"] == 5 and m["positive_rate"] == pytest.approx(0.4)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["log_loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    # top decile of 5 rows = the single best row (a positive): lift = 1 / 0.4
    assert m["lift_top_decile"] == pytest.approx(2.5)


def test_reversed_ranking_has_auc_zero():
    y = np.array([0, 0, 1, 1])
    assert binary_metrics(y, [0.9, 0.8, 0.2, 0.1])["roc_auc"] == 0.0


def test_single_class_gives_nan_ranking_metrics():
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"]) and math.isnan(m["lift_top_decile"])
    assert m["positive_rate"] == 0.0 and m["log_loss"] > 0


def test_random_score_has_lift_about_one_and_auc_about_half():
    rng = np.random.default_rng(7)
    y = rng.binomial(1, 0.2, size=50_000)
    m = binary_metrics(y, rng.random(50_000))
    assert m["lift_top_decile"] == pytest.approx(1.0, abs=0.08)
    assert m["roc_auc"] == pytest.approx(0.5, abs=0.02)


def test_informative_score_has_high_lift():
    rng = np.random.default_rng(1)
    y = rng.binomial(1, 0.1, size=20_000)
    p = np.clip(0.05 + 0.5 * y + rng.normal(0, 0.1, size=y.size), 0.001, 0.999)
    assert binary_metrics(y, p)["lift_top_decile"] > 5


def test_calibration_error_is_small_for_true_probabilities_and_sees_a_shift():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.6, size=40_000)
    y = rng.binomial(1, p)
    assert binary_metrics(y, p)["ece"] < 0.01
    shifted = binary_metrics(y, p * 0.7)  # the same ranking, probabilities 30 % too low
    assert shifted["roc_auc"] == pytest.approx(binary_metrics(y, p)["roc_auc"])
    assert shifted["ece"] == pytest.approx(0.3 * p.mean(), abs=0.01)


def test_metrics_reject_null_labels_and_length_mismatch():
    with pytest.raises(ValueError, match="null"):
        binary_metrics([1, np.nan, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="length"):
        binary_metrics([1, 0], [0.1, 0.2, 0.3])


def test_top_mask_includes_ties_at_the_cutoff():
    assert top_mask([0.5] * 20).all()
    assert top_mask(np.arange(20)).sum() == 2


def test_lift_table_deciles_and_gain():
    p = np.linspace(1, 0, 100)  # rows in descending score order: decile 1 = first 10 rows
    y = np.zeros(100, dtype=int)
    y[:5] = 1  # all 5 positives in the top decile
    table = lift_table(y, p)
    assert list(table["decile"]) == list(range(1, 11))
    assert (table["n"] == 10).all()
    assert table.loc[0, "positives"] == 5 and table.loc[0, "lift"] == pytest.approx(10.0)
    assert table.loc[0, "cumulative_gain"] == 1.0 and table["cumulative_gain"].iloc[-1] == 1.0
    assert table["cumulative_population"].iloc[-1] == pytest.approx(1.0)
    assert (table["score_min"].diff().dropna() < 0).all()  # decile 1 holds the highest scores


def test_calibration_table_of_a_calibrated_score():
    rng = np.random.default_rng(3)
    p = rng.random(40_000)
    y = rng.binomial(1, p)
    table = calibration_table(y, p, bins=5)
    assert len(table) == 5 and table["n"].sum() == 40_000
    assert np.allclose(table["mean_predicted"], table["observed_rate"], atol=0.03)
    uniform = calibration_table(y, p, bins=4, strategy="uniform")
    assert uniform["p_max"].max() <= 1 and len(uniform) == 4


def test_check_labels():
    assert check_labels([1] * 20 + [0] * 25) == {"positives": 20, "negatives": 25, "n": 45}
    with pytest.raises(InsufficientLabelsError, match="3 positives") as info:
        check_labels([1] * 3 + [0] * 100)
    assert info.value.positives == 3 and info.value.negatives == 100
    with pytest.raises(InsufficientLabelsError, match="5 negatives"):
        check_labels([1] * 50 + [0] * 5, min_positives=10, min_negatives=10)
    assert isinstance(info.value, ValueError)


# --- fairness ----------------------------------------------------------------------------------------


def audit_frame(rate_b: float, n: int = 2_000, seed: int = 0):
    """Two equal-sized groups with the same labels; group b's scores are scaled by ``rate_b``."""
    rng = np.random.default_rng(seed)
    groups = np.array(["a"] * n + ["b"] * n)
    y = rng.binomial(1, 0.2, size=2 * n)
    p = np.clip(0.1 + 0.6 * y + rng.normal(0, 0.15, size=2 * n), 0.001, 0.999)
    p[groups == "b"] *= rate_b
    return y, p, groups


def test_group_metrics_flags_a_planted_disparity():
    y, p, groups = audit_frame(rate_b=0.5)
    table = group_metrics(y, p, groups).set_index("group")
    assert table.loc["b", "predicted_positive_rate"] < 0.5 * table.loc["a", "predicted_positive_rate"]
    assert table.loc["a", "ppr_ratio"] == 1.0 and table.loc["b", "ppr_ratio"] < 0.8
    assert bool(table.loc["b", "flagged"]) and not bool(table.loc["a", "flagged"])
    assert {"n", "positive_rate", "tpr", "fpr", "roc_auc", "tpr_ratio", "too_small"} <= set(table.columns)


def test_group_metrics_does_not_flag_equal_groups():
    y, p, groups = audit_frame(rate_b=1.0)
    table = group_metrics(y, p, groups)
    assert not table["flagged"].any()
    assert (table["ppr_ratio"] > 0.8).all() and (table["tpr_ratio"] > 0.8).all()


def test_group_metrics_with_threshold_and_small_groups():
    y = np.array([1, 0, 1, 0] * 10 + [1, 0])
    p = np.array([0.9, 0.1, 0.8, 0.2] * 10 + [0.1, 0.05])
    groups = ["big"] * 40 + ["tiny", None]
    table = group_metrics(y, p, groups, threshold=0.5, min_group=30).set_index("group")
    assert table.loc["big", "tpr"] == 1.0 and table.loc["big", "fpr"] == 0.0 and table.loc["big", "roc_auc"] == 1.0
    # "tiny" is predicted negative throughout (a ratio of 0) but too small to be flagged
    assert bool(table.loc["tiny", "too_small"]) and table.loc["tiny", "ppr_ratio"] == 0.0
    assert not table["flagged"].any()
    assert "missing" in table.index  # null group values get their own row
