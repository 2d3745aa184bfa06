"""Benchmark purchase propensity on real public data, entered as a user's own export would be: the
Online Retail II invoice lines through the ingestion adapter (``ml.ingest``, preset
``online_retail_ii``) into a fresh lake, ``dbt build`` (mart_user_purchase_labels and the user feature
marts), ``feast apply``, then ``ml.models.user.propensity.train`` exactly as ``ecomml models train`` runs it
(Feast service point in time, MLflow in the temp dir, the reference gate, the refit). Nothing below
knows which dataset it reads.

    python bench/bench_propensity_real.py [--file PATH --preset NAME] [--with-gru]

Recorded per model on the same test user-weeks (the last ``split.n_test`` weekly cutoffs; an
orders-only export gets the 30-day horizon): ROC AUC, PR AUC, log loss, Brier, expected calibration
error, top-decile lift — for propensity_lgbm (the served model), the logistic regression on every model
feature (the promotion gate's reference) and the RFM-score rule; value = ROC AUC, baseline = the
logistic regression's, ``extra.lift_over_logistic`` = the difference (issue 16 asks for >= 0.01).
``--with-gru`` also trains the GRU sequence model (off by default: minutes of CPU on 2 cores).

Results: bench/results/propensity_real.json (scale retail).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_demand_real import RETAIL, prepare_warehouse, shared_data  # noqa: E402
from bench.common import Result, write_results  # noqa: E402

SCALE = "retail"
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile", "positive_rate", "n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default="", help="another export (default: shared/data Online Retail II)")
    parser.add_argument("--preset", default="online_retail_ii", help="its mapping preset")
    parser.add_argument("--with-gru", action="store_true", help="also train the GRU sequence model")
    args = parser.parse_args()
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.simplefilter("ignore", category)
    logging.basicConfig(level=logging.WARNING)

    from ml.features import repo
    from ml.models.user import propensity

    path = Path(args.file) if args.file else shared_data().joinpath(*RETAIL)
    if not path.exists():
        sys.exit(f"{path} not found: set SHARED_DATA_DIR to the shared/data folder")
    seconds: dict = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-propensity-real-") as tmp:
        settings, ingest = prepare_warehouse(path, args.preset, Path(tmp), seconds)
        t = time.perf_counter()
        repo.apply(settings)
        seconds["feast_apply"] = time.perf_counter() - t
        config = propensity.load_config()
        config["sequence_model"] = {**(config.get("sequence_model") or {}), "enabled": bool(args.with_gru)}
        t = time.perf_counter()
        result = propensity.train(settings, config, echo=print)
        seconds["train"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    models = {
        "propensity_lgbm": result.lightgbm_metrics or result.metrics,
        "logistic": result.logistic_metrics or {},
        "rfm_baseline": result.baseline_metrics,
    }
    if result.sequence:
        models["propensity_gru"] = result.sequence.get("metrics") or {}
    reference = models["logistic"].get("roc_auc")
    common = {
        "served_model_type": result.model_type,
        "horizon_days": result.horizon_days,
        "rows": result.rows,
        "ingest": ingest,
        "promoted": result.summary()["promoted"],
        "decision": result.summary()["decision"],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    out = []
    for name, metrics in models.items():
        if metrics.get("roc_auc") is None:
            continue
        extra = {**{k: metrics.get(k) for k in METRICS}, **common}
        if name != "logistic" and reference is not None:
            extra["lift_over_logistic"] = round(metrics["roc_auc"] - reference, 4)
        out.append(
            Result(
                f"{name} roc_auc",
                round(metrics["roc_auc"], 4),
                "roc_auc",
                SCALE,
                baseline=reference,
                baseline_name="logistic",
                target=">= logistic + 0.01" if name == "propensity_lgbm" else None,
                extra=extra,
            )
        )
    print(f"\n{result.horizon_days}-day horizon, rows {result.rows}")
    for name, metrics in models.items():
        print(f"  {name:<16} " + "  ".join(f"{k} {metrics.get(k):.4f}" for k in METRICS[:6] if metrics.get(k) is not None))
    write_results("propensity_real", out)


if __name__ == "__main__":
    main()
