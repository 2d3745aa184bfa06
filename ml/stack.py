"""The production stack of docker-compose.yaml: the file read the way Docker Compose reads it, its
one-shot init (``ecomml stack init``), its secrets (``ecomml stack secrets``).

Docker Compose's variable interpolation is reproduced (``interpolate``: ``$$``, ``${VAR}``,
``${VAR:-default}``, ``${VAR:?error}``, ``${VAR:+alt}`` and their colon-less forms), so a service's
environment and command are exactly what its container would get (``service_environment``,
``service_command``), and "compose refuses to start without a secret" holds for the parsed file.

``NativeStack`` (tests/support/native_stack.py) starts the same processes natively on one machine,
from the same environment variables, for the tests and benchmarks where no Docker engine runs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

from ml.settings import PROJECT_ROOT, Secrets, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"

# Secrets compose refuses to start without (${VAR:?...}); `ecomml stack secrets` generates them.
REQUIRED_SECRETS = (
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_ADMIN_PASSWORD",
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "FEAST_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "REDIS_PASSWORD",
)
OPTIONAL_SECRETS = tuple(name.upper() for name in Secrets.model_fields)  # PSEUDONYMIZE_KEY

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
WORKER = "airflow-worker"
SERVERS = ("mlflow", "feast-server", "feast-ui")
# container port of each server, as the compose file's commands and health checks name it
CONTAINER_PORTS = {"airflow-apiserver": 8080, "mlflow": 5000, "feast-server": 6566, "feast-ui": 8888}
SCHEDULER_HEALTH_PORT = 8974


# --------------------------------------------------------------------------------------------------
# The compose file as Docker Compose reads it
# --------------------------------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(KeyError):
    """``${VAR:?message}`` with VAR unset or empty: compose stops with the message."""


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's interpolation of one string."""

    def substitute(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = variables.get(name)
        unset, empty = value is None, not value
        if op is None:
            return value or ""
        if op in (":-", "-"):
            return arg if (empty if op == ":-" else unset) else value
        if op in (":?", "?"):
            if empty if op == ":?" else unset:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return "" if (empty if op == ":+" else unset) else arg  # :+ / +

    return _VARIABLE.sub(substitute, text)


def variables_used(text: str) -> list[tuple[str, str | None]]:
    """(name, operator) of every ${...}/$VAR reference in a text ($$ skipped)."""
    return [(m.group("name") or m.group("bare"), m.group("op")) for m in _VARIABLE.finditer(text) if not m.group("escaped")]


def interpolate_tree(node, variables):
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, variables) for value in node]
    return node


def load_compose(path: Path = COMPOSE_FILE) -> dict:
    """docker-compose.yaml as parsed (anchors and merge keys applied), before interpolation."""
    import yaml

    return yaml.safe_load(Path(path).read_text())


def resolved_compose(variables: dict[str, str], path: Path = COMPOSE_FILE) -> dict:
    """The file as compose sees it with these variables (a missing required one raises MissingVariable)."""
    return interpolate_tree(load_compose(path), variables)


def as_mapping(environment) -> dict[str, str]:
    """A service's ``environment`` (mapping or NAME=value list) as {name: value}."""
    if environment is None:
        return {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def service_environment(service: str, variables: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, str]:
    """A service's container environment (interpolated)."""
    return as_mapping(resolved_compose(variables, path)["services"][service].get("environment"))


def service_command(service: str, variables: dict[str, str], path: Path = COMPOSE_FILE) -> list[str]:
    """A service's command as argv (interpolated). This project's file uses compose's list form; a
    string command is split on whitespace (no shell quoting)."""
    command = resolved_compose(variables, path)["services"][service].get("command") or []
    return command.split() if isinstance(command, str) else list(command)


def generate_secrets() -> dict[str, str]:
    """A fresh value for every required secret (what docs/deployment.md tells you to generate)."""
    from cryptography.fernet import Fernet

    out = {name: secrets.token_hex(32) for name in REQUIRED_SECRETS}
    out["AIRFLOW_FERNET_KEY"] = Fernet.generate_key().decode()
    out["AIRFLOW_JWT_SECRET"] = secrets.token_hex(64)  # HS512 wants >= 64 bytes
    return out


# --------------------------------------------------------------------------------------------------
# The one-shot init (the airflow-init service)
# --------------------------------------------------------------------------------------------------


def init(settings: Settings, env: dict[str, str] | None = None, echo=print) -> dict[str, dict[str, int]]:
    """What the airflow-init container runs (as AIRFLOW_UID), with Airflow's configuration from the
    environment (CeleryExecutor, PostgreSQL) rather than the laptop's: `airflow db migrate`, the
    pools (created at 1 slot when missing; an operator's resize survives, except the DuckDB writer
    pool, which is forced back to 1), dbt's manifest, and the Feast registry's tables (created once
    here: concurrent first starts of the Feast services would collide). Idempotent."""
    from ml.features.repo import get_store
    from ml.orchestration.local_airflow import setup
    from ml.orchestration.tasks import parse

    env = dict(os.environ) if env is None else env
    pools = setup(settings, env=env, manifest=False)
    parse(settings, echo=None)
    _ = get_store(settings).registry  # built lazily: creating it creates the SQL registry's tables
    if echo:
        echo(f"stack init: metadata migrated, pools {json.dumps(pools)}, dbt manifest written, Feast registry ready")
    return {"pools": pools}


# --------------------------------------------------------------------------------------------------
# The stack run natively
# --------------------------------------------------------------------------------------------------
