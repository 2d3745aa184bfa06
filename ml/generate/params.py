"""Sizes (``SCALES``), the fixed calendar and every behavioural parameter of the generator.

Each behavioural parameter carries its meaning; ``params.json`` beside the generated data lists them
all, so a model's recovered effect can be checked against the value that produced the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, timedelta

# The calendar never depends on today's date: every scale's data ends on this day (inclusive).
END_DATE = date(2026, 10, 31)


@dataclass(frozen=True)
class Scale:
    name: str
    n_users: int
    n_items: int
    days: int  # span length; the data covers END_DATE - days + 1 .. END_DATE
    target_events: int  # the session rate is set so the expected event count is about this
    user_batch: int  # users simulated per batch (bounds memory)
    write_days: int  # days per written chunk file of the partitioned tables

    @property
    def start_date(self) -> date:
        return END_DATE - timedelta(days=self.days - 1)


SCALES: dict[str, Scale] = {
    s.name: s
    for s in [
        Scale("tiny", n_users=400, n_items=240, days=120, target_events=30_000, user_batch=400, write_days=120),
        Scale("small", n_users=3_000, n_items=1_200, days=365, target_events=100_000, user_batch=3_000, write_days=365),
        Scale("medium", n_users=40_000, n_items=3_000, days=730, target_events=1_000_000, user_batch=20_000, write_days=92),
        Scale("large", n_users=1_000_000, n_items=20_000, days=730, target_events=10_000_000, user_batch=50_000, write_days=31),
    ]
}


def P(value, meaning: str):
    if isinstance(value, dict):
        return field(default_factory=lambda: dict(value), metadata={"meaning": meaning})
    return field(default=value, metadata={"meaning": meaning})


@dataclass(frozen=True)
class Behaviour:
    """The behavioural model. Defaults are what every scale uses."""

    # --- users
    affinity_concentration: float = P(
        3.0, "Dirichlet concentration of a user's category_l1 affinity (sum of alphas; lower = more focused users)"
    )
    age_affinity: dict = P(
        {"beauty": 0.0, "electronics": -0.4, "garden": 0.6, "apparel": -0.3, "home": 0.35, "grocery": 0.1, "sports": -0.3},
        "Log-shift of the affinity Dirichlet base per category_l1 per +1 sd of age ((age-38)/12): older users lean garden/home, younger electronics/apparel/sports",  # noqa: E501
    )
    gender_effect: float = P(
        0.0, "Effect of gender on any behaviour: none (fairness audit ground truth: purchase behaviour is independent of gender)"
    )
    activity_sigma: float = P(0.9, "Log-normal sigma of a user's session rate (activity level); mean normalised to the scale's rate")
    price_sensitivity_sigma: float = P(
        0.6,
        "Log-normal sigma of per-user price sensitivity (mean 1); utility -= sensitivity * (log price - l3 mean log price) * price_coef",
    )
    price_coef: float = P(1.2, "Utility weight of relative log price, multiplied by the user's price sensitivity")
    brand_loyalty: float = P(1.0, "Utility bonus of an item of the user's favourite brand of that category_l1")
    intent_sigma: float = P(0.5, "Sd of a user's purchase-intent logit offset (added to add-to-cart and purchase logits)")
    signup_before_share: float = P(0.7, "Share of users who signed up before the span (the rest sign up uniformly inside it)")
    region_shares: dict = P(
        {"us_east": 0.45, "de_central": 0.35, "au_east": 0.20}, "Share of users per region (each region has one warehouse)"
    )
    # --- traffic calendar
    weekly: tuple = P((0.92, 0.88, 0.90, 0.95, 1.02, 1.13, 1.20), "Session-rate multiplier by weekday Mon..Sun (weekly seasonality)")
    yearly_amplitude: float = P(0.25, "Yearly seasonality: multiplier 1 + a*cos(2pi(doy - yearly_peak_doy)/365.25)")
    yearly_peak_doy: int = P(350, "Day of year of the yearly traffic peak (mid-December)")
    holiday_lift: float = P(1.4, "Session-rate multiplier on a public holiday of the user's country")
    # --- sessions
    search_prob: float = P(0.45, "Probability a session starts with a search (query from the session's target category_l3 vocabulary)")
    views_mean: float = P(3.0, "Mean extra views per session (views = 1 + Poisson(views_mean * user browse depth))")
    secondary_view_share: float = P(0.2, "Share of views in the session's secondary category_l3 (the rest are in its target category_l3)")
    candidates: int = P(5, "Items drawn by popularity per view; the user picks the one with the highest utility (+Gumbel noise)")
    weather_temp_note: str = P(
        "per category_l3, see categories.parquet",
        "Log-multiplier of a category_l3's session share per +10 C temperature anomaly (temperature - region mean)",
    )
    rain_threshold_mm: float = P(
        2.0, "A day with more precipitation than this is rainy: rain-sensitive category_l3 shares shift by their rain coefficient"
    )
    dwell_log_mean: float = P(3.3, "log dwell seconds of a view at utility 0")
    dwell_utility: float = P(0.7, "Increase of log dwell seconds per unit of item utility (liked items are looked at longer)")
    dwell_sigma: float = P(0.5, "Sd of log dwell seconds")
    # --- cart and purchase
    atc_intercept: float = P(-2.3, "Add-to-cart logit at utility 0")
    atc_utility: float = P(0.8, "Add-to-cart logit per unit of utility")
    promo_utility: float = P(4.0, "Utility per unit of promotion discount (a 25 % cut adds 1.0): promoted items are chosen and viewed more")
    promo_atc: float = P(3.0, "Add-to-cart logit per unit of discount")
    purchase24_intercept: float = P(-0.6, "Logit of buying a carted item within 24 h at utility 0")
    purchase24_utility: float = P(0.5, "Purchase-within-24h logit per unit of utility")
    promo_purchase: float = P(3.0, "Purchase-within-24h logit per unit of discount, times (0.5 + price sensitivity)")
    same_session_share: float = P(0.75, "Share of within-24h purchases made in the same session as the add; the rest return 0.5-24 h later")
    late_conversion_ratio: float = P(
        0.33, "P(buy after 24 h | not bought within 24 h) / P(buy within 24 h): carts left 24 h convert 67 % less"
    )
    late_delay_mean_hours: float = P(72.0, "Mean extra delay (exponential, beyond 24 h, capped at 30 days) of purchases after 24 h")
    remove_share: float = P(0.3, "Share of never-bought cart adds that are explicitly removed (remove_from_cart) later in the session")
    quantity_extra_mean: dict = P({"grocery": 0.9, "default": 0.25}, "Mean of Poisson extra units per order line (quantity = 1 + extra)")
    # --- replenishment: customers rebuy what runs out, on a cycle of its category
    replenish_prob: dict = P(
        {"grocery": 0.55, "beauty": 0.4, "home": 0.2, "garden": 0.15, "default": 0.05},
        "P(a bought item is bought again one cycle later), by category_l1; each rebuy continues the chain with the same probability",
    )
    replenish_cycle_days: dict = P(
        {"grocery": 12.0, "beauty": 30.0, "home": 45.0, "garden": 40.0, "default": 90.0},
        "Median days between two purchases of the same item by the same customer, by category_l1",
    )
    replenish_customer_sigma: float = P(
        0.3, "Log-normal sigma of a customer x item's own cycle around its category's (some use it up faster)"
    )
    replenish_jitter_sigma: float = P(0.15, "Log-normal sigma of each interval around the customer x item's own cycle")
    # --- promotions
    promo_every_days: float = P(75.0, "Mean gap between two promotions of the same item (days)")
    promo_duration_days: tuple = P((3, 10), "Promotion length range, days (inclusive)")
    promo_discounts: tuple = P((0.1, 0.15, 0.2, 0.25, 0.3, 0.4), "Discount fractions a promotion draws from")
    promo_warehouse_share: float = P(0.3, "Share of promotions limited to one warehouse (warehouse_id set); the rest apply everywhere")
    # --- orders after the fact
    cancel_prob: float = P(0.03, "Probability an order is cancelled (every unit returned_quantity)")
    return_prob: dict = P(
        {"apparel": 0.18, "electronics": 0.08, "default": 0.04},
        "Probability an order line's item is returned, by category_l1; an order with a returned line has status returned",
    )
    # --- inventory
    lead_time_days: tuple = P((2, 14), "Replenishment lead time range per item x warehouse, days")
    late_delivery_prob: float = P(0.1, "Probability a replenishment arrives 3-10 days late")
    safety_days: tuple = P((0.0, 5.0), "Safety stock range in days of mean demand (reorder point = demand * (lead time + safety))")
    min_order_units: int = P(5, "Smallest order-up-to level above the reorder point, units (slow movers)")
    cover_days: tuple = P((10.0, 40.0), "Order-up-to level above the reorder point, in days of mean demand")

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = {"value": list(v) if isinstance(v, tuple) else v, "meaning": f.metadata["meaning"]}
        return out


WAREHOUSES = [
    # warehouse_id, region, country, utc offset hours, temperature mean, amplitude, warmest day of year
    ("wh_us_east", "us_east", "US", -5, 13.0, 11.0, 200),
    ("wh_de_central", "de_central", "DE", 1, 10.0, 9.0, 200),
    ("wh_au_east", "au_east", "AU", 10, 18.0, 5.5, 20),
]
