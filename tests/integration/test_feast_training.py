"""Point-in-time training sets through Feast's DuckDB offline store, on small hand-made marts.

One temp repo is applied for the module. In it, ``user_activity`` gets a 2-day TTL (patched into the
temp copy of the generated file) so both behaviours are visible: ``user_rfm`` rows never expire
(ttl_days 0, as in dbt) and ``user_activity`` rows expire 2 days after their event_timestamp.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from ml.features import repo, training
from ml.settings import PROJECT_ROOT, settings_for
from tests.integration.conftest import copy_repo, fill_missing_marts, mart_table

pytestmark = pytest.mark.integration

T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731


def _set_ttl(repo_dir: Path, view: str, days: int) -> None:
    path = repo_dir / "feature_views.py"
    text = path.read_text()
    head, tail = text.split(f"{view} = FeatureView(", 1)
    tail = re.sub(r"ttl=timedelta\(days=\d+\),[^\n]*", f"ttl=timedelta(days={days}),", tail, count=1)
    path.write_text(f"{head}{view} = FeatureView({tail}")


@pytest.fixture(scope="module")
def store_settings(tmp_path_factory):
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("feast_training")
    repo_dir = copy_repo(root / "feature_repo")
    _set_ttl(repo_dir, "user_activity", 2)
    settings = settings_for(data_dir=root / "data", feast_repo_dir=repo_dir)
    settings.ensure_dirs()
    marts = {
        "user_rfm": {
            "user_id": ["u1", "u1", "u1", "u2"],
            "event_timestamp": [T("2024-01-02"), T("2024-01-05"), T("2024-01-10"), T("2024-01-02")],
            "order_count_lifetime": [1, 2, 99, 1],
            "last_order_at": [T("2024-01-01 10:00"), T("2024-01-04 12:00"), T("2024-01-09 08:00"), T("2024-01-01")],
        },
        "user_activity": {
            "user_id": ["u1", "u2"],
            "event_timestamp": [T("2024-01-02"), T("2024-01-01")],
            "view_count_7d": [3, 7],
            "last_cart_add_at": [T("2024-01-01 18:00"), None],
        },
        "item_stats": {"item_id": ["i1"], "event_timestamp": [T("2024-01-02")], "price": [9.5], "price_band": ["mid"]},
        "item_warehouse_demand": {
            "item_id": ["i1", "i1"],
            "warehouse_id": ["w1", "w1"],
            "event_timestamp": [T("2024-01-02"), T("2024-01-04")],
            "units_sold_7d": [4, 6],
            "last_sale_date": [T("2024-01-01"), T("2024-01-03")],
        },
    }
    models = {
        "user_rfm": "feat_user_rfm",
        "user_activity": "feat_user_activity",
        "item_stats": "feat_item_stats",
        "item_warehouse_demand": "feat_item_warehouse_demand",
    }
    for view, rows in marts.items():
        pq.write_table(mart_table(settings, view, rows), settings.features_dir / f"{models[view]}.parquet")
    fill_missing_marts(settings)  # views these tests are not about
    repo.apply(settings)
    return settings


@pytest.fixture(scope="module")
def store(store_settings):
    return repo.get_store(store_settings)


ENTITY = pd.DataFrame(
    {
        "user_id": ["u1", "u3", "u1", "u1", "u2", "u1", "u1", "u2"],
        "event_timestamp": [
            T("2024-01-09"),  # 0: the 01-10 row (99) is later than the label: never used -> 2
            T("2024-01-05"),  # 1: unknown user -> nulls, row kept
            T("2024-01-01"),  # 2: before u1's first row -> null, row kept
            T("2024-01-02"),  # 3: same instant as a feature row -> that row is used (<=)
            T("2024-01-03"),  # 4: u2 activity row of 01-01 is exactly 2 days old -> still valid
            T("2024-03-01"),  # 5: rfm has no TTL -> 99 two months later; activity expired -> null
            T("2024-01-09"),  # 6: duplicate of row 0 with another label -> kept twice
            T("2024-01-04"),  # 7: u2 activity row expired (01-01 + 2 days < 01-04) -> null
        ],
        "label": [1, 0, 1, 0, 1, 0, 0, 1],
    }
)


def test_point_in_time_values_and_no_leakage(store_settings, store):
    df = training.build_training_set(store_settings, ENTITY, "propensity_lgbm_v1", store=store)
    assert len(df) == len(ENTITY)
    assert df["user_id"].tolist() == ENTITY["user_id"].tolist()
    assert df["label"].tolist() == ENTITY["label"].tolist()
    counts = df["order_count_lifetime"].tolist()
    assert counts[0] == 2 and counts[6] == 2  # not 99: that value was stamped after the label time
    assert pd.isna(counts[1]) and pd.isna(counts[2])
    assert counts[3] == 1 and counts[5] == 99 and counts[4] == 1
    # nothing joined is ever later than the row's label time
    assert (df["last_order_at"].dropna() <= df.loc[df["last_order_at"].notna(), "event_timestamp"]).all()


def test_ttl_expiry_yields_null(store_settings, store):
    df = training.build_training_set(store_settings, ENTITY, "propensity_lgbm_v1", store=store)
    views = df["view_count_7d"].tolist()
    assert views[4] == 7  # 2 days old, TTL 2 days: still valid
    assert pd.isna(views[7])  # 3 days old: expired
    assert views[3] == 3 and pd.isna(views[5])  # u1: fresh at 01-02, expired by 03-01
    assert df["order_count_lifetime"].iloc[5] == 99  # no TTL on user_rfm


def test_request_time_features(store_settings, store):
    frame = pd.DataFrame({"user_id": ["u1", "u1"], "event_timestamp": [T("2024-01-03"), T("2024-01-03")], "label": [1, 0]})
    df = training.build_training_set(store_settings, frame, "propensity_lgbm_v1", store=store)
    assert df["hours_since_last_cart_add_now"].tolist() == [30.0, 30.0]  # 01-01 18:00 -> 01-03 00:00
    assert df["days_since_last_order_now"].iloc[0] == pytest.approx(38 / 24)
    frame["request_timestamp"] = [T("2024-01-03 12:00"), T("2024-01-03")]
    df = training.build_training_set(store_settings, frame, "propensity_lgbm_v1", store=store)
    assert df["hours_since_last_cart_add_now"].tolist() == [42.0, 30.0]


def test_chunked_equals_single_call_and_keeps_order(store_settings, store):
    big = pd.concat([ENTITY] * 5, ignore_index=True).sample(frac=1.0, random_state=1).reset_index(drop=True)
    one = training.build_training_set(store_settings, big, "propensity_lgbm_v1", chunk_rows=None, store=store)
    chunked = training.build_training_set(store_settings, big, "propensity_lgbm_v1", chunk_rows=7, store=store)
    pd.testing.assert_frame_equal(one, chunked)
    assert one["label"].tolist() == big["label"].tolist()
    assert list(one.columns[:4]) == ["user_id", "event_timestamp", "label", "request_timestamp"]


def test_two_key_service(store_settings, store):
    frame = pd.DataFrame(
        {
            "item_id": ["i1", "i1", "i1"],
            "warehouse_id": ["w1", "w2", "w1"],
            "event_timestamp": [T("2024-01-03"), T("2024-01-03"), T("2024-01-05")],
        }
    )
    df = training.build_training_set(store_settings, frame, "item_warehouse_demand_v1", store=store)
    assert len(df) == 3
    assert df["units_sold_7d"].iloc[0] == 4 and pd.isna(df["units_sold_7d"].iloc[1]) and df["units_sold_7d"].iloc[2] == 6
    assert df["price"].tolist() == [9.5, 9.5, 9.5]  # item_stats joins on item only
    assert df["last_sale_date"].iloc[2] == T("2024-01-03")


def test_bad_requests_are_clear(store_settings, store):
    with pytest.raises(training.TrainingSetError, match="unknown feature service 'nope_v1'"):
        training.build_training_set(store_settings, ENTITY, "nope_v1", store=store)
    with pytest.raises(training.TrainingSetError, match="lacks column"):
        training.build_training_set(store_settings, ENTITY, "item_warehouse_demand_v1", store=store)
    with pytest.raises(training.TrainingSetError, match="clash"):
        training.build_training_set(store_settings, ENTITY.assign(price_band=1, view_count_7d=1), "propensity_lgbm_v1", store=store)


def test_feature_services_are_listed(store_settings, store):
    services = repo.list_feature_services(store_settings, store)
    assert set(services) >= {"propensity_lgbm_v1", "item_warehouse_demand_v1"}
    assert "user_recency_now:hours_since_last_cart_add_now" in services["propensity_lgbm_v1"]["features"]
    assert "item_stats:price" in services["item_warehouse_demand_v1"]["features"]
    assert not any(
        f.split(":")[1] in {"user_id", "item_id", "warehouse_id", "event_timestamp"} for s in services.values() for f in s["features"]
    )


def test_docs_training_example_runs(store_settings, monkeypatch):
    """The training-set example in docs/feature_store.md runs as written (settings from get_settings)."""
    import ml.settings

    text = (PROJECT_ROOT / "docs" / "feature_store.md").read_text()
    block = re.search(r"<!-- example: training-set -->\s*```python\n(.*?)```", text, flags=re.S).group(1)
    monkeypatch.setattr(ml.settings, "get_settings", lambda: store_settings)
    namespace: dict = {}
    exec(compile(block, "docs/feature_store.md", "exec"), namespace)
    training_df = namespace["training_df"]
    assert len(training_df) == len(namespace["entity_df"])
    assert "days_since_last_order_now" in training_df.columns
