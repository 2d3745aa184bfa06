"""Online serving: read a feature service's latest values for entities, in process (SDK) or over HTTP.

    get_online_features(settings_or_store, "propensity_lgbm_v1", {"user_id": "u0000001"})
        -> {"user_id": ["u0000001"], "order_count_lifetime": [3], ..., "days_since_last_order_now": [3.7]}
    proc = serve(settings, "127.0.0.1", 6566)       # `feast serve` subprocess (HTTP feature server)
    wait_ready("http://127.0.0.1:6566", proc)
    get_online_features_http("http://127.0.0.1:6566", "propensity_lgbm_v1", [{"user_id": "u0000001"}])
    stop(proc)
    proc = ui(settings, "127.0.0.1", 8888)          # `feast ui` subprocess (registry browser)

Both paths read what materialization loaded into the online store (SQLite in embedded mode, Redis
in production mode): per view, the latest row per entity. An unknown entity gets nulls, never an
error. On-demand views reading ``request_timestamp`` (``user_recency_now``) are computed against
the request time: the row's own ``request_timestamp`` when it has one, else ``request_time``, else
now (UTC). The result is columnar, one list per column, join keys first and then the service's
features in the service's order, one value per entity row in the order given.

``serve``/``ui`` run Feast's own servers (``feast -c <repo> -f <rendered yaml> serve|ui``) with the
settings' environment, exactly as ``ml.features.repo.run_feast`` does, so Airflow tasks and compose
services start them the same way. Feast is imported inside functions only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore

REQUEST_TIMESTAMP = "request_timestamp"
DEFAULT_PORT = 6566  # Feast's default feature-server port
DEFAULT_UI_PORT = 8888  # Feast's default UI port


class ServingError(ValueError):
    """A request cannot be served: unknown service, missing join key, null key, bad request time."""


# --------------------------------------------------------------------------------------------------
# SDK
# --------------------------------------------------------------------------------------------------

_STORES: dict[tuple[str, str, str], "FeatureStore"] = {}
# Per store: {service name: (loaded_at, service, requirements)}; refreshed like Feast's registry cache.
_SERVICES: "weakref.WeakKeyDictionary[FeatureStore, dict]" = weakref.WeakKeyDictionary()


def open_store(settings: Settings) -> "FeatureStore":
    """A FeatureStore for these settings, opened once per process and configuration, then reused.

    Opening a store reads the registry (tens of ms); a server or scoring loop should open it once.
    """
    from ml.features.repo import get_store, write_config

    cfg = write_config(settings)
    key = (str(settings.feast_repo_dir), str(cfg), cfg.read_text())
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = get_store(settings)
    return store


def _store(settings_or_store: "Settings | FeatureStore") -> "FeatureStore":
    return open_store(settings_or_store) if isinstance(settings_or_store, Settings) else settings_or_store


def _service(store: "FeatureStore", name: str) -> tuple[Any, dict]:
    """(FeatureService, {"join_keys", "request_fields", "features"}), cached for the registry's TTL."""
    from ml.features.training import TrainingSetError, service_requirements

    cache = _SERVICES.setdefault(store, {})
    hit = cache.get(name)
    ttl = getattr(store.config.registry, "cache_ttl_seconds", 60) or 60
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1], hit[2]
    try:
        needs = service_requirements(store, name)
    except TrainingSetError as exc:
        raise ServingError(str(exc)) from None
    service = store.get_feature_service(name, allow_cache=True)
    cache[name] = (time.monotonic(), service, needs)
    return service, needs


def _utc(value: Any, what: str) -> datetime:
    """A tz-aware UTC datetime from a datetime (naive = UTC), pandas Timestamp, ISO string or epoch seconds."""
    if isinstance(value, datetime):  # also pandas.Timestamp
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        try:
            return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")), what)
        except ValueError:
            pass
    raise ServingError(f"{what} must be a datetime, an ISO 8601 string or epoch seconds, got {value!r}")


def _rows(entity_rows: "list[dict] | dict") -> list[Mapping]:
    if isinstance(entity_rows, Mapping):
        return [entity_rows]
    rows = list(entity_rows)
    if not all(isinstance(r, Mapping) for r in rows):
        raise ServingError("entity_rows must be a dict (one entity) or a list of dicts")
    return rows


