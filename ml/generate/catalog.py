"""The static world: category tree, vocabulary, items, users, warehouses, calendar, weather, promotions.

Everything here is vectorised numpy except the per-item text (a loop over items, not events).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from ml.generate.params import WAREHOUSES, Behaviour, Scale

# category_l1 -> (base price, brands, attribute words, {category_l2: [(category_l3, temp coef per +10 C, rain coef)]})
TREE: dict[str, tuple] = {
    "beauty": (
        18.0,
        ["Lumina", "Veloura", "PureDew", "Aurelle", "Nuvana"],
        "hydrating gentle vegan fragrance-free nourishing radiant matte dermatologist-tested organic soothing "
        "long-lasting lightweight vitamin botanical silky refillable".split(),
        {
            "skincare": [("moisturizer", 0.0, 0.0), ("serum", 0.0, 0.0), ("sunscreen", 0.9, -0.3)],
            "makeup": [("lipstick", 0.0, 0.0), ("mascara", 0.0, 0.0), ("foundation", 0.0, 0.0)],
            "haircare": [("shampoo", 0.0, 0.0), ("conditioner", 0.0, 0.0), ("hair oil", -0.1, 0.0)],
        },
    ),
    "electronics": (
        120.0,
        ["Voltix", "Sonora", "Kyren", "Arcwave", "Nexel"],
        "wireless bluetooth noise-cancelling rechargeable usb-c fast-charging portable hd ergonomic "
        "backlit compact high-resolution smart battery low-latency".split(),
        {
            "audio": [("headphones", 0.0, 0.0), ("bluetooth speaker", 0.3, -0.2), ("earbuds", 0.0, 0.0)],
            "computing": [("laptop", -0.2, 0.2), ("keyboard", -0.1, 0.1), ("monitor", -0.2, 0.2)],
            "phone accessories": [("phone case", 0.0, 0.0), ("charger", 0.0, 0.0), ("power bank", 0.2, 0.0)],
        },
    ),
    "garden": (
        35.0,
        ["Greenleaf", "Terrano", "Bloomfield", "Rootwise", "Sunpatch"],
        "weatherproof perennial hardy outdoor galvanised seasonal drought-tolerant cordless "
        "stainless heirloom foldable sturdy flowering raised-bed patio".split(),
        {
            "plants and seeds": [("flower seeds", 0.7, -0.1), ("vegetable seeds", 0.6, -0.1), ("potted plant", 0.5, 0.0)],
            "garden tools": [("pruning shears", 0.6, -0.3), ("garden hose", 0.9, -0.5), ("lawn mower", 0.8, -0.5)],
            "outdoor living": [("patio chair", 0.8, -0.4), ("barbecue grill", 1.0, -0.5), ("parasol", 1.0, -0.4)],
        },
    ),
    "apparel": (
        40.0,
        ["Northwind", "Maris", "Coralie", "Stitchworks", "Urbanloom"],
        "cotton slim-fit breathable organic-cotton stretch relaxed knitted denim waterproof insulated "
        "recycled tailored casual everyday layered".split(),
        {
            "tops": [("t-shirt", 0.4, 0.0), ("sweater", -0.6, 0.1), ("blouse", 0.2, 0.0)],
            "bottoms": [("jeans", -0.1, 0.0), ("shorts", 0.8, -0.3), ("skirt", 0.4, -0.1)],
            "outerwear": [("rain jacket", -0.1, 0.8), ("winter coat", -1.0, 0.2), ("fleece vest", -0.5, 0.1)],
        },
    ),
    "home": (
        30.0,
        ["Hearthly", "Casabel", "Linnea", "Oakmere", "Domra"],
        "non-stick ceramic cosy handmade scented dishwasher-safe soft minimalist percale "
        "stoneware induction-ready decorative washable hypoallergenic".split(),
        {
            "kitchen": [("frying pan", 0.0, 0.0), ("chef knife", 0.0, 0.0), ("coffee maker", -0.3, 0.2)],
            "bedding": [("duvet", -0.6, 0.1), ("pillow", 0.0, 0.0), ("bed sheets", 0.1, 0.0)],
            "decor": [("candle", -0.5, 0.2), ("picture frame", 0.0, 0.0), ("throw blanket", -0.6, 0.2)],
        },
    ),
    "grocery": (
        6.0,
        ["Harvest Lane", "Golden Acre", "Mirabel", "Fieldhouse", "Tasteful"],
        "organic fair-trade gluten-free roasted crunchy sugar-free wholegrain cold-pressed "
        "family-size natural premium bulk single-origin salted".split(),
        {
            "beverages": [("coffee beans", -0.3, 0.1), ("green tea", -0.3, 0.1), ("sparkling water", 0.7, -0.1)],
            "snacks": [("chocolate bar", -0.2, 0.1), ("potato chips", 0.2, 0.0), ("granola bar", 0.0, 0.0)],
            "pantry": [("olive oil", 0.0, 0.0), ("pasta", -0.1, 0.0), ("rice", 0.0, 0.0)],
        },
    ),
    "sports": (
        35.0,
        ["Stridex", "Peakform", "Altura", "Velo", "Kinetiq"],
        "non-slip adjustable reflective lightweight breathable durable padded ventilated "
        "shock-absorbing grippy insulated packable ergonomic quick-dry".split(),
        {
            "fitness": [("yoga mat", 0.0, 0.1), ("dumbbells", -0.2, 0.2), ("resistance bands", 0.0, 0.1)],
            "cycling": [("bike helmet", 0.5, -0.4), ("bike light", -0.3, 0.0), ("cycling gloves", 0.3, -0.3)],
            "outdoor sports": [("tent", 0.9, -0.4), ("hiking boots", 0.3, -0.2), ("water bottle", 0.6, -0.1)],
        },
    ),
}

L1 = list(TREE)
NOISE_WORDS = (
    "new classic premium everyday essential gift bestseller value quality trusted popular limited "
    "edition modern original favourite reliable improved signature practical simple".split()
)
USES = {
    "beauty": ["daily routine", "sensitive skin", "evening care", "travel"],
    "electronics": ["work", "gaming", "commuting", "home office"],
    "garden": ["small gardens", "balconies", "summer evenings", "spring planting"],
    "apparel": ["everyday wear", "the weekend", "the office", "layering"],
    "home": ["family dinners", "guest rooms", "cosy evenings", "small kitchens"],
    "grocery": ["breakfast", "snacking", "the pantry", "family meals"],
    "sports": ["training", "weekend trips", "commuting", "the gym"],
}


@dataclass
class Categories:
    """One row per category_l3 (index = l3 code)."""

    frame: pd.DataFrame  # category_l1, category_l2, category_l3, l1_code, temp_coef, rain_coef, popularity
    vocab: list[list[str]]  # per l3: the words its items' texts draw from
    queries: list[list[str]]  # per l3: search queries
    brands: list[str]  # all brands; brand code = l1_code * BRANDS_PER_L1 + slot
    brand_premium: np.ndarray


BRANDS_PER_L1 = 5


def build_categories(rng: np.random.Generator, n_queries: int = 16) -> Categories:
    rows, vocab, queries, brands = [], [], [], []
    for l1_code, (l1, (base_price, l1_brands, words, l2s)) in enumerate(TREE.items()):
        brands.extend(l1_brands)
        for l2, l3s in l2s.items():
            for l3, temp, rain in l3s:
                rows.append((l1, l2, l3, l1_code, temp, rain, base_price))
                picked = list(rng.choice(words, size=8, replace=False))
                vocab.append(picked)
    frame = pd.DataFrame(rows, columns=["category_l1", "category_l2", "category_l3", "l1_code", "temp_coef", "rain_coef", "base_price"])
    frame["l3_price_median"] = np.round(frame["base_price"] * np.exp(rng.normal(0, 0.45, len(frame))), 2)
    # popularity of an l3 within its l1 (sums to 1 per l1)
    pop = rng.gamma(2.0, 1.0, len(frame))
    frame["popularity"] = pop / frame.assign(p=pop).groupby("l1_code")["p"].transform("sum").to_numpy()
    for i, r in frame.iterrows():
        qs = set()
        l1_brands = TREE[r.category_l1][1]
        while len(qs) < n_queries:
            kind = rng.integers(0, 5)
            adj = vocab[i][rng.integers(0, len(vocab[i]))]
            if kind == 0:
                q = r.category_l3
            elif kind in (1, 2):
                q = f"{adj} {r.category_l3}"
            elif kind == 3:
                q = f"{l1_brands[rng.integers(0, len(l1_brands))].lower()} {r.category_l3}"
            else:
                q = f"{r.category_l3} {adj} {r.category_l2}"
            qs.add(q)
        queries.append(sorted(qs))
    premium = rng.normal(0, 0.25, len(brands))
    return Categories(frame, vocab, queries, brands, premium)


def build_items(rng: np.random.Generator, scale: Scale, cats: Categories, start: date) -> pd.DataFrame:
    """Items sorted by category_l3 (so each l3 is a contiguous block), with latent popularity."""
    n_l3 = len(cats.frame)
    share = cats.frame["popularity"].to_numpy() / len(L1)
    extra = rng.multinomial(scale.n_items - 2 * n_l3, share / share.sum())
    counts = extra + 2
    l3 = np.repeat(np.arange(n_l3), counts)
    n = len(l3)
    l1 = cats.frame["l1_code"].to_numpy()[l3]
    # brand: each l1 has 5 brands with skewed shares
    brand_share = rng.dirichlet(np.full(BRANDS_PER_L1, 1.5), size=len(L1))
    slot = (rng.random(n)[:, None] > np.cumsum(brand_share[l1], axis=1)).sum(1).clip(0, BRANDS_PER_L1 - 1)
    brand = l1 * BRANDS_PER_L1 + slot
    log_price = np.log(cats.frame["l3_price_median"].to_numpy()[l3]) + cats.brand_premium[brand] + rng.normal(0, 0.35, n)
    price = np.maximum(np.floor(np.exp(log_price)) + 0.99, 0.99)
    popularity = np.exp(rng.normal(0, 1.0, n))
    # launch: most items predate the span; the rest launch inside it (cold start). The first item of each
    # l3 always predates the span so every category can be shown on day 0.
    in_span = rng.random(n) < 0.3
    launch = np.where(in_span, rng.integers(0, scale.days, n), -rng.integers(1, 730, n))
    first = np.r_[0, np.cumsum(counts)[:-1]]
    launch[first] = -rng.integers(30, 730, len(first))
    frame = pd.DataFrame(
        {
            "item_id": [f"i{k:06d}" for k in range(n)],
            "l3_code": l3,
            "l1_code": l1,
            "brand_code": brand,
            "brand_slot": slot,
            "price": price,
            "popularity": popularity,
            "launch_day": launch.astype(np.int32),
        }
    )
    frame["launch_date"] = pd.Timestamp(start) + pd.to_timedelta(frame["launch_day"], unit="D")
    c = cats.frame
    for col in ("category_l1", "category_l2", "category_l3"):
        frame[col] = c[col].to_numpy()[l3]
    frame["brand"] = np.array(cats.brands)[brand]
    lp = np.log(frame["price"].to_numpy())
    frame["rel_log_price"] = lp - pd.Series(lp).groupby(l3).transform("mean").to_numpy()
    frame["title"], frame["description"] = _texts(rng, frame, cats)
    return frame


def _texts(rng: np.random.Generator, items: pd.DataFrame, cats: Categories) -> tuple[list[str], list[str]]:
    """Title and description: brand, category words and the l3's shared vocabulary, with some noise words."""
    titles, descs = [], []
    r = rng.random((len(items), 8))
    k = rng.integers(0, 1_000_000, (len(items), 8))
    for i, (l3, brand, c1, c2, c3) in enumerate(
        zip(items["l3_code"], items["brand"], items["category_l1"], items["category_l2"], items["category_l3"])
    ):
        v = cats.vocab[l3]
        w = [v[k[i, j] % len(v)] if r[i, j] < 0.85 else NOISE_WORDS[k[i, j] % len(NOISE_WORDS)] for j in range(6)]
        use = USES[c1][k[i, 6] % 4]
        titles.append(f"{brand} {w[0]} {c3}".title() + f" {k[i, 7] % 90 + 10}")
        descs.append(
            f"{brand} {w[0]} {c3} with {w[1]} and {w[2]} finish. A {w[3]}, {w[4]} {c3} from our {c2} range, {w[5]} and made for {use}."
        )
    return titles, descs


