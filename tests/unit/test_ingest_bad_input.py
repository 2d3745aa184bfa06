"""Every bad cell is a quarantined row with its reason, never a crashed file or a silent value
(issue 15's classes; docs/ingestion.md lists them with the counts of one run)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ml.ingest import QuarantineShareError, ingest_file
from tests.unit.test_ingest import counts, dirs, lake, retail_row, write_csv

GOOD = retail_row(invoice="500000", code="11111", customer=11111.0)


@pytest.mark.parametrize(
    "row, reason",
    [
        (retail_row(qty="inf"), "bad_type:quantity"),
        (retail_row(qty="-Infinity"), "bad_type:quantity"),
        (retail_row(qty="3000000000"), "out_of_range:quantity"),
        (retail_row(price="inf"), "bad_type:price"),
        (retail_row(price="NaN"), "bad_type:price"),
        (retail_row(customer="N/A"), "missing_key:user_id"),
        (retail_row(customer="NULL"), "missing_key:user_id"),
        (retail_row(customer="NaN"), "missing_key:user_id"),
        (retail_row(customer="nan"), "missing_key:user_id"),
        (retail_row(customer="None"), "missing_key:user_id"),
        (retail_row(customer="unknown"), "missing_key:user_id"),
        (retail_row(customer="-"), "missing_key:user_id"),
        (retail_row(customer="0"), "missing_key:user_id"),
        (retail_row(customer="000"), "missing_key:user_id"),
        (retail_row(customer="130\x0085.0"), "bad_id:user_id"),
        (retail_row(code="85\n048"), "bad_id:item_id"),
        (retail_row(when="2010-13-45 10:00:00"), "bad_timestamp"),
    ],
)
def test_a_bad_cell_quarantines_its_row_and_the_file_goes_on(tmp_path, row, reason):
    report = ingest_file(write_csv(tmp_path / "x.csv", [GOOD, row]), "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {reason: 1}
    assert report.read == report.accepted + report.quarantined == 2
    assert counts(tmp_path)["order_lines"] == 1
    quarantined = pd.read_parquet(tmp_path / "quarantine" / report.sha256[:12] / "rows.parquet")
    assert quarantined["reason"].tolist() == [reason]


def test_inf_in_a_parquet_export_is_bad_not_infinite_revenue(tmp_path):
    frame = pd.DataFrame(
        [GOOD, retail_row(invoice="500009")],
        columns=["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"],
    )
    frame["Price"] = [1.5, float("inf")]
    frame.to_parquet(tmp_path / "x.parquet", index=False)
    report = ingest_file(tmp_path / "x.parquet", "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {"bad_type:price": 1}
    assert lake(tmp_path, "order_lines")["unit_price"].tolist() == [1.5]


def test_dates_in_mixed_formats_are_parsed_value_by_value(tmp_path):
    rows = [
        retail_row(invoice="500001", when="2010-01-05 10:00:00"),
        retail_row(invoice="500002", when="2010-01-06T11:30:00"),
        retail_row(invoice="500003", when="Jan 7 2010 09:15"),
        retail_row(invoice="500004", when="not a date"),
    ]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {"bad_timestamp": 1}
    days = sorted(str(d) for d in lake(tmp_path, "orders")["order_date"])
    assert days == ["2010-01-05", "2010-01-06", "2010-01-07"]


def test_a_list_of_formats_is_tried_in_order(tmp_path):
    mapping = _retail_mapping(
        tmp_path,
        'timestamp:\n  timezone: Europe/London\n  format: ["%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M:%S"]\n',
        drop="timestamp:\n  timezone: Europe/London    # InvoiceDate is local UK time\n",
    )
    rows = [retail_row(invoice="500001", when="05/02/2010 10:00"), retail_row(invoice="500002", when="2010-02-06 10:00:00")]
    ingest_file(write_csv(tmp_path / "x.csv", rows), mapping, **dirs(tmp_path))
    assert sorted(str(d) for d in lake(tmp_path, "orders")["order_date"]) == ["2010-02-05", "2010-02-06"]


def test_control_characters_in_text_are_removed_and_counted(tmp_path):
    report = ingest_file(write_csv(tmp_path / "x.csv", [retail_row(desc="GLASS\x00 BALL")]), "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {}
    assert report.notes["control_characters_removed:title"] == 1
    assert lake(tmp_path, "items")["title"].tolist() == ["GLASS  BALL"]


def test_one_order_id_for_two_customers_is_quarantined(tmp_path):
    rows = [GOOD, retail_row(invoice="500005", customer=1.0), retail_row(invoice="500005", code="2", customer=2.0)]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {"order_user_conflict": 2}


def test_value_maps_can_map_a_sentinel_to_null(tmp_path):
    mapping = _retail_mapping(tmp_path, 'value_maps:\n  user_id: {"99999": null}\nzero_ids_missing: []\n')
    rows = [GOOD, retail_row(invoice="500002", customer=99999.0), retail_row(invoice="500003", customer=0.0)]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), mapping, **dirs(tmp_path))
    assert report.by_reason == {"missing_key:user_id": 1}  # '0' is an id here: zero_ids_missing is empty
    assert sorted(lake(tmp_path, "orders")["user_id"]) == ["0", "11111"]


def test_too_much_quarantined_refuses_the_file_unless_accepted(tmp_path):
    rows = [GOOD, retail_row(invoice="500002", qty="x"), retail_row(invoice="500003", qty="y")]
    path = write_csv(tmp_path / "x.csv", rows)
    with pytest.raises(QuarantineShareError, match=r"66.7% of 3 rows.*bad_type:quantity 2"):
        ingest_file(path, "online_retail_ii", **dirs(tmp_path), max_quarantine_share=0.05)
    assert not any((tmp_path / "lake").glob("*/**/*.parquet")) or counts(tmp_path).get("orders", 0) == 0
    report = ingest_file(path, "online_retail_ii", **dirs(tmp_path), max_quarantine_share=0.05, accept_quarantine=True)
    assert report.accepted == 1 and counts(tmp_path)["orders"] == 1


def test_demand_in_money_is_a_mapping_option_not_a_quarantine(tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "columns: {item_id: sku, warehouse_id: store, demand_date: week, units: sales}\n"
        "produces: [demand_history]\ndemand: {units_scale: 100, fractional_units: true}\n"
    )
    frame = pd.DataFrame({"sku": ["a", "a"], "store": ["s1", "s1"], "week": ["2024-01-01", "2024-01-08"], "sales": ["12.34", "5.005"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    report = ingest_file(tmp_path / "d.csv", mapping, **dirs(tmp_path))
    assert report.by_reason == {}
    assert report.notes["units_rounded"] == 1
    assert sorted(lake(tmp_path, "demand_history")["units"]) == [500, 1234]


def _retail_mapping(tmp_path: Path, extra: str, drop: str = "") -> Path:
    text = (Path(__file__).resolve().parents[2] / "ml/ingest/presets/online_retail_ii.yaml").read_text()
    path = tmp_path / "m.yaml"
    path.write_text(text.replace(drop, "") + extra if drop else text + extra)
    return path
