"""A real ``dbt build`` (through ml.warehouse) into a temp DuckDB, from a generated tiny lake and from
the ingested Online Retail II sample: models and tests pass, the feature Parquet files keep their
declared schema and grain, no feature row sees the future, demand adds up, failures name the test.
"""

from __future__ import annotations

import json
import os
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ml import warehouse
from ml.contract import write_table
from ml.settings import PROJECT_ROOT, settings_for
from tests.conftest import shared_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURES = {
    "feat_user_rfm": ["user_id"],
    "feat_user_activity": ["user_id"],
    "feat_item_stats": ["item_id"],
    "feat_item_warehouse_demand": ["item_id", "warehouse_id"],
}
# Columns that are "as of the row's snapshot" (they grow between rows by design).
AS_OF_COLUMNS = {"hours_since_last_cart_add", "days_since_last_sale"}


def _declared_columns(model: str) -> list[tuple[str, str]]:
    path = PROJECT_ROOT / "dbt_project" / "models" / "marts" / "features" / f"{model}.yml"
    (spec,) = yaml.safe_load(path.read_text())["models"]
    return [(c["name"], c["data_type"]) for c in spec["columns"]]


def _feature(settings, model: str) -> str:
    return f"read_parquet('{warehouse.feature_path(settings, model)}')"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny generated lake built once for the module: (settings, build summary).

    DBT_TEST_LAKE_DIR=<lake> reuses a lake already generated (copied, never modified).
    """
    root = tmp_path_factory.mktemp("dbt_tiny")
    settings = settings_for(data_dir=root / "data")
    settings.ensure_dirs()
    prepared = os.environ.get("DBT_TEST_LAKE_DIR")
    if prepared:
        shutil.copytree(prepared, settings.lake_dir, dirs_exist_ok=True)
    else:
        from ml.generate import generate

        generate(scale="tiny", seed=42, lake_dir=settings.lake_dir, progress=False)
    summary = warehouse.build(settings, echo=None)
    return settings, summary


@pytest.fixture
def con(built):
    """A read-only connection, closed after each test (dbt docs generate needs the write lock)."""
    settings, _ = built
    connection = warehouse.connect(settings)
    yield connection
    connection.close()


def test_build_runs_every_model_and_test(built):
    settings, summary = built
    assert summary["success"] and summary["returncode"] == 0
    assert summary["by_type"]["model"] >= 25
    assert summary["by_type"]["test"] >= 100
    assert summary["by_type"]["unit_test"] >= 3
    assert set(summary["by_status"]) <= {"success", "pass"}
    # dbt wrote into this settings' own target folder, not dbt_project/target
    assert (warehouse.target_path(settings) / "run_results.json").exists()
    assert warehouse.target_path(settings).is_relative_to(settings.data_dir)


@pytest.mark.parametrize("model", sorted(FEATURES))
def test_feature_files_keep_declared_schema_and_grain(built, con, model):
    settings, _ = built
    path = warehouse.feature_path(settings, model)
    assert path.exists()
    schema = pq.read_schema(path)
    declared = _declared_columns(model)
    assert schema.names == [name for name, _ in declared]
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    actual = {r[0]: r[1].lower() for r in con.execute(f"describe select * from {_feature(settings, model)}").fetchall()}
    assert actual == {name: dtype for name, dtype in declared}
    keys = ", ".join(FEATURES[model])
    rows, distinct, not_midnight = con.execute(
        f"""select count(*), count(distinct ({keys}, event_timestamp)),
                   count_if(timezone('UTC', event_timestamp)::time <> time '00:00')
            from {_feature(settings, model)}"""
    ).fetchone()
    assert rows > 0 and rows == distinct and not_midnight == 0


@pytest.mark.parametrize("model", sorted(FEATURES))
def test_feature_rows_only_where_values_change(built, con, model):
    settings, _ = built
    keys = FEATURES[model]
    values = [n for n, _ in _declared_columns(model) if n not in {*keys, "event_timestamp", *AS_OF_COLUMNS}]
    repeated = con.execute(
        f"""select count(*) from (
              select row({", ".join(values)}) is not distinct from
                     lag(row({", ".join(values)})) over (partition by {", ".join(keys)} order by event_timestamp) as same
              from {_feature(settings, model)}) where same"""
    ).fetchone()[0]
    assert repeated == 0


def test_activity_features_never_see_the_future(built, con):
    """Every row's 7/30-day counts equal a recount of fct_events strictly before its event_timestamp."""
    settings, _ = built
    mismatches = con.execute(
        f"""
        with feat as (select * from {_feature(settings, "feat_user_activity")}),
        recount as (
            select feat.user_id, feat.event_timestamp,
                   count_if(e.event_type = 'view' and e.event_timestamp >= feat.event_timestamp - interval 7 days) as v7,
                   count_if(e.event_type = 'view') as v30,
                   count_if(e.event_type = 'add_to_cart' and e.event_timestamp >= feat.event_timestamp - interval 7 days) as c7,
                   max(e.event_timestamp) filter (where e.event_type = 'add_to_cart') as last_add
            from feat
            left join fct_events e
              on e.user_id = feat.user_id
             and e.event_timestamp < feat.event_timestamp
             and e.event_timestamp >= feat.event_timestamp - interval 30 days
            group by 1, 2
        )
        select count(*) from feat join recount using (user_id, event_timestamp)
        where feat.view_count_7d <> recount.v7 or feat.view_count_30d <> recount.v30
           or feat.cart_add_count_7d <> recount.c7
           or feat.last_cart_add_at >= feat.event_timestamp
        """
    ).fetchone()[0]
    assert mismatches == 0
    # and one user by hand, at the snapshot with the most views
    user_id, ts, views = con.execute(
        f"select user_id, event_timestamp, view_count_7d from {_feature(settings, 'feat_user_activity')} "
        "order by view_count_7d desc, user_id, event_timestamp limit 1"
    ).fetchone()
    recount = con.execute(
        "select count(*) from fct_events where user_id = ? and event_type = 'view' "
        "and event_timestamp < ? and event_timestamp >= ?::timestamptz - interval 7 days",
        [user_id, ts, ts],
    ).fetchone()[0]
    assert views == recount > 0


