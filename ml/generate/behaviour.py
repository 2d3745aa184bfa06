"""Shopper behaviour for one batch of users, fully vectorised: sessions, searches, views, cart, purchases.

Times are seconds since the span's first day 00:00 UTC (float64). Purchase *events* are not made here:
a batch returns purchase *lines*; the inventory pass drops the ones a stock-out blocks and the purchase
events are then made from the lines that remain, so events, orders and stock always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.generate.params import Behaviour

SEARCH, VIEW, ADD, REMOVE, PURCHASE = 0, 1, 2, 3, 4  # codes; names in EVENT_NAMES
EVENT_NAMES = ("search", "view", "add_to_cart", "remove_from_cart", "purchase")
DAY = 86400.0


@dataclass
class World:
    """Everything a batch needs, as arrays (index = code)."""

    beh: Behaviour
    days: int
    rate: float  # base sessions per user per unit of traffic
    traffic_cum: np.ndarray  # [region, days + 1] cumulative session-rate multiplier
    utc_offset: np.ndarray  # [region] hours
    temp_anom: np.ndarray  # [region, day] in units of 10 C
    rainy: np.ndarray  # [region, day] 0/1
    l3_l1: np.ndarray  # [l3] -> l1 code
    l3_logpop: np.ndarray  # [l3] log popularity within l1
    l3_temp: np.ndarray  # [l3] temperature coefficient
    l3_rain: np.ndarray  # [l3] rain coefficient
    l3_anchor: np.ndarray  # [l3] an item launched before the span
    q_per_l3: int
    item_key: np.ndarray  # [item] l3 + cumulative popularity within l3 (items sorted by l3)
    item_l3: np.ndarray
    item_l1: np.ndarray
    item_slot: np.ndarray  # brand slot within l1
    item_rel_lp: np.ndarray  # log price - l3 mean log price
    item_launch: np.ndarray  # launch day (may be negative)
    item_qty_extra: np.ndarray  # Poisson mean of extra units per line
    item_replenish_p: np.ndarray  # [item] P(bought again one cycle later)
    item_cycle_days: np.ndarray  # [item] median days between two purchases of it by one customer
    promo: np.ndarray  # [day, warehouse, item] discount percent (uint8)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _within(counts: np.ndarray) -> np.ndarray:
    """Position of each element within its group for groups laid out consecutively with these sizes."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


DIURNAL = 0.15 + np.exp(-(((np.arange(24) - 20.5) / 3.0) ** 2)) + 0.6 * np.exp(-(((np.arange(24) - 12.5) / 2.5) ** 2))
DIURNAL_CUM = np.cumsum(DIURNAL / DIURNAL.sum())


