"""Feature views: one per dbt feature mart, same column names, types from the manifest.

GENERATED from dbt's manifest.json by `ecomml features generate`: do not edit by hand.
Change the mart's .yml under dbt_project/models/marts/features/, `dbt parse` (or build), then
regenerate.
tests/integration/test_feast_repo.py fails when this file and the manifest disagree.
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int32, Int64, String, UnixTimestamp

from data_sources import (
    feat_item_stats_source,
    feat_item_warehouse_demand_source,
    feat_user_activity_source,
    feat_user_affinity_source,
    feat_user_profile_source,
    feat_user_rfm_source,
    feat_user_rfm_segments_source,
)
from entities import item, user, warehouse


# feat_item_stats: Engagement and sales per item over trailing 7 and 30 days, with price and price
# band (Feast view item_stats). Grain: one row per item per snapshot event_timestamp, emitted only
# on the days the values change. Values cover data up to the end of day D, stamped event_timestamp =
# D + 1 00:00 UTC. Event-based columns are null for orders-only lakes. TTL: no expiry (ttl_days 0).
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=0),  # 0 = no expiry
    schema=[
        Field(name="item_id", dtype=String, description="Item (entity item)"),  # join key
        Field(name="view_count_7d", dtype=Int64, description="Views, 7 days (null without events)"),
        Field(name="view_count_30d", dtype=Int64, description="Views, 30 days (null without events)"),
        Field(name="cart_add_count_7d", dtype=Int64, description="Add-to-cart events, 7 days (null without events)"),
        Field(name="cart_add_count_30d", dtype=Int64, description="Add-to-cart events, 30 days (null without events)"),
        Field(name="purchase_count_7d", dtype=Int64, description="Purchase events, 7 days (null without events)"),
        Field(name="purchase_count_30d", dtype=Int64, description="Purchase events, 30 days (null without events)"),
        Field(name="units_sold_7d", dtype=Int64, description="Units on non-cancelled orders, all warehouses, 7 days"),
        Field(name="units_sold_30d", dtype=Int64, description="Units on non-cancelled orders, all warehouses, 30 days"),
        Field(name="view_to_cart_rate_30d", dtype=Float64, description="cart_add_count_30d / view_count_30d (null without views)"),
        Field(name="cart_to_purchase_rate_30d", dtype=Float64, description="purchase_count_30d / cart_add_count_30d (null without cart adds)"),
        Field(name="price", dtype=Float64, description="Current list price (dim_items)"),
        Field(name="price_band", dtype=String, description="low | mid | high | premium | unknown (price quartile within category_l1)"),
    ],
    source=feat_item_stats_source,
    online=True,
    description="Engagement and sales per item over trailing 7 and 30 days, with price and price band (Feast view item_stats). Grain: one row per item per snapshot event_timestamp, emitted only on the days the values change. Values cover data up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC. Event-based columns are null for orders-only lakes.",
    owner="data-platform",
    tags={"dbt_model": "feat_item_stats", "owner": "data-platform"},
)


# feat_item_warehouse_demand: Recent demand per item and warehouse (Feast view
# item_warehouse_demand). Grain: one row per item x warehouse per snapshot event_timestamp, emitted
# only on the days the values change. Values cover fct_daily_demand up to the end of day D, stamped
# event_timestamp = D + 1 00:00 UTC. TTL: no expiry (ttl_days 0).
item_warehouse_demand = FeatureView(
    name="item_warehouse_demand",
    entities=[item, warehouse],
    ttl=timedelta(days=0),  # 0 = no expiry
    schema=[
        Field(name="item_id", dtype=String, description="Item (entity item)"),  # join key
        Field(name="warehouse_id", dtype=String, description="Warehouse (entity warehouse)"),  # join key
        Field(name="units_sold_7d", dtype=Int64, description="Units sold from this warehouse (fct_daily_demand.units: non-cancelled orders, or the ERP series) in the 7 days ending on the snapshot day"),
        Field(name="units_sold_28d", dtype=Int64, description="Units sold from this warehouse in the 28 days ending on the snapshot day"),
        Field(name="units_mean_28d", dtype=Float64, description="units_sold_28d / 28 (days before the first sale count as 0)"),
        Field(name="units_std_28d", dtype=Float64, description="Population standard deviation of daily units over the 28 days"),
        Field(name="stockout_day_count_28d", dtype=Int64, description="Days with end-of-day stock 0 in the 28 days (0 without inventory data)"),
        Field(name="promo_day_count_28d", dtype=Int64, description="Promoted days in the 28 days"),
        Field(name="last_sale_date", dtype=UnixTimestamp, description="Last day with units > 0 up to the snapshot"),
        Field(name="days_since_last_sale", dtype=Int64, description="Days from last_sale_date to the snapshot day (as of this row; recompute from last_sale_date between rows)"),
    ],
    source=feat_item_warehouse_demand_source,
    online=True,
    description="Recent demand per item and warehouse (Feast view item_warehouse_demand). Grain: one row per item x warehouse per snapshot event_timestamp, emitted only on the days the values change. Values cover fct_daily_demand up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC.",
    owner="data-platform",
    tags={"dbt_model": "feat_item_warehouse_demand", "owner": "data-platform"},
)


# feat_user_activity: Clickstream activity per user over trailing 7 and 30 days (Feast view
# user_activity). Grain: one row per user per snapshot event_timestamp, emitted only on the days the
# values change (activity days and the days activity leaves the 7/30-day windows). Values cover
# events up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC. No rows when the lake
# has no events. TTL: no expiry (ttl_days 0).
user_activity = FeatureView(
    name="user_activity",
    entities=[user],
    ttl=timedelta(days=0),  # 0 = no expiry
    schema=[
        Field(name="user_id", dtype=String, description="Shopper (entity user)"),  # join key
        Field(name="view_count_7d", dtype=Int64, description="Product views in the 7 days ending on the snapshot day"),
        Field(name="view_count_30d", dtype=Int64, description="Product views in the 30 days ending on the snapshot day"),
        Field(name="cart_add_count_7d", dtype=Int64, description="Add-to-cart events, 7 days"),
        Field(name="cart_add_count_30d", dtype=Int64, description="Add-to-cart events, 30 days"),
        Field(name="purchase_count_7d", dtype=Int64, description="Purchase events, 7 days"),
        Field(name="purchase_count_30d", dtype=Int64, description="Purchase events, 30 days"),
        Field(name="search_count_7d", dtype=Int64, description="Searches, 7 days"),
        Field(name="search_count_30d", dtype=Int64, description="Searches, 30 days"),
        Field(name="category_distinct_count_7d", dtype=Int64, description="Distinct leaf categories viewed, added or bought, 7 days"),
        Field(name="category_distinct_count_30d", dtype=Int64, description="Distinct leaf categories viewed, added or bought, 30 days"),
        Field(name="cart_abandon_count_7d", dtype=Int64, description="Cart adds neither bought nor re-added within 24 h (int_cart_adds__matched_to_purchases), counted on the day the 24 h ran out, 7 days"),
        Field(name="cart_abandon_count_30d", dtype=Int64, description="Cart adds neither bought nor re-added within 24 h, 30 days"),
        Field(name="last_cart_add_at", dtype=UnixTimestamp, description="Latest add-to-cart up to the snapshot (null when none yet)"),
        Field(name="hours_since_last_cart_add", dtype=Float64, description="Hours from last_cart_add_at to this row's event_timestamp (recompute at request time from last_cart_add_at)"),
    ],
    source=feat_user_activity_source,
    online=True,
    description="Clickstream activity per user over trailing 7 and 30 days (Feast view user_activity). Grain: one row per user per snapshot event_timestamp, emitted only on the days the values change (activity days and the days activity leaves the 7/30-day windows). Values cover events up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC. No rows when the lake has no events.",
    owner="data-platform",
    tags={"dbt_model": "feat_user_activity", "owner": "data-platform"},
)


# feat_user_affinity: Item affinity per user over a trailing 30 days, from view / add_to_cart /
# purchase events on known items (Feast view user_affinity): category concentration, relative price
# level of the items browsed, and the share of views on promoted items. Grain: one row per user per
# snapshot event_timestamp, emitted only on the days the values change (interaction days and the
# days interactions leave the 30-day window, when every value turns null). Values cover events up to
# the end of day D, stamped event_timestamp = D + 1 00:00 UTC. No rows when the lake has no events
# (orders-only lakes such as Online Retail II): the features are then null at retrieval. TTL: no
# expiry (ttl_days 0).
user_affinity = FeatureView(
    name="user_affinity",
    entities=[user],
    ttl=timedelta(days=0),  # 0 = no expiry
    schema=[
        Field(name="user_id", dtype=String, description="Shopper (entity user)"),  # join key
        Field(name="top_category_share_30d", dtype=Float64, description="Share of the 30-day interactions (with a known category_l1) in the user's most frequent category_l1; null without such interactions"),
        Field(name="category_entropy_30d", dtype=Float64, description="Shannon entropy in bits of the user's 30-day interactions over category_l1 (0 = one category); null without interactions"),
        Field(name="price_index_mean_30d", dtype=Float64, description="Mean over the 30-day interactions of item price / median price of its category_l1 (1 = typical for the category); null without priced items"),
        Field(name="promoted_view_share_30d", dtype=Float64, description="Share of the 30-day views on items with a promotion (any warehouse) covering the view's day; null without views"),
    ],
    source=feat_user_affinity_source,
    online=True,
    description="Item affinity per user over a trailing 30 days, from view / add_to_cart / purchase events on known items (Feast view user_affinity): category concentration, relative price level of the items browsed, and the share of views on promoted items. Grain: one row per user per snapshot event_timestamp, emitted only on the days the values change (interaction days and the days interactions leave the 30-day window, when every value turns null). Values cover events up to the end of day D, stamped event_timestamp = D + 1 00:00 UTC. No rows when the lake has no events (orders-only lakes such as Online Retail II): the features are then null at retrieval.",
    owner="data-platform",
    tags={"dbt_model": "feat_user_affinity", "owner": "data-platform"},
)


# feat_user_profile: Static profile attributes per user (Feast view user_profile): age band and
# region from dim_users ('unknown' when missing), for models that generalise over demographics.
# Grain: one row per user, stamped event_timestamp = 1970-01-01 00:00 UTC so every point-in-time
# retrieval sees it (the lake keeps no history of these attributes; a rebuild overwrites them).
# Gender is not a feature: it stays an audit attribute. TTL: no expiry (ttl_days 0).
user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=0),  # 0 = no expiry
    schema=[
        Field(name="user_id", dtype=String, description="Shopper (entity user)"),  # join key
        Field(name="age_band", dtype=String, description="18-24 | 25-34 | 35-44 | 45-54 | 55+ | unknown (dim_users.age_band)"),
        Field(name="region", dtype=String, description="Sales region (dim_users.region), 'unknown' when missing"),
    ],
    source=feat_user_profile_source,
    online=True,
    description="Static profile attributes per user (Feast view user_profile): age band and region from dim_users ('unknown' when missing), for models that generalise over demographics. Grain: one row per user, stamped event_timestamp = 1970-01-01 00:00 UTC so every point-in-time retrieval sees it (the lake keeps no history of these attributes; a rebuild overwrites them). Gender is not a feature: it stays an audit attribute.",
    owner="data-platform",
    tags={"dbt_model": "feat_user_profile", "owner": "data-platform"},
)


# feat_user_rfm: Recency, frequency and monetary value per user from non-cancelled orders (Feast
# view user_rfm). Grain: one row per user per snapshot event_timestamp, emitted only on the days the
# values change (order days and the days an order leaves the 90-day window). Values cover orders up
# to the end of day D and are stamped event_timestamp = D + 1 00:00 UTC. TTL: no expiry (ttl_days
# 0).
user_rfm = FeatureView(
    name="user_rfm",
    entities=[user],
    ttl=timedelta(days=0),  # 0 = no expiry
    schema=[
        Field(name="user_id", dtype=String, description="Shopper (entity user)"),  # join key
        Field(name="order_count_lifetime", dtype=Int64, description="Non-cancelled orders so far"),
        Field(name="revenue_sum_lifetime", dtype=Float64, description="Net revenue so far (null when the log has no prices)"),
        Field(name="avg_order_value_lifetime", dtype=Float64, description="revenue_sum_lifetime / order_count_lifetime"),
        Field(name="first_order_at", dtype=UnixTimestamp, description="First non-cancelled order time"),
        Field(name="last_order_at", dtype=UnixTimestamp, description="Latest non-cancelled order time (recency = event_timestamp - last_order_at)"),
        Field(name="order_count_90d", dtype=Int64, description="Non-cancelled orders in the 90 days ending on the snapshot day"),
        Field(name="revenue_sum_90d", dtype=Float64, description="Net revenue in the 90 days ending on the snapshot day"),
    ],
    source=feat_user_rfm_source,
    online=True,
    description="Recency, frequency and monetary value per user from non-cancelled orders (Feast view user_rfm). Grain: one row per user per snapshot event_timestamp, emitted only on the days the values change (order days and the days an order leaves the 90-day window). Values cover orders up to the end of day D and are stamped event_timestamp = D + 1 00:00 UTC.",
    owner="data-platform",
    tags={"dbt_model": "feat_user_rfm", "owner": "data-platform"},
)


# feat_user_rfm_segments: RFM quintile scores and named segments per user from non-cancelled orders
# (Feast view user_rfm_segments). Grain: one row per user per weekly snapshot event_timestamp:
# snapshot days are every 7th day counting back from the lake's last day, and a user has a row on
# every snapshot from the first one on or after their first non-cancelled order. Values cover orders
# up to the end of snapshot day D and are stamped event_timestamp = D + 1 00:00 UTC (the last
# snapshot is stamped lake_last_date + 1, the scoring cutoff of mart_user_purchase_labels). Scores
# are quintiles among that snapshot's buyers (equal-sized buckets; ties broken by the other two
# measures, then user_id). Segment rules on r_score and fm = ceil((f_score + m_score) / 2): r 5: fm
# 4-5 champions, fm 2-3 potential_loyalists, fm 1 new_customers; r 4: fm 4-5 loyal_customers, fm 2-3
# potential_loyalists, fm 1 promising; r 3: fm 4-5 loyal_customers, fm 3 need_attention, fm 1-2
# about_to_sleep; r 1-2: fm 5 cannot_lose_them, fm 3-4 at_risk, r 1 and fm 1 lost, otherwise
# hibernating. TTL: no expiry (ttl_days 0).
user_rfm_segments = FeatureView(
    name="user_rfm_segments",
    entities=[user],
    ttl=timedelta(days=0),  # 0 = no expiry
    schema=[
        Field(name="user_id", dtype=String, description="Shopper (entity user)"),  # join key
        Field(name="days_since_last_order", dtype=Int32, description="Days from the last non-cancelled order's day to the snapshot day D (0 = ordered on D)"),
        Field(name="order_count_365d", dtype=Int64, description="Non-cancelled orders in the 365 days ending on the snapshot day (0 when all are older)"),
        Field(name="revenue_sum_365d", dtype=Float64, description="Net revenue of those orders (0 without orders in the window; null when the log has no prices)"),
        Field(name="r_score", dtype=Int32, description="Recency quintile among the snapshot's buyers: 5 = most recent order"),
        Field(name="f_score", dtype=Int32, description="Frequency quintile (order_count_365d): 5 = most orders"),
        Field(name="m_score", dtype=Int32, description="Monetary quintile (revenue_sum_365d, unknown revenue as 0): 5 = most revenue"),
        Field(name="rfm_score", dtype=Int32, description="r_score + f_score + m_score"),
        Field(name="rfm_segment", dtype=String, description="Named segment from r_score and ceil((f_score + m_score) / 2); rules in the model description"),
    ],
    source=feat_user_rfm_segments_source,
    online=True,
    description="RFM quintile scores and named segments per user from non-cancelled orders (Feast view user_rfm_segments). Grain: one row per user per weekly snapshot event_timestamp: snapshot days are every 7th day counting back from the lake's last day, and a user has a row on every snapshot from the first one on or after their first non-cancelled order. Values cover orders up to the end of snapshot day D and are stamped event_timestamp = D + 1 00:00 UTC (the last snapshot is stamped lake_last_date + 1, the scoring cutoff of mart_user_purchase_labels). Scores are quintiles among that snapshot's buyers (equal-sized buckets; ties broken by the other two measures, then user_id). Segment rules on r_score and fm = ceil((f_score + m_score) / 2): r 5: fm 4-5 champions, fm 2-3 potential_loyalists, fm 1 new_customers; r 4: fm 4-5 loyal_customers, fm 2-3 potential_loyalists, fm 1 promising; r 3: fm 4-5 loyal_customers, fm 3 need_attention, fm 1-2 about_to_sleep; r 1-2: fm 5 cannot_lose_them, fm 3-4 at_risk, r 1 and fm 1 lost, otherwise hibernating.",
    owner="data-platform",
    tags={"dbt_model": "feat_user_rfm_segments", "owner": "data-platform"},
)
