"""Feature views over model outputs: batch scores written by ``ml.models`` (not dbt marts).

Each model's scorer rewrites ``$SCORES_DIR/<model>.parquet`` (the latest scores of every scoring
date, stamped with the scoring time) after writing its dated partition; the score DAGs then
materialize the view so that online reads (``get_online_features``) return the current score.
Hand-written: the generated data_sources.py / feature_views.py cover the dbt feature marts only.
"""

import os
from datetime import timedelta
from pathlib import Path

from entities import item, user, warehouse
from feast import FeatureService, FeatureView, Field, FileSource
from feast.types import Array, Bool, Float32, Float64, Int64, String

# Where ml.models writes scores (Settings.scores_dir, handed over as $SCORES_DIR by ml.features.repo).
SCORES_DIR = Path(os.environ.get("SCORES_DIR") or Path(__file__).resolve().parent.parent / "data" / "warehouse" / "scores")

# propensity_lgbm (ml/models/user/propensity.py): P(order in the horizon) with its top SHAP contributions.
propensity_lgbm_scores_source = FileSource(
    name="propensity_lgbm_scores_source",
    path=str(SCORES_DIR / "propensity_lgbm.parquet"),
    timestamp_field="event_timestamp",
    description="Batch scores of the champion propensity_lgbm model, one row per user per scoring date",
    tags={"model": "propensity_lgbm"},
    owner="data-platform",
)

user_propensity = FeatureView(
    name="user_propensity",
    entities=[user],
    ttl=timedelta(days=14),  # a score older than two weekly scorings is not served
    schema=[
        Field(name="propensity_score", dtype=Float64, description="P(non-cancelled order within the horizon)"),
        Field(name="propensity_decile", dtype=Int64, description="1 = top 10 % of the scoring date's users"),
        Field(name="model_version", dtype=String, description="Registered propensity_lgbm version that scored"),
        Field(name="top_feature_1", dtype=String, description="Feature with the largest absolute contribution"),
        Field(name="top_contribution_1", dtype=Float64, description="Its SHAP contribution (log-odds)"),
        Field(name="top_feature_2", dtype=String, description="Second largest contribution"),
        Field(name="top_contribution_2", dtype=Float64, description="Its SHAP contribution (log-odds)"),
        Field(name="top_feature_3", dtype=String, description="Third largest contribution"),
        Field(name="top_contribution_3", dtype=Float64, description="Its SHAP contribution (log-odds)"),
    ],
    source=propensity_lgbm_scores_source,
    online=True,
    description="Current purchase-propensity score per user, with explanations (model propensity_lgbm)",
    owner="data-platform",
    tags={"model": "propensity_lgbm", "produced_by": "ml.models.user.propensity.score"},
)

# What consumers (CRM, on-site personalisation) read online: the score and its explanations.
propensity_scores_v1 = FeatureService(
    name="propensity_scores_v1",
    features=[user_propensity],
    description="Current propensity_lgbm score per user with its top contributions (entity user)",
    owner="data-platform",
    tags={"model": "propensity_lgbm", "version": "1", "entities": "user", "kind": "scores"},
)

# Item text embeddings (ml/models/recs/embeddings.py: all-MiniLM-L6-v2 over mart_item_catalogue.item_text,
# cached by text hash): content features for cold-start items and semantic search. Items without
# text have no row.
item_embeddings_source = FileSource(
    name="item_embeddings_source",
    path=str(SCORES_DIR / "item_embeddings.parquet"),
    timestamp_field="event_timestamp",
    description="Sentence embeddings of item texts, one row per item with text (model all-MiniLM-L6-v2)",
    tags={"model": "all-MiniLM-L6-v2"},
    owner="data-platform",
)

item_embeddings = FeatureView(
    name="item_embeddings",
    entities=[item],
    ttl=timedelta(days=0),  # 0 = no expiry: an item's embedding changes only with its text
    schema=[
        Field(name="embedding", dtype=Array(Float32), description="L2-normalised 384-dim sentence embedding of item_text"),
        Field(name="text_hash", dtype=String, description="sha256 of the embedded item_text (the cache key)"),
    ],
    source=item_embeddings_source,
    online=True,
    description="Sentence embedding of each item's text (title, description, brand, category path)",
    owner="data-platform",
    tags={"model": "all-MiniLM-L6-v2", "produced_by": "ml.models.recs.embed_items"},
)

# Batch recommendations (ml/models/recs/): the champion ranker's top K per known user after the
# business rules (and the top K among items the user never bought), plus one row for user_id "__fallback__" (the list for users
# without their own).
recs_widedeep_scores_source = FileSource(
    name="recs_widedeep_scores_source",
    path=str(SCORES_DIR / "recs_widedeep.parquet"),
    timestamp_field="event_timestamp",
    description="Batch top-K recommendations of the champion ranker, one row per user per scoring date",
    tags={"model": "recs_widedeep"},
    owner="data-platform",
)

