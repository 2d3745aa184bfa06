"""The synthetic generator (tiny scale): determinism, contract, consistency, and the learnable signal.

The signal tests measure each behavioural effect from the written tables alone and compare it with the
parameter saved in ``_generator/params.json``; each fails when its mechanism is switched off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml.contract import EMPTY_FILE, EVENT_TYPES, ORDER_STATUSES
from ml.contract import TABLES as CONTRACT_TABLES
from ml.generate import SCALES, generate

# The generator writes every contract table except the ingestion-only ones (demand_history: a
# generated lake's demand comes from its order lines).
TABLES = {name: t for name, t in CONTRACT_TABLES.items() if not t.ingest_only}


def read(lake: Path, name: str) -> pd.DataFrame:
    files = sorted(p for p in (lake / name).glob("**/*.parquet") if p.name != EMPTY_FILE)
    return pa.concat_tables([pq.read_table(p) for p in files]).to_pandas()


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lake")
    generate("tiny", seed=42, lake_dir=path)
    return path


@pytest.fixture(scope="module")
def t(lake):
    """All tables as pandas frames, plus the saved params."""
    out = {name: read(lake, name) for name in TABLES}
    out["params"] = json.loads((lake / "_generator" / "params.json").read_text())
    return out


# ----------------------------------------------------------------------------- metrics (plain functions)


def cart_conversion(events: pd.DataFrame, end: pd.Timestamp, horizon_days: int = 31) -> dict:
    """P(purchase within 24 h of an add), P(purchase after 24 h | none within), and their ratio.

    A purchase belongs to the latest earlier add of that user and item (a re-add starts a new cart line).
    """
    adds = events.loc[events.event_type == "add_to_cart", ["user_id", "item_id", "event_timestamp"]]
    adds = adds.sort_values(["user_id", "item_id", "event_timestamp"])
    adds["next_add"] = adds.groupby(["user_id", "item_id"]).event_timestamp.shift(-1)
    adds = adds[adds.event_timestamp < end - pd.Timedelta(days=horizon_days)].sort_values("event_timestamp")
    buys = events.loc[events.event_type == "purchase", ["user_id", "item_id", "event_timestamp"]]
    buys = buys.rename(columns={"event_timestamp": "bought_at"}).sort_values("bought_at")
    m = pd.merge_asof(adds, buys, left_on="event_timestamp", right_on="bought_at", by=["user_id", "item_id"], direction="forward")
    hours = (m.bought_at - m.event_timestamp).dt.total_seconds() / 3600
    hours = hours.where(m.next_add.isna() | (m.bought_at < m.next_add))
    within = hours <= 24
    after = hours > 24
    p_within = within.mean()
    p_after = after.sum() / (~within).sum()
    return {"adds": len(m), "p_within": p_within, "p_after": p_after, "ratio": p_after / p_within}


def promo_lift(t: dict) -> float:
    """Mean units per promoted item x warehouse x day over mean units per non-promoted one."""
    lines = t["order_lines"].merge(t["orders"][["order_id", "warehouse_id"]], on="order_id")
    sold = lines.groupby(["item_id", "warehouse_id", "order_date"]).quantity.sum()
    inv = t["inventory_snapshots"][["item_id", "warehouse_id", "snapshot_date"]].rename(columns={"snapshot_date": "order_date"})
    inv = inv.merge(t["items"][["item_id", "launch_date"]], on="item_id")
    inv = inv[inv.order_date >= inv.launch_date].drop(columns="launch_date")
    p = t["promotions"]
    days = [
        pd.DataFrame({"item_id": r.item_id, "warehouse_id": r.warehouse_id, "order_date": pd.date_range(r.start_date, r.end_date).date})
        for r in p.itertuples()
    ]
    promo_days = pd.concat(days)
    glob = promo_days[promo_days.warehouse_id.isna()].drop(columns="warehouse_id")
    glob = glob.merge(t["warehouses"][["warehouse_id"]], how="cross")
    promo_days = pd.concat([promo_days.dropna(subset=["warehouse_id"]), glob]).drop_duplicates()
    promo_days["promo"] = True
    grid = inv.merge(promo_days, on=["item_id", "warehouse_id", "order_date"], how="left")
    grid["promo"] = grid.promo.eq(True)
    grid = grid.join(sold, on=["item_id", "warehouse_id", "order_date"])
    grid["quantity"] = grid.quantity.fillna(0)
    means = grid.groupby("promo").quantity.mean()
    return means[True] / means[False]


def weather_correlation(t: dict, lake: Path, min_coef: float) -> tuple[float, float]:
    """Correlation over region-days of the share of views in warm-loving (resp. cold-loving) categories with temperature anomaly."""
    lat = pd.read_parquet(lake / "_generator" / "items_latent.parquet")
    ev = t["events"]
    views = (
        ev[ev.event_type == "view"]
        .merge(t["users"][["user_id", "region"]], on="user_id")
        .merge(lat[["item_id", "weather_temp_coef"]], on="item_id")
    )
    views["warm"] = views.weather_temp_coef >= min_coef
    views["cold"] = views.weather_temp_coef <= -min_coef
    daily = views.groupby(["region", "event_date"])[["warm", "cold"]].mean().reset_index()
    w = t["weather"].rename(columns={"weather_date": "event_date"})
    w["anomaly"] = w.temperature_c - w.groupby("region").temperature_c.transform("mean")
    daily = daily.merge(w, on=["region", "event_date"])
    return daily.warm.corr(daily.anomaly), daily.cold.corr(daily.anomaly)


def weekly_ratio(events: pd.DataFrame) -> float:
    """Mean events on Sat+Sun over mean events on Tue+Wed."""
    per_day = events.groupby("event_date").size()
    dow = pd.to_datetime(pd.Series(per_day.index)).dt.dayofweek.to_numpy()
    v = per_day.to_numpy()
    return v[np.isin(dow, [5, 6])].mean() / v[np.isin(dow, [1, 2])].mean()


def affinity_recovery(t: dict, lake: Path) -> tuple[float, float]:
    """(mean per-user correlation of view share by category_l1 with the latent affinity,
    share of purchases in the user's two highest-affinity categories)."""
    lat = pd.read_parquet(lake / "_generator" / "users_latent.parquet")
    cats = [c[len("affinity_") :] for c in lat.columns if c.startswith("affinity_")]
    ev = t["events"].merge(t["items"][["item_id", "category_l1"]], on="item_id")
    views = ev[ev.event_type == "view"]
    share = pd.crosstab(views.user_id, views.category_l1).reindex(columns=cats, fill_value=0)
    share = share[share.sum(1) >= 20]
    share = share.div(share.sum(1), axis=0)
    aff = lat.set_index("user_id").loc[share.index, [f"affinity_{c}" for c in cats]].to_numpy()
    s = share.to_numpy()
    corr = np.mean([np.corrcoef(s[i], aff[i])[0, 1] for i in range(len(s))])
    top2 = pd.DataFrame(np.argsort(-lat[[f"affinity_{c}" for c in cats]].to_numpy(), axis=1)[:, :2], index=lat.user_id)
    buys = ev[ev.event_type == "purchase"]
    code = buys.category_l1.map({c: i for i, c in enumerate(cats)}).to_numpy()
    tops = top2.loc[buys.user_id].to_numpy()
    in_top2 = (tops == code[:, None]).any(1).mean()
    return corr, in_top2


def token_overlap(items: pd.DataFrame) -> tuple[float, float]:
    """Mean content-token Jaccard of descriptions: pairs in the same category_l3 vs pairs in different category_l1."""
    toks = [set(d.lower().replace(",", " ").replace(".", " ").split()) for d in items.description]
    df = pd.Series([w for tk in toks for w in tk]).value_counts() / len(toks)
    common = set(df[df > 0.3].index)  # template words ("with", "from our", ...) every text has
    toks = [tk - common for tk in toks]
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(items), (2, 4000))
    l3, l1 = items.category_l3.to_numpy(), items.category_l1.to_numpy()
    jac = np.array([len(toks[i] & toks[j]) / len(toks[i] | toks[j]) for i, j in zip(a, b)])
    same = (l3[a] == l3[b]) & (a != b)
    diff = l1[a] != l1[b]
    return jac[same].mean(), jac[diff].mean()


