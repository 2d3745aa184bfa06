"""Feature services: one per model version, named ``<model>_v<N>`` (STYLE.md); services that no model
trains on are named by what they serve (``item_warehouse_demand_v1``).

A model trains (``ml.features.training.build_training_set``) and serves (``get_online_features``)
through the same service, so the feature list is written once, here. A new feature list is a new
version (``_v2``) beside the old one, never an edit of a deployed version.
"""

from feast import FeatureService
from feature_views import (
    item_stats,
    item_warehouse_demand,
    user_activity,
    user_affinity,
    user_profile,
    user_rfm,
    user_rfm_segments,
)
from on_demand_views import user_purchase_cycle_now, user_recency_now

# Purchase propensity (LightGBM): RFM + 7/30-day activity + request-time recency. Entity: user.
propensity_lgbm_v1 = FeatureService(
    name="propensity_lgbm_v1",
    features=[user_rfm, user_activity, user_recency_now],
    description="Features of the propensity_lgbm model, version 1 (entity user)",
    owner="data-platform",
    tags={"model": "propensity_lgbm", "version": "1", "entities": "user"},
)

# Purchase propensity (LightGBM), version 2: v1 plus weekly RFM quintile scores / segment (rfm_segment
# is a string: the model encodes it as a category) and 30-day item affinity. Entity: user.
propensity_lgbm_v2 = FeatureService(
    name="propensity_lgbm_v2",
    features=[user_rfm, user_activity, user_rfm_segments, user_affinity, user_recency_now],
    description="Features of the propensity_lgbm model, version 2 (entity user)",
    owner="data-platform",
    tags={"model": "propensity_lgbm", "version": "2", "entities": "user"},
)

# Purchase propensity (LightGBM), version 3: v2 plus the request-time purchase cycle (days since the last
# order against the customer's own mean gap, tenure, 90-day trend of order and spend rates). Entity: user.
propensity_lgbm_v3 = FeatureService(
    name="propensity_lgbm_v3",
    features=[user_rfm, user_activity, user_rfm_segments, user_affinity, user_recency_now, user_purchase_cycle_now],
    description="Features of the propensity_lgbm model, version 3 (entity user)",
    owner="data-platform",
    tags={"model": "propensity_lgbm", "version": "3", "entities": "user"},
)

# Recent demand per item x warehouse (7/28-day units, stock-out days, days since the last sale) with the
# item's engagement and price: for planners' tools and analyses, not a model's training set. demand_lgbm
# forecasts several periods ahead from one origin, so its lags and windows are taken at each forecast
# origin, not at the target day (a point-in-time read at the target day would see the days between):
# it computes them from the export mart_demand_series (docs/forecasting.md, "Why demand_lgbm does not
# train through Feast"). item_stats comes without its item-wide units_sold_7d/30d: the warehouse view's
# units_sold_7d/28d carry the measure at the service's grain, and one service cannot serve two features
# of one name (Feast joins them by name).
item_warehouse_demand_v1 = FeatureService(
    name="item_warehouse_demand_v1",
    features=[
        item_warehouse_demand,
        item_stats[
            [
                "view_count_7d",
                "view_count_30d",
                "cart_add_count_7d",
                "cart_add_count_30d",
                "purchase_count_7d",
                "purchase_count_30d",
                "view_to_cart_rate_30d",
                "cart_to_purchase_rate_30d",
                "price",
                "price_band",
            ]
        ],
    ],
    description="Recent demand per item x warehouse with the item's engagement and price, version 1 (entities item, warehouse)",
    owner="data-platform",
    tags={"version": "1", "entities": "item,warehouse", "kind": "analytics"},
)

# Recommendation rankers (recs_widedeep, with recs_lgbm and recs_fm on the same features): user side
# (profile, activity, affinity, RFM) and item side (engagement, price). Entities: user, item. The
# trainer retrieves each side at the cutoff apart (ml.features.training keys=) and crosses them per
# candidate pair in ml/models/recs/.
recs_widedeep_v1 = FeatureService(
    name="recs_widedeep_v1",
    features=[user_profile, user_activity, user_affinity, user_rfm, item_stats],
    description="Features of the recommendation rankers (recs_widedeep, recs_lgbm, recs_fm), version 1 (entities user, item)",
    owner="data-platform",
    tags={"model": "recs_widedeep", "version": "1", "entities": "user,item"},
)
