"""A real shop's exports, one after another (issue 15): the Online Retail II sample cut into its 13
monthly exports plus an overlapping re-export, landed one by one, builds the same warehouse as the
single file; an ingest killed at any point of its write phase leaves the lake exactly before or
exactly after; re-sent corrections replace what they correct."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time

import duckdb
import pandas as pd
import pytest

from ml import warehouse
from ml.ingest import ingest_file, ingest_landing
from ml.lake import committed_files, data_files, read_commits
from ml.settings import settings_for
from tests.conftest import shared_file

pytestmark = pytest.mark.integration
RETAIL = ("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet")
SUMMED = re.compile(r"revenue|units|quantity|orders|monetary|line_count")


def _settings(root, name):
    settings = settings_for(data_dir=root / name, mlflow_tracking_uri="")
    settings.ensure_dirs()
    return settings


def _fingerprint(settings) -> dict[str, tuple]:
    """Row count and the sums of every revenue / unit / quantity column of every fct_, dim_, feat_ and mart_ model."""
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        out = {}
        rels = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables where table_name similar to '(fct|dim|feat|mart)_.*'"
        ).fetchall()
        for (rel,) in rels:
            cols = [
                c
                for c, t in con.execute(
                    f"select column_name, data_type from information_schema.columns where table_schema || '.' || table_name = '{rel}'"
                ).fetchall()
                if SUMMED.search(c) and t in ("BIGINT", "INTEGER", "DOUBLE", "HUGEINT")
            ]
            out[rel] = con.execute("select count(*)" + "".join(f", round(sum({c})::double, 2)" for c in cols) + f" from {rel}").fetchone()
        return out
    finally:
        con.close()


def test_monthly_exports_and_a_resend_build_the_same_warehouse_as_one_file(tmp_path):
    source = shared_file(*RETAIL)
    one, many = _settings(tmp_path, "one"), _settings(tmp_path, "many")
    started = time.perf_counter()
    ingest_file(source, "online_retail_ii", lake_dir=one.lake_dir, quarantine_dir=one.quarantine_dir)
    one_file_s = time.perf_counter() - started

    frame = pd.read_parquet(source)
    when = pd.to_datetime(frame["InvoiceDate"])
    months = when.dt.strftime("%Y-%m")
    for month in sorted(months.unique()):
        frame[months == month].to_parquet(many.landing_dir / f"export_{month}.parquet", index=False)
    # a re-export overlapping two months, landed after the second: every line in it is already there
    frame[(when >= "2010-03-15") & (when < "2010-04-15")].to_parquet(many.landing_dir / "export_2010-04_resend.parquet", index=False)
    started = time.perf_counter()
    reports = ingest_landing(many.landing_dir, "online_retail_ii", lake_dir=many.lake_dir, quarantine_dir=many.quarantine_dir)
    many_files_s = time.perf_counter() - started
    assert len(reports) == 14 and months.nunique() == 13
    assert len({c["seq"] for c in read_commits(many.lake_dir)}) == 14
    for report in reports:
        assert report.read == report.accepted + report.quarantined
    print(f"ingest: one file {one_file_s:.1f} s, 14 exports one by one {many_files_s:.1f} s")

    warehouse.build(one, echo=None)
    warehouse.build(many, echo=None)
    expected, got = _fingerprint(one), _fingerprint(many)
    assert len(expected) >= 15 and expected.keys() == got.keys()
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    # the returns recorded across exports are all there
    assert expected["main.fct_order_lines"][2] > 190_000  # sum(returned_quantity)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import ml.lake, ml.contract
    from ml.ingest import ingest_file
    where, n = sys.argv[1], int(sys.argv[2])
    calls = [0]
    def hit():
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
    def wrap(module, name):
        real = getattr(module, name)
        setattr(module, name, lambda *a, **k: (hit(), real(*a, **k))[1])
    # write: staging the table files; rename: moving them into place; commit: the manifest's replace;
    # sweep: after the commit (the 2nd sweep; the 1st runs when the writer starts)
    wrap(*{"write": (ml.contract.pq, "write_table"), "rename": (ml.lake.os, "replace"),
           "commit": (ml.lake, "_write_commits"), "sweep": (ml.lake, "sweep")}[where])
    ingest_file(Path(sys.argv[3]), "online_retail_ii", lake_dir=Path(sys.argv[4]), quarantine_dir=Path(sys.argv[5]))
""")


