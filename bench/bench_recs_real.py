"""Benchmark the recommender on real public data, entered as a user's own export would be: through
the ingestion adapter (``ml.ingest``, a mapping preset) into a fresh lake, ``dbt build``, then the
exports mart_interactions / mart_item_catalogue. Nothing below knows which dataset it reads.

    python bench/bench_recs_real.py [--datasets movielens,retail] [--retail-max-rows N]

Per dataset (its own temp DATA_DIR and feature-repo copy):

- ``recbole`` (MovieLens-100k): RecBole's protocol (bench.protocols: random 8:1:1 split per
  user, seed 2020, full ranking over all items, train and valid masked): Pop, ItemKNN, BPR, and
  ours (bench.recs_protocols.candidate_ranker): candidates from the train part, LambdaRank /
  Wide & Deep trained with the valid part as labels, then candidates from train + valid ranked for
  the test part (every non-candidate item below the candidates, by popularity). Beside RecBole's
  published BPR (its documentation; Recall@10 0.2523, NDCG@10 0.2920, Hit@10 0.7953).
- ``time``: the project's own time split (recs.split_cutoffs: weekly train cutoffs, a valid and a
  test cutoff; the window after a cutoff holds its labels). The window is the shortest of 7/14/28
  days whose test window holds >= 200 users (recs_protocols.pick_window_days). When the Feast repo
  can be applied to the lake (``repo.validate_sources`` finds no problem) this is ``recs.train``
  end to end (Feast service recs_widedeep_v1, MLflow in the temp dir); otherwise the same split
  frame-level (recs_protocols.time_split_evaluation), and the JSON records why. Its references:
  popularity and RecBole's ItemKNN (recs.baselines).

- ``purchases`` (a shop's own question, ml.models.recs.evaluation): train up to a cutoff (the lake's end
  minus 28 days, and 28 days before that: two origins), serve lists for every known customer at the
  cutoff exactly as ``recs score`` does (recs.serving_pairs + serve_lists, frame-level: no Feast
  service), then the next 28 days' purchases: repeats Recall@10, new_items Recall@20 (with the
  served new-items list), per segment (new / returning / heavy customers), coverage, beside the
  plain references popularity, item-kNN and own history ("buy again"); the gate line says whether
  each ranker would be promoted.

Item text embeddings (all-MiniLM-L6-v2, ``recs.embed_items``) feed the time split's content
source. LightGBM runs on 1 thread (2 threads on 2 shared cores ran 10-20x slower, measured), torch
on 1. Results: bench/results/recs_real.json (one result per model and table: value = NDCG@10,
baseline = RecBole's BPR or the same run's popularity; every metric in ``extra``; seconds per stage).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, write_results  # noqa: E402

DATASETS = {  # name -> mapping preset, file under shared/data, the protocols it is benchmarked under
    "movielens": {"preset": "movielens_atomic", "file": ("movielens_100k", "ml-100k.inter"), "protocols": ("recbole", "time")},
    "retail": {
        "preset": "online_retail_ii",
        "file": ("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet"),
        "protocols": ("time", "purchases"),
    },
}
RECBOLE_BPR = {"recall@10": 0.2523, "ndcg@10": 0.2920, "hit@10": 0.7953}  # RecBole docs, ml-100k, BPR
TIME_COLUMNS = ["n_users", "recall@10", "recall@20", "ndcg@10", "hit_rate@10", "coverage@10", "coverage@20", "popularity_percentile@10"]


def shared_data() -> Path:
    from ml.settings import PROJECT_ROOT

    return Path(os.environ.get("SHARED_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))


def bench_config() -> dict:
    from ml.models import recs

    config = recs.load_config()
    config["lambdarank"]["params"]["num_threads"] = 1
    return config


def prepare(name: str, root: Path, max_rows: int, seconds: dict):
    """Ingest the dataset's file with its preset into a fresh lake and build the warehouse."""
    from bench.common import ingested_warehouse

    preset, parts = DATASETS[name]["preset"], DATASETS[name]["file"]
    path = shared_data().joinpath(*parts)
    if not path.exists():
        sys.exit(f"{path} not found: set SHARED_DATA_DIR to the shared/data folder")
    if max_rows:
        import pyarrow.parquet as pq

        capped = root / f"first_{max_rows}{path.suffix}"
        pq.write_table(pq.read_table(path).slice(0, max_rows), capped)
        path = capped
    settings, report = ingested_warehouse(path, preset, root, seconds)
    print(
        f"{name}: {path.name} via preset {preset}: read {report['read']:,}, accepted {report['accepted']:,}, "
        f"tables {report['tables']} ({seconds['ingest']:.0f} s ingest, {seconds['dbt_build']:.0f} s dbt build)"
    )
    return settings, {
        "preset": preset,
        "file": path.name,
        "read": report["read"],
        "accepted": report["accepted"],
        "tables": report["tables"],
    }


