"""Shared benchmark plumbing: measure, print, and write results as JSON under bench/results/.

Each result names its metric, value and unit; where a baseline runs beside it (same process or
script), the baseline's value and the ratio value/baseline.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    metric: str
    value: float
    unit: str
    scale: str | None = None
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None
    target: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.baseline not in (None, 0) and self.ratio is None:
            self.ratio = round(self.value / self.baseline, 3)


class PeakRSS:
    """Samples the RSS of this process and its children; ``peak_mib`` after the block."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self):
        proc = psutil.Process()
        while not self._stop.is_set():
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:
                rss = 0
            self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return round(self.peak / 2**20, 1)


@contextmanager
def timed():
    """``with timed() as t: ...`` then ``t()`` is the elapsed seconds."""
    start = time.perf_counter()
    box = {}
    yield lambda: box.get("elapsed", time.perf_counter() - start)
    box["elapsed"] = time.perf_counter() - start


def write_results(name: str, results: list[Result]) -> Path:
    """Print a table and write ``bench/results/<name>.json``.

    Results of earlier runs for other (metric, scale) pairs are kept, so a quick run at small scales
    does not erase the figures measured at large ones; each result carries its own ``when``.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    fresh = [{**asdict(r), "when": now} for r in results]
    measured = {(r["metric"], r["scale"]) for r in fresh}
    kept = []
    if path.exists():
        old = json.loads(path.read_text())
        kept = [
            {**r, "when": r.get("when", old.get("when"))} for r in old.get("results", []) if (r["metric"], r.get("scale")) not in measured
        ]
    payload = {
        "benchmark": name,
        "when": now,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "results": kept + fresh,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"\n{name}")
    for r in results:
        base = f"  baseline {r.baseline_name}={r.baseline} ratio={r.ratio}" if r.baseline is not None else ""
        print(f"  {r.metric:<45} {r.scale or '':<7} {r.value:>14,.3f} {r.unit}{base}")
    print(f"-> {path}")
    return path


def ingested_warehouse(path: Path, preset: str, root: Path, seconds: dict):
    """A real export ingested through its preset into a fresh lake under ``root``, the warehouse built
    with dbt (own feature_repo copy, MLflow in the data dir): (settings, ingest report). Times land in
    ``seconds["ingest"]`` and ``seconds["dbt_build"]``."""
    import shutil

    from ml import warehouse
    from ml.ingest import ingest_file
    from ml.settings import PROJECT_ROOT, settings_for

    repo = Path(shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__")))
    settings = settings_for(data_dir=root / "data", feast_repo_dir=repo, mlflow_tracking_uri="")
    settings.ensure_dirs()
    t = time.perf_counter()
    report = ingest_file(path, preset, lake_dir=settings.lake_dir, quarantine_dir=settings.quarantine_dir).to_dict()
    seconds["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    warehouse.build(settings, echo=None)
    seconds["dbt_build"] = time.perf_counter() - t
    return settings, report