def build_users(rng: np.random.Generator, scale: Scale, beh: Behaviour, start: date) -> dict:
    n = scale.n_users
    regions = list(beh.region_shares)
    region = rng.choice(len(regions), size=n, p=np.array(list(beh.region_shares.values())))
    gender = rng.choice(np.array(["F", "M", "other"]), size=n, p=[0.49, 0.48, 0.03])
    birth_year = np.clip(np.round(rng.normal(1987, 13, n)), 1940, 2008).astype(np.int32)
    age_z = ((start.year - birth_year) - 38) / 12.0
    coef = np.array([beh.age_affinity[c] for c in L1])
    base = np.exp(coef[None, :] * age_z[:, None])
    base = base / base.sum(1, keepdims=True) * beh.affinity_concentration
    g = rng.gamma(base)  # Dirichlet rows with per-user alphas
    affinity = g / g.sum(1, keepdims=True)
    affinity = np.maximum(affinity, 1e-4)
    affinity = affinity / affinity.sum(1, keepdims=True)
    before = rng.random(n) < beh.signup_before_share
    signup_day = np.where(before, -rng.integers(1, 1095, n), rng.integers(0, scale.days, n))
    signup_sec = signup_day.astype(np.int64) * 86400 + rng.integers(0, 86400, n)
    activity = np.exp(rng.normal(-(beh.activity_sigma**2) / 2, beh.activity_sigma, n))
    price_sens = np.exp(rng.normal(-(beh.price_sensitivity_sigma**2) / 2, beh.price_sensitivity_sigma, n))
    fav_brand = rng.integers(0, BRANDS_PER_L1, (n, len(L1))).astype(np.int8)
    intent = rng.normal(0, beh.intent_sigma, n)
    depth = np.exp(rng.normal(-0.08, 0.4, n))
    return dict(
        region=region.astype(np.int8),
        gender=gender,
        birth_year=birth_year,
        affinity=affinity,
        signup_day=signup_day,
        signup_sec=signup_sec,
        activity=activity,
        price_sens=price_sens,
        fav_brand=fav_brand,
        intent=intent,
        depth=depth,
    )