def recbole(name: str, inter, items, config, seconds: dict) -> tuple[list[Result], dict]:
    import pandas as pd

    from bench import protocols
    from bench import recs_protocols as rp
    from ml.models import recs

    infos = {"recs_lgbm": {}, "recs_lgbm[test_history=train]": {}, "recs_widedeep": {}}
    extra = {
        "recs_lgbm": rp.candidate_ranker(items, config, recs.LGBM_NAME, info=infos["recs_lgbm"]),
        "recs_lgbm[test_history=train]": rp.candidate_ranker(
            items, config, recs.LGBM_NAME, test_history="train", info=infos["recs_lgbm[test_history=train]"]
        ),
        "recs_widedeep": rp.candidate_ranker(items, config, recs.MODEL_NAME, info=infos["recs_widedeep"]),
    }
    t = time.perf_counter()
    table = protocols.evaluate_recbole(inter, models=("pop", "itemknn", "bpr"), seed=2020, extra=extra)
    seconds["recbole_protocol"] = time.perf_counter() - t
    train, valid, test = protocols.random_split_per_user(inter, seed=2020)
    sources = rp.source_recall(train, valid, items, config)
    for info in infos.values():
        info["test_candidate_recall"] = rp.scored_recall(info, test)
    shown = table.set_index("model")
    shown.loc["RecBole BPR (published)"] = pd.Series(RECBOLE_BPR)
    print(
        f"\n{name}: RecBole protocol (random 8:1:1 per user, seed 2020, full ranking over {inter['item_id'].nunique():,} "
        f"items, {len(train):,}/{len(valid):,}/{len(test):,} pairs)"
    )
    print(shown.round(4).to_string(na_rep=""))
    print("candidate recall@100 on the valid part (ours, stage 1), per source:")
    print(sources.round(4).to_string(index=False))
    for model, info in infos.items():
        print(
            f"  {model}: fit on {info['fit_users']} users ({info['fit_rows']:,} + {info['stop_rows']:,} early-stopping rows, "
            f"{info['fit_positives']:,} positives), candidate recall (micro) valid {info['valid_candidate_recall']:.3f} / "
            f"test {info['test_candidate_recall']:.3f}, fit {info['fit_seconds']} s"
        )
    results = []
    for row in table.to_dict("records"):
        info = infos.get(row["model"], {})
        keep = {k: v for k, v in info.items() if not k.startswith("_") and k != "history"}
        results.append(
            Result(
                f"{row['model']} ndcg@10",
                round(row["ndcg@10"], 4),
                "ndcg@10",
                f"{name}/recbole",
                baseline=RECBOLE_BPR["ndcg@10"],
                baseline_name="recbole_bpr_published",
                extra={k: (round(v, 4) if isinstance(v, float) else v) for k, v in {**row, **keep}.items() if k != "model"},
            )
        )
    detail = {
        "pairs": {"train": len(train), "valid": len(valid), "test": len(test)},
        "candidate_recall@100_valid": sources.round(4).to_dict("records"),
    }
    return results, detail


def repeat_share(inter, start, days: int) -> float:
    """Share of the test window's user x item pairs the user had interacted with before it."""
    import pandas as pd

    keys = ["user_id", "item_id"]
    window = inter[(inter["event_timestamp"] >= start) & (inter["event_timestamp"] < start + pd.Timedelta(days=days))]
    before = inter.loc[inter["event_timestamp"] < start, keys].drop_duplicates().assign(_seen=True)
    pairs = window[keys].drop_duplicates().merge(before, on=keys, how="left")
    return float(pairs["_seen"].notna().mean()) if len(pairs) else float("nan")


