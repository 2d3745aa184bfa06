"""Benchmark point-in-time training-set retrieval: time and peak memory against entity rows.

    python bench/bench_retrieval.py [--rows 10000,100000,1000000] [--chunk-rows 250000]
                                    [--data-dir DIR]   (reuse a built warehouse; default: build tiny)

Setup: a tiny warehouse (generate + dbt build) into a temp dir and `feast apply` (embedded mode).
Entity frames draw users and label times (uniform over the marts' time span) at random. For each
size, three ways, each in its own subprocess so each peak RSS is its own:

- ``feast_chunked``: ml.features.training.build_training_set with chunk_rows (the default path);
- ``feast_single``: the same with one get_historical_features call for the whole frame (baseline);
- ``duckdb_asof``: ml.features.training.reference_training_set, hand-written DuckDB ASOF LEFT JOINs
  (reference: what the join costs without Feast; no on-demand features).

Service propensity_lgbm_v1 (user_rfm + user_activity + request-time ODFV). Results go to
bench/results/retrieval.json (seconds, rows/s and peak RSS per way and size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PeakRSS, Result, write_results  # noqa: E402

SERVICE = "propensity_lgbm_v1"


def entity_frame(settings, rows: int, seed: int = 0):
    import duckdb
    import numpy as np
    import pandas as pd

    path = settings.features_dir / "feat_user_activity.parquet"
    users, lo, hi = duckdb.sql(
        f"select list(distinct user_id), epoch(min(event_timestamp)), epoch(max(event_timestamp)) from read_parquet('{path}')"
    ).fetchall()[0]
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.choice(np.array(users, dtype=object), rows),
            "event_timestamp": pd.to_datetime(rng.uniform(lo, hi + 86400, rows).astype("int64"), unit="s", utc=True),
            "label": rng.integers(0, 2, rows),
        }
    )


def _one(data_dir: str, repo_dir: str, way: str, rows: int, chunk_rows: int) -> dict:
    """Runs inside the subprocess: one retrieval, measured."""
    from ml.features import repo, training
    from ml.settings import settings_for

    settings = settings_for(data_dir=data_dir, feast_repo_dir=repo_dir)
    frame = entity_frame(settings, rows)
    store = repo.get_store(settings) if way != "duckdb_asof" else None
    with PeakRSS() as peak:
        start = time.perf_counter()
        if way == "duckdb_asof":
            out = training.reference_training_set(settings, frame, ["user_rfm", "user_activity"])
        else:
            out = training.build_training_set(
                settings, frame, SERVICE, chunk_rows=chunk_rows if way == "feast_chunked" else None, store=store
            )
        seconds = time.perf_counter() - start
    assert len(out) == rows
    return {"seconds": seconds, "peak_mib": peak.peak_mib, "non_null": float(out["order_count_lifetime"].notna().mean())}


def prepare(data_dir: Path | None) -> tuple[Path, Path]:
    """A built tiny warehouse and an applied temp copy of feature_repo/; (data_dir, repo_dir)."""
    import shutil

    from ml import warehouse
    from ml.features import repo
    from ml.generate import generate
    from ml.settings import PROJECT_ROOT, settings_for

    root = Path(tempfile.mkdtemp(prefix="bench_retrieval_"))
    repo_dir = Path(shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo"))
    if data_dir is None:
        data_dir = root / "data"
        settings = settings_for(data_dir=data_dir, feast_repo_dir=repo_dir)
        settings.ensure_dirs()
        generate(scale="tiny", seed=42, lake_dir=settings.lake_dir)
        warehouse.build(settings, echo=None)
    settings = settings_for(data_dir=data_dir, feast_repo_dir=repo_dir)
    repo.apply(settings)
    return Path(data_dir), repo_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=os.environ.get("BENCH_RETRIEVAL_ROWS", "10000,100000,1000000"))
    parser.add_argument("--chunk-rows", type=int, default=None, help="default: training.DEFAULT_CHUNK_ROWS")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--ways", default="feast_chunked,feast_single,duckdb_asof")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: way,rows,chunk,data_dir,repo_dir
    args = parser.parse_args()
    if args.one:
        way, rows, chunk, data_dir, repo_dir = args.one.split(",", 4)
        print(json.dumps(_one(data_dir, repo_dir, way, int(rows), int(chunk))))
        return

    from ml.features.training import DEFAULT_CHUNK_ROWS

    chunk = args.chunk_rows or DEFAULT_CHUNK_ROWS
    data_dir, repo_dir = prepare(args.data_dir)
    results: list[Result] = []
    for rows in [int(r) for r in args.rows.split(",")]:
        measured = {}
        for way in args.ways.split(","):
            cmd = [sys.executable, __file__, "--one", f"{way},{rows},{chunk},{data_dir},{repo_dir}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{way} {rows}: failed\n{proc.stderr[-2000:]}")
                measured[way] = None
                continue
            measured[way] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{way:<14} {rows:>9,} rows  {measured[way]['seconds']:8.2f} s  {measured[way]['peak_mib']:8.1f} MiB", flush=True)
        base = measured.get("feast_single")
        ref = measured.get("duckdb_asof")
        scale = f"{rows // 1000}k" if rows < 1_000_000 else f"{rows // 1_000_000}M"
        for way, m in measured.items():
            if m is None:
                continue
            baseline = base if way == "feast_chunked" else ref if way == "feast_single" else None
            baseline_name = "feast_single" if way == "feast_chunked" else "duckdb_asof" if way == "feast_single" else None
            extra = {"entity_rows": rows, "chunk_rows": chunk if way == "feast_chunked" else None, "non_null_share": m["non_null"]}
            results.append(
                Result(
                    f"retrieval_seconds_{way}",
                    round(m["seconds"], 3),
                    "s",
                    scale,
                    baseline=round(baseline["seconds"], 3) if baseline else None,
                    baseline_name=baseline_name,
                    extra=extra,
                )
            )
            results.append(
                Result(
                    f"retrieval_peak_rss_{way}",
                    m["peak_mib"],
                    "MiB",
                    scale,
                    baseline=baseline["peak_mib"] if baseline else None,
                    baseline_name=baseline_name,
                    extra=extra,
                )
            )
            results.append(Result(f"retrieval_rows_per_s_{way}", round(rows / m["seconds"], 1), "rows/s", scale, extra=extra))
    write_results("retrieval", results)


if __name__ == "__main__":
    main()
