"""A planner's ERP demand export, end to end: CSV -> ingestion (preset erp_demand) -> temp lake ->
``dbt build`` (ml.warehouse) -> fct_daily_demand, the mart the forecasters read.

One lake holds a daily export (3 items x 2 locations x 120 days, a promotion flag and temperature,
a few skipped days and a net return) and a weekly export (2 items x 1 location x 20 weeks) with a
store's named extra regressors (a price index with a bad cell and a gap, a markdown programme starting
mid-history) and static attributes (store type, size), ingested through the preset extended by a user's
``demand.regressors`` / ``demand.attributes``; the lake has no orders, events, promotions, weather or
holidays, so every series and regressor comes from the exports.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ml import warehouse
from ml.ingest import ingest_file
from ml.settings import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = pd.date_range("2024-01-01", periods=120, freq="D")
SKIPPED = {("A-1", "berlin", "2024-02-10"), ("B-2", "munich", "2024-03-01"), ("C-3", "berlin", "2024-04-20")}


def daily_export() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for sku in ("A-1", "B-2", "C-3"):
        for store, region, country, base_temp in (("berlin", "de-be", "DE", 4.0), ("munich", "de-by", "DE", 2.0)):
            promo = rng.random(len(DAYS)) < 0.15
            temp = base_temp + 10 * np.sin(np.arange(len(DAYS)) / 120 * np.pi) + rng.normal(0, 1, len(DAYS))
            units = rng.poisson(5 * np.where(promo, 1.8, 1.0))
            for day, p, t, u in zip(DAYS, promo, temp, units):
                date = day.strftime("%Y-%m-%d")
                if (sku, store, date) not in SKIPPED:
                    rows.append([sku, store, date, int(u), int(p), round(float(t), 1), region, country])
    frame = pd.DataFrame(rows, columns=["sku", "store", "date", "units_sold", "promo_flag", "avg_temp", "region", "country"])
    frame.loc[(frame.sku == "A-1") & (frame.store == "munich") & (frame.date == "2024-01-15"), "units_sold"] = -2
    return frame


def weekly_export() -> pd.DataFrame:
    weeks = pd.date_range("2024-01-01", periods=20, freq="W-MON")
    frame = pd.DataFrame(
        [
            [
                sku,
                "hamburg",
                w.strftime("%Y-%m-%d"),
                30 + i,
                "yes" if i % 5 == 0 else "no",
                0.1 if i % 5 == 0 else 0.0,
                f"{200 + i / 10:.1f}",
                f"{100.0 * i:.1f}" if i >= 12 and i % 2 == 0 else "",
                "A",
                "151315",
            ]
            for sku in ("W-1", "W-2")
            for i, w in enumerate(weeks)
        ],
        columns=["sku", "store", "date", "units_sold", "promo_flag", "discount", "CPI", "MarkDown1", "Type", "Size"],
    )
    frame.loc[(frame.sku == "W-1") & (frame.date == "2024-01-08"), "CPI"] = "n/a"  # not a number: left out, counted
    frame.loc[(frame.sku == "W-2") & (frame.date == "2024-01-15"), "CPI"] = ""  # a gap: carried by the forecaster
    return frame


def weekly_mapping(root: Path) -> Path:
    """The erp_demand preset as a user extends it for a store's export with extra columns."""
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "ml/ingest/presets/erp_demand.yaml").read_text())
    data["demand"].update(
        regressors={"cpi": "CPI", "markdown_1": {"column": "MarkDown1", "missing": "zero"}},
        attributes={"store_type": "Type", "store_size": "Size"},
    )
    path = root / "store_export.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("erp_demand")
    settings = settings_for(data_dir=root / "data")
    settings.ensure_dirs()
    daily, weekly = daily_export(), weekly_export()
    daily.to_csv(root / "erp_daily.csv", index=False)
    weekly.to_parquet(root / "erp_weekly.parquet", index=False)
    started = time.perf_counter()
    reports = [
        ingest_file(root / name, mapping, lake_dir=settings.lake_dir, quarantine_dir=settings.quarantine_dir)
        for name, mapping in (("erp_daily.csv", "erp_demand"), ("erp_weekly.parquet", weekly_mapping(root)))
    ]
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    summary = warehouse.build(settings, echo=None)
    build_s = time.perf_counter() - started
    print(f"ingest {ingest_s:.1f}s, dbt build {build_s:.1f}s")
    return settings, reports, summary, daily, weekly


@pytest.fixture
def con(built):
    connection = warehouse.connect(built[0])
    yield connection
    connection.close()


def test_exports_are_ingested(built):
    _, (daily, weekly), _, daily_frame, weekly_frame = built
    assert (daily.read, daily.accepted, daily.quarantined) == (len(daily_frame), len(daily_frame), 0)
    assert daily.tables == {"demand_history": len(daily_frame), "items": 3, "warehouses": 2}
    assert daily.notes == {"negative_units": 1, "period_day": len(daily_frame)}
    assert weekly.notes == {"period_week": len(weekly_frame), "regressor_not_numeric:cpi": 1}
    assert weekly.tables == {"demand_history": 40, "items": 2, "warehouses": 1, "demand_regressors": 40 - 2 + 40, "series_attributes": 4}


