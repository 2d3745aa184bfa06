"""Online serving latency: p50/p99 and requests/s, SDK and HTTP, SQLite and Redis, 1 entity and 100.

    .venv/bin/python bench/bench_serving.py [--users 100000] [--rate 200] [--seconds 10] [--no-redis]

Data: synthetic feature marts with one row per entity (``--users`` users for ``user_rfm`` and
``user_activity``, ``--items`` x ``--warehouses`` for the demand views), typed from
feature_repo/feature_views.py, in a temp DATA_DIR; applied and loaded with ``ml.features.materialize``
(Feast's stock ``store.materialize`` if that fails). Two deployments of the same repo:

- embedded: SQLite online store, file registry;
- production: Redis online store (127.0.0.1:6379, db ``--redis-db``, keys of a throwaway project,
  deleted afterwards) and the SQL registry in a throwaway PostgreSQL database (dropped afterwards).

Cases, each against random known entities:

- SDK: ``ml.features.serving.get_online_features`` in this process (a thin wrapper over Feast's
  stock ``FeatureStore.get_online_features``), sequential calls; requests/s = 1 / mean latency.
  Service ``propensity_lgbm_v1`` (two views + the pandas on-demand view ``user_recency_now``);
  baseline: ``item_warehouse_demand_v1`` (two views, no on-demand view), which isolates the on-demand cost.
- HTTP: ``feast serve`` (1 worker, no access log) on 127.0.0.1, an open-loop load paced at
  ``--rate`` requests/s for ``--seconds`` from a thread pool (keep-alive http.client connections).
  Latency is measured from each request's scheduled send time, so queueing counts (no coordinated
  omission); requests/s is completed requests / wall time. Batches of 100 are paced at rate / 10.
  Also sequential (one client, one request at a time): the per-request cost without queueing.

Targets: SDK p99 <= 5 ms for one entity on Redis; HTTP p99 <= 10 ms at 200 requests/s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, write_results  # noqa: E402

EVENT_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)
REQUEST_TIME = datetime(2026, 1, 15, tzinfo=timezone.utc)
MODELS = {
    "user_rfm": "feat_user_rfm",
    "user_activity": "feat_user_activity",
    "item_stats": "feat_item_stats",
    "item_warehouse_demand": "feat_item_warehouse_demand",
}


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def write_marts(settings, users: int, items: int, warehouses: int, seed: int = 7) -> dict:
    """One row per entity per mart, every declared column filled with plausible random values."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ml.features.contract import read_view_specs

    rng = np.random.default_rng(seed)
    specs = read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")
    user_ids = np.array([f"u{i:07d}" for i in range(users)], dtype=object)
    item_ids = np.array([f"i{i:06d}" for i in range(items)], dtype=object)
    wh_ids = np.array([f"wh_{i:02d}" for i in range(warehouses)], dtype=object)
    keys = {
        "user_rfm": {"user_id": user_ids},
        "user_activity": {"user_id": user_ids},
        "item_stats": {"item_id": item_ids},
        "item_warehouse_demand": {"item_id": np.repeat(item_ids, warehouses), "warehouse_id": np.tile(wh_ids, items)},
    }
    counts = {}
    base = int(EVENT_TIME.timestamp() * 1e6)
    for view, model in MODELS.items():
        spec = specs[view]
        n = len(next(iter(keys[view].values())))
        cols = {}
        for col, dtype in {**spec.fields, "event_timestamp": "UnixTimestamp"}.items():
            if col in keys[view]:
                cols[col] = pa.array(keys[view][col], pa.string())
            elif col == "event_timestamp":
                cols[col] = pa.array(np.full(n, base), pa.timestamp("us", tz="UTC"))
            elif dtype in ("Int64", "Int32"):
                cols[col] = pa.array(rng.integers(0, 50, n), pa.int64() if dtype == "Int64" else pa.int32())
            elif dtype in ("Float64", "Float32"):
                cols[col] = pa.array(np.round(rng.random(n) * 100, 4), pa.float64() if dtype == "Float64" else pa.float32())
            elif dtype == "String":
                cols[col] = pa.array(rng.choice(["low", "mid", "high", "premium"], n).astype(object), pa.string())
            elif dtype == "UnixTimestamp":
                cols[col] = pa.array(base - rng.integers(0, 90 * 86400, n) * 1_000_000, pa.timestamp("us", tz="UTC"))
            else:
                raise ValueError(f"{view}.{col}: no generator for {dtype}")
        pq.write_table(pa.table(cols), Path(settings.features_dir) / f"{model}.parquet")
        counts[view] = n
    return counts