def time_split(name: str, settings, inter, items, config, seconds: dict) -> tuple[list[Result], dict]:
    from bench import recs_protocols as rp
    from ml.features import repo
    from ml.models import recs

    window = rp.pick_window_days(inter)
    config = {**config, "split": {**config["split"], "window_days": window}}
    cuts = recs.split_cutoffs(recs.lake_end(inter), config)
    report = repo.validate_sources(settings, raise_on_error=False)
    problems = [p for entry in report.values() for p in entry["problems"]]
    t = time.perf_counter()
    if not problems:
        path = "recs.train (Feast service recs_widedeep_v1 + MLflow)"
        repo.apply(settings)
        result = recs.train(settings, config, echo=None)
        metrics, recall, cold, rows = result.evaluation.metrics, result.evaluation.candidate_recall, result.evaluation.cold, result.rows
        stage = {k: round(v, 1) for k, v in result.seconds.items()}
    else:
        path = "frame-level (recs_protocols.time_split_evaluation: the Feast repo cannot be applied to this lake)"
        result = rp.time_split_evaluation(inter, items, config, recs.load_item_matrix(settings))
        metrics, recall, cold, rows = result.metrics, result.candidate_recall, result.cold, result.rows
        stage = {k: round(v, 1) for k, v in result.seconds.items()}
    seconds["time_split"] = time.perf_counter() - t
    repeats = repeat_share(inter, cuts["test"], window)
    print(
        f"\n{name}: time split, {window}-day windows (test {cuts['test']:%Y-%m-%d} + {window} d, valid {cuts['valid']:%Y-%m-%d}, "
        f"train {', '.join(f'{c:%Y-%m-%d}' for c in cuts['train'])}); path: {path}"
    )
    if problems:
        print("  why not through Feast: " + "; ".join(problems))
    print(f"  pairs {rows}; {repeats:.1%} of the test window's pairs are repeats of earlier pairs")
    print(metrics[[c for c in TIME_COLUMNS if c in metrics.columns]].round(4).to_string())
    print("candidate recall@100 per source (test window):")
    print(recall.round(4).to_string(index=False))
    if len(cold):
        print("cold start (users without history / truth items without earlier interactions):")
        print(cold.round(4).to_string(index=False))
    pop = float(metrics.loc["popularity", "ndcg@10"])
    results = [
        Result(
            f"{model} ndcg@10",
            round(float(row["ndcg@10"]), 4),
            "ndcg@10",
            f"{name}/time_{window}d",
            baseline=round(pop, 4),
            baseline_name="popularity",
            extra={k: round(float(v), 4) for k, v in row.items() if v == v},
        )
        for model, row in metrics.iterrows()
    ]
    detail = {
        "path": path,
        "feast_problems": problems,
        "window_days": window,
        "rows": rows,
        "stage_seconds": stage,
        "test_cutoff": f"{cuts['test']:%Y-%m-%d}",
        "repeat_share": round(repeats, 4),
        "candidate_recall@100": recall.round(4).to_dict("records"),
        "cold": cold.round(4).to_dict("records"),
    }
    return results, detail


