"""feature_repo/ against a real dbt build: the contract, validate_sources, feast apply / plan, and a
training set checked against a hand-written DuckDB ASOF join. Bad-input cases use small hand-made
marts (no Feast subprocess: validation fails first).
"""

from __future__ import annotations

import copy
import json

import duckdb
import pandas as pd
import pytest

from ml.features import contract, repo, training
from ml.features.contract import ContractError
from ml.features.repo import SourceValidationError
from ml.settings import PROJECT_ROOT, settings_for
from tests.integration.conftest import copy_repo, mart_table

pytestmark = pytest.mark.integration

T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731


# -- the contract, on the manifest of a real build ---------------------------------------------------


@pytest.fixture(scope="module")
def manifest(built_warehouse):
    return repo._manifest(built_warehouse, None)


def test_committed_repo_matches_dbt_manifest(manifest):
    """Fails when a mart changed in dbt and `ecomml features generate` was not run."""
    problems = contract.check_repo(manifest, PROJECT_ROOT / "feature_repo")
    assert problems == [], "\n".join(problems)
    marts = contract.feature_marts(manifest)
    assert {m.feature_view for m in marts} == {
        "user_rfm",
        "user_activity",
        "item_stats",
        "item_warehouse_demand",
        "user_rfm_segments",
        "user_affinity",
        "user_profile",
    }


def _mutate(manifest, model, fn):
    changed = copy.deepcopy(manifest)
    node = next(n for n in changed["nodes"].values() if n.get("name") == model and n["resource_type"] == "model")
    fn(node["columns"])
    return changed


def _rename(cols, old, new):
    cols[new] = {**cols.pop(old), "name": new}


@pytest.mark.parametrize(
    "model, change, expected",
    [
        ("feat_user_rfm", lambda c: _rename(c, "order_count_90d", "orders_90d"), "'order_count_90d' is not in dbt model feat_user_rfm"),
        ("feat_user_activity", lambda c: c.pop("search_count_7d"), "'search_count_7d' is not in dbt model feat_user_activity"),
        (
            "feat_item_stats",
            lambda c: c["price"].update(data_type="varchar"),
            "'price' is Float64 in Feast but feat_item_stats.price is varchar",
        ),
        ("feat_item_warehouse_demand", lambda c: c["units_sold_7d"].update(data_type="double"), "'units_sold_7d' is Int64 in Feast"),
    ],
)
def test_mart_change_without_regenerating_fails(manifest, tmp_path, model, change, expected):
    changed = _mutate(manifest, model, change)
    problems = contract.check_repo(changed, PROJECT_ROOT / "feature_repo")
    assert any(expected in p for p in problems), problems
    # apply refuses before starting Feast when the manifest on disk disagrees
    settings = settings_for(data_dir=tmp_path, feast_repo_dir=copy_repo(tmp_path / "feature_repo"))
    repo.manifest_path(settings).parent.mkdir(parents=True)
    repo.manifest_path(settings).write_text(json.dumps(changed))
    with pytest.raises(ContractError, match="does not match dbt's manifest"):
        repo.apply(settings, validate=False)
    # regenerating follows the change, and the checker is satisfied again
    repo.generate(settings)
    assert repo.check_contract(settings) == []


# -- apply / plan / training on the built warehouse ----------------------------------------------------


@pytest.fixture(scope="module")
def applied(built_warehouse):
    report = repo.validate_sources(built_warehouse)
    assert all(entry["rows"] > 0 for entry in report.values()), report
    result = repo.apply(built_warehouse)
    return built_warehouse, result


def test_apply_and_plan(applied):
    settings, result = applied
    assert "${" not in repo.config_path(settings).read_text()
    assert settings.feast_registry_path.exists()
    plan = repo.plan(settings)["output"]
    assert "No changes to registry" in plan


def test_training_set_matches_a_hand_written_asof_join(applied):
    settings, _ = applied
    rfm = str(settings.features_dir / "feat_user_rfm.parquet")
    # label times: each user's feature timestamps, a second before them (the earlier row must be used),
    # and a few days after the last row; plus a user with no features.
    entity_df = duckdb.sql(
        f"""
        with u as (select user_id, event_timestamp from read_parquet('{rfm}') using sample 150 rows (reservoir, 7))
        select user_id, event_timestamp, 1 as label from u
        union all select user_id, event_timestamp - interval 1 second, 0 from u
        union all select user_id, event_timestamp + interval 3 day, 1 from u
        union all select 'nobody', timestamptz '2026-10-01 00:00:00+00', 0
        """
    ).df()
    entity_df = entity_df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    got = training.build_training_set(settings, entity_df, "propensity_lgbm_v1", chunk_rows=200)
    ref = training.reference_training_set(settings, entity_df, ["user_rfm", "user_activity"])
    assert len(got) == len(entity_df) and got["user_id"].tolist() == entity_df["user_id"].tolist()
    for col in [
        "order_count_lifetime",
        "revenue_sum_90d",
        "last_order_at",
        "view_count_30d",
        "last_cart_add_at",
        "hours_since_last_cart_add",
    ]:
        pd.testing.assert_series_equal(got[col], ref[col], check_dtype=False, check_names=False, obj=col)
    assert got["order_count_lifetime"].notna().sum() > len(entity_df) / 2
    assert got.loc[got["user_id"] == "nobody", "order_count_lifetime"].isna().all()


