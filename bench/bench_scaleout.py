"""Scale-out: the chain on the LocalExecutor vs the CeleryExecutor with 1 and 2 workers.

    python bench/bench_scaleout.py [--scale medium] [--configs local,celery:1:2,celery:2:2] [--models]

``local`` is the laptop default (`airflow standalone`: LocalExecutor, SQLite metadata,
PARALLELISM=2). ``celery:W:C`` is the production stack of docker-compose.yaml run natively
(tests/support/native_stack.py NativeStack: PostgreSQL metadata, Redis broker, Feast on Redis + SQL registry, MLflow
server) with W Celery workers of C task slots each and PARALLELISM = W x C. Each configuration starts
fresh (new data, new databases) and runs ingest(generate <scale>) -> warehouse -> feature_store (and,
with --models, the three train/score pairs) off the Assets, triggered through the API.

Reported per configuration: start-up seconds, chain seconds (trigger to the last run's success),
each DAG run's seconds, the summed task-instance seconds ("busy"), busy / chain (how many tasks ran
at once on average), the peak RSS of the whole process tree, and the ratio of the chain to the
``local`` run of the same script. Results: bench/results/scaleout.json.
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

from bench.common import PeakRSS, Result, write_results  # noqa: E402
from ml.orchestration import local_airflow  # noqa: E402
from ml.settings import PROJECT_ROOT, settings_for  # noqa: E402


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _measure(client, runs: dict) -> dict:
    out = {"runs_s": {}, "busy_s": 0.0, "tasks": 0}
    starts, ends = [], []
    for dag_id, run in runs.items():
        start, end = _ts(run["start_date"]), _ts(run["end_date"])
        starts.append(start)
        ends.append(end)
        out["runs_s"][dag_id] = round((end - start).total_seconds(), 1)
        for ti in client.task_instances(dag_id, run["dag_run_id"]):
            if ti.get("start_date") and ti.get("end_date"):
                out["busy_s"] += (_ts(ti["end_date"]) - _ts(ti["start_date"])).total_seconds()
                out["tasks"] += 1
    out["span_s"] = (max(ends) - min(starts)).total_seconds()
    out["busy_s"] = round(out["busy_s"], 1)
    return out


def _timed_chain(start, client, stop, scale: str, models: bool) -> dict:
    """start(), then the chain through client()'s API, then stop(); seconds, RSS and run figures."""
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        try:
            start()
            startup = time.perf_counter() - t0
            api = client()
            t1 = time.perf_counter()
            runs = local_airflow.run_chain(api, conf={"generate_scale": scale}, timeout=5400, echo=None, models=models)
            chain = time.perf_counter() - t1
            measured = _measure(api, runs)
        finally:
            stop()
    return {"startup_s": round(startup, 1), "chain_s": round(chain, 1), "peak_rss_mib": round(rss.peak_mib), **measured}


def run_local(scale: str, root: Path, models: bool) -> dict:
    repo = shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    settings = settings_for(data_dir=root / "data", feast_repo_dir=repo, airflow_port=0, airflow_parallelism=2)
    airflow = local_airflow.LocalAirflow(settings)
    return _timed_chain(lambda: airflow.start(timeout=300), airflow.client, airflow.stop, scale, models)


def run_celery(scale: str, root: Path, workers: int, concurrency: int, models: bool) -> dict:
    from tests.support.native_stack import NativeStack

    stack = NativeStack(
        root, workers=workers, variables={"AIRFLOW_PARALLELISM": str(workers * concurrency), "AIRFLOW_WORKER_CONCURRENCY": str(concurrency)}
    )

    def stop():
        stack.stop()
        stack.drop()

    return _timed_chain(lambda: stack.start(timeout=300), stack.client, stop, scale, models)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default=os.environ.get("BENCH_SCALEOUT_SCALE", "medium"))
    parser.add_argument(
        "--configs",
        default="local,celery:1:2,celery:2:2",
        help="local | celery:WORKERS:CONCURRENCY, comma-separated; the first is the baseline",
    )
    parser.add_argument("--models", action="store_true", help="also the train/score DAG pairs")
    args = parser.parse_args(argv)
    measured: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_scaleout_") as tmp:
        for i, config in enumerate(c.strip() for c in args.configs.split(",") if c.strip()):
            root = Path(tmp) / f"{i}"
            load = os.getloadavg()[0]
            if config == "local":
                got = run_local(args.scale, root, args.models)
            else:
                _, w, c = config.split(":")
                got = run_celery(args.scale, root, int(w), int(c), args.models)
            got["load_before"] = round(load, 2)
            got["concurrency_avg"] = round(got["busy_s"] / got["span_s"], 2) if got["span_s"] else None
            measured[config] = got
            print(f"[{args.scale}] {config}: {got}", flush=True)
    base_name = next(iter(measured))
    base = measured[base_name]
    results = []
    for config, got in measured.items():
        extra = {"config": config, "cores": os.cpu_count(), "models": args.models, **got}
        results.append(
            Result(
                f"chain_seconds_{config}",
                got["chain_s"],
                "s",
                args.scale,
                baseline=base["chain_s"] if config != base_name else None,
                baseline_name=f"chain_seconds_{base_name}" if config != base_name else None,
                extra=extra,
            )
        )
        results.append(Result(f"peak_rss_{config}", got["peak_rss_mib"], "MiB", args.scale, extra={"config": config}))
    write_results("scaleout", results)
    print(f"\n{'config':<14}{'start s':>9}{'chain s':>9}{'ratio':>7}{'busy s':>9}{'tasks':>7}{'avg conc':>9}{'RSS MiB':>9}")
    for config, got in measured.items():
        print(
            f"{config:<14}{got['startup_s']:>9}{got['chain_s']:>9}{got['chain_s'] / base['chain_s']:>7.2f}"
            f"{got['busy_s']:>9}{got['tasks']:>7}{got['concurrency_avg']:>9}{got['peak_rss_mib']:>9}"
        )


if __name__ == "__main__":
    main()
