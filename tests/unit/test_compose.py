"""The production stack's files, checked without Docker: docker-compose.yaml, the Dockerfile,
.dockerignore and .env.example against the settings module (ml/settings.py), the pools and the native
Airflow configuration (ml.orchestration), Airflow's own option names, and the security rules of
docs/deployment.md (secrets required and never committed, internal services unpublished, login on).

Compose's variable interpolation is reproduced in ml/stack.py (``interpolate``), so "compose refuses
to start without a secret" is checked on the parsed file. Where a Docker Compose CLI is installed,
``docker compose config`` checks the same file too (skipped otherwise). The same processes run
natively against PostgreSQL and Redis in tests/e2e/test_production_stack.py (tests/support/native_stack.py).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import runpy
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from ml import stack
from ml.orchestration import local_airflow
from ml.settings import PROJECT_ROOT, TELEMETRY_OFF, Secrets, Settings, settings_for
from ml.stack import COMPOSE_FILE, MissingVariable, as_mapping, interpolate, load_compose, variables_used

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DEPLOYMENT_DOC = PROJECT_ROOT / "docs" / "deployment.md"

# The official Airflow 3 compose layout, and what the platform adds to it.
OFFICIAL_LAYOUT = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
PLATFORM_SERVERS = {"feast-server", "feast-ui", "mlflow"}
ONE_SHOT = {"airflow-init", "airflow-cli"}  # run to completion: no health check
PUBLISHED = {"airflow-apiserver": 8080}  # the only service with a host port: container port
# Secrets compose must refuse to start without (${VAR:?...}); optional ones may be empty.
REQUIRED_SECRETS = set(stack.REQUIRED_SECRETS)
OPTIONAL_SECRETS = set(stack.OPTIONAL_SECRETS)  # PSEUDONYMIZE_KEY
SECRET_LIKE = re.compile(r"PASSWORD|SECRET|_KEY$|TOKEN|FERNET")
# Container environment names that are neither a setting, a secret, a telemetry switch nor an Airflow
# option: the images' own variables, per service ("*": any service).
OTHER_ENV = {
    "*": {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE"},
    "postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "FEAST_DB_PASSWORD", "MLFLOW_DB_PASSWORD"},
    "redis": {"REDIS_PASSWORD"},
    "airflow-init": {"AIRFLOW_UID"},
    "airflow-apiserver": {"AIRFLOW_ADMIN_PASSWORD"},
    "mlflow": {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_SERVER_ALLOWED_HOSTS"},
}
# `[celery]` comes with apache-airflow-providers-celery; these are the options this file uses, for
# when the provider is not installed where the test runs.
CELERY_OPTIONS = {"broker_url", "result_backend", "worker_concurrency"}
# What ml.orchestration.local_airflow.airflow_env() sets, and how the compose file relates to it.
NATIVE_SAME = {  # equal values
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
    "AIRFLOW__CORE__PARALLELISM",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC",
    "AIRFLOW__LOGGING__LOGGING_LEVEL",
    "PYTHONDONTWRITEBYTECODE",
}
NATIVE_RELOCATED = {"AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW_HOME", "PYTHONPATH"}  # same thing, container path
NATIVE_PRODUCTION = {  # replaced on purpose (docs/deployment.md): expected compose value, None = not set
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": re.compile(r"postgresql\+psycopg://airflow:[^@]+@postgres:5432/airflow"),
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-apiserver:8080/execution/",
    "AIRFLOW__API__PORT": None,  # Airflow's default 8080 inside the container
    "AIRFLOW__API__HOST": None,  # Airflow's default 0.0.0.0 inside the container; the host port is loopback
    "AIRFLOW__API__WORKERS": None,
    "AIRFLOW__API__BASE_URL": None,
    "PATH": None,  # the image's
}
PINNED_IMAGE = re.compile(r"^[\w.\-/]+:(?!latest\b)v?\d+(\.\d+)+[\w.\-]*(@sha256:[0-9a-f]{64})?$")


# Values standing in for a filled-in .env: every required secret set (hex, as the docs generate them).
SAMPLE_VARIABLES = {name: f"{i:02d}" + "0123456789abcdef" * 2 for i, name in enumerate(sorted(REQUIRED_SECRETS))}


def resolved_compose(variables: dict[str, str] | None = None) -> dict:
    """The file as compose sees it with these variables (default: the sample secrets)."""
    return stack.resolved_compose(SAMPLE_VARIABLES if variables is None else variables)


def compose_environment(service: str, variables: dict[str, str] | None = None) -> dict[str, str]:
    return stack.service_environment(service, SAMPLE_VARIABLES if variables is None else variables)


def _raw_environment(service: dict) -> dict[str, str]:
    return as_mapping(service.get("environment"))


def _command_text(service: dict) -> str:
    command = service.get("command") or ""
    return command if isinstance(command, str) else "\n".join(command)


def _mounts(service: dict) -> dict[str, str]:
    """{container path: source} of a service's volumes."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, target = volume.split(":")[:2]
            mounts[target] = source
    return mounts


