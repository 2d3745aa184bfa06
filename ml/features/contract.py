"""The dbt <-> Feast contract: feature marts in dbt's manifest -> Feast definitions in feature_repo/.

dbt owns the features. Each feature mart (``dbt_project/models/marts/features/feat_*.yml``) carries
``config.meta`` (entity, feature_view, timestamp_field, ttl_days, owner) and a ``data_type`` on every
column. From the manifest this module *generates* ``feature_repo/data_sources.py`` and
``feature_repo/feature_views.py`` (committed, readable, reviewed like any code), and *checks* that
the committed files still equal what the manifest generates:

    marts = feature_marts(manifest)                 # FeatureMart per feat_* model, sorted
    files = render_files(marts)                     # {"data_sources.py": text, "feature_views.py": text}
    problems = check_repo(manifest, repo_dir)       # [] when in sync, else readable problems

A column renamed, dropped or retyped in dbt without regenerating makes ``check_repo`` name the view,
the column and the change; ``ml.features.repo.apply`` refuses to run then, and the integration test
fails. Pure Python (no Feast import): the dtypes are written as names of ``feast.types`` objects.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

# Feast entities and their join keys (STYLE.md "One vocabulary"); feature_repo/entities.py defines them.
ENTITY_JOIN_KEYS: dict[str, str] = {"user": "user_id", "item": "item_id", "warehouse": "warehouse_id"}

# dbt / DuckDB data_type -> feast.types name. Strict: an unknown type is an error, never a silent String
# (feast.dbt.mapper falls back to String, which would turn "timestamp with time zone" into a string).
DBT_TO_FEAST: dict[str, str] = {
    "bigint": "Int64",
    "int8": "Int64",
    "long": "Int64",
    "integer": "Int32",
    "int": "Int32",
    "int4": "Int32",
    "smallint": "Int32",
    "tinyint": "Int32",
    "double": "Float64",
    "double precision": "Float64",
    "float8": "Float64",
    "float": "Float32",
    "real": "Float32",
    "float4": "Float32",
    "varchar": "String",
    "text": "String",
    "string": "String",
    "char": "String",
    "boolean": "Bool",
    "bool": "Bool",
    "timestamp with time zone": "UnixTimestamp",
    "timestamptz": "UnixTimestamp",
    "timestamp": "UnixTimestamp",
    "timestamp without time zone": "UnixTimestamp",
    "date": "UnixTimestamp",
    "blob": "Bytes",
}

GENERATED_FILES = ("data_sources.py", "feature_views.py")
GENERATOR_COMMAND = "ecomml features generate"


class ContractError(ValueError):
    """The manifest cannot be turned into Feast definitions, or feature_repo/ disagrees with it."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    description: str = ""

    @property
    def feast_type(self) -> str:
        return feast_type(self.data_type)


@dataclass(frozen=True)
class FeatureMart:
    """One dbt feature mart and the Feast objects it becomes."""

    model: str
    feature_view: str
    entities: tuple[str, ...]
    timestamp_field: str
    ttl_days: int
    owner: str
    description: str
    columns: tuple[Column, ...] = field(default_factory=tuple)

    @property
    def source(self) -> str:
        return f"{self.model}_source"

    @property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(ENTITY_JOIN_KEYS[e] for e in self.entities)

    @property
    def features(self) -> tuple[Column, ...]:
        """Every column except the join keys and the timestamp."""
        skip = {*self.join_keys, self.timestamp_field}
        return tuple(c for c in self.columns if c.name not in skip)

    @property
    def file_name(self) -> str:
        return f"{self.model}.parquet"


def feast_type(data_type: str | None) -> str:
    """The feast.types name for a dbt data_type (``bigint`` -> ``Int64``); ContractError if unknown."""
    if not data_type:
        raise ContractError("column has no data_type")
    normalized = re.sub(r"\s+", " ", data_type.strip().lower())
    normalized = re.sub(r"\(.*\)$", "", normalized).strip()  # varchar(20), decimal(18,2) -> base type
    if normalized not in DBT_TO_FEAST:
        raise ContractError(f"data_type {data_type!r} has no Feast type (known: {', '.join(sorted(DBT_TO_FEAST))})")
    return DBT_TO_FEAST[normalized]


def _meta(node: dict) -> dict:
    return {**(node.get("meta") or {}), **((node.get("config") or {}).get("meta") or {})}


