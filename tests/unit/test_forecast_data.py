"""Demand series preparation: frequency, the bad-input rules, holidays, future regressors, features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.models.demand import data as fd


def _series(item: str, n: int = 40, start: str = "2023-01-02", freq: str = "D", **columns) -> pd.DataFrame:
    ds = pd.date_range(start, periods=n, freq="D" if freq == "D" else "7D")
    frame = pd.DataFrame({"item_id": item, "warehouse_id": "W1", "demand_date": ds, "units": np.arange(n, dtype=float) % 5 + 1})
    return frame.assign(**columns)


def _rule(report: pd.DataFrame, item: str, rule: str) -> int:
    rows = report.loc[(report["item_id"] == item) & (report["rule"] == rule), "rows"]
    return int(rows.sum())


# --------------------------------------------------------------------------------- frequency


def test_infer_frequency_daily_weekly_and_irregular():
    assert fd.infer_frequency(pd.date_range("2023-01-01", periods=30)) == "D"
    weekly = pd.concat([_series("A", 20, "2023-01-02", "W"), _series("B", 20, "2023-01-09", "W")])  # Mondays
    assert fd.infer_frequency(weekly) == "W-MON"
    daily_with_gaps = pd.concat([_series("A", 30).iloc[::2], _series("B", 30)])  # A every other day, B daily
    assert fd.infer_frequency(daily_with_gaps) == "D"
    with pytest.raises(ValueError, match="most common step is 31 days"):
        fd.infer_frequency(pd.date_range("2023-01-31", periods=12, freq="ME"))
    with pytest.raises(ValueError, match="no series has two distinct dates"):
        fd.infer_frequency(_series("A", 1))


# --------------------------------------------------------------------------------- bad input


@pytest.fixture
def dirty():
    ok = _series("OK", is_promoted=0.0)
    dup = _series("DUP", is_promoted=0.0)
    dup = pd.concat([dup, dup.iloc[[5, 5]].assign(units=10.0)])  # two extra rows for day 5
    gap = _series("GAP", is_promoted=0.0)
    gap.loc[9, "is_promoted"] = 1.0
    gap = gap.drop(index=[10, 11, 12])
    neg = _series("NEG", is_promoted=0.0)
    neg.loc[7, "units"] = -4.0
    nan = _series("NAN", is_promoted=0.0).astype({"units": object})
    nan.loc[[3, 4], "units"] = np.nan
    nan.loc[6, "units"] = "n/a"
    zero = _series("ZERO", is_promoted=0.0).assign(units=0.0)
    short = _series("SHORT", 10, start="2023-02-01", is_promoted=0.0)  # ends with the others
    return pd.concat([ok, dup, gap, neg, nan, zero, short], ignore_index=True)


def test_prepare_applies_each_rule_and_counts_it(dirty):
    clean, report = fd.prepare(dirty, min_history=20)

    assert _rule(report, "DUP", "duplicate_date") == 2
    day5 = clean.loc[(clean["item_id"] == "DUP") & (clean["demand_date"] == "2023-01-07"), "units"]
    assert day5.tolist() == [1.0 + 10.0 + 10.0]  # summed, not first/last

    assert _rule(report, "GAP", "gap") == 3
    filled = clean.loc[(clean["item_id"] == "GAP") & clean["demand_date"].between("2023-01-12", "2023-01-14")]
    assert filled["units"].tolist() == [0.0, 0.0, 0.0]
    assert filled["is_promoted"].tolist() == [1.0, 1.0, 1.0]  # carried forward from day 9

    assert _rule(report, "NEG", "negative_y") == 1
    assert clean.loc[clean["item_id"] == "NEG", "units"].min() == 0.0

    assert _rule(report, "NAN", "nan_y") == 3  # two nulls and one non-numeric
    assert _rule(report, "NAN", "gap") == 3  # the dropped periods are gaps, filled with 0

    for item, rule in (("ZERO", "all_zero"), ("SHORT", "too_short")):
        assert _rule(report, item, rule) == (40 if item == "ZERO" else 10)
        assert item not in set(clean["item_id"])
    assert "moving-average" in report.loc[report["rule"] == "too_short", "reason"].iloc[0]

    assert not (report["item_id"] == "OK").any()
    ok = clean.loc[clean["item_id"] == "OK"].reset_index(drop=True)
    pd.testing.assert_frame_equal(ok[["demand_date", "units"]], _series("OK")[["demand_date", "units"]])
    assert len(clean) == 5 * 40 and not clean[["units", "is_promoted"]].isna().any().any()


def test_prepare_moves_off_grid_dates_and_fills_null_regressors():
    weekly = _series("A", 10, "2023-01-02", "W", temperature_c=5.0)  # Mondays
    weekly.loc[3, "demand_date"] = weekly.loc[3, "demand_date"] - pd.Timedelta(days=8)  # a Sunday: in the week ending on row 2's Monday
    weekly.loc[5, "temperature_c"] = np.nan
    clean, report = fd.prepare(weekly, "W-MON", min_history=1)
    assert _rule(report, "A", "off_grid") == 1
    assert _rule(report, "A", "duplicate_date") == 1  # the moved row joins week 2's row and is summed
    assert _rule(report, "A", "regressor_filled") == 1
    assert _rule(report, "A", "gap") == 1  # its own week now has no row
    assert clean["demand_date"].dt.weekday.eq(0).all() and clean["temperature_c"].eq(5.0).all()
    assert clean["units"].sum() == weekly["units"].sum()


def test_prepare_extends_every_series_to_the_last_date():
    ended = pd.concat([_series("A", 40), _series("B", 30)])  # B's last rows were zero days, not exported
    clean, report = fd.prepare(ended, min_history=1)
    assert clean.groupby("item_id")["demand_date"].max().nunique() == 1
    assert _rule(report, "B", "gap") == 10


def test_detect_regressors_from_the_columns_present():
    frame = _series("A", is_promoted=np.arange(40) % 2, price=9.99, markdown_amount=np.arange(40.0), note="x", category_l1="toys")
    assert fd.detect_regressors(frame) == ["is_promoted", "markdown_amount"]  # price is constant, note is text
    assert fd.detect_regressors(frame, constant_ok=True) == ["is_promoted", "price", "markdown_amount"]


def test_holiday_flags_from_the_holidays_package():
    daily, _ = fd.prepare(_series("A", 14, "2023-12-20"), min_history=1, country="GB")
    flagged = daily.loc[daily["is_holiday"] == 1, "demand_date"].dt.strftime("%m-%d").tolist()
    assert flagged == ["12-25", "12-26", "01-01"]
    weekly, _ = fd.prepare(_series("A", 6, "2023-12-04", "W"), min_history=1, country={"W1": "GB"})
    assert weekly.loc[weekly["is_holiday"] == 1, "demand_date"].dt.strftime("%m-%d").tolist() == ["12-25", "01-01"]
    hol = fd.holidays_frame(["GB", "DE"], [2023])
    assert {"holiday_date", "country", "holiday_name"} <= set(hol.columns) and set(hol["country"]) == {"GB", "DE"}


def test_future_frame_fills_unknown_regressors_by_rule():
    history = _series("A", 14, is_promoted=1.0, price=np.r_[np.full(13, 2.0), 3.0], temperature_c=np.arange(14.0))
    known = pd.DataFrame({"item_id": "A", "warehouse_id": "W1", "demand_date": pd.to_datetime(["2023-01-16"]), "is_promoted": [1.0]})
    future, report = fd.future_frame(history, 3, "D", known=known)
    assert future["demand_date"].dt.strftime("%m-%d").tolist() == ["01-16", "01-17", "01-18"]
    assert future["is_promoted"].tolist() == [1.0, 0.0, 0.0]  # the calendar's value, then no promotion
    assert future["price"].tolist() == [3.0] * 3  # the last price
    assert future["temperature_c"].tolist() == [12.0] * 3  # mean of the last 3 periods (11, 12, 13)
    counts = report.set_index(report["reason"].str.split(" ").str[0])["rows"]
    assert counts.to_dict() == {"is_promoted": 2, "price": 3, "temperature_c": 3}


# ----------------------------------------------------------------------------------- features


def test_features_read_only_the_past_of_the_origin():
    frame = fd.synthetic_frame(3, 80, seed=2)
    scale = fd.series_scale(frame)
    rows = fd.make_features(frame, 14, "D", scale=scale)
    r = rows.loc[rows["h"] == 9].iloc[len(rows) // 30]
    y = frame.loc[frame["item_id"] == r["item_id"]].set_index("demand_date")["units"] / r["scale"]
    day = pd.Timedelta(days=1)
    assert r["lag_0"] == pytest.approx(y[r["origin"]]) and r["lag_13"] == pytest.approx(y[r["origin"] - 13 * day])
    assert r["roll_mean_7"] == pytest.approx(y[r["origin"] - 6 * day : r["origin"]].mean())
    assert r["seasonal_naive"] == pytest.approx(y[r["demand_date"] - 14 * day])  # h = 9: two weeks back, not one (after the origin)
    assert r["units"] == pytest.approx(y[r["demand_date"]]) and r["day_of_week"] == r["demand_date"].dayofweek
    assert r["demand_date"] - r["origin"] == 9 * day

    cut = pd.Timestamp("2023-02-15")
    changed = frame.assign(units=np.where(frame["demand_date"] > cut, frame["units"] * 100 + 7, frame["units"]))
    again = fd.make_features(changed, 14, "D", scale=scale)
    before = rows["origin"] <= cut
    features = [c for c in rows.columns if c not in (*fd.FEATURE_META, *fd.REGRESSORS)]
    pd.testing.assert_frame_equal(rows.loc[before, features], again.loc[before, features])
    assert not np.allclose(
        rows.loc[before & (rows["demand_date"] > cut), "units"], again.loc[before & (again["demand_date"] > cut), "units"]
    )


def test_forecast_rows_start_after_each_series_last_date():
    frame = fd.synthetic_frame(2, 60, seed=3)
    future, _ = fd.future_frame(frame, 7, "D")
    rows = fd.make_features(frame, 7, "D", future=future)
    assert len(rows) == 14 and rows["units"].isna().all() and (rows["origin"] == frame["demand_date"].max()).all()
    assert rows.groupby("item_id", observed=True)["h"].apply(list).tolist() == [list(range(1, 8))] * 2
    sampled = fd.make_features(frame, 7, "D", max_rows=100, seed=1)
    assert 0 < len(sampled) <= 100 and (sampled["demand_date"] <= frame["demand_date"].max()).all()


def test_sample_positions_covers_every_range_or_draws_within_them():
    lo, hi = np.array([0, 10, 5, 3]), np.array([2, 9, 8, 3])  # group 1 is empty (hi < lo)
    group, pos = fd.sample_positions(lo, hi, None, seed=0)
    assert list(zip(group, pos)) == [(0, 0), (0, 1), (0, 2), (2, 5), (2, 6), (2, 7), (2, 8), (3, 3)]
    lo, hi = np.zeros(1000, dtype=int), np.full(1000, 99)  # 100k positions, at most 500 drawn
    group, pos = fd.sample_positions(lo, hi, 500, seed=7)
    assert 400 < len(group) <= 500 and len(set(zip(group, pos))) == len(group)
    assert ((pos >= 0) & (pos <= 99)).all() and ((group >= 0) & (group < 1000)).all()
    again = fd.sample_positions(lo, hi, 500, seed=7)
    assert np.array_equal(group, again[0]) and np.array_equal(pos, again[1])
    assert len(fd.sample_positions(np.array([], dtype=int), np.array([], dtype=int), 10, seed=0)[0]) == 0