def _committed_view(lake_dir) -> dict[str, tuple]:
    """What a build reads: rows and units of the committed files of each table."""
    out = {}
    for table, measure in (
        ("orders", "count(distinct order_id)"),
        ("order_lines", "sum(quantity)"),
        ("users", "count(*)"),
        ("items", "count(*)"),
        ("returns", "sum(quantity)"),
    ):
        files = committed_files(lake_dir, table)
        if files:
            paths = ", ".join(f"'{p}'" for p in files)
            out[table] = duckdb.sql(f"select count(*), {measure} from read_parquet([{paths}])").fetchall()[0]
    return out


def test_a_killed_ingest_leaves_the_lake_before_or_after_and_corrections_replace(tmp_path):
    frame = pd.read_parquet(shared_file(*RETAIL))
    when = pd.to_datetime(frame["InvoiceDate"])
    december = frame[when < "2009-12-05"]
    january = frame[(when >= "2010-01-04") & (when < "2010-01-08")]
    december.to_parquet(tmp_path / "dec.parquet", index=False)
    january.to_parquet(tmp_path / "jan.parquet", index=False)
    settings = _settings(tmp_path, "lake")
    args = dict(lake_dir=settings.lake_dir, quarantine_dir=settings.quarantine_dir)
    ingest_file(tmp_path / "dec.parquet", "online_retail_ii", **args)
    before = _committed_view(settings.lake_dir)

    reference = _settings(tmp_path, "reference")  # the same two exports, never killed
    for name in ("dec", "jan"):
        ingest_file(tmp_path / f"{name}.parquet", "online_retail_ii", lake_dir=reference.lake_dir, quarantine_dir=reference.quarantine_dir)
    after = _committed_view(reference.lake_dir)
    assert after != before

    def kill(where: str, n: int) -> None:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                KILLER,
                where,
                str(n),
                str(tmp_path / "jan.parquet"),
                str(settings.lake_dir),
                str(settings.quarantine_dir),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == -signal.SIGKILL, f"{where} #{n} was not reached: {proc.stderr[-2000:]}"

    for where, n in [("write", 1), ("write", 3), ("rename", 2), ("commit", 1)]:
        kill(where, n)
        assert _committed_view(settings.lake_dir) == before, f"killed at {where} #{n}: the lake changed"
    uncommitted = set(data_files(settings.lake_dir, "order_lines")) - set(committed_files(settings.lake_dir, "order_lines"))
    assert uncommitted, "the kill at the commit left the new files in place, uncommitted"
    # a build over a lake with a dead writer's files sees exactly the committed December
    warehouse.build(settings, echo=None)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    assert con.execute("select count(*) from fct_orders").fetchone()[0] == before["orders"][1]
    con.close()

    # killed right after its commit: the lake is exactly after; the next writer sweeps the dead files
    kill("sweep", 2)
    assert _committed_view(settings.lake_dir) == after
    assert ingest_file(tmp_path / "jan.parquet", "online_retail_ii", **args).skipped is False  # no ledger line yet
    assert _committed_view(settings.lake_dir) == after
    assert set(data_files(settings.lake_dir, "order_lines")) == set(committed_files(settings.lake_dir, "order_lines"))

    # a corrected re-send of two January invoices (the first's quantities doubled, the second as it
    # was) replaces their lines: nothing is counted twice
    lines = january[january["Customer ID"].notna() & ~january["Invoice"].str.startswith("C")]
    paths = ", ".join(f"'{p}'" for p in committed_files(settings.lake_dir, "order_lines"))
    january_ids = ", ".join(f"'{i}'" for i in lines["Invoice"].unique())
    was = dict(
        duckdb.sql(
            f"select order_id, sum(quantity) from read_parquet([{paths}]) where order_id in ({january_ids}) group by 1 order by 1 limit 2"
        ).fetchall()
    )
    first, second = sorted(was)
    fix = lines[lines["Invoice"].isin([first, second])].copy()
    fix.loc[fix["Invoice"] == first, "Quantity"] *= 2
    fix.to_parquet(tmp_path / "jan_fix.parquet", index=False)
    ingest_file(tmp_path / "jan_fix.parquet", "online_retail_ii", **args)
    warehouse.build(settings, echo=None)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    got = dict(
        con.execute(f"select order_id, sum(quantity) from fct_order_lines where order_id in ('{first}', '{second}') group by 1").fetchall()
    )
    assert got == {first: 2 * was[first], second: was[second]}
    assert con.execute("select count(*) from fct_orders").fetchone()[0] == after["orders"][1]
    con.close()