def entity_columns(needs: dict, entity_rows: "list[dict] | dict", request_time: Any = None) -> dict[str, list]:
    """Columnar entity data for Feast: the service's join keys (strings, checked) and request fields.

    ``request_timestamp`` is taken from each row, else ``request_time``, else now (UTC). Extra keys
    in a row are ignored.
    """
    rows = _rows(entity_rows)
    join_keys, request_fields = needs["join_keys"], needs["request_fields"]
    columns: dict[str, list] = {k: [] for k in [*join_keys, *request_fields]}
    default_time = None
    for i, row in enumerate(rows):
        for key in join_keys:
            value = row.get(key)
            if value is None:
                raise ServingError(f"entity row {i} lacks join key {key!r} (the service needs {join_keys})")
            if not isinstance(value, str):
                raise ServingError(f"join key {key!r} must be a string (the marts' keys are varchar), got {value!r}")
            columns[key].append(value)
        for name in request_fields:
            value = row.get(name)
            if value is None and name != REQUEST_TIMESTAMP:
                raise ServingError(f"entity row {i} lacks request field {name!r} needed by an on-demand view")
            if value is None:
                if default_time is None:
                    default_time = _utc(request_time, "request_time") if request_time is not None else datetime.now(timezone.utc)
                value = default_time
            else:
                value = _utc(value, name) if name == REQUEST_TIMESTAMP else value
            columns[name].append(value)
    return columns


def get_online_features(
    settings_or_store: "Settings | FeatureStore",
    feature_service: "str | list[str] | tuple[str, ...]",
    entity_rows: "list[dict] | dict",
    request_time: Any = None,
    full_feature_names: bool = False,
) -> dict[str, list]:
    """The latest values of ``feature_service``'s features for each entity row, from the online store:
    the platform's one online read (the CLI, the recommender's lists, the re-ranker, the demand plan).

    ``feature_service`` is a service name, or a list of ``view:feature`` refs (a score view read as it
    is, e.g. a user's stored list and the user features a re-ranker needs, in one call): then the rows
    go to Feast as given and the answer holds the join keys and every ref's feature.

    ``entity_rows``: one dict or a list of dicts holding the service's join keys (``user_id``;
    ``item_id`` + ``warehouse_id``); other keys are ignored. ``request_time`` (datetime, ISO string
    or epoch seconds; default now) fills ``request_timestamp`` for on-demand views where a row has
    none. Returns ``{column: [value per row]}``: join keys, then features in the service's order
    (``view__feature`` names with ``full_feature_names``). Missing entities yield None values.
    Pass a FeatureStore (or reuse settings: the store is opened once) to keep latency low.
    """
    store = _store(settings_or_store)
    if not isinstance(feature_service, str):
        rows = [dict(r) for r in _rows(entity_rows)]
        if not rows:
            return {}
        return store.get_online_features(features=list(feature_service), entity_rows=rows, full_feature_names=full_feature_names).to_dict()
    service, needs = _service(store, feature_service)
    columns = entity_columns(needs, entity_rows, request_time)
    names = _output_names(service, needs, full_feature_names)
    if not _rows(entity_rows):
        return {name: [] for name in names}
    response = store.get_online_features(features=service, entity_rows=columns, full_feature_names=full_feature_names)
    result = response.to_dict()
    return {name: result[name] for name in names}


def _output_names(service: Any, needs: dict, full_feature_names: bool) -> list[str]:
    names = list(needs["join_keys"])
    for projection in service.feature_view_projections:
        for feature in projection.features:
            names.append(f"{projection.name_to_use()}__{feature.name}" if full_feature_names else feature.name)
    return names


# --------------------------------------------------------------------------------------------------
# HTTP: Feast's feature server (`feast serve`) and UI (`feast ui`)
# --------------------------------------------------------------------------------------------------


def _log_path(settings: Settings, name: str) -> Path:
    path = Path(settings.data_dir) / "feast" / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _spawn(settings: Settings, args: list[str], log_name: str, log_path: Path | None) -> subprocess.Popen:
    from ml.features.repo import feast_command, feast_env, write_config

    cfg = write_config(settings)
    cmd = [*feast_command(), "-c", str(settings.feast_repo_dir), "-f", str(cfg), *args]
    log = Path(log_path) if log_path else _log_path(settings, log_name)
    with open(log, "ab") as out:  # the child keeps its own handle
        proc = subprocess.Popen(
            cmd,
            env=feast_env(settings),
            cwd=str(settings.feast_repo_dir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends gunicorn's workers too
        )
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def exec_foreground(settings: Settings, args: list[str]) -> None:
    """Replace this process with ``feast <args>`` on the rendered configuration (a container's main
    process: signals reach Feast directly). Never returns."""
    from ml.features.repo import feast_command, feast_env, write_config

    cmd = [*feast_command(), "-c", str(settings.feast_repo_dir), "-f", str(write_config(settings)), *args]
    os.chdir(settings.feast_repo_dir)
    os.execve(cmd[0], cmd, feast_env(settings))


def server_args(host: str, port: int, workers: int = 1, access_log: bool = False, registry_ttl_sec: int = 60) -> list[str]:
    args = ["serve", "-h", host, "-p", str(port), "-w", str(workers), "-r", str(registry_ttl_sec)]
    return args if access_log else [*args, "--no-access-log"]


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 1,
    access_log: bool = False,
    registry_ttl_sec: int = 60,
    log_path: Path | None = None,
) -> subprocess.Popen:
    """Start Feast's HTTP feature server (``feast serve``) on the rendered configuration; the process.

    Returns at once: call ``wait_ready(url, proc)`` before sending requests and ``stop(proc)`` after.
    Output goes to ``log_path`` (default ``$DATA_DIR/feast/logs/serve-<port>.log``). ``workers`` > 1
    runs gunicorn workers (one process group; ``stop`` ends them all). The server re-reads the
    registry every ``registry_ttl_sec`` seconds, so a new ``apply`` is picked up without a restart.
    """
    return _spawn(settings, server_args(host, port, workers, access_log, registry_ttl_sec), f"serve-{port}.log", log_path)


