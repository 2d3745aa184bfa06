"""MLflow tracking + model registry: the one module that knows where runs and model artifacts live.

    with training_run(settings, "propensity_lgbm", params, feature_service, features, snapshot) as run:
        mlflow.log_metrics(...)                        # or log_metrics(...) below: drops NaN values
        version = log_model(booster, "propensity_lgbm", flavor="lightgbm")
        decision = promote_if_not_worse(settings, "propensity_lgbm", version.version, "roc_auc", 0.71,
                                        tolerance=0.005, champion_value=champion_on_same_test_rows)
    model, version = load_champion(settings, "propensity_lgbm")    # ModelLoadError when it cannot

Backend: ``settings.mlflow_tracking_uri`` serves as tracking *and* registry URI (SQLite by default;
for ``postgresql+psycopg://`` URIs the database is created when missing). Runs go to experiment
``settings.mlflow_experiment``, created with artifact location ``settings.mlflow_artifact_root``, so
model files live under ``<artifact_root>/models/<model id>/artifacts`` (MLflow 3 logged models).
Every public function points MLflow (and its process-global fluent API) at the given settings
first, so settings for different data directories can follow each other in one process.

The champion is the version holding alias ``champion``. ``promote_if_not_worse`` moves the alias
only when the challenger is not worse than the champion (within a tolerance) and records every
decision on the challenger's run (tags ``decision``, ``promoted``, ``decision.reason`` and the
artifact ``decision.json``) and on its model version (tags ``decision*`` and ``metric.<name>``).

MLflow telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY=true``) before MLflow is imported; note
that MLflow honours ``DO_NOT_TRACK`` only when it reads ``true``, not ``1``.

Speed: model requirements are pinned from the installed packages instead of MLflow's inference
(which re-imports the model in a subprocess, seconds per model), and no input example is logged
unless given (MLflow would save it and re-run the model on it). A fresh SQLite backend costs one
schema migration (~4 s); later runs find the tables and skip it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ml import quiet
from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
FLAVORS = ("lightgbm", "pytorch", "sklearn")
MODEL_ARTIFACT = "model"
# Set (unless already in the environment) before MLflow is imported. Telemetry: MLflow reads
# MLFLOW_DISABLE_TELEMETRY, or DO_NOT_TRACK but only as "true" (mlflow/telemetry/utils.py), when
# `import mlflow` runs. MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK: MLflow would run `pip install --dry-run`
# (network) when a model's requirements name a package twice. Progress bars only clutter task logs.
MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# Packages (pip names) a logged model of each flavor needs, pinned to the installed versions.
_FLAVOR_PACKAGES = {
    "lightgbm": ("lightgbm", "numpy", "pandas", "scipy"),
    "pytorch": ("torch", "numpy", "cloudpickle"),
    "sklearn": ("scikit-learn", "numpy", "scipy", "skops"),
}
_DATABASES_READY: set[str] = set()
_TELEMETRY_CHECKED = False
_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


class ModelLoadError(RuntimeError):
    """The champion cannot be loaded: no registered model, no champion alias, or a broken artifact."""


@dataclass
class Decision:
    promoted: bool
    reason: str
    challenger_value: float | None
    champion_version: str | None
    champion_value: float | None
    model_name: str = ""
    version: str = ""
    metric: str = ""
    higher_is_better: bool = True
    tolerance: float = 0.0
    champion_value_source: str | None = None  # "given" (re-scored by the caller) | "logged"
    decided_at: str = ""


# --- setup -----------------------------------------------------------------------------------------


def _mlflow():
    """Import MLflow with telemetry off (an explicit MLFLOW_DISABLE_TELEMETRY in the environment wins)."""
    for name, value in MLFLOW_ENV.items():
        os.environ.setdefault(name, value)
    import mlflow

    quiet.mlflow()
    global _TELEMETRY_CHECKED
    if not _TELEMETRY_CHECKED:
        # MLflow decides at import time; if something imported it before the switch was set, redo it.
        from mlflow.telemetry import get_telemetry_client, set_telemetry_client
        from mlflow.telemetry.utils import is_telemetry_disabled

        if get_telemetry_client() is not None and is_telemetry_disabled():
            set_telemetry_client()  # drops the client
        _TELEMETRY_CHECKED = True
    return mlflow


def _ensure_database(uri: str) -> None:
    """SQLite: create the file's folder. PostgreSQL: create the database (on the server's ``postgres`` DB)."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    elif scheme.startswith("postgresql") and uri not in _DATABASES_READY:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        url = make_url(uri)
        engine = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as con:
                exists = con.execute(sa.text("select 1 from pg_database where datname = :name"), {"name": url.database}).scalar()
                if not exists:
                    quoted = engine.dialect.identifier_preparer.quote_identifier(url.database)
                    try:
                        con.execute(sa.text(f"create database {quoted}"))
                        log.info("created PostgreSQL database %s for MLflow", url.database)
                    except sa.exc.ProgrammingError as exc:  # created concurrently by another process
                        if "already exists" not in str(exc):
                            raise
        finally:
            engine.dispose()
        _DATABASES_READY.add(uri)


