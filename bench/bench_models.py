"""Benchmark the user-behaviour models: training and scoring throughput (rows/s) and peak memory.

    python bench/bench_models.py [--scales small,medium]

Per scale, in its own subprocess (so each peak RSS is its own): generate -> dbt build -> feast apply
(setup, not measured), then

- ``propensity_train``: ml.models.user.propensity.train end to end (labels, point-in-time features for
  train/valid/test through Feast, LightGBM with early stopping, baseline, fairness, PCA, report,
  MLflow logging + registration); rows = labelled user-weeks used. Baseline beside it: the LightGBM
  fit alone on the same matrices (what the rest of the pipeline adds).
- ``propensity_score``: ml.models.user.propensity.score (champion load, current features through Feast,
  predictions + SHAP contributions, partition + Feast source written); rows = users scored.
- ``propensity_gru_fit``: the GRU sequence model's fit on the same split (sequences built from
  mart_user_event_sequences), when ml.models.user.sequence is present.

Results: bench/results/models.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PeakRSS, Result, timed, write_results  # noqa: E402


def measure(scale: str, data_dir: Path) -> list[dict]:
    from ml import warehouse
    from ml.features.repo import apply
    from ml.generate import generate
    from ml.models.user import propensity
    from ml.settings import settings_for

    settings = settings_for(data_dir=data_dir)
    settings.ensure_dirs()
    generate(scale=scale, seed=42, lake_dir=settings.lake_dir)
    warehouse.build(settings, echo=None)
    apply(settings)
    out = []
    with PeakRSS() as peak, timed() as t:
        result = propensity.train(settings, echo=None)
    rows = sum(result.rows.values())
    config = propensity.load_config()
    split, features = propensity.training_frames(settings, config, result.horizon_days)
    x = {n: propensity.feature_matrix(getattr(split, n), features) for n in ("train", "valid")}
    with timed() as fit_t:
        propensity.fit(x["train"], split.train["label"], x["valid"], split.valid["label"], config)
    out.append(
        Result(
            "propensity_train_rows_per_s",
            round(rows / t(), 1),
            "rows/s",
            scale,
            baseline=round(rows / fit_t(), 1),
            baseline_name="lightgbm_fit_only",
            extra={
                "seconds": round(t(), 2),
                "fit_seconds": round(fit_t(), 2),
                "rows": result.rows,
                "peak_rss_mib": peak.peak_mib,
                "test_roc_auc": round(result.metrics["roc_auc"], 4),
                "baseline_test_roc_auc": round(result.baseline_metrics["roc_auc"], 4),
            },
        ).__dict__
    )
    out.append(Result("propensity_train_peak_rss", peak.peak_mib, "MiB", scale).__dict__)
    with PeakRSS() as peak, timed() as t:
        scored = propensity.score(settings, echo=None)
    out.append(
        Result(
            "propensity_score_rows_per_s",
            round(scored["rows"] / t(), 1),
            "rows/s",
            scale,
            extra={"seconds": round(t(), 2), "rows": scored["rows"], "peak_rss_mib": peak.peak_mib},
        ).__dict__
    )
    out.append(Result("propensity_score_peak_rss", peak.peak_mib, "MiB", scale).__dict__)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="small,medium")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scale, data_dir = args.child.split(":", 1)
        print("RESULTS" + json.dumps(measure(scale, Path(data_dir))))
        return
    results = []
    for scale in args.scales.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-models-{scale}-") as tmp:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", f"{scale}:{tmp}/data"],
                capture_output=True,
                text=True,
                env={**os.environ, "MLFLOW_TRACKING_URI": ""},
            )
            line = next((row for row in proc.stdout.splitlines() if row.startswith("RESULTS")), None)
            if proc.returncode or not line:
                sys.exit(f"bench_models {scale} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            results += [Result(**r) for r in json.loads(line[len("RESULTS") :])]
    write_results("models", results)


if __name__ == "__main__":
    main()
