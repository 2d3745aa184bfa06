"""The dbt project against the lake contract and the conventions, by parsing YAML (no dbt run)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from ml.contract import TABLES, TS
from ml.settings import PROJECT_ROOT

DBT = PROJECT_ROOT / "dbt_project"
MODELS = DBT / "models"

# How the contract's Arrow types read in DuckDB (and so in the sources' data_type).
DUCKDB_TYPE = {
    pa.string(): "varchar",
    pa.date32(): "date",
    pa.int32(): "integer",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    TS: "timestamp with time zone",
}
FEATURE_MARTS = ("feat_user_rfm", "feat_user_activity", "feat_item_stats", "feat_item_warehouse_demand")
ENTITY_KEYS = {"user": ["user_id"], "item": ["item_id"], "warehouse": ["warehouse_id"]}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _sources() -> dict:
    (source,) = [s for s in _yaml(MODELS / "staging" / "_lake__sources.yml")["sources"] if s["name"] == "lake"]
    return source


def _models() -> dict[str, dict]:
    found = {}
    for path in MODELS.rglob("*.yml"):
        for model in _yaml(path).get("models", []) or []:
            found[model["name"]] = {**model, "_path": path}
    return found


def test_sources_match_the_contract_exactly():
    tables = {t["name"]: t for t in _sources()["tables"]}
    assert sorted(tables) == sorted(TABLES)
    for name, table in TABLES.items():
        declared = [(c["name"], c["data_type"]) for c in tables[name]["columns"]]
        expected = [(c.name, DUCKDB_TYPE[c.type]) for c in table.columns]
        assert declared == expected, f"source lake.{name} drifted from ml.contract"


def test_sources_read_the_lake_from_the_environment():
    location = _sources()["config"]["external_location"]
    assert 'env_var("LAKE_DIR")' in location or "env_var('LAKE_DIR')" in location
    assert "{name}/**/*.parquet" in location
    assert "hive_partitioning=false" in location and "union_by_name=true" in location


def test_profile_has_no_hard_coded_paths():
    profile = _yaml(DBT / "profiles.yml")["ecom_warehouse"]["outputs"]["dev"]
    assert profile["type"] == "duckdb"
    assert profile["path"] == "{{ env_var('WAREHOUSE_PATH') }}"
    assert "DBT_THREADS" in str(profile["threads"])
    assert "DUCKDB_MEMORY_LIMIT" in profile["settings"]["memory_limit"]
    assert "FEATURES_DIR" in profile["external_root"]
    assert _yaml(DBT / "dbt_project.yml")["flags"]["send_anonymous_usage_stats"] is False


def test_every_model_has_one_sql_beside_one_yml_and_every_column_typed():
    models = _models()
    sql = {p.stem: p for p in MODELS.rglob("*.sql")}
    assert sorted(sql) == sorted(models), "every model x.sql needs its x.yml (and vice versa)"
    for name, model in models.items():
        assert model["_path"].stem == name and sql[name].parent == model["_path"].parent
        assert model.get("description"), name
        assert "Grain" in model["description"] or "grain" in model["description"], f"{name}: state the grain"
        for column in model["columns"]:
            assert column.get("data_type") and column.get("description"), f"{name}.{column['name']}"


def test_naming_conventions():
    for name in _models():
        folder = next(MODELS.rglob(f"{name}.sql")).parent.relative_to(MODELS).as_posix()
        prefix = {
            "staging": "stg_lake__",
            "intermediate": "int_",
            "marts": ("dim_", "fct_"),
            "marts/features": "feat_",
            "marts/exports": "mart_",
        }
        assert name.startswith(prefix[folder]), f"{name} in {folder}"
        if folder == "intermediate":
            assert "__" in name, f"{name}: int_<entity>__<verb>"


@pytest.mark.parametrize("name", FEATURE_MARTS)
def test_feature_marts_carry_feast_metadata(name):
    model = _models()[name]
    assert model["_path"].parent == MODELS / "marts" / "features"
    meta = model["config"]["meta"]
    entities = meta["entity"] if isinstance(meta["entity"], list) else [meta["entity"]]
    assert set(entities) <= set(ENTITY_KEYS)
    assert isinstance(meta["ttl_days"], int) and meta["owner"]
    assert meta["feature_view"] == name.removeprefix("feat_")
    columns = [c["name"] for c in model["columns"]]
    keys = [k for e in entities for k in ENTITY_KEYS[e]]
    assert columns[: len(keys) + 1] == [*keys, "event_timestamp"]
    (ts,) = [c for c in model["columns"] if c["name"] == "event_timestamp"]
    assert ts["data_type"] == "timestamp with time zone"
    combos = [t["unique_combination"]["arguments"]["columns"] for t in model["data_tests"] if "unique_combination" in t]
    assert [*keys, "event_timestamp"] in combos
    for column in columns[len(keys) + 1 :]:
        assert column == column.lower() and not column[0].isdigit()


def test_feature_marts_are_external_parquet_tagged_feature():
    features = _yaml(DBT / "dbt_project.yml")["models"]["ecom_warehouse"]["marts"]["features"]
    assert features["+materialized"] == "external" and features["+format"] == "parquet"
    assert "feature" in features["+tags"]
