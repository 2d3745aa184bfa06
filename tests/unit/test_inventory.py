"""Inventory policy maths on hand-computed cases (ml/models/demand/inventory.py).

Safety stock, reorder point and order-up-to level against the textbook formulas worked by hand
(z = 1.6449 at 95 %), projected stock-out dates and days of cover on hand-made forecasts, lead-time
resolution and its errors, weekly forecasts, and turnover with the (s, S) replay simulated by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.models.demand import inventory as inv

Z95 = 1.6448536


def forecast(
    series: dict[tuple[str, str], list[float]], sigma: float | list[float] = 2.0, start: str = "2026-11-01", freq: str = "D"
) -> pd.DataFrame:
    """Forecast rows with P10/P90 placed so that (p90 - p10) / (2 * 1.2816) = sigma."""
    frames = []
    for (item, wh), yhat in series.items():
        yhat = np.asarray(yhat, dtype=float)
        sd = np.broadcast_to(np.asarray(sigma, dtype=float), yhat.shape)
        frames.append(
            pd.DataFrame(
                {
                    "item_id": item,
                    "warehouse_id": wh,
                    "demand_date": pd.date_range(start, periods=len(yhat), freq=freq),
                    "yhat": yhat,
                    "yhat_p10": yhat - inv.P90_Z * sd,
                    "yhat_p90": yhat + inv.P90_Z * sd,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


LEAD = pd.DataFrame({"warehouse_id": ["w1"], "lead_time_days": [4]})


def test_service_z():
    assert inv.service_z(0.95) == pytest.approx(Z95, abs=1e-6)
    assert inv.service_z(0.99) == pytest.approx(2.3263479, abs=1e-6)
    assert inv.P90_Z == pytest.approx(1.2815516, abs=1e-6)
    for bad in (0.3, 1.0, 1.2):
        with pytest.raises(ValueError, match="service_level"):
            inv.service_z(bad)


def test_policy_matches_hand_computation():
    fc = forecast({("i1", "w1"): [10.0] * 28})
    stock = pd.DataFrame({"item_id": ["i1"], "warehouse_id": ["w1"], "on_hand_units": [30], "on_order_units": [10]})
    row = inv.policy(fc, LEAD, service_level=0.95, review_period_days=7, on_hand=stock).iloc[0]
    # lead time 4 days of 10/day, sd 2/day, independent days: sigma_LT = 2 * sqrt(4) = 4
    assert row["demand_lt"] == pytest.approx(40.0)
    assert row["mean_daily_demand_lt"] == pytest.approx(10.0)
    assert row["sigma_lt"] == pytest.approx(4.0)
    assert row["safety_stock"] == pytest.approx(Z95 * 4.0, abs=1e-4)  # 6.5794
    assert row["reorder_point"] == pytest.approx(40.0 + Z95 * 4.0, abs=1e-4)  # 46.5794
    # order-up-to over L + R = 11 days: 110 + z * 2 * sqrt(11)
    assert row["order_up_to"] == pytest.approx(110.0 + Z95 * 2.0 * math.sqrt(11.0), abs=1e-4)  # 120.911
    # position 40 <= 46.58: order up to 120.91 -> ceil(80.91) = 81 units
    assert row["inventory_position"] == 40.0
    assert bool(row["order_needed"]) is True
    assert row["suggested_order_units"] == 81.0
    # 40 units at 10/day: projected stock 30, 20, 10, 0 -> out on the 4th day
    assert row["projected_stockout_date"] == pd.Timestamp("2026-11-04")
    assert row["days_of_cover"] == pytest.approx(4.0)
    assert row["lead_time_source"] == "warehouse" and not row["horizon_extended"]


def test_policy_higher_service_level_holds_more_stock():
    fc = forecast({("i1", "w1"): [10.0] * 28})
    p95 = inv.policy(fc, LEAD, service_level=0.95).iloc[0]
    p99 = inv.policy(fc, LEAD, service_level=0.99).iloc[0]
    assert p99["safety_stock"] == pytest.approx(2.3263479 * 4.0, abs=1e-4)
    assert p99["reorder_point"] > p95["reorder_point"] and p99["order_up_to"] > p95["order_up_to"]
    # no spread, no safety stock
    flat = inv.policy(forecast({("i1", "w1"): [10.0] * 28}, sigma=0.0), LEAD).iloc[0]
    assert flat["safety_stock"] == 0.0 and flat["reorder_point"] == pytest.approx(40.0)


def test_projected_stockout_on_uneven_forecast_and_no_order_above_reorder_point():
    fc = forecast({("i1", "w1"): [0, 5, 5, 20, 1, 1, 1, 1, 1, 1], ("i2", "w1"): [3.0] * 10})
    stock = pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "warehouse_id": ["w1", "w1"],
            "on_hand_units": [20, 100],
            "on_order_units": [5, 0],
        }
    )
    plan = inv.policy(fc, LEAD, on_hand=stock).set_index("item_id")
    # i1: position 25; cumulative forecast 0, 5, 10, 30 -> out on the 4th day (projected -5)
    assert plan.loc["i1", "projected_stockout_date"] == pd.Timestamp("2026-11-04")
    assert plan.loc["i1", "days_of_cover"] == pytest.approx(25 / 3.6)  # mean forecast 36 / 10 days
    # i2: 100 units vs 30 over the horizon: no stock-out within it, no order (position > reorder point)
    assert pd.isna(plan.loc["i2", "projected_stockout_date"])
    assert not plan.loc["i2", "order_needed"] and plan.loc["i2", "suggested_order_units"] == 0.0
    # a series absent from on_hand keeps null stock columns
    only_i1 = inv.policy(fc, LEAD, on_hand=stock[stock["item_id"] == "i1"]).set_index("item_id")
    assert pd.isna(only_i1.loc["i2", "inventory_position"]) and pd.isna(only_i1.loc["i2", "projected_stockout_date"])


def test_lead_times_item_row_wins_and_missing_ones_are_named():
    fc = forecast({("i1", "w1"): [10.0] * 20, ("i2", "w1"): [10.0] * 20, ("i3", "w2"): [10.0] * 20})
    lead = pd.DataFrame({"item_id": [None, "i2"], "warehouse_id": ["w1", "w1"], "lead_time_days": [4, 2]})
    with pytest.raises(inv.LeadTimeError, match="i3@w2") as err:
        inv.policy(fc, lead)
    assert err.value.series == [("i3", "w2")]
    plan = inv.policy(fc, lead, default_lead_time_days=10).set_index("item_id")
    assert plan["lead_time_days"].to_dict() == {"i1": 4.0, "i2": 2.0, "i3": 10.0}
    assert plan["lead_time_source"].to_dict() == {"i1": "warehouse", "i2": "item", "i3": "default"}
    assert plan.attrs["default_lead_time_series"] == 1
    assert plan.loc["i2", "demand_lt"] == pytest.approx(20.0)  # the item row's 2 days, not the warehouse's 4


def test_weekly_fractional_and_extended_horizons():
    # one week of 70 units with sd 7 per week = 10/day with variance 49 / 7 per day
    weekly = forecast({("i1", "w1"): [70.0, 70.0]}, sigma=7.0, freq="W-SUN")
    row = inv.policy(weekly, pd.DataFrame({"warehouse_id": ["w1"], "lead_time_days": [7]}), review_period_days=0).iloc[0]
    assert row["demand_lt"] == pytest.approx(70.0) and row["sigma_lt"] == pytest.approx(7.0)
    assert row["order_up_to"] == pytest.approx(row["reorder_point"])  # R = 0
    # a fractional lead time counts the last day pro rata
    daily = forecast({("i1", "w1"): [10.0, 20.0, 30.0, 40.0]}, sigma=0.0)
    half = inv.policy(daily, pd.DataFrame({"warehouse_id": ["w1"], "lead_time_days": [2.5]}), review_period_days=0).iloc[0]
    assert half["demand_lt"] == pytest.approx(10 + 20 + 15)
    # L + R beyond the 4-day horizon: the horizon's mean rate (25/day) fills the missing days
    longer = inv.policy(daily, pd.DataFrame({"warehouse_id": ["w1"], "lead_time_days": [3]}), review_period_days=3).iloc[0]
    assert longer["horizon_extended"] and longer["order_up_to"] == pytest.approx(100 + 2 * 25)


def test_policy_rejects_bad_forecasts():
    fc = forecast({("i1", "w1"): [10.0] * 5})
    with pytest.raises(ValueError, match="yhat_p90"):
        inv.policy(fc.drop(columns=["yhat_p90"]), LEAD)
    nulls = fc.copy()
    nulls.loc[2, "yhat_p10"] = np.nan
    with pytest.raises(ValueError, match="i1@w1"):
        inv.policy(nulls, LEAD)
    with pytest.raises(ValueError, match="duplicate"):
        inv.policy(pd.concat([fc, fc.iloc[[0]]]), LEAD)
    irregular = fc.drop(index=2)
    with pytest.raises(ValueError, match="regular"):
        inv.policy(irregular, LEAD)
    crossed = fc.copy()
    crossed[["yhat_p10", "yhat_p90"]] = crossed[["yhat_p90", "yhat_p10"]].to_numpy()
    plan = inv.policy(crossed, LEAD)
    assert plan.attrs["crossed_quantile_rows"] == 5 and plan.iloc[0]["safety_stock"] == 0.0


# ----------------------------------------------------------------------------- turnover


def test_simulate_policy_by_hand():
    # 2 units/day from an opening stock of 22, s = 5, S = 12, lead time 2, daily review:
    # end-of-day stock 20, 18, ..., 4 (day 8: position 4 <= 5, order 8 arriving day 10), 2,
    # day 10: 2 + 8 - 2 = 8, 6, then day 12: 4 -> another order (arrives after the horizon), 2
    sim = inv.simulate_policy(np.full(14, 2.0), reorder_point=5, order_up_to=12, lead_time_days=2, opening_stock=22)
    assert sim["on_hand"].tolist() == [20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 8, 6, 4, 2]
    assert sim["orders"] == 2 and sim["lost_units"] == 0.0
    # a lead time longer than the stock lasts loses sales, never goes negative
    short = inv.simulate_policy(np.full(10, 5.0), reorder_point=10, order_up_to=20, lead_time_days=6, opening_stock=20)
    assert short["on_hand"].min() == 0.0 and short["lost_units"] > 0
    assert short["sales"].sum() + short["lost_units"] == pytest.approx(50.0)
    # weekly review: positions 14..4 on days 1-6 are below s but only day 7 (2 left) orders
    weekly = inv.simulate_policy(
        np.full(10, 2.0), reorder_point=15, order_up_to=20, lead_time_days=1, review_period_days=7, opening_stock=18
    )
    assert weekly["orders"] == 1
    assert weekly["on_hand"].tolist() == [16, 14, 12, 10, 8, 6, 4, 2, 18, 16]
    daily = inv.simulate_policy(np.full(10, 2.0), reorder_point=15, order_up_to=20, lead_time_days=1, opening_stock=18)
    assert daily["on_hand"][:3].tolist() == [16, 14, 18]  # ordered 6 on day 1, in on day 2


def test_turnover_history_vs_policy_on_hand_made_history():
    days = pd.date_range("2026-01-01", periods=14)
    history = pd.DataFrame({"item_id": "i1", "warehouse_id": "w1", "demand_date": days, "units": 2.0, "on_hand_units": 20.0})
    other = history.assign(item_id="i9")  # no policy row: left out and counted
    plan = pd.DataFrame(
        {
            "item_id": ["i1"],
            "warehouse_id": ["w1"],
            "reorder_point": [5.0],
            "order_up_to": [12.0],
            "lead_time_days": [2.0],
            "review_period_days": [1.0],
        }
    )
    table, summary = inv.turnover(pd.concat([history, other]), plan)
    row = table.iloc[0]
    assert row["history_turnover"] == pytest.approx(28 / 20)
    # replay from the opening stock 20 + 2 = 22: the hand-simulated path above, mean 130 / 14
    assert row["policy_mean_on_hand"] == pytest.approx(130 / 14)
    assert row["policy_turnover"] == pytest.approx(28 / (130 / 14))
    assert row["policy_fill_rate"] == 1.0 and row["policy_lost_units"] == 0.0
    assert row["history_turnover_annual"] == pytest.approx(28 / 20 * 365 / 14)
    assert summary["n_series"] == 1 and summary["series_without_policy"] == 1
    assert summary["turnover_ratio"] == pytest.approx((28 / (130 / 14)) / (28 / 20))
    with pytest.raises(ValueError, match="negative"):
        inv.turnover(history.assign(units=-1.0), plan)
    with pytest.raises(ValueError, match="no history series has a policy"):
        inv.turnover(other, plan)


def test_turnover_replays_series_of_different_spans_like_one_at_a_time():
    """The vectorised replay equals simulate_policy per series, whatever each series' dates."""
    rng = np.random.default_rng(0)
    spans = {("a", "w1"): ("2026-01-01", 30), ("b", "w1"): ("2026-01-10", 12), ("a", "w2"): ("2026-01-05", 21)}
    rows, plan = [], []
    for k, ((item, wh), (start, n)) in enumerate(spans.items()):
        ds = pd.date_range(start, periods=n)
        rows.append(
            pd.DataFrame(
                {
                    "item_id": item,
                    "warehouse_id": wh,
                    "demand_date": ds,
                    "units": rng.poisson(3, n).astype(float),
                    "on_hand_units": rng.integers(0, 30, n).astype(float),
                }
            )
        )
        plan.append({"item_id": item, "warehouse_id": wh, "reorder_point": 8.0 + k, "order_up_to": 25.0 - k, "lead_time_days": 2.0 + k})
    history = pd.concat(rows, ignore_index=True).drop(index=[5, 40])  # a missing day counts as no demand
    table, _ = inv.turnover(history, pd.DataFrame(plan))
    for p in plan:
        g = history[(history["item_id"] == p["item_id"]) & (history["warehouse_id"] == p["warehouse_id"])].set_index("demand_date")
        g = g.reindex(pd.date_range(g.index.min(), g.index.max()))
        y = g["units"].fillna(0.0).to_numpy()
        sim = inv.simulate_policy(
            y, p["reorder_point"], p["order_up_to"], p["lead_time_days"], opening_stock=g["on_hand_units"].iloc[0] + y[0]
        )
        got = table[(table["item_id"] == p["item_id"]) & (table["warehouse_id"] == p["warehouse_id"])].iloc[0]
        assert got["days"] == len(y)
        assert got["policy_mean_on_hand"] == pytest.approx(sim["on_hand"].mean())
        assert got["policy_lost_units"] == pytest.approx(sim["lost_units"]) and got["policy_orders"] == sim["orders"]
        assert got["history_mean_on_hand"] == pytest.approx(g["on_hand_units"].mean())


def test_policy_feeds_turnover():
    """The two functions compose: a policy sized from a forecast, replayed over matching demand."""
    fc = forecast({("i1", "w1"): [10.0] * 28})
    plan = inv.policy(fc, LEAD)
    history = pd.DataFrame(
        {
            "item_id": "i1",
            "warehouse_id": "w1",
            "demand_date": pd.date_range("2026-01-01", periods=60),
            "units": 10.0,
            "on_hand_units": 200.0,
        }
    )
    table, summary = inv.turnover(history, plan)
    assert summary["policy_fill_rate"] == 1.0  # deterministic demand at the forecast: never short
    assert summary["policy_mean_on_hand"] < 200.0 and summary["turnover_ratio"] > 1.0