def test_build_passes_on_an_export_only_lake(built):
    _, _, summary, _, _ = built
    assert summary["success"] and summary["returncode"] == 0
    assert summary["warnings"] == []  # no order lines were replaced


def test_daily_series_reach_the_mart_with_their_regressors(built, con):
    _, _, _, daily, _ = built
    mart = con.execute("select * from fct_daily_demand where period = 'day' order by item_id, warehouse_id, demand_date").df()
    assert set(mart["demand_source"]) == {"demand_history"}
    assert len(mart) == 3 * 2 * len(DAYS)  # dense: the skipped days are back, as zeros
    assert mart.groupby(["item_id", "warehouse_id"]).size().to_dict() == {
        (s, w): len(DAYS) for s in ("A-1", "B-2", "C-3") for w in ("berlin", "munich")
    }
    exported = daily.assign(demand_date=pd.to_datetime(daily["date"])).rename(columns={"sku": "item_id", "store": "warehouse_id"})
    joined = mart.assign(demand_date=pd.to_datetime(mart["demand_date"])).merge(
        exported, on=["item_id", "warehouse_id", "demand_date"], how="left", indicator=True
    )
    present = joined[joined["_merge"] == "both"]
    assert (present["net_units"] == present["units_sold"]).all()
    assert (present["units"] == present["units_sold"].clip(lower=0)).all()
    assert (present["is_promoted"] == present["promo_flag"].astype(bool)).all()
    assert np.allclose(present["temperature_c"], present["avg_temp"])
    skipped = joined[joined["_merge"] == "left_only"]
    assert len(skipped) == len(SKIPPED)
    assert (skipped["units"] == 0).all() and (~skipped["is_promoted"]).all() and skipped["temperature_c"].isna().all()
    assert (~mart["is_holiday"]).all() and mart["order_count"].isna().all()


def test_weekly_series_stay_weekly(built, con):
    rows = con.execute(
        """select item_id, count(*), min(demand_date)::varchar, max(demand_date)::varchar, sum(units),
                  count_if(is_promoted), max(discount_pct), count(distinct dayofweek(demand_date))
           from fct_daily_demand where period = 'week' group by 1 order by 1"""
    ).fetchall()
    total = sum(30 + i for i in range(20))
    assert rows == [(sku, 20, "2024-01-01", "2024-05-13", total, 4, 0.1, 1) for sku in ("W-1", "W-2")]


def test_dimensions_hold_the_exports_items_and_locations(built, con):
    assert con.execute("select warehouse_id, region, country from dim_warehouses order by 1").fetchall() == [
        ("berlin", "de-be", "DE"),
        ("hamburg", "hamburg", None),
        ("munich", "de-by", "DE"),
    ]
    assert con.execute("select count(*) from dim_items").fetchone()[0] == 5


def test_named_regressors_and_attributes_reach_the_forecasters_frame(built):
    from ml.models import demand
    from ml.models.demand import data as fd

    settings = built[0]
    frame = demand.load_series(settings)
    weekly = frame[frame["warehouse_id"] == "hamburg"].sort_values(["item_id", "demand_date"]).reset_index(drop=True)
    assert len(weekly) == 40
    w1 = weekly[weekly["item_id"] == "W-1"].reset_index(drop=True)
    assert np.isnan(w1.loc[1, "cpi"]) and w1.loc[2, "cpi"] == pytest.approx(200.2)  # the 'n/a' week has none
    assert list(w1["markdown_1"]) == [100.0 * i if i >= 12 and i % 2 == 0 else 0.0 for i in range(20)]
    assert set(weekly["attr_store_type"]) == {"A"} and set(weekly["attr_store_size"]) == {151315.0}
    daily = frame[frame["warehouse_id"] != "hamburg"]
    assert daily["cpi"].isna().all() and daily["attr_store_type"].isna().all()
    # markdown is a value, not a promotion flag: weeks with a markdown and no promo_flag stay unpromoted
    assert not w1.loc[(w1["markdown_1"] > 0) & (w1.index % 5 != 0), "is_promoted"].astype(bool).any()

    clean, report = fd.prepare(weekly, min_history=8)
    assert "cpi" in fd.detect_regressors(clean) and "markdown_1" in fd.detect_regressors(clean)
    assert clean["cpi"].notna().all()  # the gap and the bad cell carried forward (regressor_filled)
    assert report.query("rule == 'regressor_filled'")["rows"].sum() == 2
    rows = fd.make_features(clean, 4, "W-MON")
    assert rows["attr_store_type"].dtype == "category" and rows["attr_store_size"].dtype == np.float32
    assert {"cpi", "markdown_1"} <= set(rows.columns)
