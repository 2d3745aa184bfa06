"""The dbt <-> Feast contract on a hand-made manifest: type mapping, code generation, drift detection.

No Feast import and no files beyond tmp_path: the generator and the checker are pure Python. The same
checks against the real manifest of a dbt build live in tests/integration/test_feast_repo.py.
"""

from __future__ import annotations

import ast
import copy

import pytest

from ml.features import contract
from ml.features.contract import ContractError, compare, feast_type, feature_marts, read_view_specs, render_files


def _col(name, data_type, description=""):
    return {"name": name, "data_type": data_type, "description": description}


def _model(name, view, entity, columns, ttl_days=0):
    return {
        "resource_type": "model",
        "name": name,
        "description": f"{name} mart",
        "config": {
            "meta": {
                "entity": entity,
                "feature_view": view,
                "timestamp_field": "event_timestamp",
                "ttl_days": ttl_days,
                "owner": "data-platform",
            }
        },
        "columns": {c["name"]: c for c in columns},
    }


@pytest.fixture
def manifest():
    return {
        "nodes": {
            "model.p.feat_user_rfm": _model(
                "feat_user_rfm",
                "user_rfm",
                "user",
                [
                    _col("user_id", "varchar", "Shopper"),
                    _col("event_timestamp", "timestamp with time zone"),
                    _col("order_count_lifetime", "bigint", "Orders so far"),
                    _col("revenue_sum_lifetime", "double"),
                    _col("last_order_at", "timestamp with time zone"),
                    _col("is_repeat_buyer", "boolean"),
                ],
            ),
            "model.p.feat_item_warehouse_demand": _model(
                "feat_item_warehouse_demand",
                "item_warehouse_demand",
                ["item", "warehouse"],
                [
                    _col("item_id", "varchar"),
                    _col("warehouse_id", "varchar"),
                    _col("event_timestamp", "timestamp with time zone"),
                    _col("units_sold_7d", "bigint"),
                    _col("last_sale_date", "date"),
                ],
                ttl_days=28,
            ),
            "model.p.dim_users": {"resource_type": "model", "name": "dim_users", "config": {"meta": {}}, "columns": {}},
            "test.p.not_null": {"resource_type": "test", "name": "not_null", "config": {"meta": {"feature_view": "x"}}},
        }
    }


@pytest.mark.parametrize(
    "dbt_type, expected",
    [
        ("bigint", "Int64"),
        ("BIGINT", "Int64"),
        ("integer", "Int32"),
        ("double", "Float64"),
        ("varchar", "String"),
        ("varchar(20)", "String"),
        ("boolean", "Bool"),
        ("timestamp with time zone", "UnixTimestamp"),
        ("TIMESTAMP  WITH TIME ZONE", "UnixTimestamp"),
        ("timestamptz", "UnixTimestamp"),
        ("date", "UnixTimestamp"),
    ],
)
def test_dbt_types_map_to_feast_types(dbt_type, expected):
    assert feast_type(dbt_type) == expected


@pytest.mark.parametrize("dbt_type", ["", None, "struct(a int)", "hugeint", "interval"])
def test_unknown_types_are_errors_not_strings(dbt_type):
    with pytest.raises(ContractError):
        feast_type(dbt_type)


def test_feature_marts_read_meta_and_split_keys_from_features(manifest):
    marts = feature_marts(manifest)
    assert [m.model for m in marts] == ["feat_item_warehouse_demand", "feat_user_rfm"]
    demand, rfm = marts
    assert demand.entities == ("item", "warehouse") and demand.join_keys == ("item_id", "warehouse_id")
    assert demand.ttl_days == 28
    assert rfm.source == "feat_user_rfm_source" and rfm.feature_view == "user_rfm"
    assert [c.name for c in rfm.features] == ["order_count_lifetime", "revenue_sum_lifetime", "last_order_at", "is_repeat_buyer"]


def test_marts_without_types_or_keys_are_rejected(manifest):
    bad = copy.deepcopy(manifest)
    rfm = bad["nodes"]["model.p.feat_user_rfm"]
    rfm["columns"]["revenue_sum_lifetime"]["data_type"] = None
    del rfm["columns"]["user_id"]
    with pytest.raises(ContractError) as err:
        feature_marts(bad)
    text = str(err.value)
    assert "feat_user_rfm.revenue_sum_lifetime" in text and "'user_id'" in text


