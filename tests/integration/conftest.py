"""Integration fixtures shared by the Feast tests (and reusable by other integration tests).

built_warehouse   session-scoped: tiny generate + dbt build into a temp DATA_DIR; its Settings
                  (manifest at <data_dir>/dbt/target/manifest.json, marts in settings.features_dir)
small_store       session-scoped: small generate + dbt build + feast apply (the model tests)
feast_settings    function-scoped factory: Settings on a fresh temp DATA_DIR with a temp copy of
                  feature_repo/ (so tests never write next to the real definitions)
write_mart        write a small hand-made feature mart: the given columns, every other column of
                  the view filled with typed nulls
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ml.settings import PROJECT_ROOT, settings_for

ARROW_TYPES = {
    "Int64": "int64",
    "Int32": "int32",
    "Float64": "float64",
    "Float32": "float32",
    "String": "string",
    "Bool": "bool",
    "UnixTimestamp": "timestamp[us, tz=UTC]",
}


def copy_repo(dest: Path) -> Path:
    """A copy of feature_repo/ (definitions + templates) at ``dest``."""
    return Path(shutil.copytree(PROJECT_ROOT / "feature_repo", dest, ignore=shutil.ignore_patterns("__pycache__")))


@pytest.fixture(scope="session")
def built_warehouse(tmp_path_factory):
    """Settings of a tiny warehouse built once per session (generate + dbt build, ~1-2 min)."""
    from ml import warehouse
    from ml.generate import generate

    root = tmp_path_factory.mktemp("built_warehouse")
    settings = settings_for(data_dir=root / "data", feast_repo_dir=copy_repo(root / "feature_repo"))
    settings.ensure_dirs()
    generate(scale="tiny", seed=42, lake_dir=settings.lake_dir)
    warehouse.build(settings, echo=None)
    return settings


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    """`small` generated lake -> dbt build -> feast apply, on its own DATA_DIR and repo copy; shared
    by the model tests (each model registers under its own name, ~1.5 min to build)."""
    from ml import warehouse
    from ml.features.repo import apply
    from ml.generate import generate

    root = tmp_path_factory.mktemp("small_store")
    settings = settings_for(data_dir=root / "data", feast_repo_dir=copy_repo(root / "feature_repo"))
    settings.ensure_dirs()
    generate(scale="small", seed=7, lake_dir=settings.lake_dir)
    warehouse.build(settings, echo=None)
    apply(settings)
    return settings


@pytest.fixture
def feast_settings(tmp_path):
    """Factory: Settings on a fresh temp DATA_DIR and a temp copy of feature_repo/ (overrides allowed)."""
    counter = {"n": 0}

    def make(**overrides):
        counter["n"] += 1
        root = tmp_path / f"feast{counter['n']}"
        repo = copy_repo(root / "feature_repo")
        settings = settings_for(**{"data_dir": root / "data", "feast_repo_dir": repo, **overrides})
        settings.ensure_dirs()
        return settings

    return make


def mart_table(settings, view: str, rows: dict):
    """A pyarrow table for ``view``'s mart: ``rows`` columns as given, the view's other columns null."""
    import pyarrow as pa

    from ml.features.contract import read_view_specs

    spec = read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")[view]
    n = len(next(iter(rows.values())))
    schema = {**spec.fields, "event_timestamp": "UnixTimestamp"}
    arrays, names = [], []
    for col, dtype in schema.items():
        arrow_type = pa.type_for_alias(ARROW_TYPES[dtype]) if "timestamp" not in ARROW_TYPES[dtype] else pa.timestamp("us", tz="UTC")
        values = rows.get(col, [None] * n)
        arrays.append(pa.array(values, type=arrow_type))
        names.append(col)
    extra = [c for c in rows if c not in schema]
    for col in extra:
        arrays.append(pa.array(rows[col]))
        names.append(col)
    return pa.Table.from_arrays(arrays, names=names)


@pytest.fixture
def write_mart():
    """``write_mart(settings, view, {col: values})`` -> the Parquet path under settings.features_dir."""
    import pyarrow.parquet as pq

    from ml.features.contract import read_view_specs

    def write(settings, view: str, rows: dict, table=None) -> Path:
        spec = read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")[view]
        path = Path(settings.features_dir) / f"{spec.dbt_model}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table if table is not None else mart_table(settings, view, rows), path)
        return path

    return write


def fill_missing_marts(settings, day: str = "2024-01-01") -> list[str]:
    """Write a one-row mart (first user/item key, ``day``, other columns null) for every feature view
    whose Parquet file is missing, so a hand-made set of marts covers every view of the repo (a new
    view in dbt must not break tests that are about other views). Returns the views written."""
    import pandas as pd
    import pyarrow.parquet as pq

    from ml.features.contract import read_view_specs

    written = []
    for view, spec in read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py").items():
        path = Path(settings.features_dir) / f"{spec.dbt_model}.parquet"
        if path.exists():
            continue
        rows = {key: [f"{key}_filler"] for key in spec.join_keys}
        rows["event_timestamp"] = [pd.Timestamp(day, tz="UTC")]
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(mart_table(settings, view, rows), path)
        written.append(view)
    return written