def feature_marts(manifest: dict) -> list[FeatureMart]:
    """Every model whose meta names a ``feature_view``, as FeatureMart, sorted by model name."""
    marts: list[FeatureMart] = []
    problems: list[str] = []
    for node in (manifest.get("nodes") or {}).values():
        if node.get("resource_type") != "model":
            continue
        meta = _meta(node)
        if not meta.get("feature_view"):
            continue
        name = node["name"]
        entities = meta.get("entity")
        entities = tuple([entities] if isinstance(entities, str) else (entities or []))
        unknown = [e for e in entities if e not in ENTITY_JOIN_KEYS]
        if not entities or unknown:
            problems.append(f"{name}: meta.entity {list(entities)!r} must name entities among {sorted(ENTITY_JOIN_KEYS)}")
            continue
        columns = []
        for col in (node.get("columns") or {}).values():
            try:
                feast_type(col.get("data_type"))
            except ContractError as exc:
                problems.append(f"{name}.{col.get('name')}: {exc}")
            columns.append(Column(col["name"], col.get("data_type") or "", (col.get("description") or "").strip()))
        mart = FeatureMart(
            model=name,
            feature_view=meta["feature_view"],
            entities=entities,
            timestamp_field=meta.get("timestamp_field", "event_timestamp"),
            ttl_days=int(meta.get("ttl_days", 0) or 0),
            owner=str(meta.get("owner", "")),
            description=" ".join((node.get("description") or "").split()),
            columns=tuple(columns),
        )
        names = {c.name for c in columns}
        for required in (*mart.join_keys, mart.timestamp_field):
            if required not in names:
                problems.append(f"{name}: column {required!r} (join key / timestamp) is not documented")
        if not mart.features:
            problems.append(f"{name}: no feature columns documented")
        marts.append(mart)
    if problems:
        raise ContractError("dbt feature marts break the Feast contract:\n  " + "\n  ".join(problems), problems)
    return sorted(marts, key=lambda m: m.model)


# --------------------------------------------------------------------------------------------------
# Code generation
# --------------------------------------------------------------------------------------------------

_HEADER = '''"""{title}

GENERATED from dbt's manifest.json by `{command}`: do not edit by hand.
Change the mart's .yml under dbt_project/models/marts/features/, `dbt parse` (or build), then
regenerate.
tests/integration/test_feast_repo.py fails when this file and the manifest disagree.
"""
'''


def _q(text: str) -> str:
    """A double-quoted Python string literal (JSON string syntax is valid Python for these)."""
    return json.dumps(text, ensure_ascii=False)


def _wrap_comment(text: str, indent: str = "", width: int = 100) -> list[str]:
    import textwrap

    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=width - len(indent) - 2)] if text else []


def render_data_sources(marts: list[FeatureMart]) -> str:
    lines = [
        _HEADER.format(
            title="Data sources: one FileSource per dbt feature mart ($FEATURES_DIR/<model>.parquet).",
            command=GENERATOR_COMMAND,
        ),
        "import os",
        "from pathlib import Path",
        "",
        "from feast import FileSource",
        "",
        "# Where dbt writes the feature marts (Settings.features_dir, handed over as $FEATURES_DIR by",
        "# ml.features.repo); the default matches the settings' default for a checkout.",
        'FEATURES_DIR = Path(os.environ.get("FEATURES_DIR") or Path(__file__).resolve().parent.parent / "data" / "warehouse" / "features")',
    ]
    for m in marts:
        lines += ["", ""]
        lines += _wrap_comment(f"dbt model {m.model} (external Parquet) -> feature view {m.feature_view}.")
        lines += [
            f"{m.source} = FileSource(",
            f"    name={_q(m.source)},",
            f"    path=str(FEATURES_DIR / {_q(m.file_name)}),",
            f"    timestamp_field={_q(m.timestamp_field)},",
            f"    description={_q('dbt model ' + m.model + ': ' + m.description)},",
            f'    tags={{"dbt_model": {_q(m.model)}}},',
            f"    owner={_q(m.owner)},",
            ")",
        ]
    return "\n".join(lines) + "\n"


