"""Benchmark the feature warehouse: dbt run / dbt build against the same SQL executed directly in DuckDB.

    python bench/bench_dbt.py [--scales tiny,small]      (or BENCH_SCALES=tiny,small)

For each scale: generate a lake (ml.generate) into a temp dir, time ``dbt run`` (models only) and
``dbt build`` (models + data tests + unit tests) through ml.warehouse, then, as the baseline, execute
the SQL dbt compiled (target/manifest.json) directly in one DuckDB connection in dependency order:
views, tables, feature marts copied to Parquet, then each data test's query. The ratio is dbt's
overhead (process start, parsing, threads, metadata queries) over the bare SQL. Goal: <= 1.5x at medium.
Results go to bench/results/dbt.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from graphlib import TopologicalSorter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PeakRSS, Result, timed, write_results  # noqa: E402
from ml import warehouse  # noqa: E402
from ml.settings import settings_for  # noqa: E402


def direct_duckdb(settings, manifest: dict, root: Path) -> dict[str, float]:
    """Run the compiled models (and then the data tests) straight in DuckDB; seconds of each phase."""
    import duckdb

    # dbt names the catalog after the warehouse file's stem, and the compiled SQL uses that name.
    db_path = root / settings.warehouse_path.name
    features = root / "features"
    features.mkdir(parents=True, exist_ok=True)
    nodes = manifest["nodes"]
    models = {uid: n for uid, n in nodes.items() if n["resource_type"] == "model"}
    order = list(TopologicalSorter({uid: [d for d in n["depends_on"]["nodes"] if d in models] for uid, n in models.items()}).static_order())
    tests = [n for n in nodes.values() if n["resource_type"] == "test" and n.get("compiled_code")]
    con = duckdb.connect(str(db_path))
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    con.execute("set TimeZone = 'UTC'")
    con.execute("set preserve_insertion_order = false")
    for schema in {n["schema"] for n in models.values()}:
        con.execute(f"create schema if not exists {schema}")
    start = time.perf_counter()
    for uid in order:
        node = models[uid]
        sql = node["compiled_code"]
        name = f'"{node["schema"]}"."{node["alias"]}"'
        kind = node["config"]["materialized"]
        if kind == "view":
            con.execute(f"create or replace view {name} as {sql}")
        elif kind == "external":
            path = features / f"{node['alias']}.parquet"
            con.execute(f"copy ({sql}) to '{path}' (format parquet)")
            con.execute(f"create or replace view {name} as select * from read_parquet('{path}')")
        else:
            con.execute(f"create or replace table {name} as {sql}")
    models_s = time.perf_counter() - start
    start = time.perf_counter()
    for test in tests:
        con.execute(f"select count(*) from ({test['compiled_code']}) as t").fetchone()
    tests_s = time.perf_counter() - start
    con.close()
    return {"models": models_s, "tests": tests_s, "model_count": len(order), "test_count": len(tests)}


def bench_scale(scale: str) -> list[Result]:
    from ml.generate import generate

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix=f"bench_dbt_{scale}_") as tmp:
        tmp = Path(tmp)
        settings = settings_for(data_dir=tmp / "data")
        settings.ensure_dirs()
        with timed() as gen_s:
            generate(scale=scale, seed=42, lake_dir=settings.lake_dir, progress=False)
        print(f"[{scale}] lake generated in {gen_s():.1f}s", flush=True)

        # dbt compiles the SQL the baseline runs: parse + compile once first (not timed)
        rc, _ = warehouse.run_dbt(settings, ["compile"], echo=None)
        assert rc == 0, "dbt compile failed"
        # The machine is shared: run the baseline before and after dbt and compare with the mean.
        before = direct_duckdb(settings, warehouse.manifest(settings), tmp / "direct_before")
        print(f"[{scale}] direct duckdb models {before['models']:.1f}s, tests {before['tests']:.1f}s", flush=True)
        with PeakRSS() as rss, timed() as run_s:
            run = warehouse.run(settings, echo=None)
        print(f"[{scale}] dbt run {run_s():.1f}s ({run['nodes']} models)", flush=True)
        with timed() as build_s:
            build = warehouse.build(settings, echo=None)
        print(f"[{scale}] dbt build {build_s():.1f}s ({build['nodes']} nodes)", flush=True)
        after = direct_duckdb(settings, warehouse.manifest(settings), tmp / "direct_after")
        print(f"[{scale}] direct duckdb models {after['models']:.1f}s, tests {after['tests']:.1f}s", flush=True)
        direct = {k: (before[k] + after[k]) / 2 for k in ("models", "tests")}

        import duckdb

        rows = {}
        for model in warehouse.feature_models(settings):
            path = warehouse.feature_path(settings, model)
            rows[model] = duckdb.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
        with warehouse.connect(settings) as con:
            rows["fct_events"] = con.execute("select count(*) from fct_events").fetchone()[0]
            rows["fct_daily_demand"] = con.execute("select count(*) from fct_daily_demand").fetchone()[0]

        extra = {
            "rows": rows,
            "dbt_nodes": build["by_type"],
            "dbt_elapsed_s": build["elapsed_s"],
            "direct_models_s": [round(before["models"], 3), round(after["models"], 3)],
            "direct_tests_s": [round(before["tests"], 3), round(after["tests"], 3)],
            "threads": settings.dbt_threads,
        }
        results += [
            Result("generate_seconds", round(gen_s(), 3), "s", scale),
            Result(
                "dbt_run_seconds",
                round(run_s(), 3),
                "s",
                scale,
                baseline=round(direct["models"], 3),
                baseline_name="direct_duckdb_models",
                target="<=1.5x at medium",
                extra={**extra, "peak_rss_mib": rss.peak_mib},
            ),
            Result(
                "dbt_build_seconds",
                round(build_s(), 3),
                "s",
                scale,
                baseline=round(direct["models"] + direct["tests"], 3),
                baseline_name="direct_duckdb_models_and_tests",
                target="<=1.5x at medium",
                extra=extra,
            ),
        ]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default=os.environ.get("BENCH_SCALES", "tiny,small"))
    args = parser.parse_args(argv)
    results: list[Result] = []
    for scale in [s.strip() for s in args.scales.split(",") if s.strip()]:
        results += bench_scale(scale)
    write_results("dbt", results)


if __name__ == "__main__":
    main()