def _experiment_id(mlflow_client: "MlflowClient", settings: Settings) -> str:
    from mlflow.exceptions import MlflowException

    name = settings.mlflow_experiment
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        root = Path(settings.mlflow_artifact_root)
        root.mkdir(parents=True, exist_ok=True)
        try:
            return mlflow_client.create_experiment(name, artifact_location=root.as_uri())
        except MlflowException:  # created concurrently
            experiment = mlflow_client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def client(settings: Settings) -> "MlflowClient":
    """An MlflowClient on ``settings.mlflow_tracking_uri`` (tracking + registry), experiment ensured.

    Also points MLflow's fluent API (``mlflow.log_metric``, ``mlflow.start_run``) at the same URI
    (MLflow's process-global URI; the MLFLOW_*_URI environment variables are left untouched).
    """
    mlflow = _mlflow()
    uri = settings.mlflow_tracking_uri
    _ensure_database(uri)
    # mlflow.set_*_uri also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, which Settings reads:
    # keep the process environment as it was so later Settings() see their own configuration.
    saved = {name: os.environ.get(name) for name in _URI_VARIABLES}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    mlflow_client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    _experiment_id(mlflow_client, settings)
    return mlflow_client


# --- training runs -------------------------------------------------------------------------------


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, (list, dict, tuple)) else str(value)
    return text[:6000]


@contextmanager
def training_run(
    settings: Settings,
    model_name: str,
    params: dict,
    feature_service: str,
    features: list[str],
    snapshot: dict,
    run_name: str | None = None,
    tags: dict | None = None,
) -> Iterator["Run"]:
    """An active MLflow run in the settings' experiment; ends FAILED if the block raises.

    Logs ``params``; tags model_name, feature_service, n_features (and ``snapshot.<key>`` for the
    snapshot's scalar values); artifacts ``features.json`` (service + feature list) and
    ``snapshot.json`` (what the data looked like: lake checksum, max event_timestamp, row counts).
    """
    mlflow = _mlflow()
    mlflow_client = client(settings)
    experiment_id = _experiment_id(mlflow_client, settings)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run_tags = {
        "model_name": model_name,
        "feature_service": feature_service,
        "n_features": str(len(features)),
        **{f"snapshot.{k}": _param_value(v)[:5000] for k, v in (snapshot or {}).items() if not isinstance(v, (dict, list, tuple))},
        **{k: _param_value(v) for k, v in (tags or {}).items()},
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name or f"{model_name}-{stamp}", tags=run_tags) as run:
        if params:
            mlflow.log_params({str(k): _param_value(v) for k, v in params.items()})
        mlflow.log_dict({"feature_service": feature_service, "features": list(features)}, "features.json")
        mlflow.log_dict(json.loads(json.dumps(snapshot or {}, default=str)), "snapshot.json")
        yield run


