"""Ingestion of the real public samples in shared/data (skips, or fails under REQUIRE_SERVICES=1,
when they are absent). REES46 and RetailRocket have no real sample here: tests/unit covers them
with files in their published format."""

from __future__ import annotations

import time

import duckdb
import pandas as pd
import pytest

from ml.ingest import ingest_file
from tests.conftest import shared_file

pytestmark = pytest.mark.integration

RETAIL = ("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet")


def dirs(root):
    return {"lake_dir": root / "lake", "quarantine_dir": root / "quarantine"}


def lake_sql(root, sql: str):
    """Run ``sql`` with {table} placeholders replaced by readers of the lake's Parquet files."""
    con = duckdb.connect()
    for table in ("orders", "order_lines", "users", "items", "warehouses", "events", "returns"):
        sql = sql.replace("{" + table + "}", f"read_parquet('{root}/lake/{table}/**/*.parquet', hive_partitioning=false)")
    return con.sql(sql).fetchall()


def test_online_retail_full_file(tmp_path):
    path = shared_file(*RETAIL)
    started = time.perf_counter()
    report = ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    seconds = time.perf_counter() - started
    d = report.to_dict()
    assert d["read"] == 525_461
    assert d["read"] == d["accepted"] + d["quarantined"] == d["accepted"] + sum(d["by_reason"].values())
    assert d["by_reason"]["missing_key:user_id"] == 107_927  # every customer-less line, as documented
    assert d["by_reason"]["cancellation_matched"] > 5_000
    assert d["by_reason"]["non_product_code"] > 1_000
    assert d["by_reason"]["duplicate"] > 6_000
    assert d["tables"]["order_lines"] == d["accepted"]
    assert seconds < 60, f"ingestion took {seconds:.1f}s"
    assert lake_sql(tmp_path, "select count(*) from {orders} where user_id is null") == [(0,)]
    assert lake_sql(
        tmp_path,
        "select count(*) from {order_lines} where item_id in ('POST','M','D','DOT','C2',"
        "'BANK CHARGES','AMAZONFEE') or quantity <= 0 or unit_price <= 0",
    ) == [(0,)]
    assert lake_sql(tmp_path, "select count(*) from {order_lines} where order_id like 'C%'") == [(0,)]
    (returned,) = lake_sql(tmp_path, "select sum(quantity) from {returns}")[0]
    assert returned > 0
    assert lake_sql(tmp_path, "select count(*) from {returns} r left join {orders} o using (order_id) where o.order_id is null") == [
        (0,)
    ]  # every return names an ingested order
    assert lake_sql(tmp_path, "select count(*) - count(distinct user_id) from {users}") == [(0,)]
    assert lake_sql(tmp_path, "select count(*) from {users} where user_id like '%.%'") == [(0,)]
    assert lake_sql(tmp_path, "select count(*) - count(distinct item_id) from {items}") == [(0,)]
    assert lake_sql(tmp_path, "select count(*) from {warehouses} where warehouse_id = 'united_kingdom'") == [(1,)]
    quarantine = pd.read_parquet(tmp_path / "quarantine" / d["sha256"][:12] / "rows.parquet")
    assert len(quarantine) == d["quarantined"]
    assert quarantine["reason"].value_counts().to_dict() == d["by_reason"]


@pytest.fixture(scope="module")
def retail_slice():
    frame = pd.read_parquet(shared_file(*RETAIL))
    return frame.iloc[:4000].reset_index(drop=True)


def test_csv_xlsx_and_parquet_slices_agree(tmp_path, retail_slice):
    """The same lines exported as Parquet, CSV and XLSX (dates as Excel date cells) ingest alike."""
    reports = {}
    for fmt in ("parquet", "csv", "xlsx"):
        path = tmp_path / f"online_retail.{fmt}"
        if fmt == "parquet":
            retail_slice.to_parquet(path, index=False)
        elif fmt == "csv":
            retail_slice.to_csv(path, index=False)
        else:
            retail_slice.assign(InvoiceDate=pd.to_datetime(retail_slice["InvoiceDate"])).to_excel(path, index=False)
        reports[fmt] = ingest_file(path, "online_retail_ii", **dirs(tmp_path / fmt)).to_dict()
    base = reports["parquet"]
    assert base["read"] == 4000 and base["accepted"] > 2000 and base["quarantined"] > 0
    for fmt in ("csv", "xlsx"):
        assert (reports[fmt]["accepted"], reports[fmt]["by_reason"], reports[fmt]["tables"]) == (
            base["accepted"],
            base["by_reason"],
            base["tables"],
        ), fmt
    sums = {
        fmt: lake_sql(
            tmp_path / fmt, "select sum(quantity), round(sum(unit_price), 2), min(order_date), count(distinct order_id) from {order_lines}"
        )
        for fmt in reports
    }
    assert sums["csv"] == sums["parquet"] == sums["xlsx"]


def test_movielens_100k(tmp_path):
    path = shared_file("movielens_100k", "ml-100k.inter")
    report = ingest_file(path, "movielens_atomic", **dirs(tmp_path))
    d = report.to_dict()
    assert (d["read"], d["accepted"], d["quarantined"]) == (100_000, 100_000, 0)
    assert d["tables"] == {"events": 100_000, "users": 943, "items": 1_682}
    assert lake_sql(tmp_path, "select count(distinct user_id), count(distinct item_id), min(rating), max(rating) from {events}") == [
        (943, 1_682, 1.0, 5.0)
    ]
    assert lake_sql(tmp_path, "select min(event_date)::varchar, max(event_date)::varchar from {events}") == [("1997-09-20", "1998-04-22")]
    assert lake_sql(tmp_path, "select count(*) from {users} where gender is null or birth_year is null") == [(0,)]
    assert lake_sql(tmp_path, "select title from {items} where item_id = '1'") == [("Toy Story",)]
    again = ingest_file(path, "movielens_atomic", **dirs(tmp_path))
    assert again.skipped
    assert lake_sql(tmp_path, "select count(*) from {events}") == [(100_000,)]