# ----------------------------------------------------------------------------- determinism


def test_same_seed_identical_other_seed_differs(lake, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    generate("tiny", seed=42, lake_dir=again)
    generate("tiny", seed=7, lake_dir=other)
    for name in TABLES:
        assert read(lake, name).equals(read(again, name)), f"{name} differs for the same seed"
    assert not read(lake, "events").equals(read(other, "events"))
    assert not read(lake, "items").equals(read(other, "items"))
    a = pd.read_parquet(lake / "_generator" / "users_latent.parquet")
    assert a.equals(pd.read_parquet(again / "_generator" / "users_latent.parquet"))


def test_rerun_replaces_files(lake, tmp_path):
    path = tmp_path / "l"
    first = generate("tiny", seed=1, lake_dir=path)
    second = generate("tiny", seed=1, lake_dir=path)
    assert first["rows"] == second["rows"]
    assert second["rows"]["events"] == len(read(path, "events"))


def test_summary_and_scales(tmp_path):
    assert set(SCALES) == {"tiny", "small", "medium", "large"}
    s = generate("tiny", seed=3, lake_dir=tmp_path)
    assert 20_000 <= s["rows"]["events"] <= 45_000
    assert s["events_per_second"] > 0 and s["seconds"] > 0
    assert all(s["rows"][n] > 0 for n in TABLES)
    with pytest.raises(ValueError):
        generate("huge", lake_dir=tmp_path)


# ----------------------------------------------------------------------------- contract and keys


def test_tables_conform_to_contract(lake):
    for name, table in TABLES.items():
        files = [p for p in (lake / name).glob("**/*.parquet") if p.name != EMPTY_FILE]
        assert files, f"{name} has no data"
        for p in files[:50]:
            assert pq.read_schema(p).remove_metadata().equals(table.schema), f"{p} schema differs from the contract"
        if table.partition_by:
            for p in files[:50]:
                col = pq.read_table(p, columns=[table.partition_by]).column(0).to_pylist()
                assert {str(v) for v in col} == {p.parent.name.split("=")[1]}


def test_keys_unique_and_required_not_null(t):
    for name, table in TABLES.items():
        df = t[name]
        key = list(table.key)
        assert not df.duplicated(key).any(), f"{name} key {key} not unique"
        for c in table.required_columns:
            assert df[c].notna().all(), f"{name}.{c} has nulls"


def test_values_in_domains(t):
    ev = t["events"]
    assert set(ev.event_type) == set(EVENT_TYPES)
    assert set(t["orders"].status) == set(ORDER_STATUSES)
    assert str(ev.event_timestamp.dt.tz) == "UTC"
    assert (ev.event_timestamp.dt.date == ev.event_date).all()
    assert (t["orders"].ordered_at.dt.date == t["orders"].order_date).all()
    p = t["params"]
    assert ev.event_date.min() >= pd.Timestamp(p["start_date"]).date()
    assert ev.event_date.max() <= pd.Timestamp(p["end_date"]).date()
    s = ev[ev.event_type == "search"]
    assert s.item_id.isna().all() and s.search_query.notna().all()
    assert ev.loc[ev.event_type != "search", "item_id"].notna().all()
    v = ev[ev.event_type == "view"]
    assert v.dwell_seconds.notna().all() and (v.dwell_seconds > 0).all()
    assert (t["order_lines"].quantity > 0).all()
    assert (t["promotions"].discount_pct.between(0, 1)).all()
    assert set(t["users"].region) <= set(t["warehouses"].region)


# ----------------------------------------------------------------------------- referential consistency


def test_order_lines_and_purchase_events_agree(t):
    orders, lines, ev = t["orders"], t["order_lines"], t["events"]
    assert set(lines.order_id) == set(orders.order_id)
    buys = ev[ev.event_type == "purchase"]
    assert buys.order_id.notna().all() and ev.loc[ev.event_type != "purchase", "order_id"].isna().all()
    a = buys[["order_id", "item_id"]].sort_values(["order_id", "item_id"]).reset_index(drop=True)
    b = lines[["order_id", "item_id"]].sort_values(["order_id", "item_id"]).reset_index(drop=True)
    assert a.equals(b)
    m = buys.merge(lines, on=["order_id", "item_id"]).merge(orders, on="order_id", suffixes=("", "_o"))
    paid = m.unit_price - m.discount_amount / m.quantity
    assert np.allclose(m.price, paid, atol=0.011)
    assert (m.event_timestamp == m.ordered_at).all()
    assert (m.user_id == m.user_id_o).all()
    # the order ships from the warehouse of the buyer's region
    o = orders.merge(t["users"][["user_id", "region"]], on="user_id").merge(t["warehouses"], on="warehouse_id", suffixes=("", "_w"))
    assert (o.region == o.region_w).all()
    # cancelled orders return everything; returned orders have some returned units
    ol = lines.merge(orders[["order_id", "status"]], on="order_id")
    assert (ol.loc[ol.status == "cancelled", "returned_quantity"] == ol.loc[ol.status == "cancelled", "quantity"]).all()
    assert (ol.groupby("order_id").returned_quantity.sum()[orders.set_index("order_id").status == "returned"] > 0).all()
    assert (ol.loc[ol.status == "completed", "returned_quantity"] == 0).all()
    assert (ol.returned_quantity <= ol.quantity).all()


def test_ids_exist_and_nothing_before_launch_or_signup(t):
    ev = t["events"]
    items = t["items"].set_index("item_id")
    with_item = ev.dropna(subset=["item_id"])
    assert with_item.item_id.isin(items.index).all()
    assert ev.user_id.isin(t["users"].user_id).all()
    assert t["promotions"].item_id.isin(items.index).all()
    assert (with_item.event_date.to_numpy() >= items.loc[with_item.item_id, "launch_date"].to_numpy()).all()
    lines = t["order_lines"]
    assert (lines.order_date.to_numpy() >= items.loc[lines.item_id, "launch_date"].to_numpy()).all()
    first = ev.groupby("user_id").event_timestamp.min()
    signup = t["users"].set_index("user_id").signup_at
    assert (first >= signup.loc[first.index]).all()
    # items launch during the span too (cold start)
    p = t["params"]
    assert (items.launch_date > pd.Timestamp(p["start_date"]).date()).sum() > 20


def test_no_sale_from_empty_stock(t):
    lines = t["order_lines"].merge(t["orders"][["order_id", "warehouse_id"]], on="order_id")
    sold = lines.groupby(["item_id", "warehouse_id", "order_date"]).quantity.sum().reset_index()
    inv = t["inventory_snapshots"].copy()
    inv["order_date"] = (pd.to_datetime(inv.snapshot_date) + pd.Timedelta(days=1)).dt.date  # yesterday's close = today's opening
    m = sold.merge(
        inv[["item_id", "warehouse_id", "order_date", "on_hand_units"]], on=["item_id", "warehouse_id", "order_date"], how="left"
    )
    first_day = pd.Timestamp(t["params"]["start_date"]).date()
    m = m[m.order_date > first_day]
    assert m.on_hand_units.notna().all(), "a sale without a snapshot the day before"
    assert (m.quantity <= m.on_hand_units).all()
    assert (t["inventory_snapshots"].on_hand_units >= 0).all()
    assert (t["inventory_snapshots"].on_hand_units == 0).sum() > 0, "no stock-outs at all"


# ----------------------------------------------------------------------------- learnable signal


def test_cart_conversion_drops_after_24h(t):
    c = cart_conversion(t["events"], pd.Timestamp(t["params"]["end_date"], tz="UTC") + pd.Timedelta(days=1))
    target = t["params"]["behaviour"]["late_conversion_ratio"]["value"]
    assert c["adds"] > 1000
    assert 0.25 < c["p_within"] < 0.7
    assert abs(c["ratio"] - target) < 0.12, c
    assert c["ratio"] < 0.6, "carts left 24 h must convert much less (the brief: ~67 % less)"


def test_promoted_item_days_sell_more(t):
    assert promo_lift(t) > 1.8


def test_weather_sensitive_categories_follow_temperature(t, lake):
    warm, cold = weather_correlation(t, lake, min_coef=0.4)
    assert warm > 0.25
    assert cold < -0.12


def test_weekly_seasonality(t):
    assert weekly_ratio(t["events"]) > 1.15


def test_users_buy_in_their_affinity_categories(t, lake):
    corr, in_top2 = affinity_recovery(t, lake)
    assert corr > 0.6
    assert in_top2 > 0.6


def test_dwell_longer_on_carted_items(t):
    ev = t["events"]
    views = ev[ev.event_type == "view"]
    added = ev.loc[ev.event_type == "add_to_cart", ["session_id", "item_id"]].assign(added=True)
    v = views.merge(added.drop_duplicates(), on=["session_id", "item_id"], how="left")
    d = v.groupby(v.added.eq(True)).dwell_seconds.median()
    assert d[True] > 1.2 * d[False]


def test_price_sensitive_users_buy_cheaper(t, lake):
    lat_u = pd.read_parquet(lake / "_generator" / "users_latent.parquet").set_index("user_id")
    lat_i = pd.read_parquet(lake / "_generator" / "items_latent.parquet").set_index("item_id")
    buys = t["events"][t["events"].event_type == "view"]
    rel = buys.assign(rel=lat_i.loc[buys.item_id, "rel_log_price"].to_numpy()).groupby("user_id").rel.mean()
    assert rel.corr(lat_u.loc[rel.index, "price_sensitivity"], method="spearman") < -0.2


def test_gender_does_not_drive_purchases(t):
    """Purchases per view are the same for F and M (the fairness audit's ground truth)."""
    ev = t["events"].merge(t["users"][["user_id", "gender"]], on="user_id")
    n = ev[ev.event_type.isin(["view", "purchase"])].groupby(["gender", "event_type"]).size().unstack()
    conv = n["purchase"] / n["view"]
    assert 0.8 < conv["F"] / conv["M"] < 1.25


def test_search_queries_match_the_category_then_bought(t, lake):
    cats = pd.read_parquet(lake / "_generator" / "categories.parquet")
    words = {r.category_l3: r.category_l3 for r in cats.itertuples()}
    ev = t["events"].merge(t["items"][["item_id", "category_l3"]], on="item_id", how="left")
    s = ev[ev.event_type == "search"][["session_id", "search_query"]]
    b = ev[ev.event_type == "purchase"][["session_id", "category_l3"]]
    m = s.merge(b, on="session_id")
    hit = [words[c] in q for q, c in zip(m.search_query, m.category_l3)]
    assert len(m) > 100
    assert np.mean(hit) > 0.6


def test_descriptions_cluster_by_category(t):
    same, diff = token_overlap(t["items"])
    assert same > 2 * diff


def test_customers_rebuy_on_their_categorys_cycle(t):
    """Replenishment: many lines rebuy an item the customer bought before, and the gap between two
    purchases of one item follows its category_l1's cycle (grocery fastest)."""
    lines = t["order_lines"].merge(t["orders"][["order_id", "user_id", "ordered_at"]], on="order_id")
    lines = lines.merge(t["items"][["item_id", "category_l1"]], on="item_id").sort_values("ordered_at")
    lines["gap"] = lines.groupby(["user_id", "item_id"])["ordered_at"].diff().dt.total_seconds() / 86400
    repeat_share = lines["gap"].notna().mean()
    assert repeat_share > 0.12, repeat_share  # 2-3 % without replenishment (only chance re-picks)
    cycles = t["params"]["behaviour"]["replenish_cycle_days"]["value"]
    median_gap = lines.dropna(subset=["gap"]).groupby("category_l1")["gap"].median()
    assert abs(median_gap["grocery"] - cycles["grocery"]) < 4, median_gap
    assert median_gap["grocery"] < median_gap["beauty"] < cycles["default"], median_gap


def test_a_reorder_of_a_blocked_purchase_never_happens_and_takes_no_stock():
    """simulate_stock(requires=): a line whose required line (an earlier day) was blocked is excluded —
    it sells nothing and leaves the stock to the lines after it — while one whose required line sold
    goes through like any other line."""
    from ml.generate.inventory import simulate_stock
    from ml.generate.params import Behaviour

    beh = Behaviour(min_order_units=1, cover_days=(0.0, 0.0), safety_days=(0.0, 0.0), lead_time_days=(20, 20))
    # one cell; day 0: a 1-unit line sells, a 50-unit line is blocked (more than the opening stock);
    # day 1: a reorder of each (the second requires the blocked one), then a 1-unit line
    day = np.array([0, 0, 1, 1, 1])
    qty = np.array([1, 50, 1, 1, 1])
    requires = np.array([-1, -1, 0, 1, -1])
    t = day * 86400.0 + np.arange(5)
    stock = simulate_stock(
        np.random.default_rng(0), beh, np.zeros(5, dtype=np.int64), day, t, qty, 1, np.array([-10]), 30, requires=requires
    )
    assert stock.accepted.tolist() == [True, False, True, False, True]
    assert stock.excluded.tolist() == [False, False, False, True, False]  # blocked is not excluded
    sold = int(qty[stock.accepted].sum())
    opening = int(stock.on_hand[1, 0]) + int(qty[stock.accepted & (day == 1)].sum())  # stock before day 1's sales
    assert sold == 3 and opening >= 2
