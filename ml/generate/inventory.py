"""Stock per item x warehouse, day by day (vectorised over cells): sales deplete it, (s, S) replenishment refills it.

Order: during day d lines sell in time order while the opening stock (end of day d-1) lasts; a line that
does not fit is blocked (the shopper finds the item out of stock: no purchase, no order line). At the end
of the day replenishments due that day arrive; if stock + on order is at or below the reorder point a new
order is placed, arriving after the cell's lead time (sometimes late). So a sale on day d always has
``on_hand_units`` of day d-1 at least the units sold on day d.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.generate.params import Behaviour


@dataclass
class Stock:
    accepted: np.ndarray  # per line (input order): sold
    excluded: np.ndarray  # per line: never happened (the line it requires did not sell)
    on_hand: np.ndarray  # [day, cell] end of day
    on_order: np.ndarray  # [day, cell]
    lead_time: np.ndarray  # [cell] nominal lead time, days
    reorder_point: np.ndarray  # [cell]
    order_up_to: np.ndarray  # [cell]


def simulate_stock(
    rng: np.random.Generator,
    beh: Behaviour,
    cell: np.ndarray,
    day: np.ndarray,
    t: np.ndarray,
    qty: np.ndarray,
    n_cells: int,
    cell_launch: np.ndarray,
    days: int,
    progress: bool = False,
    requires: np.ndarray | None = None,
) -> Stock:
    """``requires`` (optional, per line): the index of a line on an EARLIER day that must have sold for
    this one to happen at all (a reorder of a purchase), -1 for none; such a line is ``excluded``, not
    blocked, when that one did not sell."""
    # the planner knows each cell's mean demand (what it would sell if never out of stock)
    active = np.maximum(days - np.maximum(cell_launch, 0), 1)
    mu = (np.bincount(cell, weights=qty, minlength=n_cells) + 0.5) / active
    lo, hi = beh.lead_time_days
    lead = rng.integers(lo, hi + 1, n_cells)
    safety = rng.uniform(*beh.safety_days, n_cells)
    cover = rng.uniform(*beh.cover_days, n_cells)
    s = np.maximum(1, np.ceil(mu * (lead + safety))).astype(np.int64)
    S = s + np.maximum(beh.min_order_units, np.ceil(mu * cover)).astype(np.int64)

    order = np.lexsort((t, cell, day))
    c_s, q_s, d_s = cell[order], qty[order].astype(np.int64), day[order]
    bounds = np.searchsorted(d_s, np.arange(days + 1))
    acc_sorted = np.zeros(len(order), dtype=bool)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    req_sorted = np.full(len(order), -1, dtype=np.int64)
    if requires is not None:
        req = requires[order]
        req_sorted = np.where(req >= 0, position[np.maximum(req, 0)], -1)
    eligible = req_sorted < 0

    on_hand = S.copy()
    on_order = np.zeros(n_cells, dtype=np.int64)
    pipeline = np.zeros((days + hi + 12, n_cells), dtype=np.int64)
    hist_hand = np.empty((days, n_cells), dtype=np.int32)
    hist_order = np.empty((days, n_cells), dtype=np.int32)
    idx = np.arange(n_cells)
    it = range(days)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="inventory", unit="day", leave=False)
    for d in it:
        a, b = bounds[d], bounds[d + 1]
        if b > a:
            r = req_sorted[a:b]
            eligible[a:b] |= (r >= 0) & acc_sorted[np.maximum(r, 0)]  # required lines sold on earlier days
            c, q = c_s[a:b], np.where(eligible[a:b], q_s[a:b], 0)
            cs = np.cumsum(q)
            new = np.r_[True, c[1:] != c[:-1]]
            start_cs = np.maximum.accumulate(np.where(new, cs - q, 0))
            ok = eligible[a:b] & ((cs - start_cs) <= on_hand[c])
            acc_sorted[a:b] = ok
            on_hand -= np.bincount(c[ok], weights=q[ok], minlength=n_cells).astype(np.int64)
        arrive = pipeline[d]
        on_hand += arrive
        on_order -= arrive
        need = (on_hand + on_order <= s) & (cell_launch <= d + 1)
        if need.any():
            k = idx[need]
            amount = S[k] - on_hand[k] - on_order[k]
            extra = np.where(rng.random(len(k)) < beh.late_delivery_prob, rng.integers(3, 11, len(k)), 0)
            pipeline[d + lead[k] + extra, k] += amount
            on_order[k] += amount
        hist_hand[d] = on_hand
        hist_order[d] = on_order
    accepted = np.empty(len(order), dtype=bool)
    accepted[order] = acc_sorted
    excluded = np.empty(len(order), dtype=bool)
    excluded[order] = ~eligible
    return Stock(accepted, excluded, hist_hand, hist_order, lead.astype(np.int32), s, S)