def _under(path: Path | str, root: str) -> bool:
    return PurePosixPath(str(path)).is_relative_to(PurePosixPath(root))


def _strings(node) -> list[str]:
    """Every string value of a parsed YAML tree (comments are not values)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def _compose_variables() -> list[tuple[str, str | None]]:
    return [ref for text in _strings(load_compose()) for ref in variables_used(text)]


def _settings_env(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.lower() in Settings.model_fields}


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No settings from the developer's shell or .env leak into Settings built by a test."""
    monkeypatch.chdir(tmp_path)
    for name in [*Settings.model_fields, *Secrets.model_fields]:
        monkeypatch.delenv(name.upper(), raising=False)
    for name in list(os.environ):
        if name.startswith("AIRFLOW__"):
            monkeypatch.delenv(name)
    return tmp_path


def service_settings(env: dict[str, str]) -> Settings:
    return settings_for(**{key.lower(): value for key, value in _settings_env(env).items()})


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def resolved() -> dict:
    return resolved_compose()["services"]


def _platform_services(services) -> list[str]:
    """Services running the project's image (and so reading the settings module)."""
    return [name for name, service in services.items() if "build" in service]


def _airflow_services(services) -> list[str]:
    return [name for name, service in services.items() if "AIRFLOW__CORE__EXECUTOR" in _raw_environment(service)]


def _dockerfile() -> str:
    return DOCKERFILE.read_text()


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in _dockerfile().splitlines() if not line.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip()
    ]


def _app_dir() -> str:
    workdirs = [args.strip() for instr, args in _dockerfile_instructions() if instr == "WORKDIR"]
    assert workdirs, "the Dockerfile sets no WORKDIR"
    return workdirs[-1]


def _pyproject() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def _env_example() -> tuple[dict[str, str], set[str]]:
    """({NAME: value} of the uncommented lines, every NAME listed, commented or not)."""
    text = ENV_EXAMPLE.read_text()
    active = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.M))
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.M))
    return active, listed


# --------------------------------------------------------------------------------------------------
# The file itself: parses, the layout, images
# --------------------------------------------------------------------------------------------------


def test_interpolation_follows_compose():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("$$HOME ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:+alt}", env) == "$HOME v v d d  alt"
    assert interpolate("${SET:?no}", env) == "v"
    for text in ("${UNSET:?must be set}", "${EMPTY:?must be set}", "${UNSET?must be set}"):
        with pytest.raises(MissingVariable):
            interpolate(text, env)


def test_compose_parses_into_the_official_layout_plus_feast_and_mlflow(compose, services):
    assert OFFICIAL_LAYOUT | PLATFORM_SERVERS <= set(services)
    assert "version" not in compose  # obsolete in the Compose specification
    resolved_compose()  # every variable reference is well formed and resolvable with the secrets set
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
        assert service.get("network_mode") != "host", f"{name}: host networking bypasses the internal network"


