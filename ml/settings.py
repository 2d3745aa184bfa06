"""The one settings module: every path, endpoint and switch the platform reads from the environment.

Nothing happens on import. ``get_settings()`` reads the environment (and ``.env`` in the working
directory, if present) once and caches the result; ``Settings.as_env()`` is the environment handed to
dbt, Feast and Airflow subprocesses so they see exactly the same values.

Hyperparameters do not live here (they belong to per-model config files): only the *where*.
Secrets (``get_secrets()``: the pseudonymisation key) are read here too, but kept out of
``as_env()`` and of anything printed or written.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def user_root(start: Path | None = None) -> Path:
    """The project the user stands in: the nearest folder from the current directory up that holds
    ``dbt_project/dbt_project.yml`` and ``feature_repo/`` (a clone of this repository); else the
    installed package's root. Relative paths (``DATA_DIR=./data``) and ``.env`` are read from it, so
    the console script, ``python -m ml`` and DAG tasks agree wherever they are started."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dbt_project" / "dbt_project.yml").is_file() and (folder / "feature_repo").is_dir():
            return folder
    return PROJECT_ROOT


Scale = Literal["tiny", "small", "medium", "large"]

# Telemetry switches of the stack (no network here, and users expect them off).
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    "FEAST_USAGE": "False",
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    "SCARF_ANALYTICS": "false",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    # MLflow decides at import time and reads DO_NOT_TRACK only when it is "true"
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


