"""Training the rankers: weekly cutoffs -> candidates -> Feast features -> Wide & Deep, LambdaRank and
the FM -> test-week evaluation against the references -> report, MLflow runs, promotion
(``train``; the stages are described in ``ml.models.recs``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ml.models.recs import data
from ml.models.recs.evaluation import Evaluation, baselines, evaluate_rankings, evaluate_search, predict, ranked_pairs
from ml.models.recs.scoring import purchase_evaluation
from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)


# --- training --------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    versions: dict
    decisions: dict
    evaluation: Evaluation
    report: Path
    rows: dict
    seconds: dict
    served_model: str = data.LGBM_NAME  # config serving.model: the ranker whose champion `score` serves

    def summary(self) -> dict:
        cols = ["recall@10", "recall@20", "ndcg@10", "hit_rate@10", "coverage@20"]
        metrics = self.evaluation.metrics
        return {
            "model": self.served_model,
            "versions": self.versions,
            "promoted": {k: bool(getattr(d, "promoted", False)) for k, d in self.decisions.items()},
            "rows": self.rows,
            "test": {m: {c: round(float(metrics.loc[m, c]), 4) for c in cols if c in metrics.columns} for m in metrics.index},
            "candidate_recall@100": {
                r["source"]: round(float(r["recall@100"]), 4) for r in self.evaluation.candidate_recall.to_dict("records")
            },
            "search": None if self.evaluation.search is None else self.evaluation.search.round(4).to_dict("index"),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "report": str(self.report),
        }


def training_frames(settings: Settings, config: dict, inter, items, item_matrix, say) -> dict:
    """Pair frames of every cutoff (train, valid, test) with Feast features, and the test cutoff's
    truth and candidate frames (for baselines and cold-start cuts)."""
    cuts = data.split_cutoffs(data.lake_end(inter), config)
    first = inter["event_timestamp"].min()
    if cuts["train"][0] - first < data.days_delta(int(config["split"]["window_days"])):
        raise data.RecsError(
            f"the interactions span {first:%Y-%m-%d}..{data.lake_end(inter):%Y-%m-%d} is too short for "
            f"{len(cuts['train'])} training weeks + validation + test; lower split.n_train"
        )
    split = config["split"]
    out: dict[str, Any] = {"cutoffs": cuts}
    for name, cutoffs in (("train", cuts["train"]), ("valid", [cuts["valid"]]), ("test", [cuts["test"]])):
        parts = []
        for i, c in enumerate(cutoffs):
            test = name == "test"
            pairs, truth, cf = data.cutoff_pairs(
                inter,
                items,
                c,
                config,
                item_matrix,
                max_users=None if test else int(split["max_users_per_cutoff"]),
                only_positive_groups=not test,
                seed=int(split.get("seed", 0)) + i,
            )
            parts.append(pairs)
            if test:
                out["test_truth"], out["test_cf"] = truth, cf
        pairs = data.with_groups(parts)
        if not test and split.get("new_item_groups", True):
            pairs = data.with_new_item_groups(pairs)
        if config.get("feature_service"):
            pairs = data.add_feast_features(settings, pairs, config["feature_service"])
        out[name] = data.categorize(pairs, list(config["features"]["categorical"]) + list(config["fm_features"]["categorical"]))
        say(f"recs: {name} {len(pairs):,} pairs, {pairs['group_id'].nunique():,} user-weeks, positives {int((pairs['label'] > 0).sum()):,}")
    return out


def _champion_ndcg(settings: Settings, model_name: str, test: "pd.DataFrame", truth, history, n_items) -> float | None:
    from ml.models.lifecycle import registry

    try:
        model, _ = registry.load_champion(settings, model_name)
    except registry.ModelLoadError:
        return None
    try:
        metrics, _ = evaluate_rankings({model_name: ranked_pairs(test, predict(model, test))}, truth, history, n_items)
    except Exception as exc:  # noqa: BLE001 - a champion that cannot score these features is replaced
        log.warning("champion %s cannot score the test pairs (%s): treated as absent", model_name, exc)
        return None
    return float(metrics.loc[model_name, "ndcg@10"])


def train(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> TrainResult:
    """Train, evaluate, report, register the three rankers; promote each if not worse (module doc)."""
    from ml.models.lifecycle import registry
    from ml.models.recs import candidates as cand
    from ml.models.recs import ranking

    say = echo or (lambda _m: None)
    config = config or data.load_config()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    inter, items = data.load_interactions(settings), data.load_items(settings)
    if inter.empty:
        raise data.RecsError(f"{data.INTERACTIONS_MART} is empty: no interactions to learn from")
    data.embed_items(settings, items, progress=False, echo=say)  # cached by text hash: only new texts are encoded
    item_matrix = data.load_item_matrix(settings)
    if item_matrix is None:
        log.warning("no item text in %s: content candidates and semantic search are skipped", data.ITEMS_MART)
        say(f"recs: warning: no item has text in {data.ITEMS_MART}: content candidates, text features and semantic search are skipped")
    frames = training_frames(settings, config, inter, items, item_matrix, say)
    seconds["frames"] = time.perf_counter() - t0
    train_pairs, valid_pairs, test_pairs = frames["train"], frames["valid"], frames["test"]
    rows = {k: int(len(frames[k])) for k in ("train", "valid", "test")}

    specs = {data.MODEL_NAME: data.feature_spec(train_pairs, config), data.FM_NAME: data.fm_spec(train_pairs, config)}
    specs[data.LGBM_NAME] = specs[data.MODEL_NAME]
    models, fit_seconds = {}, {}
    for name, fit, section in (
        (data.MODEL_NAME, ranking.fit_widedeep, "widedeep"),
        (data.LGBM_NAME, ranking.fit_lambdarank, "lambdarank"),
        (data.FM_NAME, ranking.fit_fm, "fm"),
    ):
        model_spec = specs[name]
        t = time.perf_counter()
        models[name] = fit(train_pairs, valid_pairs, model_spec, config[section])
        fit_seconds[name] = seconds[f"fit_{name}"] = time.perf_counter() - t
        say(f"recs: {name} fitted in {fit_seconds[name]:.0f} s")

    truth, cf = frames["test_truth"], frames["test_cf"]
    min_label = int(config["evaluation"]["min_label"])
    eval_truth = truth[truth["label"] >= min_label]
    users = eval_truth["user_id"].unique()
    n_items = int(items["item_id"].nunique())
    rankings = {name: ranked_pairs(test_pairs, predict(m, test_pairs)) for name, m in models.items()}
    rankings.update(baselines(cf, users))
    metrics, cold = evaluate_rankings(rankings, eval_truth, cf.history, n_items)
    recall = cand.recall_by_source(cf.candidates, eval_truth, k=100)
    t = time.perf_counter()
    search_table = evaluate_search(settings, config)
    seconds["search_eval"] = time.perf_counter() - t
    t = time.perf_counter()
    purchases = purchase_evaluation(
        settings, config, inter, items, models, frames["cutoffs"]["test"], frames["cutoffs"]["window_days"], item_matrix
    )
    seconds["purchase_eval"] = time.perf_counter() - t
    evaluation = Evaluation(metrics, recall, cold, search_table, purchases)
    say("recs test metrics:\n" + metrics[["recall@10", "recall@20", "ndcg@10", "hit_rate@10", "coverage@20"]].round(4).to_string())
    if purchases["table"] is not None:
        from ml.models.recs.evaluation import pivot

        say(f"recs: {purchases['note']} (recall):\n" + pivot(purchases["table"]).round(4).to_string())
    else:
        say(f"recs: {purchases['note']}")

    versions, decisions = {}, {}
    promotion = config["promotion"]
    report_run = None
    for name, model in models.items():
        model_spec = specs[name]
        params = {
            **{f"{k}": v for k, v in config[{data.MODEL_NAME: "widedeep", data.LGBM_NAME: "lambdarank", data.FM_NAME: "fm"}[name]].items()},
            **{f"rows_{k}": v for k, v in rows.items()},
            **{f"cutoff_{k}": str(v) for k, v in frames["cutoffs"].items() if k != "train"},
            "train_cutoffs": ",".join(f"{c:%Y-%m-%d}" for c in frames["cutoffs"]["train"]),
            "fit_seconds": round(fit_seconds[name], 1),
        }
        features = list(model_spec.numeric) + list(model_spec.categorical) + ([model_spec.embedding] if model_spec.embedding else [])
        with registry.training_run(
            settings,
            name,
            params=params,
            feature_service=config["feature_service"],
            features=features,
            snapshot={"interactions_rows": len(inter), "items": n_items},
        ) as run:
            registry.log_metrics({k: v for k, v in metrics.loc[name].items() if v == v}, prefix="test_")
            for base in ("popularity", "item_knn"):
                registry.log_metrics({k: v for k, v in metrics.loc[base].items() if v == v}, prefix=f"{base}_test_")
            if purchases["table"] is not None:
                for r in purchases["table"].query("segment == 'all'").to_dict("records"):
                    if r["model"] == name or r["model"] not in models:  # its own row and the references'
                        prefix = "" if r["model"] == name else f"{r['model']}_"
                        registry.log_metrics({f"{prefix}{r['protocol']}_recall_at_{r['k']}": r["recall"]})
                registry.log_metrics({"served_coverage": purchases["coverage"][name]})
            # the rankers are plain Python objects (a torch net or a LightGBM booster plus vocabularies,
            # scalers and categories): pickled whole, loaded back as the same class from ml.models.recs.ranking
            version = registry.log_model(model, name, flavor="sklearn", serialization_format="cloudpickle")
            decision = registry.promote_if_not_worse(
                settings,
                name,
                version.version,
                metric=promotion["metric"],
                value=float(metrics.loc[name, "ndcg@10"]),
                higher_is_better=True,
                tolerance=float(promotion.get("tolerance", 0.0)),
                champion_value=_champion_ndcg(settings, name, test_pairs, eval_truth, cf.history, n_items),
                losses=purchases["losses"].get(name),
            )
            versions[name], decisions[name] = str(version.version), decision
            if name == data.MODEL_NAME:
                report_run = run.info.run_id
        say(f"recs: {name} version {version.version} {'promoted' if decision.promoted else 'not promoted'} ({decision.reason})")
    # the report, once every ranker is registered and decided, on the Wide & Deep run (where it always lived)
    path = _report(settings, config, evaluation, frames, rows, models, versions, decisions, fit_seconds, report_run)
    registry.log_report(settings, path, run_id=report_run)
    seconds["total"] = time.perf_counter() - t0
    return TrainResult(versions, decisions, evaluation, path, rows, seconds, config["serving"]["model"])


def _report(settings, config, evaluation: Evaluation, frames, rows, models, versions, decisions, fit_seconds, run_id) -> Path:
    from ml.models.lifecycle.report import Report, report_dir

    cuts = frames["cutoffs"]
    report = Report(f"{data.MODEL_NAME} — recommendations (candidates + rankers)", subtitle=f"MLflow run {run_id}")
    report.text(
        f"Time split by weekly cutoffs: train {', '.join(f'{c:%Y-%m-%d}' for c in cuts['train'])}; valid "
        f"{cuts['valid']:%Y-%m-%d}; test {cuts['test']:%Y-%m-%d} (labels: interactions in the {cuts['window_days']} days "
        f"after each cutoff; features: history before it + Feast service `{config['feature_service']}`). Pairs: {rows}. "
        f"Test: full ranking of the candidate set for every user active in the test week (truth = label >= "
        f"{config['evaluation']['min_label']}); users whose items the candidates miss count as misses."
    )
    report.table("Test metrics (models and baselines)", evaluation.metrics.round(4))
    report.table("Candidate recall@100 per source and merged", evaluation.candidate_recall.round(4))
    if len(evaluation.cold):
        report.table("Cold start: users without history / truth items without earlier interactions", evaluation.cold.round(4))
    purchases = evaluation.purchases or {}
    if purchases.get("table") is not None:
        from ml.models.recs.evaluation import pivot

        report.text(
            f"Purchase protocols: {purchases['note']}. repeats = every item bought in the horizon (Recall@10); new_items = items "
            f"the customer never bought before, with the served new-items list (Recall@20). Segments: new customers (no purchase "
            f"before), returning, heavy (>= {purchases['heavy_days']} purchase days before, the top fifth). References: popularity "
            f"(distinct buyers, last 90 days), item-kNN (cosine over customers' purchases), own history (buy again, by purchase "
            f"days then recency); every list is completed with popular items. Served coverage (customers with a list of their own): "
            + ", ".join(f"{m} {v:.1%}" for m, v in purchases["coverage"].items())
            + "."
        )
        report.table("Purchase protocols: recall per segment (served lists and plain references)", pivot(purchases["table"]).round(4))
        report.table("Purchase protocols: users per cell", pivot(purchases["table"], "n_users"))
        lost = {m: "; ".join(v) for m, v in purchases["losses"].items() if v}
        if not purchases.get("gate_applied", True):
            report.text("Reference gate: not applied (too few buyers in the test window to tell).")
        else:
            report.text(
                "Reference gate: "
                + (
                    "every model beats every reference on both protocols."
                    if not lost
                    else " / ".join(f"{m} not promoted: {v}" for m, v in lost.items())
                )
            )
    elif purchases.get("note"):
        report.text(f"Purchase protocols: {purchases['note']}.")
    if evaluation.search is not None:
        report.table("Semantic search vs BM25 on search -> purchase pairs", evaluation.search.round(4))
    for name, model in models.items():
        history = getattr(model, "history", None)
        if history and isinstance(history[0], dict):  # the torch rankers: one row per epoch
            import pandas as pd

            report.table(f"{name}: training history", pd.DataFrame(history).round(4))
        elif history:  # LambdaRank: the validation NDCG per boosting round
            best = max(range(len(history)), key=history.__getitem__)
            report.text(
                f"{name}: validation NDCG@{config['lambdarank'].get('eval_at', 10)} {history[best]:.4f} at round {best + 1} "
                f"of {len(history)} (early stopping)."
            )
    report.text(
        f"Served: `recs score` ranks with the champion of {config['serving']['model']}. "
        + "; ".join(
            f"{n}: version {versions[n]}, fit {fit_seconds[n]:.0f} s, "
            f"{'promoted' if decisions[n].promoted else 'not promoted'} ({decisions[n].reason})"
            for n in models
        )
    )
    return report.write(report_dir(settings, data.MODEL_NAME, run_id), model=data.MODEL_NAME, run_id=run_id)
