"""Orchestration: what the Airflow DAGs call, and a local Airflow to run them in.

The DAG files in ``dags/`` only wire tasks; each task body is one call into this module (or into
``ml.warehouse`` / ``ml.features.*``). The second half starts and drives a real local Airflow
(``airflow standalone``: API server + scheduler + dag-processor + triggerer, SQLite metadata,
LocalExecutor) for the end-to-end test, the benchmark and ``make demo``.

Task bodies (run inside Airflow tasks; heavy libraries are imported inside the functions)
    run_ingest(settings, mapping=, generate_scale=)   generate and/or ingest new LANDING_DIR files
    record_build_start(settings)                      mark the start of a warehouse build (freshness)
    check_feature_sources(settings)                   validate_sources + freshness gate -> views to load
    materialize_view(settings, view, start, end)      the fast path for one feature view
    run_interval(context) / materialize_window(...)   the chain's data interval, carried by Asset events
    log_failure(context)                              on_failure_callback naming the dbt node / view
    train_user_models / cart_analytics / score_propensity / serve_scores / cart_at_risk
                                                      the user-behaviour model DAGs' task bodies

Setup and local Airflow
    parse(settings)                 `dbt parse` -> manifest.json the warehouse DAG is rendered from
    airflow_env(settings, port=)    the environment of every Airflow process (one source: settings)
    setup(settings)                 airflow db migrate + the single-writer pools (+ manifest)
    LocalAirflow(settings).start()  `airflow standalone` on an (ephemeral) port in its own process group
    AirflowClient(url, user, pw)    /api/v2 with a JWT from /auth/token: unpause, trigger, wait, logs
    run_chain(client, conf)         unpause the chain, trigger ingest, wait for all three DAGs

``make demo`` runs ``ecomml demo`` (ml/cli.py), which calls these; ``ecomml airflow --help`` lists the rest.
Nothing here imports Airflow, Feast or pandas at module import: DAG files import this module.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from ml.settings import PROJECT_ROOT, Settings, get_secrets

log = logging.getLogger(__name__)

DAGS_DIR = PROJECT_ROOT / "dags"
INGEST_DAG = "ingest"
WAREHOUSE_DAG = "warehouse"
FEATURE_STORE_DAG = "feature_store"
CHAIN = (INGEST_DAG, WAREHOUSE_DAG, FEATURE_STORE_DAG)
TRAIN_USER_MODELS_DAG = "train_user_models"
SCORE_USER_MODELS_DAG = "score_user_models"
TRAIN_RECOMMENDER_DAG = "train_recommender"
SCORE_RECOMMENDER_DAG = "score_recommender"
# (training DAG, the scoring DAG its promotion triggers)
TRAIN_DEMAND_DAG = "train_demand"
FORECAST_DEMAND_DAG = "forecast_demand"
MODEL_DAG_PAIRS = (
    (TRAIN_USER_MODELS_DAG, SCORE_USER_MODELS_DAG),
    (TRAIN_RECOMMENDER_DAG, SCORE_RECOMMENDER_DAG),
    (TRAIN_DEMAND_DAG, FORECAST_DEMAND_DAG),
)
MODEL_DAGS = tuple(d for pair in MODEL_DAG_PAIRS for d in pair)


class OrchestrationError(RuntimeError):
    """A local Airflow could not start, a request failed, or a DAG run did not succeed."""


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


# --------------------------------------------------------------------------------------------------
# A local Airflow: environment, setup, standalone launcher, REST client
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_bin() -> str:
    exe = Path(sys.executable).parent / "airflow"
    return str(exe) if exe.exists() else "airflow"


def airflow_env(settings: Settings, port: int | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every Airflow process: the settings (dbt and Feast read the same values),
    AIRFLOW_HOME with SQLite metadata, our dags/ folder, LocalExecutor, small parallelism."""
    port = settings.airflow_port if port is None else port
    home = Path(settings.airflow_home)
    env = {
        **os.environ,
        **settings.as_env(),
        **get_secrets().subprocess_env(),  # e.g. PSEUDONYMIZE_KEY for the ingest task (read from .env here too)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(settings.airflow_parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra or {})
    return env


def airflow_cli(settings: Settings, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600):
    """Run ``airflow <args>`` with ``airflow_env(settings)``; the CompletedProcess."""
    proc = subprocess.run(
        [airflow_bin(), *args],
        env=env or airflow_env(settings),
        cwd=str(PROJECT_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise OrchestrationError(f"airflow {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    return proc


def pools(settings: Settings) -> dict[str, str]:
    return {
        settings.duckdb_pool: "Single DuckDB writer: every lake/warehouse writing task (DuckDB allows one writer process)",
        settings.feast_pool: "Single writer of the Feast registry file and online store (embedded mode)",
        settings.training_pool: "One model training task at a time (CPU; single writer of a SQLite MLflow backend)",
    }


def ensure_pools(settings: Settings, env: dict[str, str] | None = None) -> dict[str, int]:
    """Create the single-writer pools that are missing, at 1 slot; {pool: slots} afterwards.
    Idempotent, and an operator's resize of the Feast or training pool survives a re-run; the DuckDB
    writer pool is forced back to 1 (DuckDB allows one writer process: more slots are a bug)."""
    listed = airflow_cli(settings, "pools", "list", "--output", "json", env=env).stdout
    existing = {p["pool"]: int(p["slots"]) for p in json.loads(listed[listed.index("[") :])}
    wanted = {
        name: description
        for name, description in pools(settings).items()
        if existing.get(name) is None or (name == settings.duckdb_pool and existing[name] != 1)
    }
    if wanted:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({name: {"slots": 1, "description": d, "include_deferred": False} for name, d in wanted.items()}, f)
        try:
            airflow_cli(settings, "pools", "import", f.name, env=env)
        finally:
            os.unlink(f.name)
    return {name: 1 if name in wanted else existing[name] for name in pools(settings)}


def setup(settings: Settings, env: dict[str, str] | None = None, manifest: bool = True) -> dict[str, int]:
    """Everything a fresh AIRFLOW_HOME needs: metadata DB, the pools, and dbt's manifest (so the
    warehouse DAG renders one task per dbt node instead of its single-task fallback); {pool: slots}."""
    settings.ensure_dirs()
    Path(settings.airflow_home).mkdir(parents=True, exist_ok=True)
    airflow_cli(settings, "db", "migrate", env=env)
    sizes = ensure_pools(settings, env=env)
    if manifest and not manifest_file(settings).exists():
        parse(settings)
    return sizes


class AirflowClient:
    """A tiny /api/v2 client: JWT from ``POST /auth/token``, JSON in and out (stdlib only)."""

    RETRY_STATUS = (500, 502, 503, 504)

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0, retry_s: float = 180.0):
        self.base_url = base_url.rstrip("/")
        self.username, self.password, self.timeout = username, password, timeout
        self.retry_s = retry_s  # how long a request keeps retrying timeouts, refused connections and 5xx
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            body = self._raw("POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False)
            self._token = body["access_token"]
        return self._token

    def _raw(self, method: str, path: str, payload: Any = None, auth: bool = True, params: dict | None = None) -> Any:
        url = self.base_url + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        deadline, delay = time.monotonic() + self.retry_s, 1.0
        while True:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    text = response.read().decode()
                return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:2000]
                if exc.code == 401 and auth and self._token is not None:  # the JWT expired: one new token
                    self._token = None
                    request.add_header("Authorization", f"Bearer {self.token()}")
                    continue
                if exc.code not in self.RETRY_STATUS or time.monotonic() + delay > deadline:
                    raise OrchestrationError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
            except (TimeoutError, ConnectionError, urllib.error.URLError) as exc:
                # a busy API server (the demo on 2 cores at load 8) answers late: retry, with backoff
                reason = getattr(exc, "reason", exc)
                if method == "POST" and isinstance(reason, TimeoutError) and auth:
                    raise OrchestrationError(
                        f"{method} {path} timed out after {self.timeout:.0f} s (not retried: it may have been applied)"
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise OrchestrationError(
                        f"{method} {path}: no answer from {self.base_url} for {self.retry_s:.0f} s ({reason})"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 15.0)

    def request(self, method: str, path: str, payload: Any = None, params: dict | None = None) -> Any:
        return self._raw(method, "/api/v2" + path, payload, params=params)

    # DAGs and runs -------------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}")

    def import_errors(self) -> list[dict]:
        return self.request("GET", "/importErrors").get("import_errors", [])

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 180.0) -> None:
        """Until the dag-processor has serialized every DAG (import errors fail fast)."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while missing:
            errors = self.import_errors()
            if errors:
                raise OrchestrationError("DAG import errors:\n" + "\n".join(f"{e.get('filename')}: {e.get('stack_trace')}" for e in errors))
            still = []
            for dag_id in missing:
                try:
                    self.dag(dag_id)
                except OrchestrationError:
                    still.append(dag_id)
            missing = still
            if missing and time.monotonic() > deadline:
                raise OrchestrationError(f"DAGs {missing} not parsed after {timeout:.0f} s")
            if missing:
                time.sleep(2)

    def set_paused(self, dag_id: str, paused: bool) -> dict:
        return self.request("PATCH", f"/dags/{dag_id}", {"is_paused": paused}, params={"update_mask": "is_paused"})

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: datetime | None = None) -> dict:
        when = logical_date or datetime.now(timezone.utc)
        return self.request("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": when.isoformat(), "conf": conf or {}})

    def runs(self, dag_id: str, limit: int = 50) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": limit})["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        return self.request("GET", path, params={"limit": 1000})["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
        body = self.request("GET", path, params={"full_content": "true", "map_index": map_index})
        content = body.get("content") if isinstance(body, dict) else body
        if isinstance(content, list):
            return "\n".join(c.get("event", "") if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def wait_for_run(
        self, dag_id: str, run_id: str | None = None, after: datetime | None = None, timeout: float = 600.0, poll: float = 3.0
    ) -> dict:
        """Wait until a run (``run_id``, else the first run queued after ``after``) ends; the run.

        Raises OrchestrationError when it fails (naming the failed tasks) or the wait times out."""
        deadline = time.monotonic() + timeout
        while True:
            run = None
            if run_id is not None:
                run = self.run(dag_id, run_id)
            else:
                for candidate in self.runs(dag_id):
                    queued = candidate.get("queued_at") or candidate.get("run_after")
                    if after is None or (queued and datetime.fromisoformat(queued.replace("Z", "+00:00")) >= after):
                        run = candidate
                if run is not None:
                    run_id = run["dag_run_id"]
            if run is not None and run["state"] in ("success", "failed"):
                if run["state"] == "failed":
                    raise OrchestrationError(self.failure_summary(dag_id, run_id))
                return run
            if time.monotonic() > deadline:
                state = run["state"] if run else "not created"
                raise OrchestrationError(f"{dag_id}: run {run_id or '(none yet)'} still {state} after {timeout:.0f} s")
            time.sleep(poll)

    def failure_summary(self, dag_id: str, run_id: str, tail: int = 12) -> str:
        """Which run failed, where to look (the run in the UI, each failed task's log) and the end of
        each failed task's log."""
        tasks = self.task_instances(dag_id, run_id)
        failed = [t for t in tasks if t["state"] == "failed"]
        upstream = [t["task_id"] for t in tasks if t["state"] == "upstream_failed"]
        lines = [
            f"{dag_id} run {run_id} failed: {[t['task_id'] for t in failed]}" + (f" (upstream_failed: {upstream})" if upstream else ""),
            f"  the run in the Airflow UI: {self.base_url}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}",
        ]
        for t in failed:
            try_number = int(t.get("try_number") or 1)
            lines.append(
                f"  log of {t['task_id']}: {self.base_url}/dags/{dag_id}/runs/"
                f"{urllib.parse.quote(run_id, safe='')}/tasks/{t['task_id']}?try_number={try_number}"
            )
            try:
                text = self.task_log(dag_id, run_id, t["task_id"], try_number, t.get("map_index", -1))
            except OrchestrationError:
                continue
            last = [line for line in text.splitlines() if line.strip()][-tail:]
            lines += [f"    | {line[:300]}" for line in last]
        return "\n".join(lines)

    def backfill(self, dag_id: str, start: datetime, end: datetime, max_active_runs: int = 1, reprocess: str = "completed") -> dict:
        """An Airflow 3 backfill over [start, end] (``reprocess``: none | failed | completed)."""
        return self.request(
            "POST",
            "/backfills",
            {
                "dag_id": dag_id,
                "from_date": start.isoformat(),
                "to_date": end.isoformat(),
                "max_active_runs": max_active_runs,
                "reprocess_behavior": reprocess,
                "run_backwards": False,
            },
        )


class LocalAirflow:
    """``airflow standalone`` in its own process group: start(), client(), stop() (also as a context manager)."""

    def __init__(self, settings: Settings, port: int | None = None, log_path: Path | None = None):
        self.settings = settings
        self.port = port if port is not None else (settings.airflow_port or free_port())
        self.home = Path(settings.airflow_home)
        self.log_path = log_path or self.home / "standalone.log"
        # the scheduler's and triggerer's log servers too: two local Airflows must not collide
        self.env = airflow_env(
            settings,
            port=self.port,
            extra={
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            },
        )
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def credentials(self) -> tuple[str, str]:
        users = json.loads(self.password_file().read_text())
        user = "admin" if "admin" in users else next(iter(users))
        return user, users[user]

    def start(self, timeout: float = 240.0, setup_first: bool = True) -> "LocalAirflow":
        if setup_first:
            setup(self.settings, env=self.env)
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [airflow_bin(), "standalone"],
            env=self.env,
            cwd=str(PROJECT_ROOT),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise OrchestrationError(f"airflow standalone exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.password_file().exists() and self._healthy():
                try:
                    self.client().token()
                    return self
                except OrchestrationError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise OrchestrationError(f"airflow standalone not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(2)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/api/v2/monitor/health", timeout=5) as r:
                body = json.loads(r.read().decode())
        except (OSError, ValueError):
            return False
        return all((body.get(k) or {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "dag_processor", "triggerer"))

    def client(self) -> AirflowClient:
        user, password = self.credentials()
        return AirflowClient(self.url, user, password)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the whole process group (standalone and every component it spawned), then SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            pgid = os.getpgid(self.proc.pid)
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        elif self.proc is not None:
            try:  # standalone is gone; its children may not be
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LocalAirflow":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def sample_user(settings: Settings) -> str:
    """A user with recent features (the demo prints how to read its online values)."""
    import duckdb

    from ml.warehouse import feature_path

    row = (
        duckdb.connect()
        .execute(
            "select user_id from read_parquet(?) order by event_timestamp desc limit 1",
            [str(feature_path(settings, "feat_user_rfm"))],
        )
        .fetchone()
    )
    return row[0] if row else "<user_id>"


def _print_recs_and_search(settings: Settings, user_id: str) -> None:
    """The demo's proof of serving: one user's recommendations read online and one search."""
    from ml.models import recs

    try:
        listed = recs.recommend(settings, user_id).head(5)
        query = recs.sample_query(settings)
        hits = recs.search_items(settings, query, k=5)
    except Exception as exc:  # noqa: BLE001 - the demo reports it and goes on to print where to look
        print(f"\n(recommendations/search not available: {type(exc).__name__}: {exc})", flush=True)
        return
    kind = "fallback list" if listed["is_fallback"].any() else "personal list"
    print(
        f"\nRecommendations for {user_id} ({kind}, from the online store):\n{listed.drop(columns=['is_fallback']).to_string(index=False)}",
        flush=True,
    )
    print(f"\nSearch {query!r}:\n{hits.to_string(index=False)}", flush=True)


def _print_demand(settings: Settings) -> None:
    """The demo's demand proof: the backtest table, where the plan is, one plan row read online."""
    import pandas as pd

    from ml.models import demand
    from ml.models.lifecycle import outputs

    try:
        backtest = demand.latest_backtest(settings)
        plan_file = outputs.source_path(settings, demand.PLAN_OUTPUT)
        plan = pd.read_parquet(plan_file)
        busiest = plan.sort_values("forecast_units", ascending=False).head(1)
        online = demand.plan_online(settings, list(zip(busiest["item_id"], busiest["warehouse_id"])))
    except Exception as exc:  # noqa: BLE001 - the demo reports it and goes on to print where to look
        print(f"\n(demand forecast not available: {type(exc).__name__}: {exc})", flush=True)
        return
    if backtest is not None:
        overall, test, report = backtest
        cols = [c for c in ("wape", "mase", "bias", "coverage", "n_series") if c in overall.columns]
        print(f"\nDemand backtest (rolling origin, all origins; report {report}):\n{overall[cols].to_string()}", flush=True)
    cols = [
        "item_id",
        "warehouse_id",
        "forecast_units",
        "lead_time_days",
        "safety_stock",
        "reorder_point",
        "order_up_to",
        "inventory_position",
        "suggested_order_units",
        "projected_stockout_date",
    ]
    print(
        f"\nInventory plan: {len(plan):,} item x warehouse rows in {outputs.scores_root(settings, demand.PLAN_OUTPUT)}; "
        f"the busiest series, read online (Feast view {demand.PLAN_VIEW}):\n"
        f"{online[[c for c in cols if c in online.columns]].round(2).to_string(index=False)}",
        flush=True,
    )


def run_chain(
    client: AirflowClient,
    conf: dict | None = None,
    timeout: float = 900.0,
    echo: Callable[[str], None] | None = print,
    models: bool = False,
) -> dict[str, dict]:
    """Unpause the chain, trigger the ingest DAG with ``conf``, wait until the Asset-scheduled
    warehouse and feature-store runs it causes have succeeded; with ``models``, also the training
    run and the scoring run that follows its promotion. Returns {dag_id: run}."""
    say = echo or (lambda _msg: None)
    dags = CHAIN + (MODEL_DAGS if models else ())
    client.wait_for_dags(dags)
    for dag_id in dags:
        client.set_paused(dag_id, False)
    started = datetime.now(timezone.utc)
    deadline = time.monotonic() + timeout
    run = client.trigger(INGEST_DAG, conf=conf)
    say(f"triggered {INGEST_DAG} run {run['dag_run_id']}")
    runs = {INGEST_DAG: client.wait_for_run(INGEST_DAG, run["dag_run_id"], timeout=timeout)}
    say(f"  {INGEST_DAG}: {runs[INGEST_DAG]['state']}")
    for dag_id in (WAREHOUSE_DAG, FEATURE_STORE_DAG):
        left = max(deadline - time.monotonic(), 30)
        runs[dag_id] = client.wait_for_run(dag_id, after=started, timeout=left)
        say(f"  {dag_id}: {runs[dag_id]['state']} ({runs[dag_id]['dag_run_id']})")
    for train_dag, score_dag in MODEL_DAG_PAIRS if models else ():
        left = max(deadline - time.monotonic(), 30)
        runs[train_dag] = client.wait_for_run(train_dag, after=started, timeout=left)
        say(f"  {train_dag}: {runs[train_dag]['state']} ({runs[train_dag]['dag_run_id']})")
        # the scoring run queued by the training run's promotion event (one queued by the feature
        # store may have run before, with the previous champion or none)
        trained = datetime.fromisoformat(runs[train_dag]["end_date"].replace("Z", "+00:00"))
        left = max(deadline - time.monotonic(), 30)
        runs[score_dag] = client.wait_for_run(score_dag, after=trained - timedelta(seconds=5), timeout=left)
        say(f"  {score_dag}: {runs[score_dag]['state']} ({runs[score_dag]['dag_run_id']})")
    return runs


def demo(settings: Settings, scale: str | None = None, keep_running: bool = False, timeout: float = 1800.0) -> int:
    """``make demo`` through Airflow: start a local Airflow, run ingest(generate) -> warehouse ->
    feature store, print the UI address and login; then stop (the runs stay in AIRFLOW_HOME for
    `ecomml airflow standalone`) or, with ``keep_running``, keep serving until Ctrl-C."""
    scale = scale or settings.scale
    airflow = LocalAirflow(settings)
    print(f"starting Airflow (AIRFLOW_HOME={airflow.home}, log {airflow.log_path}) ...", flush=True)
    airflow.start()
    try:
        user, password = airflow.credentials()
        print(f"Airflow UI: {airflow.url}   login: {user} / {password}", flush=True)
        runs = run_chain(airflow.client(), conf={"generate_scale": scale}, timeout=timeout, models=True)
        run_ids = "\n                    ".join(f"{d}: {r['dag_run_id']}" for d, r in runs.items())
        from ml.models.lifecycle.report import list_reports

        reports = [r for r in list_reports(settings) if r["model"] == "propensity_lgbm"]
        recs_reports = [r for r in list_reports(settings) if r["model"] == "recs_widedeep"]
        user_id = sample_user(settings)
        _print_recs_and_search(settings, user_id)
        _print_demand(settings)
        print(
            f"\nDone: {' -> '.join(runs)} succeeded.\n"
            f"  Airflow UI        {airflow.url}  (login {user} / {password})\n"
            f"  runs              {run_ids}\n"
            f"  warehouse         {settings.warehouse_path}\n"
            f"  model report      {reports[0]['path'] if reports else '(none)'}   (all: .venv/bin/ecomml models reports)\n"
            f"  recs report       {recs_reports[0]['path'] if recs_reports else '(none)'}\n"
            f"  recommendations   .venv/bin/ecomml recs show {user_id}   (online, one get_online_features call)\n"
            f'  product search    .venv/bin/ecomml recs search "<query>"\n'
            f"  MLflow UI         .venv/bin/ecomml models ui   then open http://127.0.0.1:5000 ({settings.mlflow_tracking_uri})\n"
            f"  batch scores      {settings.scores_dir}  (inventory plan: demand_plan/forecast_date=*)\n"
            f"  online features   .venv/bin/ecomml features online --service propensity_lgbm_v3 --entity user_id={user_id}\n"
            f"  online score      .venv/bin/ecomml features online --service propensity_scores_v1 --entity user_id={user_id}",
            flush=True,
        )
        if not keep_running:
            print(
                f"  browse the runs   .venv/bin/ecomml airflow standalone   then open {airflow.url} (login {user} / {password})",
                flush=True,
            )
        if keep_running:
            print("Airflow keeps running; Ctrl-C stops it.", flush=True)
            while airflow.proc is not None and airflow.proc.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        airflow.stop()
    return 0