def test_images_are_pinned_or_built_from_the_dockerfile(services):
    project = _pyproject()["project"]
    own = f"{project['name']}:{project['version']}"
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service:
            build = service["build"]
            assert build.get("context", ".") == "." and build.get("dockerfile", "Dockerfile") == "Dockerfile", name
            assert image == own, f"{name}: the project's image is tagged {own} (pyproject), not {image!r}"
        else:
            assert PINNED_IMAGE.match(image), f"{name}: image {image!r} is not pinned to a version"
    assert len({services[n]["image"] for n in _platform_services(services)}) == 1  # one image for the platform


def test_no_install_at_container_start():
    for path in (COMPOSE_FILE, DOCKERFILE):
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in path.read_text(), path.name
    for name, service in load_compose()["services"].items():
        assert "pip install" not in _command_text(service), f"{name} installs packages when it starts"


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------


def test_every_required_secret_is_interpolated_with_an_error():
    used = _compose_variables()
    names = {name for name, _ in used}
    assert REQUIRED_SECRETS <= names, f"not used: {sorted(REQUIRED_SECRETS - names)}"
    for name, op in used:
        if name in REQUIRED_SECRETS:
            assert op == ":?", f"${{{name}}} is referenced with {op or 'no operator'}: use ${{{name}:?message}}"


@pytest.mark.parametrize("secret", sorted(REQUIRED_SECRETS))
def test_compose_refuses_to_start_without_each_secret(secret):
    for missing in ({k: v for k, v in SAMPLE_VARIABLES.items() if k != secret}, {**SAMPLE_VARIABLES, secret: ""}):
        with pytest.raises(MissingVariable, match=secret):
            resolved_compose(missing)


def test_every_secret_like_variable_is_a_known_secret():
    for name, _ in _compose_variables():
        if SECRET_LIKE.search(name):
            assert name in REQUIRED_SECRETS | OPTIONAL_SECRETS, (
                f"${{{name}}} looks like a secret: add it to REQUIRED_SECRETS (${{{name}:?...}})"
            )


def test_sensitive_airflow_options_come_from_required_secrets(services):
    sensitive = {
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
    }
    for name in _airflow_services(services):
        env = _raw_environment(services[name])
        for option in sensitive:
            assert option in env, f"{name}: {option} not set (Airflow would generate one per container)"
            assert any(f"${{{secret}:?" in env[option] for secret in REQUIRED_SECRETS), f"{name}: {option} holds no required secret"


def test_no_literal_password_in_a_url():
    for user_info in (u for text in _strings(load_compose()) for u in re.findall(r"://([^/@\s'\"]*)@", text)):
        if ":" in user_info:
            password = user_info.split(":", 1)[1]
            assert password.startswith("${") and password.endswith("}"), f"literal password in a URL: {user_info}"


def test_env_example_holds_placeholders_only():
    active, listed = _env_example()
    for secret in REQUIRED_SECRETS:
        assert secret in active, f".env.example lacks {secret}="
        assert active[secret] == "", f"{secret} must be empty in .env.example (compose then refuses to start until it is set)"
    for secret in OPTIONAL_SECRETS:
        assert not active.get(secret), f"{secret} must not have a value in .env.example"
    text = ENV_EXAMPLE.read_text()
    looks_real = re.compile(r"(?<![A-Za-z0-9_\-])(?:[A-Za-z0-9_\-]{43}=|[0-9a-fA-F]{32,}|[A-Za-z0-9+/]{40,}={0,2})(?![A-Za-z0-9])")
    assert not looks_real.findall(text), f"something in .env.example looks like a real key: {looks_real.findall(text)}"


def test_env_example_lists_every_compose_variable():
    _, listed = _env_example()
    used = {name for name, _ in _compose_variables()}
    assert used <= listed, f"compose variables missing from .env.example: {sorted(used - listed)}"


def test_dockerignore_keeps_secrets_and_state_out_of_the_build_context():
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".env", ".git", ".venv", "data"} <= ignored


# --------------------------------------------------------------------------------------------------
# Consistency with the settings module and the native Airflow configuration
# --------------------------------------------------------------------------------------------------