def load(settings) -> tuple[str, float]:
    """apply + materialize the whole range; (engine used, seconds of materialization)."""
    from ml.features import repo

    repo.apply(settings)
    start, end = EVENT_TIME - timedelta(days=1), EVENT_TIME + timedelta(days=1)
    t0 = time.perf_counter()
    try:
        from ml.features.materialize import materialize

        materialize(settings, start, end)
        engine = "ml.features.materialize"
    except Exception as exc:  # noqa: BLE001 - the bench measures serving; loading just has to work
        print(f"ml.features.materialize failed ({type(exc).__name__}: {exc}); using Feast's store.materialize")
        repo.get_store(settings).materialize(start_date=start, end_date=end)
        engine = "feast"
    return engine, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def rows_for(service: str, counts: dict, n: int, rnd: random.Random) -> list[dict]:
    if service == "propensity_lgbm_v1":
        return [{"user_id": f"u{rnd.randrange(counts['user_rfm']):07d}"} for _ in range(n)]
    items, pairs = counts["item_stats"], counts["item_warehouse_demand"]
    warehouses = pairs // items
    return [{"item_id": f"i{rnd.randrange(items):06d}", "warehouse_id": f"wh_{rnd.randrange(warehouses):02d}"} for _ in range(n)]


def sdk_case(store, service: str, counts: dict, batch: int, calls: int) -> dict:
    from ml.features.serving import get_online_features

    rnd = random.Random(batch)
    requests = [rows_for(service, counts, batch, rnd) for _ in range(calls + 20)]
    for rows in requests[:20]:  # warm-up: caches, connections
        get_online_features(store, service, rows, request_time=REQUEST_TIME)
    lat = []
    for rows in requests[20:]:
        t0 = time.perf_counter()
        out = get_online_features(store, service, rows, request_time=REQUEST_TIME)
        lat.append(time.perf_counter() - t0)
        assert len(out[next(iter(out))]) == batch
    return {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "rps": len(lat) / sum(lat), "n": len(lat)}


def http_case(port: int, service: str, counts: dict, batch: int, rate: float, seconds: float, threads: int = 16) -> dict:
    """Open-loop paced load; latency from the scheduled send time."""
    from ml.features.serving import http_request_body

    rnd = random.Random(batch + 1)
    total = int(rate * seconds)
    bodies = [
        json.dumps(http_request_body(service, rows_for(service, counts, batch, rnd), REQUEST_TIME)).encode() for _ in range(total + 20)
    ]
    local = threading.local()
    headers = {"Content-Type": "application/json"}

    def send(body: bytes) -> int:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/get-online-features", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            local.conn = None
            conn.close()
            return 599

    lat: list[float] = []
    errors = [0]

    def task(body: bytes, scheduled: float) -> None:
        status = send(body)
        done = time.perf_counter()
        if status != 200:
            errors[0] += 1
        lat.append(done - scheduled)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for body in bodies[:20]:  # warm-up, unpaced
            pool.submit(send, body).result()
        t0 = time.perf_counter()
        futures = []
        for i, body in enumerate(bodies[20:]):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(task, body, scheduled))
        for f in futures:
            f.result()
        wall = time.perf_counter() - t0
    return {
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "rps": len(lat) / wall,
        "n": len(lat),
        "errors": errors[0],
        "offered_rps": rate,
    }


