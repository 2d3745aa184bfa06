"""The Feast repo: render its configuration from the settings, check it, apply it, open the store.

feature_repo/ holds the definitions (entities, generated sources and views, on-demand views,
services) and two configuration TEMPLATES with ``${VAR}`` placeholders: ``feature_store.yaml``
(embedded) and ``feature_store.production.yaml``. Nothing is written into feature_repo/ at run time:
the chosen template is rendered from ``Settings.as_env()`` into ``$DATA_DIR/feast/feature_store.yaml``
and every Feast call points at that file (``feast -c feature_repo -f <rendered>``).

    generate(settings)           regenerate data_sources.py / feature_views.py from dbt's manifest
    check_contract(settings)     [] when feature_repo/ matches the manifest, else the problems
    validate_sources(settings)   the Parquet marts exist, are non-empty, have the view's columns and
                                 types, no null keys, no duplicate (keys, event_timestamp); raises
                                 SourceValidationError naming view and file
    apply(settings) / plan(settings)   `feast apply` / `feast plan` as a subprocess (Airflow-safe)
    get_store(settings)          a FeatureStore on the rendered configuration
    list_feature_services(settings)    {service: ["view:feature", ...]} from the registry

Feast is imported inside functions only (``import feast`` takes seconds; DAG files import this).
From a shell: ``ecomml features {generate,check,validate,apply,plan,services}``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import unquote, urlparse

from ml import quiet
from ml.features import contract
from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore

TIMESTAMP_FIELD = "event_timestamp"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class FeastCommandError(RuntimeError):
    """A feast subprocess failed; ``output`` holds its combined stdout/stderr."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


class SourceValidationError(ValueError):
    """A feature mart cannot be served as declared; ``problems`` names each view, file and defect."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def config_path(settings: Settings) -> Path:
    """Where the rendered feature_store.yaml for these settings lives."""
    return settings.data_dir / "feast" / "feature_store.yaml"


def template_path(settings: Settings) -> Path:
    name = "feature_store.yaml" if settings.feast_mode == "embedded" else f"feature_store.{settings.feast_mode}.yaml"
    return Path(settings.feast_repo_dir) / name


def redis_connection_string(url: str) -> str:
    """``redis://[:password@]host:port/db`` -> Feast's ``host:port,db=N[,password=...][,ssl=true]``."""
    if "://" not in url:  # already in Feast's format
        return url
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must be redis:// or rediss://, got {url!r}")
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = (parsed.path or "/").strip("/")
    parts.append(f"db={int(db) if db else 0}")
    if parsed.username and parsed.username != "default":
        parts.append(f"username={unquote(parsed.username)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def render_context(settings: Settings) -> dict[str, str]:
    """The values placeholders are filled from: ``settings.as_env()`` plus the derived Redis string."""
    return {**settings.as_env(), "FEAST_REDIS_CONNECTION_STRING": redis_connection_string(settings.redis_url)}


def render_config(settings: Settings, template: str | None = None) -> str:
    """The template with every ``${VAR}`` replaced by its value, YAML-quoted.

    Like Feast's own expansion, an unknown variable stays literally ``${VAR}`` (the tests check
    none remain for either mode).
    """
    text = template if template is not None else template_path(settings).read_text()
    values = render_context(settings)

    def fill(match: re.Match) -> str:
        name = match.group(1)
        return json.dumps(values[name]) if name in values else match.group(0)

    return _PLACEHOLDER.sub(fill, text)


def write_config(settings: Settings) -> Path:
    """Render the configuration into ``config_path(settings)`` (mode 0600: it may hold a password)."""
    text = render_config(settings)
    left = _PLACEHOLDER.findall(text)
    if left:
        raise ValueError(f"{template_path(settings)}: no setting for ${{{left[0]}}}")
    path = config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if settings.feast_mode == "embedded":
        Path(settings.feast_registry_path).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.feast_online_path).parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return path


def feast_env(settings: Settings) -> dict[str, str]:
    """The environment of a feast subprocess: ours plus the settings (FEATURES_DIR etc.), telemetry off."""
    return {**os.environ, **settings.as_env()}


# --------------------------------------------------------------------------------------------------
# Contract (dbt manifest <-> feature_repo/)
# --------------------------------------------------------------------------------------------------


def manifest_path(settings: Settings) -> Path:
    from ml.warehouse import target_path

    return target_path(settings) / "manifest.json"


def _manifest(settings: Settings, manifest: dict | None) -> dict:
    if manifest is not None:
        return manifest
    path = manifest_path(settings)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run dbt (ml.warehouse.build or `dbt parse`) first")
    return json.loads(path.read_text())


def generate(settings: Settings, manifest: dict | None = None) -> list[Path]:
    """Regenerate feature_repo/{data_sources,feature_views}.py from dbt's manifest; the changed files."""
    return contract.write_files(_manifest(settings, manifest), Path(settings.feast_repo_dir))