def _airflow_option_names() -> set[tuple[str, str]]:
    """(section, option) of Airflow core and of the installed providers (read without importing Airflow)."""
    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations
    config = yaml.safe_load((Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml").read_text())
    names = {(section, option) for section, body in config.items() for option in (body.get("options") or {})}
    for dist in importlib.metadata.distributions():
        dist_name = (dist.metadata["Name"] or "").lower()
        if dist_name.startswith("apache-airflow-providers-"):
            module = "airflow/providers/" + dist_name.removeprefix("apache-airflow-providers-").replace("-", "/") + "/get_provider_info.py"
            path = Path(dist.locate_file(module))
            if path.exists():
                info = runpy.run_path(str(path))["get_provider_info"]()
                names |= {(s, o) for s, body in (info.get("config") or {}).items() for o in (body.get("options") or {})}
    if not any(section == "celery" for section, _ in names):
        names |= {("celery", option) for option in CELERY_OPTIONS}
    return names


def test_every_environment_name_is_a_setting_or_a_known_option(services):
    """Catches typos: a misspelt setting would be ignored silently by pydantic and by Airflow."""
    settings = {name.upper() for name in Settings.model_fields}
    airflow_options = _airflow_option_names()
    for name, service in services.items():
        for key in _raw_environment(service):
            if key in settings or key in OPTIONAL_SECRETS or key in TELEMETRY_OFF:
                continue
            if key.startswith("AIRFLOW__"):
                parts = key.split("__")
                assert len(parts) == 3, f"{name}: {key} is not AIRFLOW__SECTION__OPTION"
                section, option = parts[1].lower(), parts[2].lower()
                base = re.sub(r"_(cmd|secret)$", "", option)  # AIRFLOW__X__Y_CMD / _SECRET variants
                assert (section, option) in airflow_options or (section, base) in airflow_options, f"{name}: {key} is not an Airflow option"
                continue
            assert key in OTHER_ENV["*"] | OTHER_ENV.get(name, set()), (
                f"{name}: {key} is neither a field of ml.settings.Settings nor a known variable"
            )


def test_settings_of_every_platform_service_validate_and_agree(services, resolved, isolated):
    envs = {name: _settings_env(as_mapping(resolved[name].get("environment"))) for name in _platform_services(services)}
    for name, env in envs.items():
        if name == "mlflow":
            continue  # the tracking server reads no settings
        settings = service_settings(env)  # raises on a value Settings refuses
        assert settings.feast_mode == "production", name
        assert urlsplit(settings.mlflow_tracking_uri).hostname in services, name
    reference = envs["airflow-worker"]
    for name in _airflow_services(services) + ["feast-server", "feast-ui"]:
        assert envs[name] == reference, f"{name} sees other settings than the workers"


def test_paths_are_the_images_and_the_volumes(services, resolved, isolated):
    app = _app_dir()
    copied = {args.split()[-1].rstrip("/") for instr, args in _dockerfile_instructions() if instr == "COPY"}
    for name in _airflow_services(services):
        service = resolved[name]
        settings = service_settings(as_mapping(service.get("environment")))
        mounts = _mounts(service)
        for field in (
            "lake_dir",
            "landing_dir",
            "quarantine_dir",
            "warehouse_path",
            "features_dir",
            "exports_dir",
            "scores_dir",
            "reports_dir",
            "airflow_home",
            "mlflow_artifact_root",
            "privacy_ledger_path",
        ):
            path = getattr(settings, field)
            assert any(_under(path, target) for target in mounts), (
                f"{name}: {field}={path} is on no volume: lost with the container, unseen by other workers"
            )
        assert _under(settings.lake_dir, "/data/lake") and mounts.get("/data/lake"), f"{name}: the lake has no volume of its own"
        assert _under(settings.warehouse_path, "/data/warehouse") and mounts.get("/data/warehouse"), name
        for path in (
            settings.dbt_project_dir,
            settings.dbt_profiles_dir,
            settings.feast_repo_dir,
            as_mapping(service["environment"])["AIRFLOW__CORE__DAGS_FOLDER"],
        ):
            relative = PurePosixPath(str(path)).relative_to(app)
            assert f"./{relative.parts[0]}" in copied or relative.parts[0] in copied, f"{name}: {path} is not copied by the Dockerfile"
    mount_sets = {name: sorted(_mounts(services[name]).items()) for name in _airflow_services(services)}
    assert len({tuple(m) for m in mount_sets.values()}) == 1, f"Airflow services mount different data: {mount_sets}"


def test_urls_name_compose_services_and_the_databases_init_creates(compose, resolved):
    init_sql = compose["configs"]["postgres-init"]["content"]
    databases = set(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", init_sql))
    roles = set(re.findall(r"CREATE ROLE (\w+)", init_sql))
    for name, service in resolved.items():
        for key, value in as_mapping(service.get("environment")).items():
            if "://" not in value or key == "MLFLOW_SERVER_ALLOWED_HOSTS":
                continue
            url = urlsplit(value.removeprefix("db+"))
            assert url.hostname in resolved, f"{name}: {key} points at {url.hostname}, not a compose service"
            if url.scheme.startswith("postgresql"):
                assert (url.path.lstrip("/"), url.username) in databases, f"{name}: {key}: database/role not created by postgres-init"
    getenv = set(re.findall(r"\\getenv \w+ (\w+)", init_sql))
    assert getenv <= set(_raw_environment(compose["services"]["postgres"])), "postgres-init reads variables postgres is not given"
    assert roles == {owner for _, owner in databases}


def test_init_runs_the_stack_init_as_the_compose_user_and_every_service_names_the_same_pools(services, resolved, isolated):
    command = _command_text(services["airflow-init"])
    # ml.stack.init: `airflow db migrate` + ensure_pools + parse + the Feast registry, with this
    # environment's Airflow configuration (PostgreSQL, CeleryExecutor), as AIRFLOW_UID
    assert re.search(r'exec setpriv --reuid="\$\$uid" --regid=0 --clear-groups ecomml stack init\s*$', command), command
    created = set(local_airflow.pools(service_settings(as_mapping(resolved["airflow-init"]["environment"]))))
    assert len(created) == 3
    for name in _airflow_services(services):  # the DAGs read the pool names from the same settings
        assert set(local_airflow.pools(service_settings(as_mapping(resolved[name]["environment"])))) == created, name


def _ecomml_commands(text: str) -> list[list[str]]:
    """The `ecomml <group> <command>` calls in a service's command (list or shell text)."""
    return [re.findall(r"[\w-]+", m) for m in re.findall(r"\becomml((?:\s+\"?[a-z][\w-]*\"?,?){1,2})", text)]


def test_commands_call_cli_commands_that_exist(services):
    import typer.main

    from ml.cli import app

    cli = typer.main.get_command(app)
    seen = 0
    for name, service in services.items():
        command = service.get("command") or ""
        text = " ".join(command) if isinstance(command, list) else command
        for words in _ecomml_commands(text):
            node = cli
            for word in words:
                if not hasattr(node, "commands"):
                    break
                assert word in node.commands, f"{name}: `ecomml {' '.join(words)}`: no command {word!r}"
                node = node.commands[word]
            assert not hasattr(node, "commands"), f"{name}: `ecomml {' '.join(words)}` is a group, not a command"
            seen += 1
    assert seen >= 3  # stack init, features serve, features ui


def test_airflow_configuration_mirrors_the_native_one(services, isolated):
    """Every variable ml.orchestration.local_airflow.airflow_env() sets is either the same in compose, the same
    thing at a container path, or a documented production substitution."""
    variables = {**SAMPLE_VARIABLES, "AIRFLOW_PARALLELISM": "3"}  # both sides must follow the variable
    for name in _airflow_services(services):
        env = compose_environment(name, variables)
        settings = service_settings(env)
        native = local_airflow.airflow_env(settings, port=8080)
        own = {k for k, v in native.items() if k not in settings.as_env() and k not in OPTIONAL_SECRETS and os.environ.get(k) != v}
        unclassified = own - NATIVE_SAME - NATIVE_RELOCATED - set(NATIVE_PRODUCTION)
        assert not unclassified, f"airflow_env() sets {sorted(unclassified)}: decide their production value in docker-compose.yaml"
        for key in NATIVE_SAME:
            assert env.get(key) == native[key], f"{name}: {key}={env.get(key)!r}, natively {native[key]!r}"
        assert PurePosixPath(env["AIRFLOW__CORE__DAGS_FOLDER"]).relative_to(_app_dir()) == PurePosixPath(
            Path(native["AIRFLOW__CORE__DAGS_FOLDER"]).relative_to(PROJECT_ROOT).as_posix()
        )
        assert env["AIRFLOW_HOME"] == str(settings.airflow_home)
        assert env["PYTHONPATH"] == _app_dir()
        for key, expected in NATIVE_PRODUCTION.items():
            if expected is None:
                assert key not in env, f"{name}: {key} is set; the production stack leaves it to the image/Airflow"
            elif isinstance(expected, str):
                assert env.get(key) == expected, f"{name}: {key}={env.get(key)!r}"
            else:
                assert expected.fullmatch(env.get(key, "")), f"{name}: {key}={env.get(key)!r}"


def test_telemetry_is_off_everywhere_the_platform_runs(services, resolved):
    for name in _platform_services(services):
        env = as_mapping(resolved[name].get("environment"))
        assert {k: env.get(k) for k in TELEMETRY_OFF} == TELEMETRY_OFF, name


# --------------------------------------------------------------------------------------------------
# Network, scaling, health
# --------------------------------------------------------------------------------------------------


def _published(service: dict) -> list[tuple[str, str, int]]:
    """(host address, host port, container port) of a service's published ports."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip", "0.0.0.0"), str(port.get("published", "")), int(port["target"])))
            continue
        parts = str(port).rsplit(":", 2)
        parts = ["0.0.0.0"] * (3 - len(parts)) + parts
        out.append((parts[0], parts[1], int(parts[2].split("/")[0])))
    return out


def test_only_the_airflow_api_publishes_a_port_and_on_loopback_by_default(resolved):
    for name, service in resolved.items():
        if name in PUBLISHED:
            assert [c for _, _, c in _published(service)] == [PUBLISHED[name]], name
            assert all(address == "127.0.0.1" for address, _, _ in _published(service)), f"{name}: published beyond loopback by default"
        else:
            assert not service.get("ports"), f"{name} publishes {service['ports']}: internal network only (docs/deployment.md)"


def test_workers_scale(services):
    worker = services["airflow-worker"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"airflow-worker sets {key}: `--scale airflow-worker=N` would collide"
    assert "celery" in _command_text(worker) and "worker" in _command_text(worker)


def test_long_running_services_have_health_checks(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} runs once"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"


def test_dependencies_wait_for_health(services):
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must use conditions, not a list"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            expected = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert (spec or {}).get("condition") == expected, f"{name} -> {target}: condition must be {expected}"
    for name in _airflow_services(services):
        if name not in ONE_SHOT:
            assert "airflow-init" in services[name].get("depends_on", {}), f"{name} starts before the migration"


def test_authentication_is_on(services):
    api = services["airflow-apiserver"]
    env = _raw_environment(api)
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(("SimpleAuthManager", "FabAuthManager"))
    assert env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False").lower() == "false"
    assert env["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    assert "AIRFLOW_ADMIN_PASSWORD" in _command_text(api) and "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in _command_text(api)
    password_file = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert not any(_under(password_file, target) for target in _mounts(api)), "the password file is on a shared volume"
    for name, service in services.items():
        if name != "airflow-apiserver":
            assert "AIRFLOW_ADMIN_PASSWORD" not in _raw_environment(service), f"{name} receives the admin password"


# --------------------------------------------------------------------------------------------------
# The Dockerfile
# --------------------------------------------------------------------------------------------------


def test_dockerfile_base_is_a_pinned_python_of_the_project():
    bases = [args.split()[0] for instr, args in _dockerfile_instructions() if instr == "FROM"]
    assert len(bases) == 1 and PINNED_IMAGE.match(bases[0]), bases
    python = re.match(r"python:(\d+)\.(\d+)\.\d+-slim", bases[0])
    assert python, f"{bases[0]}: expected python:X.Y.Z-slim..."
    assert f">={python[1]}.{python[2]}" in _pyproject()["project"]["requires-python"]


def test_dockerfile_installs_the_pinned_requirements_like_make_install():
    runs = [args for instr, args in _dockerfile_instructions() if instr == "RUN"]
    assert any(re.search(r"pip install .*-r requirements\.txt -c constraints\.txt", run) for run in runs)
    assert any(re.search(r"pip install .*--no-deps .*-e \.", run) for run in runs)
    torch = re.search(r"^torch==(\S+)", (PROJECT_ROOT / "requirements.txt").read_text(), flags=re.M)
    assert torch, "requirements.txt pins torch"
    cpu = [run for run in runs if "download.pytorch.org/whl/cpu" in run]
    assert cpu, "torch must come from PyTorch's CPU index (PyPI's is the CUDA build)"
    assert any(f"torch=={torch[1]}" in run or "^torch==" in run for run in cpu), (
        "the CPU index step must install requirements.txt's torch pin"
    )
    assert runs.index(cpu[0]) < next(i for i, r in enumerate(runs) if "-r requirements.txt" in r), "torch (CPU) must be installed first"


def test_dockerfile_runs_as_the_compose_user_with_telemetry_off(services):
    instructions = _dockerfile_instructions()
    text = _dockerfile()
    user = [args for instr, args in instructions if instr == "USER"]
    assert user and not re.match(r"(root|0)(:|$)", user[-1].strip()), "the image must not run as root"
    uid = re.search(r"ARG AIRFLOW_UID=(\d+)", text)
    compose_user = services["airflow-worker"]["user"]
    assert uid and compose_user == f"${{AIRFLOW_UID:-{uid[1]}}}:0", (compose_user, uid and uid[1])
    env_text = " ".join(args for instr, args in instructions if instr == "ENV")
    for key, value in {**TELEMETRY_OFF, "HF_HUB_OFFLINE": "1"}.items():
        assert re.search(rf"(^|\s){re.escape(key)}={re.escape(value)}(\s|$)", env_text), f"ENV {key}={value} missing"
    copied = {args.split()[-1].rstrip("/") for instr, args in instructions if instr == "COPY"}
    assert {"./ml", "./dags", "./dbt_project", "./feature_repo"} <= copied


# --------------------------------------------------------------------------------------------------
# The documented way to expose Feast and MLflow, and Compose itself where it is installed
# --------------------------------------------------------------------------------------------------


def test_documented_override_exposes_internal_services_on_loopback(services):
    blocks = re.findall(r"```yaml\n(.*?)```", DEPLOYMENT_DOC.read_text(), flags=re.S)
    overrides = [yaml.safe_load(block) for block in blocks if "services:" in block]
    exposed = {}
    for override in overrides:
        for name, service in override["services"].items():
            assert name in services, f"docs/deployment.md overrides unknown service {name}"
            for address, _, container in _published(stack.interpolate_tree(service, {})):
                exposed[name] = container
                assert address == "127.0.0.1", f"{name}: the documented override publishes beyond loopback"
    assert {"feast-server", "mlflow"} <= set(exposed), "docs/deployment.md must show how to expose Feast and MLflow"


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return [shutil.which("docker-compose")]
    return None


def test_docker_compose_config_accepts_the_file_and_refuses_missing_secrets(tmp_path):
    command = _docker_compose()
    if command is None:
        pytest.skip("Docker Compose is not installed; the checks above cover the file without it")
    base = [*command, "--project-directory", str(PROJECT_ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(tmp_path / "empty.env")]
    (tmp_path / "empty.env").write_text("")
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED_SECRETS}
    ok = subprocess.run([*base, "config", "--quiet"], env={**clean, **SAMPLE_VARIABLES}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([*base, "config", "--quiet"], env=clean, capture_output=True, text=True)
    assert missing.returncode != 0 and any(s in missing.stderr for s in REQUIRED_SECRETS), missing.stderr