def test_generated_code_parses_and_reads_back_as_the_manifest(manifest):
    marts = feature_marts(manifest)
    files = render_files(marts)
    for text in files.values():
        ast.parse(text)
    specs = read_view_specs(files["feature_views.py"])
    assert compare(marts, specs) == []
    rfm = specs["user_rfm"]
    assert rfm.fields == {
        "user_id": "String",
        "order_count_lifetime": "Int64",
        "revenue_sum_lifetime": "Float64",
        "last_order_at": "UnixTimestamp",
        "is_repeat_buyer": "Bool",
    }
    assert rfm.dbt_model == "feat_user_rfm" and rfm.ttl_days == 0 and rfm.entities == ("user",)
    assert specs["item_warehouse_demand"].ttl_days == 28
    assert 'path=str(FEATURES_DIR / "feat_user_rfm.parquet")' in files["data_sources.py"]
    assert "event_timestamp" not in rfm.fields  # the timestamp is never a feature


def _write_repo(tmp_path, manifest):
    contract.write_files(manifest, tmp_path)
    assert contract.check_repo(manifest, tmp_path) == []
    return tmp_path


def test_renamed_column_is_named(tmp_path, manifest):
    repo = _write_repo(tmp_path, manifest)
    changed = copy.deepcopy(manifest)
    cols = changed["nodes"]["model.p.feat_user_rfm"]["columns"]
    cols["orders_lifetime"] = {**cols.pop("order_count_lifetime"), "name": "orders_lifetime"}
    problems = contract.check_repo(changed, repo)
    text = "\n".join(problems)
    assert "feat_user_rfm.orders_lifetime" in text
    assert "'order_count_lifetime' is not in dbt model feat_user_rfm" in text
    assert "differs from the manifest" in text


def test_dropped_column_is_named(tmp_path, manifest):
    repo = _write_repo(tmp_path, manifest)
    changed = copy.deepcopy(manifest)
    del changed["nodes"]["model.p.feat_item_warehouse_demand"]["columns"]["units_sold_7d"]
    problems = contract.check_repo(changed, repo)
    assert any("'units_sold_7d' is not in dbt model feat_item_warehouse_demand" in p for p in problems)


def test_retyped_column_is_named(tmp_path, manifest):
    repo = _write_repo(tmp_path, manifest)
    changed = copy.deepcopy(manifest)
    changed["nodes"]["model.p.feat_user_rfm"]["columns"]["revenue_sum_lifetime"]["data_type"] = "varchar"
    problems = contract.check_repo(changed, repo)
    assert any("'revenue_sum_lifetime' is Float64 in Feast but feat_user_rfm.revenue_sum_lifetime is varchar" in p for p in problems)
    with pytest.raises(ContractError):
        contract.assert_repo_matches(changed, repo)


def test_ttl_entity_and_new_mart_drift_is_named(tmp_path, manifest):
    repo = _write_repo(tmp_path, manifest)
    changed = copy.deepcopy(manifest)
    changed["nodes"]["model.p.feat_user_rfm"]["config"]["meta"]["ttl_days"] = 7
    changed["nodes"]["model.p.feat_item_stats"] = _model(
        "feat_item_stats",
        "item_stats",
        "item",
        [_col("item_id", "varchar"), _col("event_timestamp", "timestamp with time zone"), _col("price", "double")],
    )
    text = "\n".join(contract.check_repo(changed, repo))
    assert "'user_rfm': ttl 0 days != dbt meta.ttl_days 7" in text
    assert "'item_stats' (dbt model feat_item_stats) is missing" in text


def test_hand_edit_of_generated_file_is_caught(tmp_path, manifest):
    repo = _write_repo(tmp_path, manifest)
    path = repo / "feature_views.py"
    path.write_text(path.read_text().replace('dtype=Int64, description="Orders so far"', 'dtype=Float64, description="Orders so far"'))
    problems = contract.check_repo(manifest, repo)
    assert any("'order_count_lifetime' is Float64 in Feast but feat_user_rfm.order_count_lifetime is bigint" in p for p in problems)


def test_output_source_schemas_follow_the_score_views():
    """The empty file feast apply needs before a model's first run has exactly its view's schema."""
    import pyarrow as pa

    from ml.features.contract import output_source_schemas

    source = """
src = FileSource(name="s", path=str(SCORES_DIR / "m.parquet"), timestamp_field="event_timestamp")
v = FeatureView(name="v", entities=[user, item], ttl=timedelta(days=1), source=src, schema=[
    Field(name="score", dtype=Float64), Field(name="ids", dtype=Array(String)),
    Field(name="vec", dtype=Array(Float32)), Field(name="version", dtype=String)])
"""
    ((name, schema),) = output_source_schemas(source).items()
    assert name == "m.parquet"
    assert schema == pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("score", pa.float64()),
            ("ids", pa.list_(pa.string())),
            ("vec", pa.list_(pa.float32())),
            ("version", pa.string()),
        ]
    )