def purchases(
    name: str, inter, items, config, item_matrix, seconds: dict, horizon: int = 28, origins: int = 2
) -> tuple[list[Result], dict]:
    import pandas as pd

    from bench import recs_protocols as rp
    from ml.models import recs
    from ml.models.recs import evaluation as recs_eval

    cfg = {**config, "feature_service": None}
    results, detail = [], {}
    end = recs.lake_end(inter)
    for i in range(origins):
        cutoff = end - pd.Timedelta(days=horizon * (i + 1))
        t = time.perf_counter()
        before = inter[inter["event_timestamp"] < cutoff]
        frames = recs.training_frames(None, cfg, before, items, item_matrix, lambda _m: None)
        models = {m: rp.fit_ranker(m, frames["train"], frames["valid"], cfg) for m in (recs.LGBM_NAME, recs.MODEL_NAME)}
        out = recs.purchase_evaluation(None, cfg, inter, items, models, cutoff, horizon, item_matrix)
        seconds[f"purchases_{cutoff:%Y%m%d}"] = time.perf_counter() - t
        table = out["table"]
        print(
            f"\n{name}: purchase protocols at {cutoff:%Y-%m-%d}: {out['note']}; heavy = >= {out['heavy_days']} purchase days; "
            f"coverage " + ", ".join(f"{m} {v:.1%}" for m, v in out["coverage"].items())
        )
        print(recs_eval.pivot(table).round(4).to_string())
        print("users per cell: " + ", ".join(f"{c} {int(v)}" for c, v in recs_eval.pivot(table, "n_users").iloc[0].items()))
        for m, losses in out["losses"].items():
            print(f"  gate {m}: " + ("beats every reference" if not losses else "; ".join(losses)))
        at = table[table["segment"].eq("all")].set_index(["protocol", "model"])["recall"]
        for m in models:
            for protocol, k in recs_eval.PROTOCOLS.items():
                refs = {r: float(at[(protocol, r)]) for r in ("popularity", "item_knn", "own_history")}
                best = max(refs, key=refs.get)
                results.append(
                    Result(
                        f"{m} {protocol} recall@{k}",
                        round(float(at[(protocol, m)]), 4),
                        f"recall@{k}",
                        f"{name}/purchases_{cutoff:%Y-%m-%d}_{horizon}d",
                        baseline=round(refs[best], 4),
                        baseline_name=best,
                        extra={
                            "references": {r: round(v, 4) for r, v in refs.items()},
                            "coverage": round(out["coverage"][m], 4),
                            "losses": out["losses"][m],
                        },
                    )
                )
        detail[f"{cutoff:%Y-%m-%d}"] = {
            "table": table.round(4).to_dict("records"),
            "coverage": out["coverage"],
            "heavy_days": out["heavy_days"],
            "buyers": out["buyers"],
        }
    return results, detail


def run_dataset(name: str, root: Path, max_rows: int) -> list[Result]:
    from ml.models import recs

    seconds: dict = {}
    started = time.perf_counter()
    settings, ingest = prepare(name, root, max_rows, seconds)
    inter, items = recs.load_interactions(settings), recs.load_items(settings)
    t = time.perf_counter()
    recs.embed_items(settings, items, progress=False, echo=None)
    seconds["embed_items"] = time.perf_counter() - t
    config = bench_config()
    results, details = (
        [],
        {"ingest": ingest, "interactions": len(inter), "users": int(inter["user_id"].nunique()), "items": int(inter["item_id"].nunique())},
    )
    if "recbole" in DATASETS[name]["protocols"]:
        got, details["recbole"] = recbole(name, inter, items, config, seconds)
        results += got
    if "time" in DATASETS[name]["protocols"]:
        got, details["time_split"] = time_split(name, settings, inter, items, config, seconds)
        results += got
    if "purchases" in DATASETS[name]["protocols"]:
        got, details["purchases"] = purchases(name, inter, items, config, recs.load_item_matrix(settings), seconds)
        results += got
    seconds["total"] = time.perf_counter() - started
    results.append(
        Result(
            "seconds_total",
            round(seconds["total"], 1),
            "s",
            name,
            extra={"stages": {k: round(v, 1) for k, v in seconds.items()}, **details},
        )
    )
    print(f"\n{name}: seconds " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="movielens,retail", help="comma-separated: " + ",".join(DATASETS))
    parser.add_argument("--retail-max-rows", type=int, default=0, help="read only the first N lines of the retail file (0: all)")
    parser.add_argument("--protocols", default="", help="comma-separated subset of recbole,time,purchases (default: each dataset's own)")
    args = parser.parse_args()
    if args.protocols:
        wanted = set(args.protocols.split(","))
        for spec in DATASETS.values():
            spec["protocols"] = tuple(p for p in spec["protocols"] if p in wanted)
    import torch

    torch.set_num_threads(1)
    for category in (FutureWarning, DeprecationWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("ignore", message="(Mean of empty slice|Degrees of freedom)", category=RuntimeWarning)
    results = []
    for name in args.datasets.split(","):
        if name not in DATASETS:
            sys.exit(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
        with tempfile.TemporaryDirectory(prefix=f"bench-recs-real-{name}-") as tmp:
            results += run_dataset(name, Path(tmp), args.retail_max_rows if name == "retail" else 0)
    write_results("recs_real", results)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip DuckDB's nanobind leak report at interpreter exit (Feast's offline store keeps a connection)


if __name__ == "__main__":
    main()
