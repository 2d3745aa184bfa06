"""On-demand feature views: request-time features, computed in Python when features are read.

The marts stamp "time since" features as of their own row (``hours_since_last_cart_add`` is measured
at the row's event_timestamp, which can be days old). These views recompute them against the time of
the request: ``request_timestamp`` from the request (serving) or from the entity frame (training,
where ``ml.features.training.build_training_set`` fills it with each row's event_timestamp).
They only read the stored ``*_at`` timestamps; no SQL and no aggregation here.
"""

import pandas as pd
from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, UnixTimestamp

from feature_views import user_activity, user_rfm

# The time a prediction is made for; supplied with every request (or entity row).
request_time = RequestSource(
    name="request_time",
    schema=[Field(name="request_timestamp", dtype=UnixTimestamp, description="Time the features are requested for (UTC)")],
    description="Request-time context: the moment a prediction is made for",
)


# Recency of the last add-to-cart and the last order, measured at request time (nulls stay null;
# a negative gap, from a stored timestamp after the request time, is clipped to 0).
@on_demand_feature_view(
    sources=[user_activity[["last_cart_add_at"]], user_rfm[["last_order_at"]], request_time],
    # No Field descriptions here: `feast apply` infers the output schema by running the function and
    # compares Fields including their description, so the description lives in these comments.
    schema=[
        Field(name="hours_since_last_cart_add_now", dtype=Float64),  # hours from last_cart_add_at to request_timestamp
        Field(name="days_since_last_order_now", dtype=Float64),  # days from last_order_at to request_timestamp
    ],
    mode="pandas",
    description="Request-time recency of the user's last cart add and last order",
    owner="data-platform",
    tags={"owner": "data-platform", "inputs": "user_activity.last_cart_add_at,user_rfm.last_order_at"},
)
def user_recency_now(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast stores this function's source and runs it on its own (training and serving), so it
    # imports and defines everything it uses inside its body.
    import pandas as pd

    def _utc(values: pd.Series) -> pd.Series:
        """Timestamps as tz-aware UTC whatever arrives (datetime64, tz-aware, epoch seconds, None)."""
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return pd.to_datetime(values, unit="s", utc=True)
        return pd.to_datetime(values, utc=True)

    now = _utc(inputs["request_timestamp"])
    out = pd.DataFrame(index=inputs.index)
    cart = (now - _utc(inputs["last_cart_add_at"])).dt.total_seconds() / 3600.0
    order = (now - _utc(inputs["last_order_at"])).dt.total_seconds() / 86400.0
    out["hours_since_last_cart_add_now"] = cart.clip(lower=0.0).astype("float64")
    out["days_since_last_order_now"] = order.clip(lower=0.0).astype("float64")
    return out
