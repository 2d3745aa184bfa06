"""Production configuration against the local services: SQL registry on PostgreSQL, Redis online store.

Each run creates its own PostgreSQL database (``feast_test_<random>``) and Feast project (the project
name ends every Redis key Feast writes), uses Redis db 15, and removes both afterwards. Skips when a
service is down (fails under REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pandas as pd
import pytest

from ml.features import repo
from ml.settings import settings_for
from tests.conftest import require_services
from tests.integration.conftest import copy_repo, fill_missing_marts, mart_table

pytestmark = [pytest.mark.integration, pytest.mark.services]

T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
REDIS_DB = 15


@pytest.fixture(scope="module")
def production_settings(tmp_path_factory):
    require_services("postgres", "redis")
    import psycopg
    import pyarrow.parquet as pq
    import redis

    name = f"feast_test_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'create database "{name}"')
    root = tmp_path_factory.mktemp("feast_production")
    settings = settings_for(
        data_dir=root / "data",
        feast_repo_dir=copy_repo(root / "feature_repo"),
        feast_mode="production",
        feast_project=name,
        feast_registry_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
    )
    settings.ensure_dirs()
    marts = {
        "feat_user_rfm": (
            "user_rfm",
            {
                "user_id": ["u1", "u1", "u2"],
                "event_timestamp": [T("2024-01-02"), T("2024-01-05"), T("2024-01-03")],
                "order_count_lifetime": [1, 2, 5],
                "last_order_at": [T("2024-01-01"), T("2024-01-04 12:00"), T("2024-01-02")],
            },
        ),
        "feat_user_activity": (
            "user_activity",
            {"user_id": ["u1"], "event_timestamp": [T("2024-01-05")], "view_count_7d": [4], "last_cart_add_at": [T("2024-01-04 18:00")]},
        ),
        "feat_item_stats": ("item_stats", {"item_id": ["i1"], "event_timestamp": [T("2024-01-05")], "price": [3.5], "price_band": ["low"]}),
        "feat_item_warehouse_demand": (
            "item_warehouse_demand",
            {
                "item_id": ["i1"],
                "warehouse_id": ["w1"],
                "event_timestamp": [T("2024-01-05")],
                "units_sold_7d": [3],
                "last_sale_date": [T("2024-01-04")],
            },
        ),
    }
    for model, (view, rows) in marts.items():
        pq.write_table(mart_table(settings, view, rows), settings.features_dir / f"{model}.parquet")
    fill_missing_marts(settings)  # views this test is not about
    yield settings
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    for key in client.scan_iter(match=b"*" + name.encode()):
        client.delete(key)
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'drop database if exists "{name}" with (force)')


def test_config_is_redis_and_sql_registry(production_settings):
    text = (
        repo.config_path(production_settings).read_text()
        if repo.config_path(production_settings).exists()
        else repo.render_config(production_settings)
    )
    assert "registry_type: sql" in text and "type: redis" in text and "${" not in text


def test_apply_materialize_and_read_online(production_settings):
    import redis
    import sqlalchemy

    repo.apply(production_settings)
    plan = repo.plan(production_settings)["output"]
    assert "No changes to registry" in plan
    engine = sqlalchemy.create_engine(production_settings.feast_registry_url)
    with engine.connect() as con:
        views = (
            con.execute(
                sqlalchemy.text("select feature_view_name from feature_views where project_id = :p"),
                {"p": production_settings.feast_project},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    from ml.features.contract import read_view_specs

    defined = {name for f in ("feature_views.py", "score_views.py") for name in read_view_specs(production_settings.feast_repo_dir / f)}
    assert {"user_rfm", "user_activity", "item_stats", "user_propensity", "user_recommendations", "item_embeddings"} <= defined
    assert set(views) == defined  # every view of the repo, generated and model-output, is in the SQL registry

    store = repo.get_store(production_settings)
    store.materialize(
        start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
        end_date=datetime(2024, 1, 6, tzinfo=timezone.utc),
        feature_views=["user_rfm", "user_activity"],
    )
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    assert list(client.scan_iter(match=b"*" + production_settings.feast_project.encode()))

    online = store.get_online_features(
        features=store.get_feature_service("propensity_lgbm_v1"),
        entity_rows=[
            {"user_id": "u1", "request_timestamp": datetime(2024, 1, 6, tzinfo=timezone.utc)},
            {"user_id": "u2", "request_timestamp": datetime(2024, 1, 6, tzinfo=timezone.utc)},
            {"user_id": "nobody", "request_timestamp": datetime(2024, 1, 6, tzinfo=timezone.utc)},
        ],
    ).to_dict()
    assert online["order_count_lifetime"] == [2, 5, None]  # latest row per user
    assert online["view_count_7d"] == [4, None, None]
    assert online["hours_since_last_cart_add_now"][0] == pytest.approx(30.0)  # 01-04 18:00 -> 01-06 00:00
    assert online["days_since_last_order_now"][0] == pytest.approx(1.5)