def check_contract(settings: Settings, manifest: dict | None = None) -> list[str]:
    """[] when feature_repo/ matches dbt's manifest, else readable problems (view, column, change)."""
    return contract.check_repo(_manifest(settings, manifest), Path(settings.feast_repo_dir))


# --------------------------------------------------------------------------------------------------
# Source validation (the Parquet marts Feast reads)
# --------------------------------------------------------------------------------------------------

# feast.types name -> DuckDB column types a Parquet mart may have for it.
_COMPATIBLE = {
    "Int64": ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT"),
    "Int32": ("INTEGER", "SMALLINT", "TINYINT", "USMALLINT", "UTINYINT"),
    "Float64": ("DOUBLE", "FLOAT", "DECIMAL"),
    "Float32": ("FLOAT", "DOUBLE", "DECIMAL"),
    "String": ("VARCHAR",),
    "Bool": ("BOOLEAN",),
    "UnixTimestamp": ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"),
    "Bytes": ("BLOB",),
}


def source_file(settings: Settings, dbt_model: str) -> Path:
    return Path(settings.features_dir) / f"{dbt_model}.parquet"


def views_allowed_empty(settings: Settings) -> set[str]:
    """Feature views whose mart may be empty for this dataset: the mart's dbt meta
    ``requires_lake_tables`` names a lake table the dataset does not have (e.g. the clickstream
    views of an orders-only lake). Every other empty mart is an error."""
    from ml.contract import lake_status

    tables = lake_status(settings.lake_dir).get("tables", {})
    absent = {name for name, status in tables.items() if not status.get("present")}
    if not absent or not manifest_path(settings).exists():
        return set()
    needs = {
        n["name"]: set((n.get("config", {}).get("meta") or n.get("meta") or {}).get("requires_lake_tables") or [])
        for n in _manifest(settings, None)["nodes"].values()
        if n.get("resource_type") == "model"
    }
    specs = contract.read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")
    return {view for view, spec in specs.items() if needs.get(spec.dbt_model or view, set()) & absent}


def validate_sources(
    settings: Settings,
    views: Iterable[str] | None = None,
    allow_empty: Iterable[str] | None = None,
    raise_on_error: bool = True,
) -> dict:
    """Check every feature view's Parquet mart before apply / materialize / training.

    For each view (all by default): the file exists and is a readable Parquet file, it has rows
    (unless the view is in ``allow_empty``), it has ``event_timestamp`` and every column the view
    declares with a compatible type, no null join key or timestamp, and no two rows share
    (join keys, event_timestamp) — with no ``created`` column Feast cannot tell which of two such
    rows is true, so duplicates are an error (dbt's unique_combination test guards the same rule).

    Returns ``{view: {"file", "rows", "problems"}}``; raises SourceValidationError listing every
    problem (view and file named) unless ``raise_on_error=False``.
    """
    import duckdb

    specs = contract.read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")
    wanted = set(views) if views is not None else set(specs)
    unknown = wanted - set(specs)
    if unknown:
        raise KeyError(f"unknown feature view(s) {sorted(unknown)}; known: {sorted(specs)}")
    allow_empty = views_allowed_empty(settings) if allow_empty is None else set(allow_empty)
    report: dict[str, dict] = {}
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        for name in sorted(wanted):
            spec = specs[name]
            path = source_file(settings, spec.dbt_model or name)
            problems: list[str] = []
            entry = {"file": str(path), "rows": None, "problems": problems}
            report[name] = entry
            where = f"feature view {name!r} (source {path})"
            if not path.exists():
                problems.append(f"{where}: file is missing (has dbt built {spec.dbt_model}?)")
                continue
            try:
                described = con.execute("describe select * from read_parquet(?)", [str(path)]).fetchall()
            except duckdb.Error as exc:
                problems.append(f"{where}: not a readable Parquet file ({str(exc).splitlines()[0]})")
                continue
            types = {row[0]: str(row[1]).upper() for row in described}
            required = {**spec.fields, TIMESTAMP_FIELD: "UnixTimestamp"}
            missing = [c for c in required if c not in types]
            for col in missing:
                problems.append(f"{where}: column {col!r} declared by the view is missing from the file")
            for col, dtype in required.items():
                if col in types and not types[col].startswith(_COMPATIBLE.get(dtype, (dtype.upper(),))):
                    problems.append(f"{where}: column {col!r} is {types[col]} in the file, the view declares {dtype}")
            keys = [k for k in spec.join_keys if k in types]
            if TIMESTAMP_FIELD not in types or len(keys) != len(spec.join_keys):
                continue
            q = lambda c: '"' + c.replace('"', '""') + '"'  # noqa: E731
            key_list = ", ".join(q(k) for k in keys)
            null_keys = " or ".join(f"{q(k)} is null" for k in keys)
            rows, null_key_rows, null_ts_rows = con.execute(
                f"select count(*), count(*) filter (where {null_keys}), count(*) filter (where {q(TIMESTAMP_FIELD)} is null) "
                "from read_parquet(?)",
                [str(path)],
            ).fetchone()
            entry["rows"] = rows
            if rows == 0 and name not in allow_empty:
                problems.append(f"{where}: file has no rows")
            if null_key_rows:
                problems.append(f"{where}: {null_key_rows} row(s) with a null join key ({', '.join(keys)})")
            if null_ts_rows:
                problems.append(f"{where}: {null_ts_rows} row(s) with a null {TIMESTAMP_FIELD}")
            dup = con.execute(
                f"select count(*), any_value(({key_list}, {q(TIMESTAMP_FIELD)})::varchar) from ("
                f"  select {key_list}, {q(TIMESTAMP_FIELD)}, count(*) as n from read_parquet(?)"
                f"  group by all having count(*) > 1)",
                [str(path)],
            ).fetchone()
            if dup[0]:
                problems.append(
                    f"{where}: {dup[0]} duplicate ({', '.join(keys)}, {TIMESTAMP_FIELD}) key(s), e.g. {dup[1]}; "
                    "one row per entity per event_timestamp is required"
                )
    finally:
        con.close()
    all_problems = [p for entry in report.values() for p in entry["problems"]]
    if all_problems and raise_on_error:
        raise SourceValidationError("feature sources are not valid:\n  " + "\n  ".join(all_problems), all_problems)
    return report


