"""Benchmark materialization into the online store: ml.features.materialize against Feast's own.

    python bench/bench_materialize.py [--rows 100000,1000000] [--stores sqlite,redis]
                                      [--snapshots 3] [--stock-max-rows 200000]

Setup per size N: a temp copy of feature_repo/ (embedded mode) whose ``feat_user_rfm`` mart is
synthetic, N users x ``--snapshots`` daily snapshots with the view's 7 features (ints, doubles with
nulls, timestamps), the other marts one row each; one ``feast apply``. The Redis runs use a second
feature_store.yaml on the same registry file with a Redis online store (db 14, keys suffixed by a
random project name, deleted afterwards).

For each store, view ``user_rfm`` over the whole window (N entity rows written):

- ``ours``:  ``ml.features.materialize.materialize(store, None, end, ["user_rfm"])``
- ``stock``: ``store.materialize(1970-01-01, end, ["user_rfm"])`` (the baseline), on an emptied
  online store. Above ``--stock-max-rows`` entities stock runs on the first ``--stock-max-rows``
  users only (its rows/s is flat in N, and at ~1 M it would take many minutes); the result says so.

Both timed around the call only (store opened before), registry updates included. Results:
bench/results/materialize.json (rows/s, ratio ours/stock, seconds, peak RSS).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PeakRSS, Result, write_results  # noqa: E402

VIEW = "user_rfm"
MART = "feat_user_rfm"
END = datetime(2024, 3, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 14


def synthetic_mart(path: Path, users: int, snapshots: int, seed: int = 0) -> None:
    """N users x snapshots rows in the shape of feat_user_rfm (one row per user per snapshot)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n = users * snapshots
    user = np.tile(np.arange(users), snapshots)
    day = np.repeat(np.arange(snapshots), users)
    ts = np.datetime64("2024-02-01T00:00:00", "us") + (day * 86400 * 10**6).astype("timedelta64[us]")
    orders = rng.integers(1, 50, n)
    revenue = np.round(rng.gamma(2.0, 40.0, n) * orders, 2)
    revenue_mask = rng.random(n) < 0.05  # a few nulls, as orders-only logs without prices give
    first = np.datetime64("2023-01-01T00:00:00", "us") + rng.integers(0, 300 * 86400, n).astype("timedelta64[s]")
    last = first + rng.integers(0, 30 * 86400, n).astype("timedelta64[s]")
    table = pa.table(
        {
            "user_id": pa.array(np.char.add("user_", np.char.zfill(user.astype(str), 8))),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "order_count_lifetime": pa.array(orders, pa.int64()),
            "revenue_sum_lifetime": pa.array(revenue, pa.float64(), mask=revenue_mask),
            "avg_order_value_lifetime": pa.array(revenue / orders, pa.float64(), mask=revenue_mask),
            "first_order_at": pa.array(first, pa.timestamp("us", tz="UTC")),
            "last_order_at": pa.array(last, pa.timestamp("us", tz="UTC")),
            "order_count_90d": pa.array(np.minimum(orders, rng.integers(0, 10, n)), pa.int64()),
            "revenue_sum_90d": pa.array(np.round(revenue / 3, 2), pa.float64()),
        }
    )
    pq.write_table(table, path, row_group_size=256_000)


def tiny_marts(settings) -> None:
    """One row in each other mart, so `feast apply` sees every source."""
    import pandas as pd
    import pyarrow.parquet as pq

    from tests.integration.conftest import mart_table

    ts = pd.Timestamp("2024-01-02", tz="UTC")
    for view, model, keys in [
        ("user_activity", "feat_user_activity", {"user_id": ["user_00000000"]}),
        ("item_stats", "feat_item_stats", {"item_id": ["i1"]}),
        ("item_warehouse_demand", "feat_item_warehouse_demand", {"item_id": ["i1"], "warehouse_id": ["w1"]}),
    ]:
        pq.write_table(mart_table(settings, view, {**keys, "event_timestamp": [ts]}), settings.features_dir / f"{model}.parquet")


def redis_store(settings, db: int = REDIS_DB):
    """A FeatureStore on the settings' registry file with a Redis online store."""
    from feast import FeatureStore

    from ml.features import repo

    embedded = repo.write_config(settings).read_text()
    text = embedded.split("online_store:")[0] + (
        f'online_store:\n  type: redis\n  connection_string: "{REDIS_HOST}:{REDIS_PORT},db={db}"\nentity_key_serialization_version: 3\n'
    )
    path = settings.data_dir / "feast" / "feature_store.redis.yaml"
    path.write_text(text)
    return FeatureStore(repo_path=str(settings.feast_repo_dir), fs_yaml_file=path)


