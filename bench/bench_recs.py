"""Benchmark the recommender and search: training time, scoring users/s, search and re-rank latency.

    python bench/bench_recs.py [--scales small,medium]

Per scale, in its own subprocess (so each peak RSS is its own): generate -> dbt build -> feast apply
-> materialize (setup, not measured), then

- ``recs_embed``: item text embeddings from an empty cache (texts/s), and again from a warm cache
  (the baseline: what a re-run with unchanged texts costs).
- ``recs_train``: ml.models.recs.train end to end (candidates at every cutoff, Feast features,
  Wide & Deep + LambdaRank + FM, evaluation, search evaluation, report, MLflow); pairs/s, with the
  Wide & Deep fit alone as the baseline; peak RSS.
- ``recs_score``: ml.models.recs.score (candidates for every active user, Feast features, champion
  ranking, rules, partition + Feast source); users/s.
- ``search_p99``: semantic search latency per query (query encoding + exact cosine over every item),
  with BM25 beside it as the baseline; 200 logged queries.
- ``rerank_p99``: request-time FM re-ranking of 100 candidates including the Feast online read
  (SQLite) of the user's list and features; goal <= 20 ms.

Results: bench/results/recs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PeakRSS, Result, timed, write_results  # noqa: E402


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1000
    return round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 99)), 2)


def measure(scale: str, data_dir: Path) -> list[dict]:
    import pandas as pd

    from ml import warehouse
    from ml.features.materialize import materialize_incremental
    from ml.features.repo import apply
    from ml.generate import generate
    from ml.models import recs
    from ml.models.lifecycle import outputs
    from ml.models.recs import ranking, search
    from ml.orchestration import tasks
    from ml.settings import settings_for

    settings = settings_for(data_dir=data_dir)
    settings.ensure_dirs()
    generate(scale=scale, seed=42, lake_dir=settings.lake_dir)
    warehouse.build(settings, echo=None)
    apply(settings)
    materialize_incremental(settings, datetime.now(timezone.utc))
    out = []

    items = recs.load_items(settings)
    with timed() as cold:
        embedded = recs.embed_items(settings, items, progress=False, echo=None)
    with timed() as warm:
        recs.embed_items(settings, items, progress=False, echo=None)
    out.append(
        Result(
            "recs_embed_texts_per_s",
            round(embedded["encoded"] / cold(), 1),
            "texts/s",
            scale,
            extra={"seconds_cold_cache": round(cold(), 2), "seconds_warm_cache": round(warm(), 2), **embedded},
        ).__dict__
    )

    with PeakRSS() as peak, timed() as t:
        result = recs.train(settings, echo=None)
    pairs = sum(result.rows.values())
    config = recs.load_config()
    inter, item_matrix = recs.load_interactions(settings), recs.load_item_matrix(settings)
    frames = recs.training_frames(settings, config, inter, items, item_matrix, lambda _m: None)
    with timed() as fit_t:
        ranking.fit_widedeep(frames["train"], frames["valid"], recs.feature_spec(frames["train"], config), config["widedeep"])
    metrics = result.evaluation.metrics
    out.append(
        Result(
            "recs_train_pairs_per_s",
            round(pairs / t(), 1),
            "pairs/s",
            scale,
            baseline=round(len(frames["train"]) / fit_t(), 1),
            baseline_name="widedeep_fit_only",
            extra={
                "seconds": round(t(), 1),
                "widedeep_fit_seconds": round(fit_t(), 1),
                "rows": result.rows,
                "stage_seconds": {k: round(v, 1) for k, v in result.seconds.items()},
                "peak_rss_mib": peak.peak_mib,
                "test_ndcg@10": {m: round(float(metrics.loc[m, "ndcg@10"]), 4) for m in metrics.index},
            },
        ).__dict__
    )
    out.append(Result("recs_train_peak_rss", peak.peak_mib, "MiB", scale).__dict__)

    with PeakRSS() as peak, timed() as t:
        scored = recs.score(settings, echo=None)
    out.append(
        Result(
            "recs_score_users_per_s",
            round(scored["users"] / t(), 1),
            "users/s",
            scale,
            extra={"seconds": round(t(), 1), "users": scored["users"], "peak_rss_mib": peak.peak_mib},
        ).__dict__
    )
    tasks.serve_recommendations(settings, {"status": "scored", **scored})

    queries = pd.read_parquet(settings.exports_dir / "mart_search_purchases.parquet")["search_query"].drop_duplicates().head(200).tolist()
    semantic = search.SemanticIndex(pd.read_parquet(recs.embeddings_path(settings)))
    bm25 = search.BM25Index(items["item_id"].tolist(), items["item_text"].tolist())
    sem, kw = search.latency(semantic, queries, k=10), search.latency(bm25, queries, k=10)
    out.append(
        Result(
            "search_semantic_p99",
            sem["p99_ms"],
            "ms",
            scale,
            baseline=kw["p99_ms"],
            baseline_name="bm25_p99",
            extra={"items": len(semantic), "queries": len(queries), "semantic": sem, "bm25": kw},
        ).__dict__
    )

    reranker = recs.Reranker(settings)
    lists = pd.read_parquet(outputs.source_path(settings, recs.MODEL_NAME))
    users = lists.loc[lists["user_id"] != recs.FALLBACK_USER, "user_id"].head(300).tolist()
    candidates = items["item_id"].head(100).tolist()
    reranker.rerank(users[0], candidates)  # warm-up
    seconds = []
    for user in users:
        start = time.perf_counter()
        reranker.rerank(user, candidates)
        seconds.append(time.perf_counter() - start)
    p50, p99 = _percentiles(seconds)
    out.append(
        Result(
            "rerank_100_candidates_p99",
            p99,
            "ms",
            scale,
            target="<= 20 ms",
            extra={"p50_ms": p50, "requests": len(seconds), "online_store": "sqlite", "includes": "one get_online_features call + FM"},
        ).__dict__
    )
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
        tmp = tempfile.mkdtemp(prefix=f"bench-recs-{scale}-")
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", f"{scale}:{tmp}/data"],
                capture_output=True,
                text=True,
                env={**os.environ, "MLFLOW_TRACKING_URI": ""},
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        line = next((row for row in proc.stdout.splitlines() if row.startswith("RESULTS")), None)
        if proc.returncode or not line:
            sys.exit(f"bench_recs {scale} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        for r in json.loads(line[len("RESULTS") :]):
            print(
                f"{scale:>7} {r['metric']:<32} {r['value']:>10} {r['unit']}"
                + (f"  (baseline {r['baseline_name']} {r['baseline']})" if r.get("baseline") else "")
            )
            results.append(Result(**r))
    write_results("recs", results)


if __name__ == "__main__":
    main()