class Settings(BaseSettings):
    """Where things live. Every field maps to the environment variable of the same name, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    data_dir: Path = Field(default_factory=lambda: user_root() / "data", description="Root of all local state (lake, warehouse, ...)")
    lake_dir: Path | None = Field(None, description="Raw data lake (Parquet). Default: DATA_DIR/lake")
    landing_dir: Path | None = Field(None, description="Drop folder for raw exports. Default: DATA_DIR/landing")
    quarantine_dir: Path | None = Field(None, description="Rejected rows with reasons. Default: DATA_DIR/quarantine")
    warehouse_path: Path | None = Field(
        None, description="The DuckDB warehouse file dbt writes. Default: DATA_DIR/warehouse/warehouse.duckdb"
    )
    features_dir: Path | None = Field(
        None, description="dbt `external` feature marts (Parquet, read by Feast). Default: DATA_DIR/warehouse/features"
    )
    dbt_project_dir: Path = Field(default_factory=lambda: user_root() / "dbt_project", description="The dbt project")
    dbt_profiles_dir: Path = Field(default_factory=lambda: user_root() / "dbt_project", description="Folder holding profiles.yml")
    dbt_target: str = Field("dev", description="dbt target in profiles.yml")
    dbt_threads: int = Field(2, ge=1, description="dbt threads (= cores here)")
    duckdb_memory_limit: str = Field("4GB", description="DuckDB memory_limit for dbt and readers")
    scale: Scale = Field(
        "small", description="Default generator scale: tiny | small | medium | large (`make demo` and `ecomml demo` use it too)"
    )
    seed: int = Field(42, description="Default generator seed")
    ingest_max_quarantine_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="An export quarantining a larger share of its rows for bad data is refused "
        "(nothing committed) unless --accept-quarantine; a mapping's max_quarantine_share overrides it",
    )
    # Feast (feature_repo/ + ml/features/): embedded = DuckDB offline, SQLite online, file registry;
    # production = DuckDB offline, Redis online, SQL registry on PostgreSQL.
    feast_mode: Literal["embedded", "production"] = Field(
        "embedded", description="Feast deployment: embedded (SQLite + file registry) | production (Redis + Postgres registry)"
    )
    feast_project: str = Field(
        "ecom", pattern=r"^[A-Za-z0-9_]+$", description="Feast project name (namespaces registry entries and online keys)"
    )
    feast_repo_dir: Path = Field(
        default_factory=lambda: user_root() / "feature_repo", description="The Feast repo (definitions + yaml templates)"
    )
    feast_registry_path: Path | None = Field(None, description="Embedded mode: file registry. Default: DATA_DIR/feast/registry.db")
    feast_online_path: Path | None = Field(None, description="Embedded mode: SQLite online store. Default: DATA_DIR/feast/online_store.db")
    feast_registry_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/feast",
        description="Production mode: SQLAlchemy URL of the Feast SQL registry (PostgreSQL, psycopg 3)",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Production mode: Redis online store (redis://[:password@]host:port/db)")
    # Airflow (dags/ + ml/orchestration/): where its metadata lives, the single-writer pools, how dbt runs.
    airflow_home: Path | None = Field(None, description="Airflow home (airflow.cfg, SQLite metadata, logs). Default: DATA_DIR/airflow")
    airflow_port: int = Field(8080, ge=0, le=65535, description="Port of the local Airflow API server / UI (0 = pick a free one)")
    airflow_parallelism: int = Field(2, ge=1, description="Airflow [core] parallelism (task slots; = cores here)")
    duckdb_pool: str = Field(
        "duckdb_writer", description="Airflow pool (size 1) every lake/warehouse writer runs in: DuckDB allows one writer"
    )
    feast_pool: str = Field(
        "feast_writer", description="Airflow pool (size 1) for writers of the Feast registry and online store (embedded mode)"
    )
    training_pool: str = Field(
        "model_training",
        description="Airflow pool (size 1) for model training tasks: one trainer at a time on a small box, and one writer of a SQLite MLflow backend",  # noqa: E501
    )
    dbt_execution_mode: Literal["watcher", "local"] = Field(
        "watcher", description="Cosmos mode: watcher (one dbt build, node tasks mirror it) | local (one dbt call per node)"
    )
    # Models (ml/models/): exported marts Python reads, scores, reports, the MLflow registry.
    exports_dir: Path | None = Field(
        None, description="dbt `external` marts read by Python (labels, sequences, cart conversions). Default: DATA_DIR/warehouse/exports"
    )
    scores_dir: Path | None = Field(
        None, description="Batch scores, one Parquet partition per model and scoring date. Default: DATA_DIR/warehouse/scores"
    )
    reports_dir: Path | None = Field(None, description="HTML model reports with PNG plots. Default: DATA_DIR/reports")
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking + registry backend: sqlite:///... (default DATA_DIR/mlflow/mlflow.db), postgresql+psycopg://... or http://server",
    )
    mlflow_artifact_root: Path | None = Field(
        None, description="Where a new MLflow experiment stores artifacts (local/shared volume). Default: DATA_DIR/mlflow/artifacts"
    )
    mlflow_experiment: str = Field("ecomml", description="MLflow experiment every training run logs to")
    ingest_mapping: str | None = Field(
        None, description="Mapping preset or YAML the ingest DAG applies to new files in LANDING_DIR (DAG param overrides)"
    )
    # Governance (ml/governance/privacy.py): differentially private exports and their budget ledger.
    privacy_ledger_path: Path | None = Field(
        None,
        description="SQLite ledger of every differentially private release (epsilon spent per dataset). Default: DATA_DIR/privacy/ledger.sqlite",  # noqa: E501
    )
    privacy_exports_dir: Path | None = Field(
        None, description="Differentially private reports (noisy aggregates, no user_id). Default: DATA_DIR/privacy/exports"
    )
    privacy_total_epsilon: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="Total epsilon per dataset: the ledger refuses a release that would exceed it"
    )

    @field_validator("ingest_mapping", "mlflow_tracking_uri", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        return value or None  # as_env() exports an unset optional as ""

    @model_validator(mode="after")
    def _derive_paths(self) -> "Settings":
        root = user_root()
        for name in ("data_dir", "dbt_project_dir", "dbt_profiles_dir", "feast_repo_dir"):
            value = getattr(self, name)
            if not value.is_absolute():  # ./data in .env means the project's data, wherever the command runs
                setattr(self, name, root / value)
        self.data_dir = self.data_dir.resolve()
        defaults = {
            "lake_dir": self.data_dir / "lake",
            "landing_dir": self.data_dir / "landing",
            "quarantine_dir": self.data_dir / "quarantine",
            "warehouse_path": self.data_dir / "warehouse" / "warehouse.duckdb",
            "features_dir": self.data_dir / "warehouse" / "features",
            "feast_registry_path": self.data_dir / "feast" / "registry.db",
            "feast_online_path": self.data_dir / "feast" / "online_store.db",
            "airflow_home": self.data_dir / "airflow",
            "exports_dir": self.data_dir / "warehouse" / "exports",
            "scores_dir": self.data_dir / "warehouse" / "scores",
            "reports_dir": self.data_dir / "reports",
            "mlflow_artifact_root": self.data_dir / "mlflow" / "artifacts",
            "privacy_ledger_path": self.data_dir / "privacy" / "ledger.sqlite",
            "privacy_exports_dir": self.data_dir / "privacy" / "exports",
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            setattr(self, name, (value or default).resolve())
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"
        return self

    def as_env(self) -> dict[str, str]:
        """The environment for dbt / Feast / Airflow subprocesses: every setting plus telemetry off."""
        env = {name.upper(): "" if value is None else str(value) for name, value in self.model_dump().items()}
        env.update(TELEMETRY_OFF)
        return env

    def ensure_dirs(self) -> None:
        """Create the local state folders (called by commands, never on import)."""
        for path in (
            self.lake_dir,
            self.landing_dir,
            self.quarantine_dir,
            self.features_dir,
            self.exports_dir,
            self.scores_dir,
            self.reports_dir,
            self.mlflow_artifact_root,
            self.warehouse_path.parent,
            self.feast_registry_path.parent,
            self.feast_online_path.parent,
        ):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(_env_file=user_root() / ".env")


def settings_for(**overrides) -> Settings:
    """Settings with explicit overrides (tests, benchmarks); bypasses the cache."""
    return Settings(_env_file=user_root() / ".env", **overrides)


# --------------------------------------------------------------------------------------------------
# Secrets: read from the same environment / .env, but never part of Settings.as_env()
# --------------------------------------------------------------------------------------------------
PSEUDONYMIZE_KEY_MIN_CHARS = 32  # e.g. `python -c "import secrets; print(secrets.token_hex(32))"` (64 characters)


class Secrets(BaseSettings):
    """Secret values the platform reads from the environment (or ``.env``), kept apart from Settings.

    ``Settings.as_env()`` exports every setting to dbt, Feast and Airflow, ``ecomml settings`` prints
    it and Feast's yaml is rendered from it, so a secret must not be a Setting. Child processes that
    need one (the Airflow ingest task) inherit it from the parent environment, which every launcher
    passes on (``{**os.environ, **settings.as_env()}``); ``subprocess_env()`` hands it over explicitly.
    Validation errors never echo the value (``hide_input_in_errors``).
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False, hide_input_in_errors=True)

    pseudonymize_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key that pseudonymises user ids at ingestion (docs/security.md); unset = raw ids. "
        f"At least {PSEUDONYMIZE_KEY_MIN_CHARS} characters",
    )

    @field_validator("pseudonymize_key", mode="before")
    @classmethod
    def _long_enough(cls, value):
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not text:
            return None  # unset and "" mean the same: no pseudonymisation
        if text != text.strip() or len(set(text)) < 8:
            raise ValueError(
                "PSEUDONYMIZE_KEY must be a random secret: no leading or trailing spaces and at least 8 "
                'different characters; generate one with python -c "import secrets; print(secrets.token_hex(32))"'
            )
        if len(text) < PSEUDONYMIZE_KEY_MIN_CHARS:
            raise ValueError(
                f"PSEUDONYMIZE_KEY is too short ({len(text)} characters; at least {PSEUDONYMIZE_KEY_MIN_CHARS}): "
                'generate one with python -c "import secrets; print(secrets.token_hex(32))"'
            )
        return text

    def subprocess_env(self) -> dict[str, str]:
        """The secrets that are set, as environment variables for a child process. Never print or log it."""
        return {name.upper(): value.get_secret_value() for name, value in self if value is not None}


class SettingsError(ValueError):
    """A setting or secret has a value the platform cannot use; the message says which and why."""


@lru_cache(maxsize=1)
def get_secrets() -> Secrets:
    try:
        return Secrets(_env_file=user_root() / ".env")
    except ValidationError as exc:  # one line per problem, never the value (hide_input_in_errors)
        raise SettingsError("; ".join(_problem(e) for e in exc.errors())) from None


def _problem(error: dict) -> str:
    name, text = ".".join(map(str, error["loc"])).upper(), error["msg"].removeprefix("Value error, ")
    return text if text.startswith(name) else f"{name}: {text}"