def test_services_listed_from_the_registry(applied):
    settings, _ = applied
    services = repo.list_feature_services(settings)
    assert {"propensity_lgbm_v1", "item_warehouse_demand_v1"} <= set(services)


# -- bad input: each names the view and the file ------------------------------------------------------


MODELS = {
    "user_rfm": "feat_user_rfm",
    "user_activity": "feat_user_activity",
    "item_stats": "feat_item_stats",
    "item_warehouse_demand": "feat_item_warehouse_demand",
    "user_rfm_segments": "feat_user_rfm_segments",
    "user_affinity": "feat_user_affinity",
    "user_profile": "feat_user_profile",
}
GOOD = {
    "user_rfm": {"user_id": ["u1", "u2"], "event_timestamp": [T("2024-01-02"), T("2024-01-02")], "order_count_lifetime": [1, 2]},
    "user_activity": {"user_id": ["u1"], "event_timestamp": [T("2024-01-02")], "view_count_7d": [1]},
    "item_stats": {"item_id": ["i1"], "event_timestamp": [T("2024-01-02")], "price": [1.0]},
    "item_warehouse_demand": {"item_id": ["i1"], "warehouse_id": ["w1"], "event_timestamp": [T("2024-01-02")], "units_sold_7d": [1]},
    "user_rfm_segments": {"user_id": ["u1"], "event_timestamp": [T("2024-01-02")], "r_score": [5], "rfm_segment": ["champions"]},
    "user_affinity": {"user_id": ["u1"], "event_timestamp": [T("2024-01-02")], "top_category_share_30d": [1.0]},
    "user_profile": {"user_id": ["u1"], "event_timestamp": [T("1970-01-01")], "age_band": ["25-34"], "region": ["north"]},
}


@pytest.fixture
def good_marts(feast_settings):
    import pyarrow.parquet as pq

    settings = feast_settings()
    for view, rows in GOOD.items():
        pq.write_table(mart_table(settings, view, rows), settings.features_dir / f"{MODELS[view]}.parquet")
    assert all(not e["problems"] for e in repo.validate_sources(settings).values())
    return settings


def _problems(settings, **kwargs):
    with pytest.raises(SourceValidationError) as err:
        repo.validate_sources(settings, **kwargs)
    return err.value.problems


def test_missing_mart(good_marts):
    (good_marts.features_dir / "feat_item_stats.parquet").unlink()
    [problem] = _problems(good_marts)
    assert "feature view 'item_stats'" in problem and "feat_item_stats.parquet" in problem and "missing" in problem
    with pytest.raises(SourceValidationError):
        repo.apply(good_marts, check=False)  # refuses before running feast


def test_empty_mart(good_marts):
    import pyarrow.parquet as pq

    table = mart_table(good_marts, "user_activity", GOOD["user_activity"]).slice(0, 0)
    pq.write_table(table, good_marts.features_dir / "feat_user_activity.parquet")
    [problem] = _problems(good_marts)
    assert "feature view 'user_activity'" in problem and "no rows" in problem
    repo.validate_sources(good_marts, allow_empty=["user_activity"])  # an orders-only lake


def test_not_parquet(good_marts):
    (good_marts.features_dir / "feat_user_rfm.parquet").write_text("user_id,event_timestamp\n")
    [problem] = _problems(good_marts)
    assert "feature view 'user_rfm'" in problem and "not a readable Parquet file" in problem


def test_duplicate_entity_timestamp_rows(good_marts):
    import pyarrow.parquet as pq

    rows = {"user_id": ["u1", "u1", "u2"], "event_timestamp": [T("2024-01-02")] * 3, "order_count_lifetime": [1, 2, 3]}
    pq.write_table(mart_table(good_marts, "user_rfm", rows), good_marts.features_dir / "feat_user_rfm.parquet")
    [problem] = _problems(good_marts)
    assert "feature view 'user_rfm'" in problem and "1 duplicate (user_id, event_timestamp)" in problem and "u1" in problem


def test_null_join_keys(good_marts):
    import pyarrow.parquet as pq

    rows = {"item_id": ["i1", None], "warehouse_id": [None, "w1"], "event_timestamp": [T("2024-01-02")] * 2, "units_sold_7d": [1, 2]}
    pq.write_table(mart_table(good_marts, "item_warehouse_demand", rows), good_marts.features_dir / "feat_item_warehouse_demand.parquet")
    [problem] = _problems(good_marts)
    assert "feature view 'item_warehouse_demand'" in problem and "2 row(s) with a null join key (item_id, warehouse_id)" in problem


def test_view_column_missing_or_retyped_in_file(good_marts):
    import pyarrow.parquet as pq

    table = mart_table(good_marts, "item_stats", GOOD["item_stats"])
    table = table.drop_columns(["price_band"]).set_column(table.schema.get_field_index("price"), "price", table["price"].cast("string"))
    pq.write_table(table, good_marts.features_dir / "feat_item_stats.parquet")
    problems = _problems(good_marts, views=["item_stats"])
    assert any("'price_band' declared by the view is missing from the file" in p for p in problems)
    assert any("'price' is VARCHAR in the file, the view declares Float64" in p for p in problems)
    assert all("feat_item_stats.parquet" in p for p in problems)