def ui(settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_UI_PORT, log_path: Path | None = None) -> subprocess.Popen:
    """Start Feast's web UI (``feast ui``): the registry (views, services, entities) in a browser.

    Its REST API lists the registry as JSON, e.g. ``GET /api/v1/feature_views?project=<project>``.
    """
    return _spawn(settings, ["ui", "-h", host, "-p", str(port)], f"ui-{port}.log", log_path)


def log_tail(proc: subprocess.Popen, lines: int = 30) -> str:
    path = getattr(proc, "log_path", None)
    if not path or not Path(path).exists():
        return ""
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0, path: str = "/health") -> None:
    """Poll ``url + path`` until it answers 200; raise RuntimeError (with the log tail) on exit or timeout."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"feast server exited with {proc.returncode} before {url} was ready:\n{log_tail(proc)}")
        try:
            with urllib.request.urlopen(url.rstrip("/") + path, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            tail = log_tail(proc) if proc is not None else ""
            raise RuntimeError(f"{url}{path} not ready after {timeout:.0f} s\n{tail}")
        time.sleep(0.25)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """Stop a server started by ``serve``/``ui``: SIGTERM to its process group, SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return proc.poll()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(timeout=timeout)


def http_request_body(
    feature_service: str,
    entity_rows: "list[dict] | dict",
    request_time: Any = None,
    join_keys: Iterable[str] | None = None,
    request_fields: Iterable[str] = (REQUEST_TIMESTAMP,),
    full_feature_names: bool = False,
) -> dict:
    """The JSON body of ``POST /get-online-features`` for these rows (columnar ``entities``).

    ``join_keys`` default to the keys of the first row other than the request fields.
    ``request_timestamp`` goes as an ISO 8601 string, filled like the SDK does. Feast ignores
    request fields a service does not use.
    """
    rows = _rows(entity_rows)
    fields = list(request_fields)
    keys = list(join_keys) if join_keys is not None else [k for k in (rows[0] if rows else {}) if k not in fields]
    needs = {"join_keys": keys, "request_fields": fields}
    columns = entity_columns(needs, rows, request_time)
    if REQUEST_TIMESTAMP in columns:
        columns[REQUEST_TIMESTAMP] = [t.isoformat() for t in columns[REQUEST_TIMESTAMP]]
    return {"feature_service": feature_service, "entities": columns, "full_feature_names": full_feature_names}


def parse_http_response(payload: dict) -> dict[str, list]:
    """Feast's ``/get-online-features`` JSON -> ``{column: [value per row]}`` like the SDK's result.

    The response holds ``metadata.feature_names`` and one ``results`` entry per column (join keys
    first) with ``values`` (one per row), ``statuses`` and ``event_timestamps``. Values are kept as
    JSON gives them: a UnixTimestamp feature is epoch seconds (an int) where the SDK gives a datetime.
    """
    names = payload["metadata"]["feature_names"]
    out: dict[str, list] = {}
    for name, column in zip(names, payload["results"]):
        out[name] = column["values"]
    return out


def get_online_features_http(
    url: str,
    feature_service: str,
    entity_rows: "list[dict] | dict",
    request_time: Any = None,
    session: Any = None,
    timeout: float = 10.0,
    **body_options: Any,
) -> dict[str, list]:
    """``POST {url}/get-online-features`` for these rows; ``{column: [value per row]}``.

    ``session``: a ``requests.Session`` to reuse connections (keep-alive) across calls. Values are as
    JSON gives them: UnixTimestamp features are epoch seconds here, datetimes in the SDK.
    """
    import requests

    body = http_request_body(feature_service, entity_rows, request_time, **body_options)
    poster = session or requests
    resp = poster.post(
        url.rstrip("/") + "/get-online-features", data=json.dumps(body), timeout=timeout, headers={"Content-Type": "application/json"}
    )
    if resp.status_code != 200:
        raise ServingError(f"feature server answered {resp.status_code}: {resp.text[:500]}")
    return parse_http_response(resp.json())