def log_metrics(metrics: dict, prefix: str = "", step: int | None = None) -> dict[str, float]:
    """Log the finite numeric values of ``metrics`` on the active run (NaN/None/non-numbers skipped).
    Names MLflow rejects are spelled out: ``recall@10`` is logged as ``recall_at_10``."""
    mlflow = _mlflow()
    finite = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            finite[f"{prefix}{key}".replace("@", "_at_")] = number
    if finite:
        mlflow.log_metrics(finite, step=step)
    return finite


def _pinned(packages: tuple[str, ...]) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")  # drop local labels (torch +cpu)
        except PackageNotFoundError:
            continue
    return pins


def _requirements(flavor: str, model: Any, flavor_kwargs: dict) -> list[str]:
    packages = list(_FLAVOR_PACKAGES[flavor])
    if flavor == "lightgbm":
        import lightgbm as lgb

        if not isinstance(model, lgb.Booster):  # sklearn wrapper: serialized by the sklearn machinery
            fmt = flavor_kwargs.get("serialization_format", "skops")
            packages += ["scikit-learn", "skops" if fmt == "skops" else "cloudpickle"]
    return _pinned(tuple(dict.fromkeys(packages)))


def _input_signature(frame) -> Any:
    """The input schema of a sample of the model's input frame (cheap: no prediction, no example)."""
    import warnings

    from mlflow.models import infer_signature

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return infer_signature(frame.head(100))
    except Exception as exc:  # noqa: BLE001 - a schema is documentation, never a reason to fail training
        log.warning("no model signature: %s", exc)
        return None


def log_model(
    model: Any,
    model_name: str,
    flavor: str,
    *,
    signature: Any = None,
    input_example: Any = None,
    pip_requirements: list[str] | None = None,
    tags: dict | None = None,
    **flavor_kwargs,
) -> "ModelVersion":
    """Log ``model`` with MLflow's ``flavor`` on the active training run and register it as a new
    version of ``model_name``. Returns the ModelVersion (tags flavor, model_class, feature_service).

    Must run inside ``training_run``. ``signature`` may be an MLflow ModelSignature or a sample of
    the input frame (its schema is inferred; no input example is stored unless ``input_example``
    is given, as MLflow would then re-run the model on it). ``flavor_kwargs`` go to
    ``mlflow.<flavor>.log_model`` (e.g. ``serialization_format``). PyTorch models are pickled
    (``serialization_format="pickle"``) unless the caller asks for "pt2" (which needs an input example).
    """
    import importlib

    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    mlflow = _mlflow()
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("registry.log_model must be called inside registry.training_run(...)")
    module = importlib.import_module(f"mlflow.{flavor}")
    if type(signature).__name__ == "DataFrame":
        signature = _input_signature(signature)
    if flavor == "pytorch":
        # MLflow 3 defaults to "pt2" (torch.export: needs an input example, static shapes); a pickled
        # module loads back as the same nn.Module class (which must stay importable, e.g. from ml.models).
        flavor_kwargs.setdefault("serialization_format", "pickle")
    with quiet.registered_quietly():
        info = module.log_model(
            model,
            name=MODEL_ARTIFACT,
            registered_model_name=model_name,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements or _requirements(flavor, model, flavor_kwargs),
            **flavor_kwargs,
        )
    mlflow_client = mlflow.MlflowClient()  # the run's URIs (training_run set them)
    version = str(info.registered_model_version)
    version_tags = {
        "flavor": flavor,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "feature_service": run.data.tags.get("feature_service", ""),
        **{k: _param_value(v) for k, v in (tags or {}).items()},
    }
    for key, value in version_tags.items():
        mlflow_client.set_model_version_tag(model_name, version, key, value)
    return mlflow_client.get_model_version(model_name, version)