def clear_online(kind: str, store, settings) -> int:
    """Empty the benchmark view in the online store; returns the rows/keys removed."""
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(settings.feast_online_path)
        removed = con.execute(f'delete from "{settings.feast_project}_{VIEW}"').rowcount
        con.commit()
        con.close()
        return removed
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    removed = 0
    batch = []
    for key in client.scan_iter(match=b"*" + settings.feast_project.encode(), count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    client.close()
    return removed


def online_count(kind: str, settings) -> int:
    """Entities of the view now in the online store."""
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(settings.feast_online_path)
        n = con.execute(f'select count(distinct entity_key) from "{settings.feast_project}_{VIEW}"').fetchone()[0]
        con.close()
        return n
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    n = sum(1 for _ in client.scan_iter(match=b"*" + settings.feast_project.encode(), count=10_000))
    client.close()
    return n


def run_size(users: int, stores: list[str], snapshots: int, stock_max_rows: int, workdir: Path) -> list[Result]:
    from ml.features import materialize as fast
    from ml.features import repo
    from ml.settings import settings_for
    from tests.integration.conftest import copy_repo

    root = workdir / f"n{users}"
    settings = settings_for(
        data_dir=root / "data", feast_repo_dir=copy_repo(root / "feature_repo"), feast_project=f"bench_{uuid.uuid4().hex[:8]}"
    )
    settings.ensure_dirs()
    mart = settings.features_dir / f"{MART}.parquet"
    synthetic_mart(mart, users, snapshots)
    tiny_marts(settings)
    repo.apply(settings, check=False, validate=False)
    scale = f"{users // 1000}k" if users < 1_000_000 else f"{users / 1e6:g}M"
    results = []
    for kind in stores:
        store = repo.get_store(settings) if kind == "sqlite" else redis_store(settings)
        try:
            clear_online(kind, store, settings)
            with PeakRSS() as peak:
                start = time.perf_counter()
                out = fast.materialize(store, None, END, [VIEW])
                ours_s = time.perf_counter() - start
            assert out["views"][VIEW]["rows"] == users, out
            assert online_count(kind, settings) == users
            ours = users / ours_s

            stock_rows = min(users, stock_max_rows)
            if stock_rows < users:  # stock on the first stock_rows users only
                full = mart.with_suffix(".full")
                shutil.move(mart, full)
                synthetic_mart(mart, stock_rows, snapshots)
            clear_online(kind, store, settings)
            try:
                with PeakRSS() as stock_peak:
                    start = time.perf_counter()
                    store.materialize(EPOCH, END, [VIEW])
                    stock_s = time.perf_counter() - start
                assert online_count(kind, settings) == stock_rows
            finally:
                if stock_rows < users:
                    shutil.move(full, mart)
            stock = stock_rows / stock_s
            note = (
                ""
                if stock_rows == users
                else f"stock timed on the first {stock_rows:,} of {users:,} entities (its rows/s does not grow with N)"
            )
            results.append(
                Result(
                    metric=f"materialize_{kind}_rows_per_s",
                    value=round(ours, 1),
                    unit="rows/s",
                    scale=scale,
                    baseline=round(stock, 1),
                    baseline_name="feast_materialize",
                    target=">= 10x stock",
                    extra={
                        "entities": users,
                        "source_rows": users * snapshots,
                        "features": 7,
                        "ours_seconds": round(ours_s, 2),
                        "ours_peak_rss_mib": peak.peak_mib,
                        "stock_entities": stock_rows,
                        "stock_seconds": round(stock_s, 2),
                        "stock_peak_rss_mib": stock_peak.peak_mib,
                        "note": note,
                    },
                )
            )
            print(
                f"{kind} {scale}: ours {ours:,.0f} rows/s ({ours_s:.1f} s), stock {stock:,.0f} rows/s ({stock_s:.1f} s, {stock_rows:,} rows)",  # noqa: E501
                flush=True,
            )
        finally:
            if kind == "redis":
                clear_online(kind, store, settings)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="100000", help="comma-separated entity counts (default 100000)")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--snapshots", type=int, default=3)
    parser.add_argument("--stock-max-rows", type=int, default=200_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    stores = [s for s in args.stores.split(",") if s]
    if "redis" in stores:
        from tests.conftest import port_open

        if not port_open(REDIS_HOST, REDIS_PORT):
            print("redis is not listening on 127.0.0.1:6379: skipping the redis runs")
            stores.remove("redis")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_materialize_"))
    results: list[Result] = []
    try:
        for users in [int(r) for r in args.rows.split(",")]:
            results += run_size(users, stores, args.snapshots, args.stock_max_rows, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    write_results("materialize", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
