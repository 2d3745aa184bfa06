"""Generator throughput and memory per scale.

    python bench/bench_generate.py                       # tiny,small (quick)
    python bench/bench_generate.py --scales medium,large # or BENCH_SCALES=medium,large

Each scale runs in a fresh subprocess so its peak memory (RSS, sampled) is its own. Writes
bench/results/generate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import PeakRSS, Result, timed, write_results  # noqa: E402

TARGET_RATE = "≥ 1,000,000 events/min"
TARGET_MEM = "large ≤ 8 GiB"

CHILD = """
import json, sys
from ml.generate import generate
print(json.dumps(generate(sys.argv[1], seed=42, lake_dir=sys.argv[2])))
"""


def run_scale(scale: str) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix=f"bench-gen-{scale}-") as tmp:
        with PeakRSS() as mem, timed() as elapsed:
            proc = subprocess.run([sys.executable, "-c", CHILD, scale, tmp], cwd=ROOT, capture_output=True, text=True, check=True)
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    wall = elapsed()
    events = summary["events"]
    extra = {
        "rows": summary["rows"],
        "in_process_seconds": summary["seconds"],
        "wall_seconds_with_startup": round(wall, 2),
        "start_date": summary["start_date"],
        "end_date": summary["end_date"],
    }
    per_s = events / summary["seconds"]
    return [
        Result("events_generated", events, "events", scale=scale, extra=extra),
        Result("generate_seconds", round(summary["seconds"], 2), "s", scale=scale),
        Result("events_per_second", round(per_s, 1), "events/s", scale=scale),
        Result("events_per_minute", round(per_s * 60), "events/min", scale=scale, target=TARGET_RATE),
        Result("peak_rss", mem.peak_mib, "MiB", scale=scale, target=TARGET_MEM if scale == "large" else None),
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scales", default=os.environ.get("BENCH_SCALES", "tiny,small"))
    args = ap.parse_args(argv)
    results: list[Result] = []
    for scale in [s.strip() for s in args.scales.split(",") if s.strip()]:
        results += run_scale(scale)
    write_results("generate", results)


if __name__ == "__main__":
    main()
