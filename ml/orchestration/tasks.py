"""What the Airflow DAGs call: each task body in ``dags/`` is one call into this module (or into
``ml.warehouse`` / ``ml.features.*``). Bodies return JSON-able summaries (XCom); heavy libraries are
imported inside the functions, so a DAG file importing this module stays fast to parse.

    parse(settings)                                   `dbt parse` -> manifest.json the warehouse DAG is rendered from
    run_ingest(settings, mapping=, generate_scale=)   generate and/or ingest new LANDING_DIR files
    record_build_start(settings)                      mark the start of a warehouse build (freshness)
    check_feature_sources(settings)                   validate_sources + freshness gate -> views to load
    materialize_view(settings, view, start, end)      the fast path for one feature view
    run_interval(context) / materialize_window(...)   the chain's data interval, carried by Asset events
    log_failure(context)                              on_failure_callback naming the dbt node / view
    train_user_models, cart_analytics, score_propensity, serve_scores, cart_at_risk, embed_items,
    train_recommender, score_recommender, serve_recommendations, train_demand, forecast_demand,
    serve_demand_plan                                 the model DAGs' task bodies (order: ``chain.FAMILIES``)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from ml.settings import Settings

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# dbt manifest (the warehouse DAG is rendered from it; parsing the DAG never runs dbt)
# --------------------------------------------------------------------------------------------------


def manifest_file(settings: Settings) -> Path:
    from ml.warehouse import target_path

    return target_path(settings) / "manifest.json"


def airflow_target_path(settings: Settings) -> Path:
    """dbt's target folder for runs inside Airflow: separate from the parse target, so a running
    build never rewrites the manifest.json the dag-processor is reading."""
    return settings.data_dir / "dbt" / "airflow_target"


def parse(settings: Settings, echo: Callable[[str], None] | None = None) -> Path:
    """``dbt parse`` for these settings: writes ``target_path(settings)/manifest.json``; returns it."""
    from ml.warehouse import WarehouseBuildError, run_dbt

    rc, lines = run_dbt(settings, ["parse"], echo=echo)
    path = manifest_file(settings)
    if rc != 0 or not path.exists():
        raise WarehouseBuildError(f"dbt parse failed (exit {rc}):\n" + "\n".join(lines[-30:]))
    return path


def dbt_task_env(settings: Settings) -> dict[str, str]:
    """Environment of the dbt commands Cosmos runs: the settings plus Airflow-run target/log folders."""
    return {
        **settings.as_env(),
        "DBT_TARGET_PATH": str(airflow_target_path(settings)),
        "DBT_LOG_PATH": str(settings.data_dir / "dbt" / "airflow_logs"),
    }


# --------------------------------------------------------------------------------------------------
# Task bodies
# --------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` as JSON types (XCom): non-JSON objects as strings, NaN / infinity as null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(json.loads(json.dumps(value, default=str)))


def landing_files(settings: Settings) -> list[Path]:
    """The exports waiting in LANDING_DIR (not those in its _failed/ folder)."""
    from ml.ingest.readers import READABLE_SUFFIXES

    root = Path(settings.landing_dir)
    if not root.exists():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        and p.suffix.lower() in READABLE_SUFFIXES
    )


def run_ingest(
    settings: Settings,
    mapping: str | None = None,
    generate_scale: str | None = None,
    seed: int | None = None,
) -> dict:
    """The ingest step: optionally (re)generate a synthetic lake, then ingest every file in
    LANDING_DIR not ingested before (the ledger makes re-runs no-ops).

    Returns ``{"generated": summary|None, "ingested": [reports], "failed": [{"file", "reason"}],
    "new_data": bool}``: a bad file moves to LANDING_DIR/_failed/ and is listed in ``failed`` while the
    others are ingested. Raises ``ml.ingest.IngestError`` when no mapping is set for waiting files.
    """
    from ml.ingest import IngestError, ingest_landing

    settings.ensure_dirs()
    result: dict[str, Any] = {"generated": None, "ingested": [], "failed": [], "new_data": False}
    if generate_scale:
        from ml.generate import generate

        summary = generate(scale=generate_scale, seed=settings.seed if seed is None else seed, lake_dir=settings.lake_dir)
        result["generated"] = {"scale": generate_scale, "summary": _jsonable(summary)}
        result["new_data"] = True
    files = landing_files(settings)
    mapping = mapping or settings.ingest_mapping
    if files:
        if not mapping:
            raise IngestError(
                f"{len(files)} file(s) wait in {settings.landing_dir} but no mapping is set: "
                'set INGEST_MAPPING or trigger the ingest DAG with conf {"mapping": "<preset or yaml>"}'
            )
        from ml.ingest import LandingError

        try:
            reports = ingest_landing(
                settings.landing_dir,
                mapping,
                lake_dir=settings.lake_dir,
                quarantine_dir=settings.quarantine_dir,
                max_quarantine_share=settings.ingest_max_quarantine_share,
            )
        except LandingError as exc:  # the good files are committed: they go downstream, the bad ones are told
            reports = exc.reports
            result["failed"] = [{"file": f, "reason": why} for f, why in exc.failed]
        result["ingested"] = [_jsonable(r.to_dict()) for r in reports]
        result["new_data"] = result["new_data"] or bool(reports)
    return result


def build_marker(settings: Settings) -> Path:
    return settings.data_dir / "dbt" / "last_airflow_build.json"


def record_build_start(settings: Settings, run_id: str | None = None) -> dict:
    """Remember when the warehouse build of ``run_id`` started: marts older than this are stale.
    Also gives a lake written before a table joined the contract that table's schema file."""
    from ml.contract import ensure_schema_files

    ensure_schema_files(settings.lake_dir)
    path = build_marker(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = {"started_at": time.time(), "run_id": run_id}
    path.write_text(json.dumps(marker))
    return marker


class StaleFeaturesError(RuntimeError):
    """A feature mart was not rewritten by the last warehouse build."""


def check_feature_sources(settings: Settings, views: Iterable[str] | None = None) -> list[str]:
    """The data-quality gate before anything touches the Feast registry or online store.

    ``validate_sources`` (file present, non-empty, declared columns and types, no null or duplicate
    keys) and freshness: every mart must have been rewritten since the start of the last warehouse
    build run by Airflow (``record_build_start``). Returns the feature views to materialize.
    """
    from ml.features.contract import read_view_specs
    from ml.features.repo import source_file, validate_sources

    report = validate_sources(settings, views=views)
    marker = build_marker(settings)
    if marker.exists():
        started = json.loads(marker.read_text())["started_at"]
        specs = read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")
        stale = []
        for name in report:
            path = source_file(settings, specs[name].dbt_model or name)
            if path.stat().st_mtime < started - 1:
                age = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
                stale.append(f"feature view {name!r}: {path} was last written {age}, before the last warehouse build started")
        if stale:
            raise StaleFeaturesError("stale feature sources (did dbt skip or fail the mart?):\n  " + "\n  ".join(stale))
    return sorted(report)


def run_interval(context: dict) -> tuple[datetime | None, datetime]:
    """The chain's data interval for this run: from the triggering Asset events' ``extra`` (the
    ingest run's interval, carried down the chain), else the run's own data interval, else now."""
    starts, ends = [], []
    events = context.get("triggering_asset_events") or {}
    try:
        groups = list(events.values())
    except Exception:  # pragma: no cover - accessor without .values()
        groups = []
    for group in groups:
        for event in group:
            extra = getattr(event, "extra", None) or {}
            if extra.get("interval_end"):
                ends.append(datetime.fromisoformat(extra["interval_end"]))
                if extra.get("interval_start"):
                    starts.append(datetime.fromisoformat(extra["interval_start"]))
    if ends:
        return (min(starts) if starts else None), max(ends)
    start = context.get("data_interval_start")
    end = context.get("data_interval_end") or context.get("logical_date")
    if end is None:
        return None, datetime.now(timezone.utc)
    return (start if start is not None and start < end else None), end


def interval_extra(start: datetime | None, end: datetime) -> dict:
    """The ``extra`` an Asset event carries so downstream DAGs know the chain's interval."""
    return {"interval_start": start.isoformat() if start else None, "interval_end": end.isoformat()}


def materialize_window(context: dict, window: str = "full") -> tuple[datetime | None, datetime]:
    """(start, end) of a materialization: ``full`` = latest row per entity up to the interval end
    (the marts are rebuilt snapshots; idempotent; backfills never write older over newer),
    ``interval`` = only rows whose event_timestamp lies in the run's data interval."""
    start, end = run_interval(context)
    if window not in ("full", "interval"):
        raise ValueError(f"window must be 'full' or 'interval', got {window!r}")
    return (start if window == "interval" else None), end


def materialize_view(settings: Settings, view: str, start: datetime | None, end: datetime) -> dict:
    """Materialize one feature view with the fast path; logs and re-raises naming the view."""
    from ml.features.materialize import materialize

    try:
        stats = materialize(settings, start, end, views=[view])
    except Exception as exc:
        log.error("feature view %r failed to materialize [%s, %s]: %s", view, start, end, exc)
        raise
    return _jsonable(stats)


def train_user_models(settings: Settings) -> dict:
    """Train propensity_lgbm (and its sequence-model comparison); promote if not worse."""
    from ml.models.user.propensity import train

    return _jsonable(train(settings).summary())


def require_promotion(summary: dict) -> None:
    """Skip the calling task (no `user_models` event) when training promoted nothing."""
    if not summary.get("promoted"):
        from airflow.exceptions import AirflowSkipException

        raise AirflowSkipException(f"{summary.get('model')} version {summary.get('version')} not promoted: {summary.get('decision')}")


def cart_analytics(settings: Settings) -> dict:
    """Cart-abandonment curve + decay estimate (report); a no-op note for orders-only lakes."""
    from ml.models.user import cart

    return _jsonable(cart.analyze(settings))


def score_propensity(settings: Settings) -> dict:
    """Batch-score with the champion; {"status": "no_champion"} until a model has been promoted."""
    from ml.models.lifecycle import registry
    from ml.models.user.propensity import MODEL_NAME, score

    if registry.champion(settings, MODEL_NAME) is None:
        log.warning("%s has no champion yet: nothing to score (train_user_models promotes one)", MODEL_NAME)
        return {"status": "no_champion", "model": MODEL_NAME}
    return {"status": "scored", **_jsonable(score(settings))}


def serve_scores(settings: Settings, scored: dict) -> dict:
    """Materialize the scores' feature view for the scoring date (no-op when nothing was scored)."""
    from ml.models.user.propensity import SCORE_VIEW

    if scored.get("status") != "scored":
        return {"status": scored.get("status"), "view": SCORE_VIEW}
    end = datetime.fromisoformat(scored["scoring_date"]).replace(tzinfo=timezone.utc) + timedelta(days=1)
    return {"status": "served", **materialize_view(settings, SCORE_VIEW, None, end)}


def cart_at_risk(settings: Settings) -> dict:
    """Today's open carts at risk, scored by the conversion curve (a note for orders-only lakes)."""
    from ml.models.user import cart

    return _jsonable(cart.score_at_risk(settings))


def embed_items(settings: Settings) -> dict:
    """Item text embeddings (cached by text hash) -> the Feast source of view item_embeddings."""
    from ml.models.recs import embed_items as embed

    return _jsonable(embed(settings, progress=False))


def train_recommender(settings: Settings) -> dict:
    """Train recs_widedeep, recs_lgbm and recs_fm; promote each if not worse. Summary of the run."""
    from ml.models.recs import train

    summary = train(settings).summary()
    return _jsonable(
        {
            **summary,
            "version": summary["versions"].get(summary["model"]),
            "promoted": summary["promoted"].get(summary["model"], False),
            "decision": summary["promoted"],
        }
    )


def score_recommender(settings: Settings) -> dict:
    """Batch top-K with the champion ranker; {"status": "no_champion"} until one was promoted."""
    from ml.models.lifecycle import registry
    from ml.models.recs import load_config, score

    model = load_config()["serving"]["model"]
    if registry.champion(settings, model) is None:
        log.warning("%s has no champion yet: nothing to recommend (train_recommender promotes one)", model)
        return {"status": "no_champion", "model": model}
    return {"status": "scored", **_jsonable(score(settings))}


def serve_recommendations(settings: Settings, scored: dict) -> dict:
    """Materialize the recommendation lists (and the item embeddings) for the scoring date."""
    from ml.models.recs import SCORE_VIEW

    served = {"item_embeddings": materialize_view(settings, "item_embeddings", None, datetime.now(timezone.utc))}
    if scored.get("status") != "scored":
        return {"status": scored.get("status"), "view": SCORE_VIEW, **served}
    end = datetime.fromisoformat(scored["scoring_date"]).replace(tzinfo=timezone.utc) + timedelta(days=1)
    return {"status": "served", SCORE_VIEW: materialize_view(settings, SCORE_VIEW, None, end), **served}


def train_demand(settings: Settings) -> dict:
    """Backtest the demand models, fit + register the serving forecaster, promote if not worse."""
    from ml.models.demand import NoDemandDataError, train

    try:
        return _jsonable(train(settings, echo=log.info).summary())
    except NoDemandDataError as exc:  # a lake shape without demand series: the family sits this one out
        log.warning("demand forecasting skipped: %s", exc)
        return {
            "status": "skipped",
            "model": "demand_lgbm",
            "promoted": False,
            "version": None,
            "decision": f"skipped: {exc}",
            "reason": str(exc),
        }


def forecast_demand(settings: Settings) -> dict:
    """Forecast + inventory plan with the champion; {"status": "no_champion"} until one was promoted."""
    from ml.models.demand import forecast, load_config
    from ml.models.lifecycle import registry

    model = load_config()["forecast"]["model"]
    if registry.champion(settings, model) is None:
        log.warning("%s has no champion yet: nothing to forecast (train_demand promotes one)", model)
        return {"status": "no_champion", "model": model}
    return {"status": "forecast", **_jsonable(forecast(settings, echo=log.info).summary())}


def serve_demand_plan(settings: Settings, planned: dict) -> dict:
    """Materialize the inventory plan's feature view for the forecast date."""
    from ml.models.demand import PLAN_VIEW

    if planned.get("status") != "forecast":
        return {"status": planned.get("status"), "view": PLAN_VIEW}
    end = datetime.fromisoformat(planned["forecast_date"]).replace(tzinfo=timezone.utc) + timedelta(days=1)
    return {"status": "served", **materialize_view(settings, PLAN_VIEW, None, end)}


def failure_subject(context: dict) -> str:
    """'dbt node model.x.y' / 'feature view v' / 'task t' for the task that failed."""
    task = context.get("task")
    ti = context.get("task_instance") or context.get("ti")
    node = getattr(task, "model_unique_id", None) or (getattr(task, "extra_context", None) or {}).get("dbt_node_config", {}).get(
        "unique_id"
    )
    if node:
        return f"dbt node {node}"
    view = context.get("feature_view")
    if view is None and ti is not None and getattr(ti, "map_index", -1) not in (-1, None):
        view = getattr(ti, "rendered_map_index", None) or f"map index {ti.map_index}"
    if view is not None:
        return f"feature view {view}"
    return f"task {getattr(ti, 'task_id', None) or getattr(task, 'task_id', '?')}"


def log_failure(context: dict) -> None:
    """on_failure_callback of every task: one clear line naming the DAG, run, dbt node or view."""
    ti = context.get("task_instance") or context.get("ti")
    exc = context.get("exception")
    first = str(exc).strip().splitlines()[0] if exc else "unknown error"
    message = (
        f"FAILED {failure_subject(context)} in DAG {getattr(ti, 'dag_id', '?')} run {context.get('run_id')} "
        f"(task {getattr(ti, 'task_id', '?')}, try {getattr(ti, 'try_number', '?')}): {first}"
    )
    log.error(message)
    print(message, file=sys.stderr)