def render_feature_views(marts: list[FeatureMart]) -> str:
    types = sorted({c.feast_type for m in marts for c in m.columns if c.name != m.timestamp_field})
    entities = sorted({e for m in marts for e in m.entities})
    lines = [
        _HEADER.format(
            title="Feature views: one per dbt feature mart, same column names, types from the manifest.",
            command=GENERATOR_COMMAND,
        ),
        "from datetime import timedelta",
        "",
        "from feast import FeatureView, Field",
        f"from feast.types import {', '.join(types)}",
        "",
        "from data_sources import (",
        *[f"    {m.source}," for m in marts],
        ")",
        f"from entities import {', '.join(entities)}",
    ]
    for m in marts:
        ttl = "no expiry (ttl_days 0)" if m.ttl_days == 0 else f"rows expire after {m.ttl_days} days"
        lines += ["", ""]
        lines += _wrap_comment(f"{m.model}: {m.description} TTL: {ttl}.")
        lines += [
            f"{m.feature_view} = FeatureView(",
            f"    name={_q(m.feature_view)},",
            f"    entities=[{', '.join(m.entities)}],",
            f"    ttl=timedelta(days={m.ttl_days}),{'  # 0 = no expiry' if m.ttl_days == 0 else ''}",
            "    schema=[",
        ]
        for c in m.columns:
            if c.name == m.timestamp_field:
                continue
            role = "  # join key" if c.name in m.join_keys else ""
            lines.append(f"        Field(name={_q(c.name)}, dtype={c.feast_type}, description={_q(c.description)}),{role}")
        lines += [
            "    ],",
            f"    source={m.source},",
            "    online=True,",
            f"    description={_q(m.description)},",
            f"    owner={_q(m.owner)},",
            f'    tags={{"dbt_model": {_q(m.model)}, "owner": {_q(m.owner)}}},',
            ")",
        ]
    return "\n".join(lines) + "\n"


def render_files(marts: list[FeatureMart]) -> dict[str, str]:
    return {"data_sources.py": render_data_sources(marts), "feature_views.py": render_feature_views(marts)}


def write_files(manifest: dict, repo_dir: Path) -> list[Path]:
    """Regenerate the generated files in ``repo_dir``; returns the files that changed."""
    changed = []
    for name, text in render_files(feature_marts(manifest)).items():
        path = Path(repo_dir) / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


# --------------------------------------------------------------------------------------------------
# Checking the committed repo against the manifest
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewSpec:
    """What a feature view in feature_views.py declares (read with ``ast``, no Feast import)."""

    name: str
    dbt_model: str | None
    entities: tuple[str, ...]
    ttl_days: int | None
    fields: dict[str, str]  # name -> feast.types name, join keys included

    @property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(ENTITY_JOIN_KEYS.get(e, e) for e in self.entities)

    @property
    def features(self) -> dict[str, str]:
        return {k: v for k, v in self.fields.items() if k not in self.join_keys}


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _type_name(node) -> str:
    """``Float64`` -> "Float64", ``Array(Float32)`` -> "Array(Float32)"."""
    if isinstance(node, ast.Call):
        return f"{getattr(node.func, 'id', '?')}({', '.join(_type_name(a) for a in node.args)})"
    return getattr(node, "id", "?")


_ARROW_TYPES = {
    "String": pa.string(),
    "Float64": pa.float64(),
    "Float32": pa.float32(),
    "Int64": pa.int64(),
    "Int32": pa.int32(),
    "Bool": pa.bool_(),
    "UnixTimestamp": pa.timestamp("us", tz="UTC"),
}


def _arrow_type(type_name: str) -> pa.DataType:
    if type_name.startswith("Array(") and type_name.endswith(")"):
        return pa.list_(_arrow_type(type_name[6:-1]))
    return _ARROW_TYPES[type_name]


def output_source_schemas(score_views_py: Path | str) -> dict[str, pa.Schema]:
    """The Parquet files behind the model-output views of a score_views.py (static reading): {file
    name: schema} with join keys, ``event_timestamp`` and every field, so an empty file of that schema
    lets ``feast apply`` and materialization run before the first scoring writes the real one."""
    source = Path(score_views_py).read_text() if isinstance(score_views_py, Path) else score_views_py
    tree = ast.parse(source)
    files: dict[str, str] = {}  # FileSource variable -> file name (the string in its path expression)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "FileSource":
            path = _kw(node.value, "path")
            names = [n.value for n in ast.walk(path) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            files[node.targets[0].id] = names[-1]
    schemas: dict[str, pa.Schema] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "FeatureView"):
            continue
        spec = read_view_specs(ast.unparse(node))[ast.literal_eval(_kw(node, "name"))]
        columns = [(k, pa.string()) for k in spec.join_keys] + [("event_timestamp", pa.timestamp("us", tz="UTC"))]
        columns += [(name, _arrow_type(t)) for name, t in spec.features.items()]
        schemas[files[_kw(node, "source").id]] = pa.schema(columns)
    return schemas