# --------------------------------------------------------------------------------------------------
# Feast subprocesses and the store
# --------------------------------------------------------------------------------------------------


def feast_command() -> list[str]:
    exe = Path(sys.executable).parent / ("feast.exe" if os.name == "nt" else "feast")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from feast.cli.cli import cli; sys.exit(cli())"]


def run_feast(settings: Settings, args: list[str], echo: Callable[[str], None] | None = None) -> str:
    """``feast -c <repo> -f <rendered yaml> <args>`` with the settings' environment; its output."""
    cfg = write_config(settings)
    cmd = [*feast_command(), "-c", str(settings.feast_repo_dir), "-f", str(cfg), *args]
    proc = subprocess.run(cmd, env=feast_env(settings), cwd=str(settings.feast_repo_dir), capture_output=True, text=True)
    output = (proc.stdout or "") + (proc.stderr or "")
    if echo is not None:
        for line in output.splitlines():
            echo(line)
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise FeastCommandError(f"feast {' '.join(args)} failed (exit {proc.returncode}):\n{tail}", output)
    return output


def _preflight(settings: Settings, check: bool, validate: bool) -> None:
    if check and manifest_path(settings).exists():
        contract.assert_repo_matches(_manifest(settings, None), Path(settings.feast_repo_dir))
    if validate:
        validate_sources(settings)


def ensure_output_sources(settings: Settings) -> list[Path]:
    """Model-output views (score_views.py) read files their jobs write; before a job's first run,
    write an empty file of the view's schema so ``feast apply`` and materialization work. Returns the
    files written (existing files are never touched)."""
    import pyarrow.parquet as pq

    written = []
    for name, schema in contract.output_source_schemas(Path(settings.feast_repo_dir) / "score_views.py").items():
        path = Path(settings.scores_dir) / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(schema.empty_table(), path)
            written.append(path)
    return written


def apply(settings: Settings, check: bool = True, validate: bool = True, echo: Callable[[str], None] | None = None) -> dict:
    """``feast apply`` in a subprocess, after the contract check (when a manifest exists) and
    ``validate_sources``. Returns {"seconds", "output", "config"}; raises ContractError,
    SourceValidationError or FeastCommandError."""
    _preflight(settings, check, validate)
    ensure_output_sources(settings)
    start = time.perf_counter()
    output = run_feast(settings, ["apply"], echo=echo)
    return {"seconds": round(time.perf_counter() - start, 3), "output": output, "config": str(config_path(settings))}


def plan(settings: Settings, check: bool = True, echo: Callable[[str], None] | None = None) -> dict:
    """``feast plan`` (what apply would change) in a subprocess; {"seconds", "output", "config"}."""
    _preflight(settings, check, validate=False)
    start = time.perf_counter()
    output = run_feast(settings, ["plan"], echo=echo)
    return {"seconds": round(time.perf_counter() - start, 3), "output": output, "config": str(config_path(settings))}


def get_store(settings: Settings) -> "FeatureStore":
    """A FeatureStore on the rendered configuration for these settings (apply first)."""
    from feast import FeatureStore

    quiet.feast()
    cfg = write_config(settings)
    return FeatureStore(repo_path=str(settings.feast_repo_dir), fs_yaml_file=cfg)


def list_feature_services(settings: Settings, store: "FeatureStore | None" = None) -> dict[str, dict]:
    """Applied feature services: {name: {"features": ["view:feature", ...], "description", "tags"}}."""
    store = store or get_store(settings)
    services = {}
    for fs in sorted(store.list_feature_services(), key=lambda s: s.name):
        refs = [f"{p.name_to_use()}:{f.name}" for p in fs.feature_view_projections for f in p.features]
        services[fs.name] = {"features": refs, "description": fs.description, "tags": dict(fs.tags)}
    return services