def simulate(w: World, u: dict, rng: np.random.Generator) -> dict:
    """Simulate one batch of users ``u`` (dict of per-user arrays). Returns events, lines and session count.

    Session numbers are local to the batch (regular sessions first, then the return sessions of later
    purchases); each session places at most one order, whose number is the session number.
    """
    beh, D = w.beh, w.days
    region = u["region"].astype(np.int64)
    n_users = len(region)
    first_day = np.clip(u["signup_day"], 0, D).astype(np.int64)
    W = w.traffic_cum
    avail = W[region, D] - W[region, first_day]
    ns = rng.poisson(w.rate * u["activity"] * avail)
    su = np.repeat(np.arange(n_users), ns)
    n = len(su)
    sr = region[su]
    lo, hi = W[sr, first_day[su]], W[sr, D]
    x = lo + rng.random(n) * (hi - lo)
    day = np.empty(n, dtype=np.int64)
    for r in range(W.shape[0]):
        m = sr == r
        day[m] = np.searchsorted(W[r], x[m], side="right") - 1
    day = np.clip(day, 0, D - 1)
    hour = np.searchsorted(DIURNAL_CUM, rng.random(n))
    local = hour * 3600.0 + rng.random(n) * 3600.0
    sod = np.mod(local - w.utc_offset[sr] * 3600.0, DAY)
    start = day * DAY + sod
    start = np.maximum(start, u["signup_sec"][su] + 60.0)
    day = (start // DAY).astype(np.int64)
    ok = day < D
    su, sr, day, start = su[ok], sr[ok], day[ok], start[ok]
    n = len(su)

    # --- the session's target and secondary category_l3: user affinity x popularity x weather
    logits = (
        np.log(u["affinity"][su][:, w.l3_l1]).astype(np.float32)
        + w.l3_logpop[None, :].astype(np.float32)
        + (w.temp_anom[sr, day][:, None] * w.l3_temp[None, :]).astype(np.float32)
        + (w.rainy[sr, day][:, None] * w.l3_rain[None, :]).astype(np.float32)
    )
    prob = np.exp(logits - logits.max(1, keepdims=True))
    cum = np.cumsum(prob, axis=1)
    del logits, prob
    tot = cum[:, -1:]
    tl3 = (cum < rng.random((n, 1)) * tot).sum(1)
    sl3 = (cum < rng.random((n, 1)) * tot).sum(1)
    del cum
    L3 = len(w.l3_l1)
    tl3, sl3 = np.minimum(tl3, L3 - 1), np.minimum(sl3, L3 - 1)

    # --- search at the start
    has_search = rng.random(n) < beh.search_prob
    query = tl3 * w.q_per_l3 + rng.integers(0, w.q_per_l3, n)
    search_off = np.where(has_search, 8.0 + rng.exponential(15.0, n), 0.0)

    # --- views: candidates by popularity, the user's utility picks one
    nv = 1 + rng.poisson(beh.views_mean * u["depth"][su])
    vs = np.repeat(np.arange(n), nv)
    V = len(vs)
    vu = su[vs]
    vday = day[vs]
    vreg = sr[vs]
    vl3 = np.where(rng.random(V) < beh.secondary_view_share, sl3[vs], tl3[vs])
    K = beh.candidates
    cand = np.searchsorted(w.item_key, vl3[:, None] + rng.random((V, K)), side="right")
    cand = np.minimum(cand, len(w.item_key) - 1)
    disc_c = w.promo[vday[:, None], vreg[:, None], cand].astype(np.float32) / 100.0
    util_c = (
        beh.brand_loyalty * (w.item_slot[cand] == u["fav_brand"][vu[:, None], w.item_l1[cand]])
        - beh.price_coef * u["price_sens"][vu][:, None] * w.item_rel_lp[cand]
        + beh.promo_utility * disc_c
    ).astype(np.float32)
    launched = w.item_launch[cand] <= vday[:, None]
    score = np.where(launched, util_c + rng.gumbel(size=(V, K)).astype(np.float32), -np.inf)
    pick = score.argmax(1)
    rows = np.arange(V)
    item = cand[rows, pick]
    util = util_c[rows, pick].astype(np.float64)
    disc = disc_c[rows, pick].astype(np.float64)
    none = ~launched.any(1)
    item[none] = w.l3_anchor[vl3[none]]
    del cand, disc_c, util_c, launched, score
    dwell = np.exp(beh.dwell_log_mean + beh.dwell_utility * util + beh.dwell_sigma * rng.standard_normal(V))
    gap = 3.0 + rng.exponential(12.0, V)
    step = gap + dwell
    cs = np.cumsum(step)
    first = np.cumsum(nv) - nv
    t_view = start[vs] + search_off[vs] + (cs - dwell) - (cs[first] - step[first])[vs]
    last = np.cumsum(nv) - 1
    s_end = t_view[last] + dwell[last]

    # --- add to cart (first add of an item per session only)
    intent = u["intent"][vu]
    p_add = _sigmoid(beh.atc_intercept + beh.atc_utility * util + beh.promo_atc * disc + intent)
    add = np.flatnonzero(rng.random(V) < p_add)
    _, firsts = np.unique(vs[add] * np.int64(len(w.item_key)) + item[add], return_index=True)
    add = np.sort(add[firsts])
    A = len(add)
    a_s = vs[add]
    a_item = item[add]
    a_t = t_view[add] + dwell[add] * rng.uniform(0.5, 0.95, A)

    # --- what becomes of each add: bought within 24 h (same session or a return), after 24 h, or never
    ps = u["price_sens"][vu[add]]
    p_w = _sigmoid(
        beh.purchase24_intercept + beh.purchase24_utility * util[add] + beh.promo_purchase * disc[add] * (0.5 + ps) + intent[add]
    )
    p_a = beh.late_conversion_ratio * (p_w.mean() if A else 0.0) * (1.0 - p_w)
    r = rng.random(A)
    within = r < p_w
    after = ~within & (r < p_w + p_a)
    never = ~within & ~after
    same = within & (rng.random(A) < beh.same_session_share)
    later24 = within & ~same
    removed = never & (rng.random(A) < beh.remove_share)
    checkout = s_end + 70.0 + rng.uniform(0, 110, n)
    t_remove = s_end[a_s[removed]] + rng.uniform(5, 60, int(removed.sum()))

    late = later24 | after
    delay_h = np.where(
        later24,
        0.5 + 23.4 * rng.beta(1.0, 2.0, A),
        24.05 + np.minimum(rng.exponential(beh.late_delay_mean_hours, A), 30 * 24 - 24.1),
    )
    late_idx = np.flatnonzero(late)
    NL = len(late_idx)
    t_late = a_t[late_idx] + delay_h[late_idx] * 3600.0
    late_sess = n + np.arange(NL)  # return sessions, numbered after the batch's regular sessions
    late_dwell = np.exp(beh.dwell_log_mean + beh.dwell_utility * util[add][late_idx] + beh.dwell_sigma * rng.standard_normal(NL))
    t_late_view = t_late - np.minimum(late_dwell, 600.0) - rng.uniform(20, 90, NL)

    # --- purchase lines
    same_idx = np.flatnonzero(same)
    l_user = np.r_[su[a_s[same_idx]], su[a_s[late_idx]]]
    l_sess = np.r_[a_s[same_idx], late_sess]
    l_item = np.r_[a_item[same_idx], a_item[late_idx]]
    l_t = np.r_[checkout[a_s[same_idx]], t_late]
    l_qty = 1 + rng.poisson(w.item_qty_extra[l_item])
    keep = l_t < D * DAY
    l_user, l_sess, l_item, l_t, l_qty = l_user[keep], l_sess[keep], l_item[keep], l_t[keep], l_qty[keep]

    # --- replenishment: chains of rebuys of a bought item, one cycle of its category apart (drawn after
    # everything above, so the rest of the batch is the same with or without it). A rebuy is a reorder:
    # a view of the item, then the purchase, no cart (the cart-abandonment curve stays the planted one)
    # (a reorder follows only a purchase that sold: the stock pass drops a chain whose first line it blocks)
    r_origin, r_t = _replenish(w, l_item, l_t, rng)
    clear = _clear_of_carts(l_user[r_origin], l_item[r_origin], r_t, (su[a_s], a_item, a_t), (l_user, l_item, l_t), len(w.item_key))
    r_origin, r_t = r_origin[clear], r_t[clear]
    r_user, r_item = l_user[r_origin], l_item[r_origin]
    NR = len(r_t)
    r_sess = n + NL + np.arange(NR)
    r_qty = 1 + rng.poisson(w.item_qty_extra[r_item])
    r_dwell = np.exp(beh.dwell_log_mean + beh.dwell_sigma * rng.standard_normal(NR))
    r_view = r_t - np.minimum(r_dwell, 600.0) - rng.uniform(20, 90, NR)
    lines = dict(
        user=np.r_[l_user, r_user],
        session=np.r_[l_sess, r_sess],
        item=np.r_[l_item, r_item],
        t=np.r_[l_t, r_t],
        qty=np.r_[l_qty, r_qty].astype(np.int32),
        requires=np.r_[np.full(len(l_t), -1), r_origin].astype(np.int64),
    )

    # --- non-purchase events
    sidx = np.flatnonzero(has_search)
    parts = [
        (su[sidx], sidx, np.full(len(sidx), SEARCH), start[sidx], np.full(len(sidx), -1), query[sidx], np.full(len(sidx), np.nan)),
        (vu, vs, np.full(V, VIEW), t_view, item, np.full(V, -1), dwell),
        (su[a_s], a_s, np.full(A, ADD), a_t, a_item, np.full(A, -1), np.full(A, np.nan)),
        (
            su[a_s[removed]],
            a_s[removed],
            np.full(len(t_remove), REMOVE),
            t_remove,
            a_item[removed],
            np.full(len(t_remove), -1),
            np.full(len(t_remove), np.nan),
        ),
        (su[a_s[late_idx]], late_sess, np.full(NL, VIEW), t_late_view, a_item[late_idx], np.full(NL, -1), late_dwell),
        (r_user, r_sess, np.full(NR, VIEW), r_view, r_item, np.full(NR, -1), r_dwell),
    ]
    ev = {}
    for k, name in enumerate(("user", "session", "etype", "t", "item", "query", "dwell")):
        ev[name] = np.concatenate([p[k] for p in parts])
    keep = ev["t"] < D * DAY
    ev = {
        "user": ev["user"][keep].astype(np.int32),
        "session": ev["session"][keep].astype(np.int64),
        "etype": ev["etype"][keep].astype(np.int8),
        "t": ev["t"][keep],
        "item": ev["item"][keep].astype(np.int32),
        "query": ev["query"][keep].astype(np.int32),
        "dwell": ev["dwell"][keep].astype(np.float32),
    }
    return {"events": ev, "lines": lines, "n_sessions": n + NL + NR}


CART_WINDOW = 31 * DAY  # a purchase this soon after an add of the same item reads as that cart's conversion


def _clear_of_carts(user, item, t, adds: tuple, buys: tuple, n_items: int) -> np.ndarray:
    """Mask of the rebuys that would not read as the conversion of an open cart: a rebuy is dropped (the
    customer skips that cycle) when the customer's latest add of the item lies within
    ``CART_WINDOW`` before it and no purchase of the item came between — the cart-abandonment marts
    would count it as that cart's late conversion and bend the planted curve. ``adds`` and ``buys``
    are (user, item, t) arrays of the batch's adds and purchase lines."""
    if not len(t) or not len(adds[2]):
        return np.ones(len(t), dtype=bool)
    parts = (adds, buys, (user, item, t))
    keys = np.concatenate([u.astype(np.int64) * n_items + i for u, i, _ in parts])
    times = np.concatenate([p[2] for p in parts])
    kind = np.concatenate([np.full(len(p[2]), k, dtype=np.int8) for k, p in enumerate(parts)])  # 0 add, 1 buy, 2 rebuy
    order = np.lexsort((kind, times, keys))  # by key, then time; at one time an add, then a buy, then a rebuy
    keys, times, kind = keys[order], times[order], kind[order]
    idx = np.arange(len(order))
    last_add = np.maximum.accumulate(np.where(kind == 0, idx, -1))
    last_buy = np.maximum.accumulate(np.where(kind == 1, idx, -1))
    a = np.maximum(last_add, 0)
    open_cart = (last_add >= 0) & (keys[a] == keys) & (times - times[a] <= CART_WINDOW) & (last_buy < last_add)
    rebuy = kind == 2
    keep = np.ones(len(t), dtype=bool)
    keep[order[rebuy] - (len(adds[2]) + len(buys[2]))] = ~open_cart[rebuy]
    return keep


def _replenish(w: World, item: np.ndarray, t: np.ndarray, rng: np.random.Generator):
    """The rebuys that follow purchase lines (item, t): per line a chain of K rebuys with
    P(K >= k) = p^k (p = the item's replenish probability), spaced by the customer x item's own cycle
    (the category's median x a log-normal factor per chain) x a log-normal jitter per interval, never
    less than a day; rebuys after the span's end are dropped. Returns (index of the line that started
    the chain, time) per rebuy, one session each."""
    beh, end = w.beh, w.days * DAY
    p = w.item_replenish_p[item]
    u = rng.random(len(item))
    with np.errstate(divide="ignore"):
        k = np.where(p > 0, np.floor(np.log(u) / np.log(np.where(p > 0, p, 0.5))), 0)
    own = w.item_cycle_days[item] * np.exp(beh.replenish_customer_sigma * rng.standard_normal(len(item)))
    room = np.floor((end - t) / (own * DAY * 0.5)).clip(0)  # a chain never needs more links than fit the span
    k = np.minimum(k, room).astype(np.int64)
    chain = np.repeat(np.arange(len(item)), k)
    gaps = np.maximum(own[chain] * np.exp(beh.replenish_jitter_sigma * rng.standard_normal(len(chain))), 1.0) * DAY
    csum = np.cumsum(gaps)
    first = np.cumsum(k) - k
    start = np.repeat(csum[first[k > 0]] - gaps[first[k > 0]], k[k > 0])
    r_t = t[chain] + (csum - start)
    keep = r_t < end
    return chain[keep], r_t[keep]
