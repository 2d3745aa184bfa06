"""The forecast job's inputs from the dbt exports: the known future of the promotion regressors and
the stock / lead times of the inventory plan (files written here; the SQL is tested in dbt)."""

from __future__ import annotations

import pandas as pd
import pytest

from ml.models import demand
from ml.settings import settings_for


@pytest.fixture
def settings(tmp_path):
    s = settings_for(data_dir=tmp_path / "data")
    s.exports_dir.mkdir(parents=True)
    return s


def _history(freq: str = "D") -> pd.DataFrame:
    ds = pd.date_range("2024-01-01", periods=10, freq=freq)
    return pd.concat([pd.DataFrame({"item_id": i, "warehouse_id": "w1", "demand_date": ds, "units": 1.0}) for i in ("a", "b")])


def test_known_future_marks_promoted_periods_and_knows_the_rest_are_not(settings):
    pd.DataFrame(
        {
            "item_id": ["a", "a", "b"],
            "warehouse_id": ["w1"] * 3,
            "promotion_date": pd.to_datetime(["2024-01-11", "2024-01-12", "2024-02-20"]).date,
            "discount_pct": [0.2, 0.3, 0.1],
        }
    ).to_parquet(settings.exports_dir / "mart_promotion_calendar.parquet")
    known = demand.known_future(settings, _history(), horizon=3, freq="D")
    assert len(known) == 6 and known["demand_date"].min() == pd.Timestamp("2024-01-11")
    a = known[known["item_id"] == "a"].set_index("demand_date")
    assert a["is_promoted"].tolist() == [1.0, 1.0, 0.0] and a["discount_pct"].tolist() == [0.2, 0.3, 0.0]
    assert known.loc[known["item_id"] == "b", "is_promoted"].eq(0).all()  # b's promotion is past the horizon
    assert not known.isna().any().any()  # every future period is known: nothing left to a fill rule


def test_known_future_snaps_days_to_weeks_with_the_largest_discount(settings):
    pd.DataFrame(
        {
            "item_id": ["a", "a"],
            "warehouse_id": ["w1", "w1"],
            "promotion_date": pd.to_datetime(["2024-03-12", "2024-03-14"]).date,
            "discount_pct": [0.1, 0.4],
        }
    ).to_parquet(settings.exports_dir / "mart_promotion_calendar.parquet")
    history = _history("W-SUN")  # weeks ending Sundays: last 2024-03-10
    known = demand.known_future(settings, history, horizon=2, freq="W-SUN")
    a = known[known["item_id"] == "a"].set_index("demand_date")
    assert a.loc[pd.Timestamp("2024-03-17"), "discount_pct"] == 0.4 and a.loc[pd.Timestamp("2024-03-24"), "is_promoted"] == 0


def test_known_future_is_none_without_the_export(settings):
    assert demand.known_future(settings, _history(), horizon=3, freq="D") is None


def test_stock_inputs_use_current_stock_only_and_warehouse_lead_time_fallback(settings):
    pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "warehouse_id": ["w1", "w1", "w2"],
            "snapshot_date": pd.to_datetime(["2024-01-10", "2024-01-10", "2024-01-02"]).date,
            "is_current": [True, True, False],
            "on_hand_units": [5, 0, 9],
            "on_order_units": [None, 3, 0],
            "item_lead_time_days": [4, None, 6],
            "warehouse_lead_time_days": [4.0, 4.0, 6.0],
        }
    ).to_parquet(settings.exports_dir / "mart_inventory_position.parquet")
    lead_times, on_hand = demand.stock_inputs(settings)
    items = lead_times[lead_times["item_id"].notna()].set_index("item_id")["lead_time_days"].to_dict()
    assert items == {"a": 4.0, "c": 6.0}  # b has none of its own: its warehouse row serves it
    warehouses = lead_times[lead_times["item_id"].isna()].set_index("warehouse_id")["lead_time_days"].to_dict()
    assert warehouses == {"w1": 4.0, "w2": 6.0}
    assert sorted(on_hand["item_id"]) == ["a", "b"]  # c's snapshot is stale: its stock is unknown, not 9


def test_stock_inputs_without_snapshots_leave_lead_times_to_the_default(settings):
    lead_times, on_hand = demand.stock_inputs(settings)
    assert lead_times.empty and on_hand is None