def read_view_specs(feature_views_py: Path | str) -> dict[str, ViewSpec]:
    """The FeatureView(...) definitions of a feature_views.py, by view name (static reading)."""
    source = Path(feature_views_py).read_text() if isinstance(feature_views_py, Path) else feature_views_py
    specs: dict[str, ViewSpec] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "FeatureView"):
            continue
        name = ast.literal_eval(_kw(node, "name"))
        entities = tuple(getattr(e, "id", "?") for e in getattr(_kw(node, "entities"), "elts", []))
        ttl_days = None
        ttl = _kw(node, "ttl")
        if isinstance(ttl, ast.Call):
            days = _kw(ttl, "days")
            ttl_days = ast.literal_eval(days) if days is not None else None
        fields = {}
        for f in getattr(_kw(node, "schema"), "elts", []):
            fields[ast.literal_eval(_kw(f, "name"))] = _type_name(_kw(f, "dtype"))
        tags = _kw(node, "tags")
        dbt_model = ast.literal_eval(tags).get("dbt_model") if tags is not None else None
        specs[name] = ViewSpec(name, dbt_model, entities, ttl_days, fields)
    return specs


def compare(marts: list[FeatureMart], specs: dict[str, ViewSpec]) -> list[str]:
    """Semantic differences between the marts and the declared views, one readable line each."""
    problems: list[str] = []
    for m in marts:
        view = specs.get(m.feature_view)
        if view is None:
            problems.append(f"feature view {m.feature_view!r} (dbt model {m.model}) is missing from feature_views.py")
            continue
        if view.dbt_model != m.model:
            problems.append(f"feature view {view.name!r}: tag dbt_model={view.dbt_model!r}, manifest says {m.model!r}")
        if view.entities != m.entities:
            problems.append(f"feature view {view.name!r}: entities {list(view.entities)} != dbt meta.entity {list(m.entities)}")
        if view.ttl_days != m.ttl_days:
            problems.append(f"feature view {view.name!r}: ttl {view.ttl_days} days != dbt meta.ttl_days {m.ttl_days}")
        expected = {c.name: c.feast_type for c in m.columns if c.name != m.timestamp_field}
        for col, dtype in expected.items():
            if col not in view.fields:
                problems.append(f"feature view {view.name!r}: dbt column {m.model}.{col} ({dtype}) is not in the view")
            elif view.fields[col] != dtype:
                problems.append(
                    f"feature view {view.name!r}: column {col!r} is {view.fields[col]} in Feast but "
                    f"{m.model}.{col} is {dict((c.name, c.data_type) for c in m.columns)[col]} ({dtype}) in dbt"
                )
        for col in view.fields:
            if col not in expected:
                problems.append(f"feature view {view.name!r}: column {col!r} is not in dbt model {m.model} (renamed or dropped in dbt?)")
    known = {m.feature_view for m in marts}
    for name in specs:
        if name not in known:
            problems.append(f"feature view {name!r} has no dbt feature mart (meta.feature_view) in the manifest")
    return problems


def check_repo(manifest: dict, repo_dir: Path) -> list[str]:
    """[] when feature_repo/ matches the manifest; else the semantic problems, then any text drift."""
    repo_dir = Path(repo_dir)
    marts = feature_marts(manifest)
    views_py = repo_dir / "feature_views.py"
    if not views_py.exists():
        return [f"{views_py} is missing; run `{GENERATOR_COMMAND}`"]
    problems = compare(marts, read_view_specs(views_py))
    for name, expected in render_files(marts).items():
        path = repo_dir / name
        actual = path.read_text() if path.exists() else ""
        if actual != expected:
            diff = "".join(
                list(
                    difflib.unified_diff(
                        actual.splitlines(True), expected.splitlines(True), f"{name} (committed)", f"{name} (from manifest)", n=0
                    )
                )[:40]
            )
            problems.append(f"{path} differs from the manifest's output; run `{GENERATOR_COMMAND}`:\n{diff}")
    return problems


def assert_repo_matches(manifest: dict, repo_dir: Path) -> None:
    problems = check_repo(manifest, repo_dir)
    if problems:
        raise ContractError("feature_repo/ does not match dbt's manifest:\n  " + "\n  ".join(problems), problems)