def test_rfm_counts_only_past_orders(built, con):
    settings, _ = built
    bad = con.execute(
        f"""
        with feat as (select * from {_feature(settings, "feat_user_rfm")})
        select count(*) from feat
        where order_count_lifetime <> (
            select count(*) from fct_orders o
            where o.user_id = feat.user_id and o.status <> 'cancelled' and o.ordered_at < feat.event_timestamp)
           or last_order_at >= event_timestamp
        """
    ).fetchone()[0]
    assert bad == 0


def test_cart_abandonment_is_dated_when_known(built, con):
    """An abandonment is dated 24 h after its add, and only when neither a purchase nor a re-add came
    within those 24 h (what was known at abandoned_at decides; a purchase after it does not undo it)."""
    early = con.execute(
        "select count(*) from intermediate.int_cart_adds__matched_to_purchases "
        "where is_abandoned and (abandoned_at <> added_at + interval 24 hours "
        "or purchased_at < added_at + interval 24 hours or readded_at < added_at + interval 24 hours)"
    ).fetchone()[0]
    assert early == 0
    assert con.execute("select count_if(is_abandoned) from intermediate.int_cart_adds__matched_to_purchases").fetchone()[0] > 0


def test_cart_rule_lives_once(built, con):
    """The export ml/models/user/cart.py reads is the intermediate's match row for row, and the 24 h flags
    behind feat_user_activity derive from that same match (hours_to_purchase < 24, the curve's split)."""
    settings, _ = built
    exported = f"read_parquet('{settings.exports_dir / 'mart_cart_conversions.parquet'}')"
    columns = ", ".join(r[0] for r in con.execute(f"describe select * from {exported}").fetchall())
    matched = f"(select {columns} from intermediate.int_cart_adds__matched_to_purchases)"
    differ = con.execute(
        f"select count(*) from ((select * from {matched} except all select * from {exported}) "
        f"union all (select * from {exported} except all select * from {matched}))"
    ).fetchone()[0]
    assert differ == 0
    inconsistent = con.execute(
        "select count(*) from intermediate.int_cart_adds__matched_to_purchases "
        "where is_purchased_24h <> coalesce(hours_to_purchase < 24, false)"
    ).fetchone()[0]
    assert inconsistent == 0


