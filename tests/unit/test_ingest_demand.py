"""A planner's pre-aggregated demand export (preset erp_demand) through the real ingestion: tiny files
in tmp_path -> demand_history (+ items, warehouses), one reason per rejected row, negative units kept
and counted, duplicate keys quarantined (or summed), daily/weekly periods, unit conversions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from ml import contract
from ml.ingest import IngestError, ingest_file, load_mapping

COLUMNS = ["sku", "store", "date", "units_sold", "promo_flag", "discount", "price", "avg_temp", "holiday"]
PRESET = Path(__file__).resolve().parents[2] / "ml" / "ingest" / "presets" / "erp_demand.yaml"


def row(sku="A-100", store="berlin", date="2024-03-04", units=12, promo="0", discount="0", price="4.99", temp="6.5", holiday="0"):
    return [sku, store, date, units, promo, discount, price, temp, holiday]


def write_csv(path: Path, rows, columns=COLUMNS) -> Path:
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def dirs(tmp_path):
    return {"lake_dir": tmp_path / "lake", "quarantine_dir": tmp_path / "quarantine"}


def lake(tmp_path, table) -> pd.DataFrame:
    files = list((tmp_path / "lake" / table).glob("**/ing-*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True) if files else pd.DataFrame()


def mapping_with(tmp_path, **demand) -> Path:
    data = yaml.safe_load(PRESET.read_text())
    data["demand"] = {**data.get("demand", {}), **demand}
    path = tmp_path / "erp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_balanced(report):
    d = report.to_dict()
    assert d["read"] == d["accepted"] + d["quarantined"] == d["accepted"] + sum(d["by_reason"].values())


def test_rows_are_accepted_with_their_regressors(tmp_path):
    rows = [
        row(date="2024-03-04", units=12, promo="1", discount="0.2", temp="6.5"),
        row(date="2024-03-05", units=0, promo="yes", discount="", price="", temp="", holiday="true"),
        row(sku="B-7", store="hamburg", date="2024-03-05", units=3, promo="n", temp="-2"),
    ]
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows), "erp_demand", **dirs(tmp_path))
    assert (report.read, report.accepted, report.quarantined) == (3, 3, 0)
    assert report.tables == {"demand_history": 3, "items": 2, "warehouses": 2}
    assert report.notes == {"period_day": 3}
    assert_balanced(report)
    dh = lake(tmp_path, "demand_history").sort_values(["item_id", "demand_date"]).reset_index(drop=True)
    assert (
        pq.read_schema(next((tmp_path / "lake" / "demand_history").glob("ing-*.parquet"))).remove_metadata()
        == contract.table("demand_history").schema
    )
    assert dh["demand_date"].tolist() == [dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 5)]
    assert dh["units"].tolist() == [12, 0, 3]
    assert dh["period"].tolist() == ["day"] * 3
    assert dh["is_promoted"].tolist() == [True, True, False]
    assert dh["discount_pct"].tolist()[0] == 0.2 and pd.isna(dh["discount_pct"][1])
    assert dh["price"].tolist()[0] == 4.99 and pd.isna(dh["price"][1])
    assert dh["temperature_c"].tolist()[2] == -2.0
    assert dh["is_holiday"].tolist() == [False, True, False]
    assert dh["markdown_amount"].isna().all() and dh["precipitation_mm"].isna().all()  # columns the file lacks
    warehouses = lake(tmp_path, "warehouses").set_index("warehouse_id")
    assert warehouses.loc["berlin", "region"] == "berlin"  # no region column: the location is its own region
    assert lake(tmp_path, "items").set_index("item_id").loc["A-100", "price"] == 4.99


def test_only_the_four_required_columns(tmp_path):
    frame = pd.DataFrame({"sku": ["A", "A"], "store": ["s1", "s1"], "date": ["2024-01-01", "2024-01-02"], "units_sold": ["1", "2"]})
    path = tmp_path / "minimal.csv"
    frame.to_csv(path, index=False)
    report = ingest_file(path, "erp_demand", **dirs(tmp_path))
    assert (report.accepted, report.quarantined) == (2, 0)
    dh = lake(tmp_path, "demand_history")
    assert dh[["is_promoted", "discount_pct", "price", "temperature_c", "is_holiday"]].isna().all().all()


def test_negative_units_are_kept_and_counted(tmp_path):
    rows = [row(date="2024-03-04", units=5), row(date="2024-03-05", units=-2), row(date="2024-03-06", units=-1)]
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows), "erp_demand", **dirs(tmp_path))
    assert report.quarantined == 0
    assert report.notes["negative_units"] == 2
    assert sorted(lake(tmp_path, "demand_history")["units"]) == [-2, -1, 5]


def test_duplicate_keys_are_quarantined_keeping_the_first(tmp_path):
    rows = [
        row(date="2024-03-04", units=5),
        row(date="2024-03-04", units=5),  # an exact copy -> duplicate
        row(date="2024-03-04", units=9),  # the same sku x store x date again -> duplicate_key
        row(store="munich", date="2024-03-04", units=1),  # another location: a key of its own
    ]
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows), "erp_demand", **dirs(tmp_path))
    assert report.by_reason == {"duplicate": 1, "duplicate_key": 1}
    assert_balanced(report)
    dh = lake(tmp_path, "demand_history").set_index("warehouse_id")
    assert dh.loc["berlin", "units"] == 5 and dh.loc["munich", "units"] == 1
    q = pd.read_parquet(tmp_path / "quarantine" / report.sha256[:12] / "rows.parquet")
    assert q.set_index("source_row")["reason"].to_dict() == {1: "duplicate", 2: "duplicate_key"}


def test_duplicate_keys_can_be_summed(tmp_path):
    rows = [
        row(date="2024-03-04", units=5, promo="0", price="4.0", temp="6"),
        row(date="2024-03-04", units=-1, promo="1", price="5.0", temp="8"),
        row(date="2024-03-05", units=2),
    ]
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows), mapping_with(tmp_path, duplicate_keys="sum"), **dirs(tmp_path))
    assert (report.accepted, report.quarantined) == (3, 0)
    assert report.tables["demand_history"] == 2
    assert report.notes["duplicate_keys_summed"] == 1 and report.notes["negative_units"] == 1
    first = lake(tmp_path, "demand_history").set_index("demand_date").loc[dt.date(2024, 3, 4)]
    assert (first["units"], bool(first["is_promoted"]), first["price"], first["temperature_c"]) == (4, True, 4.5, 7.0)


@pytest.mark.parametrize(
    "bad, reason",
    [
        (row(sku=None), "missing_key:item_id"),
        (row(store=None), "missing_key:warehouse_id"),
        (row(date=None), "missing_key:demand_date"),
        (row(units=None), "missing_key:units"),
        (row(date="31.02.2024"), "bad_date"),
        (row(units="two"), "bad_type:units"),
        (row(units=1.5), "bad_type:units"),
        (row(promo="maybe"), "bad_type:is_promoted"),
        (row(temp="warm"), "bad_type:temperature_c"),
        (row(discount="1.5"), "out_of_range:discount_pct"),
        (row(temp="95"), "out_of_range:temperature_c"),  # Fahrenheit read as Celsius
        (row(date="2099-01-05"), "future_date"),
    ],
)
def test_each_bad_row_is_quarantined_with_its_reason(tmp_path, bad, reason):
    rows = [row(date="2024-03-04"), row(date="2024-03-06"), bad]
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows), "erp_demand", **dirs(tmp_path))
    assert report.by_reason == {reason: 1}
    assert (report.read, report.accepted) == (3, 2)
    q = pd.read_parquet(tmp_path / "quarantine" / report.sha256[:12] / "rows.parquet")
    assert q["reason"].tolist() == [reason] and q["source_row"].tolist() == [2]
    assert set(COLUMNS) <= set(q.columns)


def test_missing_required_column_is_named_and_nothing_is_written(tmp_path):
    frame = pd.DataFrame([row()], columns=COLUMNS).drop(columns=["units_sold"])
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(IngestError, match=r"export\.csv.*'units_sold' \(mapped to units\) is missing"):
        ingest_file(path, "erp_demand", **dirs(tmp_path))
    assert not (tmp_path / "lake").exists() and not (tmp_path / "quarantine").exists()


def test_weekly_export_is_inferred(tmp_path):
    mondays = ["2024-01-01", "2024-01-08", "2024-01-15"]
    rows = [row(date=d, units=10 + i) for i, d in enumerate(mondays)] + [row(store="munich", date="2024-01-08")]
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows), "erp_demand", **dirs(tmp_path))
    assert report.quarantined == 0 and report.notes["period_week"] == 4
    assert set(lake(tmp_path, "demand_history")["period"]) == {"week"}


def test_weekly_rows_dated_by_their_last_day_move_to_the_first_and_off_grid_rows_are_rejected(tmp_path):
    sundays = ["2024-01-07", "2024-01-14", "2024-01-21"]
    rows = [row(date=d) for d in sundays] + [row(date="2024-01-17")]  # a Wednesday: off the weekly grid
    path = write_csv(tmp_path / "erp.csv", rows)
    report = ingest_file(path, mapping_with(tmp_path, period="week", week_date="end"), **dirs(tmp_path))
    assert report.by_reason == {"off_grid_date": 1}
    dates = sorted(lake(tmp_path, "demand_history")["demand_date"])
    assert dates == [dt.date(2024, 1, 1), dt.date(2024, 1, 8), dt.date(2024, 1, 15)]  # Mondays


def test_one_weekday_with_period_day_stays_daily(tmp_path):
    rows = [row(date=d) for d in ("2024-01-01", "2024-01-08")]
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows), mapping_with(tmp_path, period="day"), **dirs(tmp_path))
    assert report.notes == {"period_day": 2}


def test_unit_conversions_and_date_format(tmp_path):
    rows = [row(date="04/03/2024", discount="25", temp="50")]
    path = mapping_with(tmp_path, convert={"discount_pct": "percent", "temperature_c": "fahrenheit"}, date_format="%d/%m/%Y")
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows), path, **dirs(tmp_path))
    assert report.quarantined == 0
    dh = lake(tmp_path, "demand_history").iloc[0]
    assert (dh["demand_date"], dh["discount_pct"], dh["temperature_c"]) == (dt.date(2024, 3, 4), 0.25, 10.0)


def test_parquet_export_with_typed_columns(tmp_path):
    frame = pd.DataFrame(
        {
            "sku": [100, 101],
            "store": ["s1", "s1"],
            "date": pd.to_datetime(["2024-03-04", "2024-03-05"]),
            "units_sold": [3, -1],
            "promo_flag": [True, False],
            "avg_temp": [5.5, None],
        }
    )
    path = tmp_path / "erp.parquet"
    frame.to_parquet(path, index=False)
    report = ingest_file(path, "erp_demand", **dirs(tmp_path))
    assert (report.accepted, report.quarantined, report.notes["negative_units"]) == (2, 0, 1)
    dh = lake(tmp_path, "demand_history").sort_values("item_id")
    assert dh["item_id"].tolist() == ["100", "101"] and dh["is_promoted"].tolist() == [True, False]


def test_demand_mappings_are_checked():
    base = {
        "name": "x",
        "columns": {"item_id": "sku", "warehouse_id": "store", "demand_date": "date", "units": "u"},
        "produces": ["demand_history"],
    }
    assert load_mapping(base).demand.period == "auto"
    with pytest.raises(IngestError, match="demand_history needs columns.units"):
        load_mapping({**base, "columns": {k: v for k, v in base["columns"].items() if k != "units"}})
    with pytest.raises(IngestError, match="location"):
        load_mapping({**base, "columns": {k: v for k, v in base["columns"].items() if k != "warehouse_id"}})
    assert load_mapping(
        {**base, "columns": {k: v for k, v in base["columns"].items() if k != "warehouse_id"}, "constants": {"warehouse_id": "main"}}
    )
    with pytest.raises(IngestError, match="cannot also produce"):
        load_mapping(
            {
                **base,
                "columns": {**base["columns"], "user_id": "c", "session_id": "s", "timestamp": "t"},
                "produces": ["demand_history", "events"],
            }
        )
    with pytest.raises(IngestError, match="demand.convert.temperature_c can only be 'fahrenheit'"):
        load_mapping({**base, "demand": {"convert": {"temperature_c": "percent"}}})
    with pytest.raises(IngestError, match="unknown key 'demand.periods'"):
        load_mapping({**base, "demand": {"periods": "week"}})
    with pytest.raises(IngestError, match="lower_snake_case"):
        load_mapping({**base, "demand": {"regressors": {"Fuel Price": "f"}}})
    with pytest.raises(IngestError, match="contract's columns"):
        load_mapping({**base, "demand": {"regressors": {"price": "p"}}})
    with pytest.raises(IngestError, match="both as a regressor and as an attribute"):
        load_mapping({**base, "demand": {"regressors": {"size": "s"}, "attributes": {"size": "s"}}})
    with pytest.raises(IngestError, match="missing"):
        load_mapping({**base, "demand": {"regressors": {"md": {"column": "m", "missing": "mean"}}}})
    with pytest.raises(IngestError, match="produces needs demand_history"):
        load_mapping({**base, "columns": {"item_id": "sku", "title": "t"}, "produces": ["items"], "demand": {"attributes": {"size": "s"}}})


def test_named_regressors_and_attributes_with_their_bad_cells(tmp_path):
    columns = [*COLUMNS, "CPI", "MD1", "Type"]
    rows = [
        row(date="2024-03-04", units=5) + ["211.1", "", "A"],
        row(date="2024-03-05", units=2) + ["n/a", "120.5", "A"],
        row(date="2024-03-05", units=3) + ["212", "", "B"],  # a duplicate key: summed, regressors averaged
        row(sku="B-7", date="2024-03-04", units=1) + ["inf", "", "B"],
    ]
    mapping = mapping_with(
        tmp_path,
        duplicate_keys="sum",
        regressors={"cpi": "CPI", "md_1": {"column": "MD1", "missing": "zero"}},
        attributes={"store_type": "Type"},
    )
    report = ingest_file(write_csv(tmp_path / "erp.csv", rows, columns), mapping, **dirs(tmp_path))
    assert (report.accepted, report.quarantined) == (4, 0)  # a bad regressor cell never costs the row's demand
    assert report.notes["regressor_not_numeric:cpi"] == 2
    regs = lake(tmp_path, "demand_regressors").sort_values(["item_id", "demand_date", "name"])
    got = {(r.item_id, str(r.demand_date), r.name): r.value for r in regs.itertuples()}
    assert got == {
        ("A-100", "2024-03-04", "cpi"): 211.1,
        ("A-100", "2024-03-04", "md_1"): 0.0,
        ("A-100", "2024-03-05", "cpi"): 212.0,
        ("A-100", "2024-03-05", "md_1"): 60.25,
        ("B-7", "2024-03-04", "md_1"): 0.0,
    }
    attrs = lake(tmp_path, "series_attributes")
    assert sorted(map(tuple, attrs[["item_id", "name", "value"]].to_numpy().tolist())) == [
        ("A-100", "store_type", "A"),
        ("B-7", "store_type", "B"),
    ]  # A-100's most common value
    with pytest.raises(IngestError, match=r"'Size' \(demand.attributes.store_size\) is missing"):
        ingest_file(
            write_csv(tmp_path / "erp2.csv", rows[:1], columns), mapping_with(tmp_path, attributes={"store_size": "Size"}), **dirs(tmp_path)
        )


def test_items_and_locations_the_lake_already_lists_are_not_written_again(tmp_path):
    first = ingest_file(write_csv(tmp_path / "jan.csv", [row(date="2024-01-02")]), "erp_demand", **dirs(tmp_path))
    assert first.tables == {"demand_history": 1, "items": 1, "warehouses": 1}
    rows = [row(date="2024-02-01", price="9.99"), row(sku="NEW", store="munich", date="2024-02-01")]
    second = ingest_file(write_csv(tmp_path / "feb.csv", rows), "erp_demand", **dirs(tmp_path))
    assert second.tables == {"demand_history": 2, "items": 1, "warehouses": 1}
    assert second.notes["items_already_in_lake"] == 1 and second.notes["warehouses_already_in_lake"] == 1
    items = lake(tmp_path, "items")
    assert sorted(items["item_id"]) == ["A-100", "NEW"] and items.set_index("item_id").loc["A-100", "price"] == 4.99
    again = ingest_file(tmp_path / "jan.csv", "erp_demand", force=True, **dirs(tmp_path))  # its own rows do not count
    assert again.tables == first.tables and "items_already_in_lake" not in again.notes


def test_a_monthly_export_is_refused_with_the_reason_not_read_as_days(tmp_path):
    rows = [row(date=f"2024-{m:02d}-01", units=100 + m) for m in range(1, 7)]
    with pytest.raises(IngestError, match="all the 1st of a month: monthly demand"):
        ingest_file(write_csv(tmp_path / "monthly.csv", rows), "erp_demand", **dirs(tmp_path))
    assert lake(tmp_path, "demand_history").empty
    report = ingest_file(write_csv(tmp_path / "monthly.csv", rows), mapping_with(tmp_path, period="day"), **dirs(tmp_path))
    assert report.tables["demand_history"] == 6  # asked for explicitly: single days