def log_report(settings: Settings, path: Path, run_id: str | None = None) -> None:
    """Attach an HTML report (``path`` and the files beside it) to a run under ``report/`` and tag the
    run ``report`` = its local path: the active training run, or ``run_id`` once that run has ended."""
    if run_id is None:
        mlflow = _mlflow()
        mlflow.log_artifacts(str(Path(path).parent), artifact_path="report")
        mlflow.set_tag("report", str(path))
        return
    mlflow_client = client(settings)
    mlflow_client.log_artifacts(run_id, str(Path(path).parent), artifact_path="report")
    mlflow_client.set_tag(run_id, "report", str(path))


# --- promotion -------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def champion(settings: Settings, model_name: str) -> "ModelVersion | None":
    """The version holding the champion alias, or None (no registered model or no alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def _logged_value(mlflow_client: "MlflowClient", version: "ModelVersion", metric: str) -> float | None:
    """The champion's own metric: the value recorded at its promotion, else its run's metric
    (``<metric>`` or ``test_<metric>``)."""
    recorded = _number(version.tags.get(f"metric.{metric}"))
    if recorded is not None or not version.run_id:
        return recorded
    metrics = mlflow_client.get_run(version.run_id).data.metrics
    for key in (metric, f"test_{metric}", f"test.{metric}"):
        if _number(metrics.get(key)) is not None:
            return _number(metrics[key])
    return None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def promote_if_not_worse(
    settings: Settings,
    model_name: str,
    version: str | int,
    metric: str,
    value: float | None,
    higher_is_better: bool = True,
    tolerance: float = 0.0,
    champion_value: float | None = None,
    losses: list[str] | None = None,
) -> Decision:
    """Make ``version`` the champion unless it is worse than the current one beyond ``tolerance``,
    or it loses to a plain reference: ``losses`` (one line per lost comparison, e.g. "repeats:
    recall 0.15 < own_history 0.16") keeps it from promotion whatever the champion.

    Higher-is-better metrics promote when ``value >= champion_value - tolerance`` (lower-is-better:
    ``value <= champion_value + tolerance``). No champion: promote. A missing/NaN challenger value:
    never promote. ``champion_value`` is the champion re-scored on the challenger's test rows (the
    fair comparison); without it the champion's logged metric is used, and a champion without one
    is not replaced (pass ``champion_value``). The decision is logged on the challenger's run and
    model version whatever it is; the alias moves only when promoted.
    """
    mlflow_client = client(settings)
    version = str(version)
    challenger = mlflow_client.get_model_version(model_name, version)
    current = champion(settings, model_name)
    challenger_value = _number(value)
    champion_version = str(current.version) if current is not None else None
    compared, source = None, None
    if challenger_value is None:
        promoted, reason = False, f"challenger v{version} has no finite {metric} ({value!r}): not promoted"
    elif losses:
        promoted, reason = False, f"v{version} loses to its plain references ({'; '.join(losses)}): not promoted"
    elif current is None:
        promoted, reason = True, f"no champion yet: v{version} ({metric} {_fmt(challenger_value)}) promoted"
    elif champion_version == version:
        promoted, reason = True, f"v{version} is already the champion"
    else:
        if champion_value is not None:
            compared, source = _number(champion_value), "given"
        else:
            compared, source = _logged_value(mlflow_client, current, metric), "logged"
        if compared is None:
            promoted = False
            reason = (
                f"champion v{champion_version} has no comparable {metric} ({source} value {champion_value!r}); "
                f"v{version} not promoted (pass champion_value, the champion scored on the same test rows)"
            )
        else:
            delta = challenger_value - compared if higher_is_better else compared - challenger_value
            promoted = delta >= -tolerance
            direction = "higher" if higher_is_better else "lower"
            verdict = "not worse, promoted" if promoted else "worse beyond tolerance, not promoted"
            reason = (
                f"{metric} v{version} {_fmt(challenger_value)} vs champion v{champion_version} {_fmt(compared)} "
                f"({source}; {direction} is better, tolerance {tolerance:g}, difference {delta:+.4f}): {verdict}"
            )
    decision = Decision(
        promoted=promoted,
        reason=reason,
        challenger_value=challenger_value,
        champion_version=champion_version,
        champion_value=compared,
        model_name=model_name,
        version=version,
        metric=metric,
        higher_is_better=higher_is_better,
        tolerance=float(tolerance),
        champion_value_source=source,
        decided_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if promoted:
        mlflow_client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    _record(mlflow_client, challenger, decision)
    log.info("%s: %s", model_name, reason)
    return decision


def _record(mlflow_client: "MlflowClient", version: "ModelVersion", decision: Decision) -> None:
    label = "promoted" if decision.promoted else "rejected"
    tags = {
        "decision": label,
        "decision.reason": decision.reason[:5000],
        "decision.metric": decision.metric,
        "decision.champion_version": decision.champion_version or "",
    }
    if decision.challenger_value is not None:
        mlflow_client.set_model_version_tag(
            decision.model_name, decision.version, f"metric.{decision.metric}", repr(decision.challenger_value)
        )
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(decision.model_name, decision.version, key, value)
    if version.run_id:
        for key, value in {**tags, "promoted": str(decision.promoted).lower()}.items():
            mlflow_client.set_tag(version.run_id, key, value)
        mlflow_client.log_text(version.run_id, json.dumps(asdict(decision), indent=2), "decision.json")


# --- loading -----------------------------------------------------------------------------------------


def _flavor_of(version: "ModelVersion", location: str) -> str:
    flavor = version.tags.get("flavor")
    if flavor:
        return flavor
    from mlflow.models import Model

    flavors = Model.load(location).flavors  # versions registered outside log_model
    for name in FLAVORS:
        if name in flavors:
            return name
    raise ValueError(f"no supported flavor among {sorted(flavors)}")


def load_champion(settings: Settings, model_name: str, alias: str = CHAMPION_ALIAS, **load_kwargs) -> tuple[Any, "ModelVersion"]:
    """The champion model (native object of its flavor, e.g. a LightGBM Booster) and its ModelVersion.

    Raises ModelLoadError naming the model, the version and the cause when there is no registered
    model, no version with the alias, or its artifact is missing or does not load.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    try:
        mlflow_client.get_registered_model(model_name)
    except MlflowException as exc:
        raise ModelLoadError(f"no registered model {model_name!r} in {settings.mlflow_tracking_uri}: train one first") from exc
    try:
        version = mlflow_client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise ModelLoadError(f"model {model_name!r} has no {alias!r} version yet (nothing promoted)") from exc
    return _load(mlflow_client, model_name, version, alias, **load_kwargs), version