def test_daily_demand_adds_up_to_order_lines(con):
    demand, lines = con.execute(
        """select (select sum(units) from fct_daily_demand),
                  (select sum(quantity) from fct_order_lines where status <> 'cancelled' and warehouse_id is not null)"""
    ).fetchone()
    assert demand == lines > 0
    # dense: every pair has one row per day from its first sale to the lake's last date
    gaps = con.execute(
        """select count(*) from (
             select item_id, warehouse_id, count(*) as n, max(demand_date) - min(demand_date) + 1 as span,
                    max(demand_date) as last_day
             from fct_daily_demand group by 1, 2)
           where n <> span or last_day <> (select max(calendar_date) from intermediate.int_calendar__spined)"""
    ).fetchone()[0]
    assert gaps == 0


def test_docs_generate(built):
    settings, _ = built
    target = warehouse.docs(settings, echo=None)
    catalog = json.loads((target / "catalog.json").read_text())
    assert "model.ecom_warehouse.feat_user_activity" in catalog["nodes"]
    meta = warehouse.manifest(settings)["nodes"]["model.ecom_warehouse.feat_item_warehouse_demand"]["config"]["meta"]
    assert meta["entity"] == ["item", "warehouse"]


def test_a_later_export_of_a_dimension_wins_and_a_failing_data_test_names_itself(built, tmp_path):
    """A warehouse re-sent with another region by a later write replaces the attribute (the latest
    export wins); an order line with quantity 0 fails the build, naming its data test."""
    source, _ = built
    settings = settings_for(data_dir=tmp_path / "data")
    shutil.copytree(source.lake_dir, settings.lake_dir)
    first = pq.read_table(next(p for p in (settings.lake_dir / "warehouses").glob("*.parquet") if p.name != "_empty.parquet"))
    moved = first.slice(0, 1).to_pylist()[0] | {"region": "somewhere-else"}
    write_table(settings.lake_dir, "warehouses", pa.Table.from_pylist([moved]), file_stem="zz-later-export")
    warehouse.build(settings, select="+stg_lake__warehouses", echo=None)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    rows = con.execute("select region from staging.stg_lake__warehouses where warehouse_id = ?", [moved["warehouse_id"]]).fetchall()
    con.close()
    assert rows == [("somewhere-else",)]

    line = pq.read_table(next(settings.lake_dir.glob("order_lines/*/*.parquet"))).slice(0, 1).to_pylist()[0]
    write_table(
        settings.lake_dir,
        "order_lines",
        pa.Table.from_pylist([line | {"order_id": line["order_id"], "line_number": 999, "quantity": 0}]),
        file_stem="zz-bad-line",
    )
    with pytest.raises(warehouse.WarehouseBuildError) as raised:
        warehouse.build(settings, select="+stg_lake__order_lines", echo=None)
    assert "stg_lake__order_lines_quantity" in str(raised.value)
    assert any(f["status"] == "fail" for f in raised.value.failures)


def test_orders_only_online_retail_builds(tmp_path):
    """The real UCI Online Retail II sample (two months): no events, so activity features are absent."""
    sample = shared_file("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet")
    from ml.ingest import ingest_file

    settings = settings_for(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    table = pq.read_table(sample)
    import pyarrow.compute as pc

    sliced = tmp_path / "online_retail_ii_slice.parquet"
    pq.write_table(table.filter(pc.less(table["InvoiceDate"], "2010-02-01")), sliced)
    ingest_file(sliced, "online_retail_ii", lake_dir=settings.lake_dir, quarantine_dir=settings.quarantine_dir)

    summary = warehouse.build(settings, echo=None)
    assert summary["success"]
    counts = {m: pq.read_metadata(warehouse.feature_path(settings, m)).num_rows for m in FEATURES}
    assert counts["feat_user_activity"] == 0
    assert counts["feat_user_rfm"] > 0 and counts["feat_item_warehouse_demand"] > 0 and counts["feat_item_stats"] > 0
    with duckdb.connect() as c:
        nulls, units = c.execute(
            f"select count_if(view_count_30d is null) = count(*), sum(units_sold_30d) from {_feature(settings, 'feat_item_stats')}"
        ).fetchone()
    assert nulls and units > 0