def http_sequential(port: int, service: str, counts: dict, batch: int, calls: int) -> dict:
    """One client, one request at a time (no queueing): the per-request cost over HTTP."""
    from ml.features.serving import http_request_body

    rnd = random.Random(batch + 2)
    bodies = [
        json.dumps(http_request_body(service, rows_for(service, counts, batch, rnd), REQUEST_TIME)).encode() for _ in range(calls + 20)
    ]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat = []
    try:
        for i, body in enumerate(bodies):
            t0 = time.perf_counter()
            conn.request("POST", "/get-online-features", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            if i >= 20:
                lat.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "rps": len(lat) / sum(lat), "n": len(lat)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_deployment(name: str, settings, counts: dict, args, results: list[Result]) -> None:
    from ml.features import serving

    engine, seconds = load(settings)
    print(f"[{name}] loaded {counts} with {engine} in {seconds:.1f} s")
    results.append(Result(f"materialize all views ({engine})", round(seconds, 2), "s", scale=name, extra={"entities": counts}))
    store = serving.open_store(settings)
    sdk = {}
    for service in ("propensity_lgbm_v1", "item_warehouse_demand_v1"):
        for batch, calls in ((1, args.sdk_calls), (100, max(50, args.sdk_calls // 5))):
            sdk[(service, batch)] = r = sdk_case(store, service, counts, batch, calls)
            print(f"[{name}] sdk {service} batch={batch}: {r}")
    for batch in (1, 100):
        p, d = sdk[("propensity_lgbm_v1", batch)], sdk[("item_warehouse_demand_v1", batch)]
        target = "p99 <= 5 ms (Redis, one entity)" if batch == 1 else None
        extra = {
            "p50_ms": round(p["p50_ms"], 3),
            "rps": round(p["rps"], 1),
            "calls": p["n"],
            "baseline_p50_ms": round(d["p50_ms"], 3),
            "baseline_rps": round(d["rps"], 1),
        }
        results.append(
            Result(
                f"sdk propensity_lgbm_v1 batch={batch} p99",
                round(p["p99_ms"], 3),
                "ms",
                scale=name,
                baseline=round(d["p99_ms"], 3),
                baseline_name="item_warehouse_demand_v1 (no on-demand view)",
                target=target,
                extra=extra,
            )
        )
    if args.no_http:
        return
    port = free_port()
    proc = serving.serve(settings, "127.0.0.1", port, workers=args.workers)
    try:
        serving.wait_ready(f"http://127.0.0.1:{port}", proc, timeout=180)
        for service, batch in (("propensity_lgbm_v1", 1), ("item_warehouse_demand_v1", 1), ("propensity_lgbm_v1", 100)):
            r = http_sequential(port, service, counts, batch, 300 if batch == 1 else 60)
            print(f"[{name}] http sequential {service} batch={batch}: {r}")
            results.append(
                Result(
                    f"http {service} batch={batch} sequential p99",
                    round(r["p99_ms"], 3),
                    "ms",
                    scale=name,
                    extra={"p50_ms": round(r["p50_ms"], 3), "rps": round(r["rps"], 1), "requests": r["n"], "workers": args.workers},
                )
            )
        cases = [
            ("propensity_lgbm_v1", 1, args.rate),
            ("item_warehouse_demand_v1", 1, args.rate),
            ("propensity_lgbm_v1", 100, args.rate / 10),
        ]
        for service, batch, rate in cases:
            r = http_case(port, service, counts, batch, rate, args.seconds)
            print(f"[{name}] http {service} batch={batch} @ {rate:g}/s: {r}")
            results.append(
                Result(
                    f"http {service} batch={batch} @{rate:g}/s p99",
                    round(r["p99_ms"], 3),
                    "ms",
                    scale=name,
                    target="p99 <= 10 ms at 200 req/s" if batch == 1 and service == "propensity_lgbm_v1" else None,
                    extra={
                        "p50_ms": round(r["p50_ms"], 3),
                        "achieved_rps": round(r["rps"], 1),
                        "offered_rps": rate,
                        "requests": r["n"],
                        "errors": r["errors"],
                        "workers": args.workers,
                    },
                )
            )
    finally:
        serving.stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--warehouses", type=int, default=10)
    parser.add_argument("--sdk-calls", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="HTTP requests/s for one entity")
    parser.add_argument("--seconds", type=float, default=10.0, help="HTTP load duration per case")
    parser.add_argument("--workers", type=int, default=1, help="feast serve workers")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--no-redis", action="store_true", help="embedded (SQLite) only")
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args(argv)

    from ml.settings import PROJECT_ROOT, settings_for

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        import shutil

        root = Path(tmp)
        repo_dir = Path(shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__")))
        features_dir = root / "features"
        features_dir.mkdir()
        embedded = settings_for(data_dir=root / "embedded", feast_repo_dir=repo_dir, features_dir=features_dir)
        embedded.ensure_dirs()
        counts = write_marts(embedded, args.users, args.items, args.warehouses)
        bench_deployment("sqlite", embedded, counts, args, results)
        if not args.no_redis:
            bench_redis(root, repo_dir, features_dir, counts, args, results)
    write_results("serving", results)
    return 0


def bench_redis(root: Path, repo_dir: Path, features_dir: Path, counts: dict, args, results: list[Result]) -> None:
    """Production mode in a throwaway PostgreSQL database and Feast project; both removed afterwards."""
    import psycopg
    import redis

    from ml.settings import settings_for

    name = f"bench_serving_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'create database "{name}"')
    try:
        settings = settings_for(
            data_dir=root / "production",
            feast_repo_dir=repo_dir,
            features_dir=features_dir,
            feast_mode="production",
            feast_project=name,
            feast_registry_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
            redis_url=f"redis://127.0.0.1:6379/{args.redis_db}",
        )
        settings.ensure_dirs()
        bench_deployment("redis", settings, counts, args, results)
    finally:
        client = redis.Redis(host="127.0.0.1", port=6379, db=args.redis_db)
        deleted = 0
        for keys in _chunks(client.scan_iter(match=b"*" + name.encode(), count=5000), 5000):
            deleted += client.delete(*keys)
        print(f"[redis] deleted {deleted} keys of project {name} from db {args.redis_db}")
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f'drop database if exists "{name}" with (force)')


def _chunks(iterable, n: int):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


if __name__ == "__main__":
    sys.exit(main())