def load_version(settings: Settings, model_name: str, version: str | int, **load_kwargs) -> Any:
    """One registered version's model, promoted or not (a challenger the gate refused, an old one);
    ModelLoadError as ``load_champion``."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    try:
        found = mlflow_client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise ModelLoadError(f"model {model_name!r} has no version {version}") from exc
    return _load(mlflow_client, model_name, found, f"version {version}", **load_kwargs)


def _load(mlflow_client: "MlflowClient", model_name: str, version: "ModelVersion", label: str, **load_kwargs) -> Any:
    import importlib

    location = "?"
    try:
        location = mlflow_client.get_model_version_download_uri(model_name, version.version)
        flavor = _flavor_of(version, location)
        module = importlib.import_module(f"mlflow.{flavor}")
        return module.load_model(location, **load_kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure to load is the same failure to the caller
        raise ModelLoadError(
            f"cannot load {model_name!r} version {version.version} ({label}) from {location}: {type(exc).__name__}: {exc}"
        ) from exc


def artifact_dir(settings: Settings, version: "ModelVersion") -> Path:
    """The local folder holding a registered version's model files (file artifact stores only)."""
    from urllib.parse import urlparse

    uri = client(settings).get_model_version_download_uri(version.name, version.version)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{version.name} version {version.version} lives in {uri}, not a local folder")
    return Path(parsed.path)
