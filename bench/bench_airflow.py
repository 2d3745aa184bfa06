"""Benchmark the chain through Airflow against the same steps run directly (the CLI's code path).

    python bench/bench_airflow.py [--scales tiny,small] [--modes watcher,local]

For each scale: the baseline runs generate -> dbt build -> feast apply -> materialize in this
process (what `ecomml generate`, `warehouse build`, `features apply`, `features materialize` do).
Then, for each Cosmos execution mode, a fresh local Airflow (`airflow standalone`, LocalExecutor,
SQLite, PARALLELISM=2) runs ingest(generate) -> warehouse -> feature_store off the Assets; the
wall time of the chain (trigger to feature-store success) and of each DAG run (from the API's
start/end dates) are compared with the baseline. Results go to bench/results/airflow.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, timed, write_results  # noqa: E402
from ml.orchestration import chain, local_airflow  # noqa: E402
from ml.settings import PROJECT_ROOT, settings_for  # noqa: E402


def _settings(root: Path, **overrides):
    repo = shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    settings = settings_for(data_dir=root / "data", feast_repo_dir=repo, airflow_port=0, **overrides)
    settings.ensure_dirs()
    return settings


def baseline(scale: str, root: Path) -> dict[str, float]:
    from ml import warehouse
    from ml.features.materialize import materialize
    from ml.features.repo import apply
    from ml.generate import generate

    s = _settings(root)
    out = {}
    with timed() as t:
        generate(scale=scale, seed=s.seed, lake_dir=s.lake_dir)
    out["generate"] = t()
    with timed() as t:
        warehouse.build(s, echo=None)
    out["dbt_build"] = t()
    with timed() as t:
        apply(s)
        materialize(s, None, datetime.now().astimezone())
    out["feature_store"] = t()
    out["total"] = sum(out.values())
    return out


def _seconds(run: dict) -> float:
    start = datetime.fromisoformat(run["start_date"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(run["end_date"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def through_airflow(scale: str, mode: str, root: Path) -> dict[str, float]:
    s = _settings(root, dbt_execution_mode=mode)
    airflow = local_airflow.LocalAirflow(s)
    with timed() as start_s:
        airflow.start()
    try:
        client = airflow.client()
        client.wait_for_dags(chain.CHAIN)
        t0 = time.perf_counter()
        runs = local_airflow.run_chain(client, conf={"generate_scale": scale}, timeout=3600, echo=None)
        chain_s = time.perf_counter() - t0
        n_tasks = len(client.task_instances("warehouse", runs["warehouse"]["dag_run_id"]))
    finally:
        airflow.stop()
    return {
        "startup": start_s(),
        "chain": chain_s,
        "warehouse_tasks": n_tasks,
        **{f"{dag}_run": _seconds(run) for dag, run in runs.items()},
    }


def bench_scale(scale: str, modes: list[str]) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_airflow_") as tmp:
        base = baseline(scale, Path(tmp) / "cli")
        print(f"[{scale}] direct: {base}", flush=True)
        for mode in modes:
            got = through_airflow(scale, mode, Path(tmp) / mode)
            print(f"[{scale}] airflow/{mode}: {got}", flush=True)
            extra = {
                "mode": mode,
                "parallelism": 2,
                "executor": "LocalExecutor",
                "startup_s": round(got["startup"], 1),
                "warehouse_tasks": got["warehouse_tasks"],
                "direct": {k: round(v, 2) for k, v in base.items()},
                "runs_s": {k: round(v, 2) for k, v in got.items() if k.endswith("_run")},
            }
            results += [
                Result(
                    f"chain_seconds_{mode}",
                    round(got["chain"], 2),
                    "s",
                    scale,
                    baseline=round(base["total"], 2),
                    baseline_name="direct_generate_build_apply_materialize",
                    extra=extra,
                ),
                Result(
                    f"warehouse_dag_seconds_{mode}",
                    round(got["warehouse_run"], 2),
                    "s",
                    scale,
                    baseline=round(base["dbt_build"], 2),
                    baseline_name="direct_dbt_build",
                    extra=extra,
                ),
            ]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default=os.environ.get("BENCH_SCALES", "tiny,small"))
    parser.add_argument("--modes", default="watcher,local", help="Cosmos execution modes to compare")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: list[Result] = []
    for scale in [s.strip() for s in args.scales.split(",") if s.strip()]:
        results += bench_scale(scale, modes)
    write_results("airflow", results)


if __name__ == "__main__":
    main()
