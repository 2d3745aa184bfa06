"""`ecomml warehouse query`: one read-only SELECT, sandboxed; every bypass of issue 15 is refused."""

from __future__ import annotations

import fcntl
import os
import threading
import time

import duckdb
import pytest

from ml.warehouse import QueryError, query


@pytest.fixture
def wh(tmp_settings):
    s = tmp_settings
    s.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    s.features_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(s.warehouse_path))
    con.execute(f"copy (select 'u1' as user_id, 3.5 as revenue) to '{s.features_dir}/feat_x.parquet'")
    con.execute(f"create view feat_x as select * from read_parquet('{s.features_dir}/feat_x.parquet')")
    con.execute("create table fct_orders as select 'o1' as order_id")
    con.close()
    return s


def test_a_select_reads_tables_and_the_feature_parquet_views(wh):
    assert query(wh, "select * from fct_orders").to_dict("records") == [{"order_id": "o1"}]
    assert query(wh, "with f as (select * from feat_x) select revenue from f")["revenue"].tolist() == [3.5]


@pytest.mark.parametrize(
    "sql, message",
    [
        ("copy fct_orders to '{out}/x.csv'", "not COPY"),
        ("copy fct_orders to '{features}/feat_x.parquet'", "not COPY"),
        ("attach '{warehouse}' as rw (read_only false)", "not ATTACH"),
        ("detach warehouse", "not DETACH"),
        ("install httpfs", "not LOAD"),  # DuckDB files INSTALL under LOAD
        ("load httpfs", "not LOAD"),
        ("set enable_external_access = true", "not SET"),
        ("drop table fct_orders", "not DROP"),
        ("select 1; drop table fct_orders", "one statement"),
        ("select * from read_csv('/etc/passwd')", "Permission"),
        ("select * from read_parquet('{out}/../**/*.parquet')", "Permission"),
        ("select * from no_such_table", "no_such_table"),
    ],
)
def test_every_bypass_is_refused(wh, tmp_path, sql, message):
    sql = sql.format(out=tmp_path, features=wh.features_dir, warehouse=wh.warehouse_path)
    with pytest.raises(QueryError, match=message):
        query(wh, sql)
    assert not (tmp_path / "x.csv").exists()
    assert query(wh, "select count(*) as n from fct_orders")["n"].tolist() == [1]


def test_it_waits_for_a_running_build_then_reads(wh):
    fd = os.open(str(wh.warehouse_path) + ".lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what ecomml-dbt holds while dbt runs
    threading.Timer(1.0, os.close, [fd]).start()
    said = []
    started = time.monotonic()
    assert len(query(wh, "select * from fct_orders", on_wait=said.append)) == 1
    assert time.monotonic() - started >= 0.9 and "waiting for the running warehouse build" in said[0]


def test_a_build_that_does_not_finish_in_time_is_a_clear_error(wh):
    fd = os.open(str(wh.warehouse_path) + ".lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(QueryError, match="still holds"):
            query(wh, "select 1", wait_s=0.5)
    finally:
        os.close(fd)


def test_a_build_that_stops_without_run_results_says_how_far_it_got(tmp_settings, monkeypatch):
    """dbt killed midway writes no run_results.json: the error must not say 'before any node'."""
    from ml import warehouse

    lines = [
        "1 of 3 START sql view model staging.stg_x",
        "1 of 3 OK created sql view model staging.stg_x",
        "2 of 3 PASS not_null_stg_x_id",
        "Killed",
    ]
    monkeypatch.setattr(warehouse, "run_dbt", lambda settings, args, echo=None: (-9, lines))
    with pytest.raises(warehouse.WarehouseBuildError, match=r"stopped after 2 node\(s\) had finished.*exit -9"):
        warehouse.build(tmp_settings, echo=None)
    monkeypatch.setattr(warehouse, "run_dbt", lambda settings, args, echo=None: (2, ["Encountered an error"]))
    with pytest.raises(warehouse.WarehouseBuildError, match="stopped before running any node"):
        warehouse.build(tmp_settings, echo=None)
