"""Data sources: one FileSource per dbt feature mart ($FEATURES_DIR/<model>.parquet).

GENERATED from dbt's manifest.json by `ecomml features generate`: do not edit by hand.
Change the mart's .yml under dbt_project/models/marts/features/, `dbt parse` (or build), then
regenerate.
tests/integration/test_feast_repo.py fails when this file and the manifest disagree.
"""

import os
from pathlib import Path

from feast import FileSource

# Where dbt writes the feature marts (Settings.features_dir, handed over as $FEATURES_DIR by
# ml.features.repo); the default matches the settings' default for a checkout.
FEATURES_DIR = Path(os.environ.get("FEATURES_DIR") or Path(__file__).resolve().parent.parent / "data" / "warehouse" / "features")


# dbt model feat_item_stats (external Parquet) -> feature view item_stats.
feat_item_stats_source = FileSource(
    name="feat_item_stats_source",
    path=str(FEATURES_DIR / "feat_item_stats.parquet"),
    timestamp_field="event_timestamp",
    description="dbt model feat_item_stats: Engagement and sales per item over trailing 7 and 30 days, with price and price band (Feast view item_stats). Grain: one row per item per snapshot event_timestamp, emitted only on the days the values change. Values cover data up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC. Event-based columns are null for orders-only lakes.",
    tags={"dbt_model": "feat_item_stats"},
    owner="data-platform",
)


# dbt model feat_item_warehouse_demand (external Parquet) -> feature view item_warehouse_demand.
feat_item_warehouse_demand_source = FileSource(
    name="feat_item_warehouse_demand_source",
    path=str(FEATURES_DIR / "feat_item_warehouse_demand.parquet"),
    timestamp_field="event_timestamp",
    description="dbt model feat_item_warehouse_demand: Recent demand per item and warehouse (Feast view item_warehouse_demand). Grain: one row per item x warehouse per snapshot event_timestamp, emitted only on the days the values change. Values cover fct_daily_demand up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC.",
    tags={"dbt_model": "feat_item_warehouse_demand"},
    owner="data-platform",
)


# dbt model feat_user_activity (external Parquet) -> feature view user_activity.
feat_user_activity_source = FileSource(
    name="feat_user_activity_source",
    path=str(FEATURES_DIR / "feat_user_activity.parquet"),
    timestamp_field="event_timestamp",
    description="dbt model feat_user_activity: Clickstream activity per user over trailing 7 and 30 days (Feast view user_activity). Grain: one row per user per snapshot event_timestamp, emitted only on the days the values change (activity days and the days activity leaves the 7/30-day windows). Values cover events up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC. No rows when the lake has no events.",
    tags={"dbt_model": "feat_user_activity"},
    owner="data-platform",
)


# dbt model feat_user_affinity (external Parquet) -> feature view user_affinity.
feat_user_affinity_source = FileSource(
    name="feat_user_affinity_source",
    path=str(FEATURES_DIR / "feat_user_affinity.parquet"),
    timestamp_field="event_timestamp",
    description="dbt model feat_user_affinity: Item affinity per user over a trailing 30 days, from view / add_to_cart / purchase events on known items (Feast view user_affinity): category concentration, relative price level of the items browsed, and the share of views on promoted items. Grain: one row per user per snapshot event_timestamp, emitted only on the days the values change (interaction days and the days interactions leave the 30-day window, when every value turns null). Values cover events up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC. No rows when the lake has no events (orders-only lakes such as Online Retail II): the features are then null at retrieval.",
    tags={"dbt_model": "feat_user_affinity"},
    owner="data-platform",
)


# dbt model feat_user_profile (external Parquet) -> feature view user_profile.
feat_user_profile_source = FileSource(
    name="feat_user_profile_source",
    path=str(FEATURES_DIR / "feat_user_profile.parquet"),
    timestamp_field="event_timestamp",
    description="dbt model feat_user_profile: Static profile attributes per user (Feast view user_profile): age band and region from dim_users ('unknown' when missing), for models that generalise over demographics. Grain: one row per user, stamped event_timestamp = 1970-01-01 00:00 UTC so every point-in-time retrieval sees it (the lake keeps no history of these attributes; a rebuild overwrites them). Gender is not a feature: it stays an audit attribute.",
    tags={"dbt_model": "feat_user_profile"},
    owner="data-platform",
)


# dbt model feat_user_rfm (external Parquet) -> feature view user_rfm.
feat_user_rfm_source = FileSource(
    name="feat_user_rfm_source",
    path=str(FEATURES_DIR / "feat_user_rfm.parquet"),
    timestamp_field="event_timestamp",
    description="dbt model feat_user_rfm: Recency, frequency and monetary value per user from non-cancelled orders (Feast view user_rfm). Grain: one row per user per snapshot event_timestamp, emitted only on the days the values change (order days and the days an order leaves the 90-day window). Values cover orders up to the end of day D and are stamped event_timestamp = D + 1 00:00 UTC.",
    tags={"dbt_model": "feat_user_rfm"},
    owner="data-platform",
)


# dbt model feat_user_rfm_segments (external Parquet) -> feature view user_rfm_segments.
feat_user_rfm_segments_source = FileSource(
    name="feat_user_rfm_segments_source",
    path=str(FEATURES_DIR / "feat_user_rfm_segments.parquet"),
    timestamp_field="event_timestamp",
    description="dbt model feat_user_rfm_segments: RFM quintile scores and named segments per user from non-cancelled orders (Feast view user_rfm_segments). Grain: one row per user per weekly snapshot event_timestamp: snapshot days are every 7th day counting back from the lake's last day, and a user has a row on every snapshot from the first one on or after their first non-cancelled order. Values cover orders up to the end of snapshot day D and are stamped event_timestamp = D + 1 00:00 UTC (the last snapshot is stamped lake_last_date + 1, the scoring cutoff of mart_user_purchase_labels). Scores are quintiles among that snapshot's buyers (equal-sized buckets; ties broken by the other two measures, then user_id). Segment rules on r_score and fm = ceil((f_score + m_score) / 2): r 5: fm 4-5 champions, fm 2-3 potential_loyalists, fm 1 new_customers; r 4: fm 4-5 loyal_customers, fm 2-3 potential_loyalists, fm 1 promising; r 3: fm 4-5 loyal_customers, fm 3 need_attention, fm 1-2 about_to_sleep; r 1-2: fm 5 cannot_lose_them, fm 3-4 at_risk, r 1 and fm 1 lost, otherwise hibernating.",
    tags={"dbt_model": "feat_user_rfm_segments"},
    owner="data-platform",
)
