"""ml.features.materialize against Feast's own materialization, on SQLite and on Redis.

One temp copy of feature_repo/ (embedded mode, a random project name) with hand-made marts full of
edge cases (nulls, NaN, unicode and empty keys, a DATE column, rows exactly at the window's ends and
outside it), applied once. The Redis runs use a second feature_store.yaml on the same registry with
a Redis online store (db 14; every key ends with the project name and is deleted afterwards).

- after ours and after stock ``store.materialize`` on the same window, the online store holds the
  same bytes (SQLite rows / Redis hashes) and ``get_online_features`` over every entity agrees;
- a backfill of an older window never replaces a newer value;
- a failing run (missing file, missing column, an error mid-write) leaves the previous values;
- intervals land in the registry; ``materialize_incremental`` continues from the last end.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml.features import materialize as m
from ml.features import repo
from ml.settings import settings_for
from tests.conftest import port_open, skip_or_fail
from tests.integration.conftest import copy_repo, fill_missing_marts, mart_table

pytestmark = pytest.mark.integration

T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
UTC = timezone.utc
START = datetime(2024, 1, 3, tzinfo=UTC)
END = datetime(2024, 1, 10, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REDIS_DB = 14
USERS = [f"u{i:03d}" for i in range(40)] + ["ü-7", "用户", ""]
ITEMS = [f"i{i}" for i in range(12)]
WAREHOUSES = ["w1", "w2", "w10"]


# -- the marts ----------------------------------------------------------------------------------------


def user_rfm_rows(bump: int = 0) -> dict:
    """Per user: snapshots 01-02 and 01-05 for all; 01-09 for a third; exactly END for a seventh; one
    after END for every fifth (excluded). ``bump`` shifts every value (a "newer" version of the mart)."""
    rows: dict = {
        k: []
        for k in [
            "user_id",
            "event_timestamp",
            "order_count_lifetime",
            "revenue_sum_lifetime",
            "avg_order_value_lifetime",
            "first_order_at",
            "last_order_at",
            "order_count_90d",
        ]
    }
    for i, user in enumerate(USERS):
        days = (
            ["2024-01-02", "2024-01-05"]
            + (["2024-01-09 13:45:10.123456"] if i % 3 == 0 else [])
            + (["2024-01-10"] if i % 7 == 0 else [])
            + (["2024-01-12"] if i % 5 == 0 else [])
        )
        for j, day in enumerate(days):
            rows["user_id"].append(user)
            rows["event_timestamp"].append(T(day))
            rows["order_count_lifetime"].append(i * 10 + j + bump if (i + j) % 6 else None)
            rows["revenue_sum_lifetime"].append(
                float("nan") if i % 11 == 4 else (None if i % 4 == 1 else round(i * 1.25 + j + bump * 0.5, 2))
            )
            rows["avg_order_value_lifetime"].append(-0.0 if i == 2 else 1e300 if i == 3 else (i + 0.1) / (j + 1))
            rows["first_order_at"].append(
                None if i % 9 == 0 else T("1969-12-31 23:59:59.5") if i == 1 else T("2023-06-01") + pd.Timedelta(days=i)
            )
            rows["last_order_at"].append(T(day) - pd.Timedelta(hours=i + bump))
            rows["order_count_90d"].append(-(2**40) if i == 5 else j)
    return rows


def write_marts(settings, bump: int = 0, drop: dict | None = None) -> None:
    """All four marts; ``drop={"feat_x": "column"}`` leaves a column out of a mart."""
    drop = drop or {}
    tables = {
        "feat_user_rfm": mart_table(settings, "user_rfm", user_rfm_rows(bump)),
        "feat_user_activity": mart_table(
            settings,
            "user_activity",
            {
                "user_id": USERS[:20] * 2,
                "event_timestamp": [T("2024-01-04")] * 20 + [T("2024-01-08")] * 20,
                "view_count_7d": [i + bump for i in range(40)],
                "hours_since_last_cart_add": [None if i % 3 else i / 7 for i in range(40)],
                "last_cart_add_at": [None if i % 2 else T("2024-01-03 10:00") for i in range(40)],
            },
        ),
        "feat_item_stats": mart_table(
            settings,
            "item_stats",
            {
                "item_id": ITEMS,
                "event_timestamp": [T("2024-01-06")] * 12,
                "price": [None if i == 0 else i * 2.5 + bump for i in range(12)],
                "price_band": [None, "low", "mid", "high", "premium", "unknown", "", "ünï", "low", "mid", "high", "low"],
                "units_sold_7d": list(range(12)),
            },
        ),
    }
    demand = mart_table(
        settings,
        "item_warehouse_demand",
        {
            "item_id": [i for i in ITEMS for _ in WAREHOUSES] * 2,
            "warehouse_id": WAREHOUSES * len(ITEMS) * 2,
            "event_timestamp": [T("2024-01-04")] * 36 + [T("2024-01-07")] * 36,
            "units_sold_7d": [i + bump for i in range(72)],
            "units_mean_28d": [i / 28 for i in range(72)],
        },
    )
    # dbt writes last_sale_date as a DATE
    dates = pa.array([None if i % 5 == 0 else 19720 + i % 9 for i in range(72)], pa.date32())
    tables["feat_item_warehouse_demand"] = demand.set_column(demand.schema.get_field_index("last_sale_date"), "last_sale_date", dates)
    for model, table in tables.items():
        if model in drop:
            table = table.drop_columns([drop[model]])
        pq.write_table(table, settings.features_dir / f"{model}.parquet")
    fill_missing_marts(settings)  # views these tests are not about


ENTITY_ROWS = {
    "user_rfm": [{"user_id": u} for u in USERS + ["nobody"]],
    "user_activity": [{"user_id": u} for u in USERS + ["nobody"]],
    "item_stats": [{"item_id": i} for i in ITEMS + ["nothing"]],
    "item_warehouse_demand": [{"item_id": i, "warehouse_id": w} for i in ITEMS + ["nothing"] for w in WAREHOUSES],
}


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("materialize")
    settings = settings_for(
        data_dir=root / "data", feast_repo_dir=copy_repo(root / "feature_repo"), feast_project=f"mat_{uuid.uuid4().hex[:10]}"
    )
    settings.ensure_dirs()
    write_marts(settings)
    repo.apply(settings, check=False, validate=False)
    return settings


def sqlite_store(settings):
    return repo.get_store(settings)


def redis_store(settings):
    """A FeatureStore on the same registry file with a Redis online store (db 14)."""
    from feast import FeatureStore

    if not port_open("127.0.0.1", 6379):
        skip_or_fail("Redis is not listening on 127.0.0.1:6379")
    embedded = repo.write_config(settings).read_text()
    text = embedded.split("online_store:")[0] + (
        f'online_store:\n  type: redis\n  connection_string: "127.0.0.1:6379,db={REDIS_DB}"\nentity_key_serialization_version: 3\n'
    )
    path = settings.data_dir / "feast" / "feature_store.redis.yaml"
    path.write_text(text)
    return FeatureStore(repo_path=str(settings.feast_repo_dir), fs_yaml_file=path)


@pytest.fixture(params=["sqlite", "redis"])
def kind(request, env):
    """Each online store in turn, emptied before and (Redis) after the test; marts restored after."""
    store = sqlite_store(env) if request.param == "sqlite" else redis_store(env)
    clear(request.param, env)
    yield request.param, store
    clear(request.param, env)
    write_marts(env)


def clear(kind: str, settings) -> None:
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(settings.feast_online_path)
        for view in ENTITY_ROWS:
            con.execute(f'delete from "{settings.feast_project}_{view}"')
        con.commit()
        con.close()
    else:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        keys = list(client.scan_iter(match=b"*" + settings.feast_project.encode(), count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def raw(kind: str, settings) -> dict:
    """Everything the online store holds for this project, as bytes."""
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(settings.feast_online_path)
        out = {
            view: con.execute(
                f'select entity_key, feature_name, value, value_text, event_ts, created_ts from "{settings.feast_project}_{view}" order by 1, 2'  # noqa: E501
            ).fetchall()
            for view in ENTITY_ROWS
        }
        con.close()
        return out
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    out = {key: client.hgetall(key) for key in client.scan_iter(match=b"*" + settings.feast_project.encode(), count=1000)}
    client.close()
    return out


def reads(store) -> dict:
    """get_online_features over every entity (and a missing one) of every view."""
    out = {}
    for view, rows in ENTITY_ROWS.items():
        features = [f"{view}:{f.name}" for f in store.get_feature_view(view).features]
        out[view] = store.get_online_features(features=features, entity_rows=rows).to_dict()
    return out


# -- ours == stock ----------------------------------------------------------------------------------


def test_incremental_then_matches_a_single_window(env):
    """Runs first (the registry is fresh): never-materialized views start from the beginning; the
    next run starts at the last recorded end; the registry holds both intervals."""
    store = sqlite_store(env)
    clear("sqlite", env)
    first = m.materialize_incremental(store, datetime(2024, 1, 4, tzinfo=UTC), ["user_rfm"])
    assert first["views"]["user_rfm"]["start"] == EPOCH.isoformat()
    assert first["views"]["user_rfm"]["rows"] == len(USERS)  # everyone has a row on 01-02
    second = m.materialize_incremental(store, END, ["user_rfm"])
    assert second["views"]["user_rfm"]["start"] == datetime(2024, 1, 4, tzinfo=UTC).isoformat()
    store.refresh_registry()
    view = store.get_feature_view("user_rfm")
    assert (EPOCH, datetime(2024, 1, 4, tzinfo=UTC)) in [(a, b) for a, b in view.materialization_intervals]
    assert view.most_recent_end_time == END
    incremental = reads(store)["user_rfm"]
    clear("sqlite", env)
    m.materialize(store, None, END, ["user_rfm"])
    assert reads(store)["user_rfm"] == incremental


def test_same_bytes_and_reads_as_feast(kind, env):
    name, store = kind
    store.materialize(START, END)  # stock, all views
    stock_raw, stock_reads = raw(name, env), reads(store)
    assert stock_reads["user_rfm"]["order_count_lifetime"].count(None) < len(USERS)  # something landed
    clear(name, env)

    result = m.materialize(store, START, END)

    assert raw(name, env) == stock_raw
    assert reads(store) == stock_reads
    assert set(result["views"]) == set(m.default_views(store)) and set(ENTITY_ROWS) <= set(result["views"])
    assert all(v["engine"] == "fast" for v in result["views"].values())
    # users 0, 5, 10, ... have a row after END (excluded); the row exactly at END is included
    rfm = stock_reads["user_rfm"]
    assert rfm["order_count_lifetime"][0] == 3  # user 0: rows 01-02, 01-05, 01-09, 01-10 -> j = 3
    assert result["views"]["user_rfm"]["rows"] == len(USERS)
    store.refresh_registry()
    assert (START, END) in [(a, b) for a, b in store.get_feature_view("item_stats").materialization_intervals]


def test_backfill_never_overwrites_newer(kind, env):
    name, store = kind
    m.materialize(store, datetime(2024, 1, 6, tzinfo=UTC), END)  # recent window first
    recent = reads(store)
    older = m.materialize(store, None, datetime(2024, 1, 6, tzinfo=UTC))  # then the older one
    after = reads(store)
    # values from the recent window stay; entities only in the old window are filled in
    for view, values in recent.items():
        for column, got in values.items():
            for before, now in zip(got, after[view][column]):
                if before is not None:
                    assert now == before, (view, column)
    assert older["views"]["user_rfm"]["written"] < older["views"]["user_rfm"]["rows"]
    clear(name, env)
    m.materialize(store, None, END)
    assert reads(store) == after  # same as one run over the whole window


# -- bad input ---------------------------------------------------------------------------------------


def test_missing_column_or_file_leaves_previous_values(kind, env):
    name, store = kind
    m.materialize(store, None, END)
    before = reads(store)
    write_marts(env, bump=100, drop={"feat_item_stats": "price_band"})  # every mart newer, one broken
    with pytest.raises(m.MaterializationError, match="price_band"):
        m.materialize(store, None, END)
    assert reads(store) == before  # checked before anything was written: no view changed
    write_marts(env, bump=100)
    (env.features_dir / "feat_user_activity.parquet").unlink()
    with pytest.raises(m.MaterializationError, match="missing"):
        m.materialize(store, None, END)
    assert reads(store) == before


def test_error_mid_write_leaves_previous_values(kind, env, monkeypatch):
    name, store = kind
    m.materialize(store, None, END)
    before, before_raw = reads(store), raw(name, env)
    write_marts(env, bump=100)
    calls = {"n": 0}
    real = m.encode_column

    def failing(array, value_type):
        calls["n"] += 1
        if calls["n"] > 9:  # a few batches in
            raise RuntimeError("disk on fire")
        return real(array, value_type)

    monkeypatch.setattr(m, "encode_column", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        m.materialize(store, None, END, ["user_rfm"], batch_rows=5)
    assert calls["n"] > 9
    assert raw(name, env) == before_raw
    assert reads(store) == before
    monkeypatch.setattr(m, "encode_column", real)
    m.materialize(store, None, END, ["user_rfm"])  # and the next run goes through
    assert reads(store)["user_rfm"] != before["user_rfm"]