user_recommendations = FeatureView(
    name="user_recommendations",
    entities=[user],
    ttl=timedelta(days=14),  # older lists are not served: the fallback row answers instead
    schema=[
        Field(name="rec_item_ids", dtype=Array(String), description="Recommended items, best first"),
        Field(name="rec_scores", dtype=Array(Float64), description="Ranker score of each item"),
        Field(name="rec_sources", dtype=Array(String), description="Candidate source of each item: covis | repeat | content | popularity"),
        Field(name="new_item_ids", dtype=Array(String), description="Recommended items the user never bought, best first"),
        Field(name="new_scores", dtype=Array(Float64), description="Ranker score of each new item"),
        Field(name="model_name", dtype=String, description="Registered ranker that scored (recs_widedeep or recs_lgbm)"),
        Field(name="model_version", dtype=String, description="Its registered version"),
    ],
    source=recs_widedeep_scores_source,
    online=True,
    description="Current top-K recommendations per user (model recs_widedeep); key __fallback__ holds the list for unknown users",
    owner="data-platform",
    tags={"model": "recs_widedeep", "produced_by": "ml.models.recs.score"},
)

# What the storefront reads online: a user's list (and the fallback row) in one call.
recs_scores_v1 = FeatureService(
    name="recs_scores_v1",
    features=[user_recommendations],
    description="Current recommendations per user (entity user); request the user and __fallback__",
    owner="data-platform",
    tags={"model": "recs_widedeep", "version": "1", "entities": "user", "kind": "scores"},
)

# The inventory plan (ml/models/demand/pipeline.py forecast -> ml/models/demand/inventory.py policy): per item x
# warehouse, from the champion demand forecaster's quantiles over the horizon and the lead time.
# Written per forecast date (the last day of the demand history) under $SCORES_DIR/demand_plan/.
demand_plan_source = FileSource(
    name="demand_plan_source",
    path=str(SCORES_DIR / "demand_plan.parquet"),
    timestamp_field="event_timestamp",
    description="Inventory plan per item x warehouse and forecast date (model demand_lgbm)",
    tags={"model": "demand_lgbm"},
    owner="data-platform",
)

item_warehouse_plan = FeatureView(
    name="item_warehouse_plan",
    entities=[item, warehouse],
    ttl=timedelta(days=14),  # a plan older than two weekly forecasts is not served
    schema=[
        Field(name="forecast_start", dtype=String, description="First forecast day (ISO date)"),
        Field(name="horizon_days", dtype=Int64, description="Days the forecast covers"),
        Field(name="forecast_units", dtype=Float64, description="Expected units over the horizon (sum of yhat)"),
        Field(name="forecast_units_p90", dtype=Float64, description="Sum of the daily P90 forecasts over the horizon"),
        Field(name="method", dtype=String, description="demand_lgbm | moving_average (short history) | zero (no demand yet)"),
        Field(name="lead_time_days", dtype=Float64, description="Replenishment lead time used"),
        Field(name="lead_time_source", dtype=String, description="item | warehouse (median) | default (config)"),
        Field(name="service_level", dtype=Float64, description="Cycle service level of the safety stock"),
        Field(name="demand_lt", dtype=Float64, description="Expected demand over the lead time"),
        Field(name="safety_stock", dtype=Float64, description="z x sd of the lead-time demand"),
        Field(name="reorder_point", dtype=Float64, description="Order when the inventory position is at or below this"),
        Field(name="order_up_to", dtype=Float64, description="Order up to this position (lead time + review period)"),
        Field(name="on_hand_units", dtype=Float64, description="Stock on the last inventory day (null = unknown)"),
        Field(name="inventory_position", dtype=Float64, description="On hand + on order (null = unknown)"),
        Field(name="order_needed", dtype=Bool, description="Position at or below the reorder point (null = stock unknown)"),
        Field(name="suggested_order_units", dtype=Float64, description="Units to order now (0 when none needed)"),
        Field(name="projected_stockout_date", dtype=String, description="First day the position is used up (null = lasts the horizon)"),
        Field(name="days_of_cover", dtype=Float64, description="Position / mean daily forecast (null = no demand forecast)"),
        Field(name="model_version", dtype=String, description="Registered demand_lgbm version that forecast"),
    ],
    source=demand_plan_source,
    online=True,
    description="Current inventory plan per item x warehouse (reorder point, order-up-to, suggested order, stock-out date)",
    owner="data-platform",
    tags={"model": "demand_lgbm", "produced_by": "ml.models.demand.forecast"},
)

# What planners' tools read online: the plan of an item at a warehouse.
demand_plan_v1 = FeatureService(
    name="demand_plan_v1",
    features=[item_warehouse_plan],
    description="Current inventory plan per item x warehouse (entities item, warehouse)",
    owner="data-platform",
    tags={"model": "demand_lgbm", "version": "1", "entities": "item,warehouse", "kind": "scores"},
)