def _retailrocket_log(seed: int = 7) -> pd.DataFrame:
    """Three days of a RetailRocket-format event log: 150 visitors browsing 40 items between 08:00
    and 20:00 UTC (no session crosses midnight), some carts turning into transactions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows, order = [], 9000
    for day in range(3):
        for visitor in rng.choice(150, size=90, replace=False):
            t = pd.Timestamp("2015-06-01", tz="UTC") + pd.Timedelta(days=day, hours=int(rng.integers(8, 18)))
            for _ in range(int(rng.integers(1, 6))):
                item = int(rng.integers(0, 40))
                rows.append([t, visitor, "view", item, None])
                if rng.random() < 0.3:
                    t += pd.Timedelta(minutes=int(rng.integers(1, 10)))
                    rows.append([t, visitor, "addtocart", item, None])
                    if rng.random() < 0.5:
                        order += 1
                        rows.append([t + pd.Timedelta(minutes=2), visitor, "transaction", item, order])
                t += pd.Timedelta(minutes=int(rng.integers(1, 20)))
    frame = pd.DataFrame(rows, columns=["when", "visitorid", "event", "itemid", "transactionid"])
    frame["timestamp"] = frame.pop("when").astype("int64") // 1_000_000  # unix ms
    frame["transactionid"] = frame["transactionid"].astype("Int64")
    return frame[["timestamp", "visitorid", "event", "itemid", "transactionid"]]


def test_event_log_and_demand_exports_merge_like_one_file(tmp_path):
    """RetailRocket-style daily exports plus a re-sent day give the one-file warehouse (events,
    derived sessions, orders); an ERP week re-sent with corrected units replaces the old figures."""
    log = _retailrocket_log()
    day = pd.to_datetime(log["timestamp"], unit="ms", utc=True).dt.day
    erp = pd.DataFrame(
        {"sku": ["7", "7", "9"], "store": ["berlin"] * 3, "date": ["2015-05-18", "2015-05-25", "2015-05-25"], "units_sold": [5, 8, 3]}
    )
    corrected = erp[erp["date"] == "2015-05-25"].assign(units_sold=[11, 0])

    one, many = _settings(tmp_path, "one"), _settings(tmp_path, "many")
    log.to_csv(tmp_path / "events.csv", index=False)
    ingest_file(tmp_path / "events.csv", "retailrocket", lake_dir=one.lake_dir, quarantine_dir=one.quarantine_dir)
    pd.concat([erp[erp["date"] == "2015-05-18"], corrected]).to_csv(tmp_path / "erp_truth.csv", index=False)
    ingest_file(tmp_path / "erp_truth.csv", "erp_demand", lake_dir=one.lake_dir, quarantine_dir=one.quarantine_dir)

    for d in (1, 2, 3):
        log[day == d].to_csv(many.landing_dir / f"events_2015-06-0{d}.csv", index=False)
    log[day >= 2].to_csv(many.landing_dir / "events_2015-06-03_resend.csv", index=False)  # days 2-3 again
    reports = ingest_landing(many.landing_dir, "retailrocket", lake_dir=many.lake_dir, quarantine_dir=many.quarantine_dir)
    assert len(reports) == 4
    erp.to_csv(tmp_path / "erp_week1.csv", index=False)
    corrected.to_csv(tmp_path / "erp_week2_resent.csv", index=False)
    for name in ("erp_week1", "erp_week2_resent"):
        ingest_file(tmp_path / f"{name}.csv", "erp_demand", lake_dir=many.lake_dir, quarantine_dir=many.quarantine_dir)

    warehouse.build(one, echo=None)
    warehouse.build(many, echo=None)
    expected, got = _fingerprint(one), _fingerprint(many)
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    con = duckdb.connect(str(many.warehouse_path), read_only=True)
    try:
        assert (
            con.execute("select count(*), count(distinct session_id) from fct_events").fetchone()
            == duckdb.connect(str(one.warehouse_path), read_only=True)
            .execute("select count(*), count(distinct session_id) from fct_events")
            .fetchone()
        )
        week = dict(con.execute("select item_id, units from staging.stg_lake__demand_history where demand_date = '2015-05-25'").fetchall())
        assert week == {"7": 11, "9": 0}
    finally:
        con.close()


def test_a_lake_without_warehouses_builds_validates_and_skips_demand(tmp_path):
    """A one-site shop's orders (no warehouse on any order): the build passes, the feature sources
    validate (item_warehouse_demand may be empty), export marts without data are zero-row files, and
    the demand family steps aside with the fix in its message instead of failing the chain."""
    import yaml

    from ml.features.repo import validate_sources
    from ml.orchestration import tasks
    from ml.settings import PROJECT_ROOT
    from tests.integration.conftest import copy_repo

    mapping = yaml.safe_load((PROJECT_ROOT / "ml/ingest/presets/online_retail_ii.yaml").read_text())
    mapping.pop("warehouse_from")
    mapping["columns"].pop("region")
    mapping["produces"] = [t for t in mapping["produces"] if t != "warehouses"]
    (tmp_path / "one_site.yaml").write_text(yaml.safe_dump(mapping))
    frame = pd.read_parquet(shared_file(*RETAIL))
    frame[pd.to_datetime(frame["InvoiceDate"]) < "2010-01-01"].to_parquet(tmp_path / "dec.parquet", index=False)
    settings = settings_for(data_dir=tmp_path / "data", feast_repo_dir=copy_repo(tmp_path / "feature_repo"), mlflow_tracking_uri="")
    settings.ensure_dirs()
    ingest_file(tmp_path / "dec.parquet", tmp_path / "one_site.yaml", lake_dir=settings.lake_dir, quarantine_dir=settings.quarantine_dir)
    warehouse.build(settings, echo=None)
    report = validate_sources(settings)
    assert report["item_warehouse_demand"]["rows"] == 0 and not report["item_warehouse_demand"]["problems"]
    for mart in ("mart_search_purchases", "mart_cart_conversions", "mart_inventory_position", "mart_promotion_calendar"):
        assert len(pd.read_parquet(settings.exports_dir / f"{mart}.parquet")) == 0, f"{mart}: an all-null placeholder row"
    summary = tasks.train_demand(settings)
    assert summary["status"] == "skipped" and not summary["promoted"]
    assert "constants: {warehouse_id: main}" in summary["reason"]


def test_a_build_as_of_a_past_day_sees_only_what_was_known_then(tmp_path):
    frame = pd.read_parquet(shared_file(*RETAIL))
    when = pd.to_datetime(frame["InvoiceDate"])
    frame[when < "2010-01-15"].to_parquet(tmp_path / "export.parquet", index=False)
    settings = _settings(tmp_path, "lake")
    ingest_file(tmp_path / "export.parquet", "online_retail_ii", lake_dir=settings.lake_dir, quarantine_dir=settings.quarantine_dir)
    warehouse.build(settings, echo=None, vars={"as_of": "2009-12-31"})
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        last_order, orders = con.execute("select max(order_date), count(*) from fct_orders").fetchone()
        (last_feature,) = con.execute("select max(event_timestamp) from feat_user_rfm").fetchone()
        (returned_later,) = con.execute("select count(*) from staging.stg_lake__returns where returned_at >= '2010-01-01'").fetchone()
    finally:
        con.close()
    paths = ", ".join(f"'{p}'" for p in committed_files(settings.lake_dir, "orders"))
    in_lake = duckdb.sql(
        f"select count(*) filter (where ordered_at < '2010-01-01 00:00:00+00'), count(*) from read_parquet([{paths}])"
    ).fetchall()[0]
    assert str(last_order) == "2009-12-23"  # the shop's last December trading day
    assert orders == in_lake[0] < in_lake[1]  # December's orders, not January's
    assert last_feature.date().isoformat() <= "2010-01-01" and returned_later == 0