def day_dates(start: date, days: int) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=days, freq="D")


def build_holidays(start: date, end: date) -> pd.DataFrame:
    import holidays

    rows = []
    years = list(range(start.year, end.year + 1))
    for _, _, country, *_ in WAREHOUSES:
        for d, name in sorted(holidays.country_holidays(country, years=years).items()):
            if start <= d <= end:
                rows.append((d, country, name))
    return pd.DataFrame(rows, columns=["holiday_date", "country", "holiday_name"])


def build_weather(rng: np.random.Generator, start: date, days: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Daily temperature (yearly cycle + AR(1) noise) and precipitation per region.

    Returns the frame plus arrays [region, day] of temperature anomaly (in units of 10 C from the region's
    yearly mean) and rainy-day flags.
    """
    dates = day_dates(start, days)
    doy = dates.dayofyear.to_numpy()
    frames, anom, rain = [], [], []
    for _, region, _, _, mean, amp, peak in WAREHOUSES:
        eps = rng.normal(0, 2.2, days)
        noise = np.zeros(days)
        for t in range(days):  # AR(1) over days, not events
            noise[t] = (0.7 * noise[t - 1] if t else 0.0) + eps[t]
        temp = mean + amp * np.cos(2 * np.pi * (doy - peak) / 365.25) + noise
        wet = rng.random(days) < 0.33 + 0.1 * np.cos(2 * np.pi * (doy - peak - 180) / 365.25)
        precip = np.where(wet, rng.gamma(0.8, 6.0, days), 0.0)
        frames.append(
            pd.DataFrame(
                {"region": region, "weather_date": dates.date, "temperature_c": temp.round(1), "precipitation_mm": precip.round(1)}
            )
        )
        anom.append((temp - mean) / 10.0)
        rain.append(precip)
    return pd.concat(frames, ignore_index=True), np.array(anom), np.array(rain)


def build_traffic(beh: Behaviour, start: date, days: int, holidays_frame: pd.DataFrame) -> np.ndarray:
    """Session-rate multiplier [region, day]: weekly x yearly x holiday (mean about 1)."""
    dates = day_dates(start, days)
    weekly = np.array(beh.weekly)[dates.dayofweek.to_numpy()]
    yearly = 1 + beh.yearly_amplitude * np.cos(2 * np.pi * (dates.dayofyear.to_numpy() - beh.yearly_peak_doy) / 365.25)
    out = np.empty((len(WAREHOUSES), days))
    for r, (_, _, country, *_rest) in enumerate(WAREHOUSES):
        hol = np.isin(dates.date, holidays_frame.loc[holidays_frame["country"] == country, "holiday_date"].to_numpy())
        out[r] = weekly * yearly * np.where(hol, beh.holiday_lift, 1.0)
    return out


def build_promotions(rng: np.random.Generator, beh: Behaviour, items: pd.DataFrame, days: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Non-overlapping promotions per item; returns the frame and discount[day, warehouse, item] in percent."""
    n = len(items)
    m = int(np.ceil(days / beh.promo_every_days * 2.5)) + 2
    lo, hi = beh.promo_duration_days
    dur = rng.integers(lo, hi + 1, (n, m))
    gap = np.ceil(rng.exponential(beh.promo_every_days, (n, m))).astype(int)
    start0 = -rng.integers(0, int(beh.promo_every_days), n)
    starts = start0[:, None] + np.cumsum(gap + np.c_[np.zeros(n, int), dur[:, :-1]], axis=1)
    ends = starts + dur - 1
    disc = rng.choice(np.array(beh.promo_discounts), (n, m))
    wh = np.where(rng.random((n, m)) < beh.promo_warehouse_share, rng.integers(0, len(WAREHOUSES), (n, m)), -1)
    item = np.repeat(np.arange(n), m).reshape(n, m)
    launch = items["launch_day"].to_numpy()[:, None]
    keep = (starts >= np.maximum(launch, 0)) & (starts < days)
    s, e, d, w, it = starts[keep], np.minimum(ends[keep], days - 1), disc[keep], wh[keep], item[keep]
    order = np.lexsort((s, it))
    s, e, d, w, it = s[order], e[order], d[order], w[order], it[order]
    grid = np.zeros((days, len(WAREHOUSES), n), dtype=np.uint8)
    pct = np.round(d * 100).astype(np.uint8)
    lengths = e - s + 1
    rows = np.repeat(np.arange(len(s)), lengths)
    day = s[rows] + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    for k in range(len(WAREHOUSES)):
        sel = (w[rows] == -1) | (w[rows] == k)
        grid[day[sel], k, it[rows][sel]] = pct[rows][sel]
    frame = pd.DataFrame(
        {
            "promotion_id": [f"p{k:07d}" for k in range(len(s))],
            "item_id": items["item_id"].to_numpy()[it],
            "start_day": s,
            "end_day": e,
            "discount_pct": d,
            "warehouse_idx": w,
        }
    )
    return frame, grid
