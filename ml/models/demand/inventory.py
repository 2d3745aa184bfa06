"""Inventory policy from demand forecasts: safety stock, reorder point, order-up-to level, projected
stock-outs, and inventory turnover under that policy vs the history.

    service_z(service_level) -> float           the normal quantile z of a cycle service level
    policy(forecast, lead_times, ...) -> DataFrame   one row per item x warehouse (the plan)
    turnover(history, policy_frame) -> (DataFrame, dict)   turnover per series and overall, history vs
                                                the (s, S) policy replayed over the same demand

The maths (per series, days counted from the forecast's first date):

* Demand per day is normal with mean ``yhat`` and standard deviation
  ``sigma = (yhat_p90 - yhat_p10) / (2 * 1.2816)`` (a normal's P10..P90 spans 2 * 1.2816 sd).
  Days are taken as independent, so over the first ``t`` days the mean is the sum of ``yhat`` and the
  variance the sum of ``sigma**2``: ``mu(t)``, ``var(t)``. A fractional day counts pro rata. This
  ignores autocorrelation of forecast errors (a positive one makes the true spread wider), the
  usual simplification of the textbook formula.
* With ``z = Phi^-1(service_level)`` (cycle service level: the probability of no stock-out during a
  replenishment cycle; z = 1.645 at 95 %) and lead time L, review period R:
  ``safety_stock = z * sqrt(var(L))``, ``reorder_point = mu(L) + safety_stock``,
  ``order_up_to = mu(L + R) + z * sqrt(var(L + R))``.
* With stock (``on_hand``; a null on_order counts as 0): inventory position = on_hand + on_order; an order is suggested when the
  position is at or below the reorder point, for ``ceil(order_up_to - position)`` units.
  ``projected_stockout_date`` is the first forecast day on which position - cumulative yhat <= 0
  (everything on order counted as available, as in the inventory position; null when the position
  lasts the whole horizon); ``days_of_cover = position / mean daily yhat over the horizon``
  (inf when the forecast is all zero).

Forecast rows may be daily or weekly (any regular step, from the series' own dates): a period of p
days counts as p days of ``yhat / p`` each with variance ``sigma**2 / p``. When L + R reaches past
the forecast horizon, the missing days are filled at the horizon's mean daily rate and variance
(``horizon_extended`` says so).

Turnover (``turnover``): sales / mean on hand over the history, against the same sales replayed
through the plan's (s = reorder_point, S = order_up_to) with the lead time (lost sales, checked
daily; see ``simulate_policy`` and ``turnover`` for the rules).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

KEY = ["item_id", "warehouse_id"]
P90_Z = NormalDist().inv_cdf(0.9)  # 1.2816: a normal's P10..P90 spans 2 * P90_Z standard deviations
FORECAST_COLUMNS = ["item_id", "warehouse_id", "demand_date", "yhat", "yhat_p10", "yhat_p90"]
POLICY_COLUMNS = [
    "item_id",
    "warehouse_id",
    "forecast_start",
    "horizon_days",
    "lead_time_days",
    "lead_time_source",
    "review_period_days",
    "service_level",
    "z",
    "mean_daily_demand_lt",
    "demand_lt",
    "sigma_lt",
    "safety_stock",
    "reorder_point",
    "order_up_to",
    "horizon_extended",
    "on_hand_units",
    "on_order_units",
    "inventory_position",
    "order_needed",
    "suggested_order_units",
    "projected_stockout_date",
    "days_of_cover",
]


class LeadTimeError(ValueError):
    """Series without a lead time (and no default given); ``series`` lists their (item_id, warehouse_id)."""

    def __init__(self, message: str, series: list[tuple[str, str]]):
        super().__init__(message)
        self.series = series


def service_z(service_level: float) -> float:
    """z = Phi^-1(service_level): 1.645 at 0.95, 2.326 at 0.99."""
    if not 0.5 <= service_level < 1.0:
        raise ValueError(f"service_level must lie in [0.5, 1), got {service_level}")
    return NormalDist().inv_cdf(service_level)


def _require(frame: "pd.DataFrame", columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}")


def _names(pairs, limit: int = 5) -> str:
    pairs = list(pairs)
    shown = ", ".join(f"{i}@{w}" for i, w in pairs[:limit])
    return shown + (f" and {len(pairs) - limit} more" if len(pairs) > limit else "")


def _resolve_lead_times(series: "pd.DataFrame", lead_times: "pd.DataFrame", default: float | None) -> "pd.DataFrame":
    """Lead time per series: an item x warehouse row wins over a warehouse row (item_id null or absent)."""
    import numpy as np
    import pandas as pd

    _require(lead_times, ["warehouse_id", "lead_time_days"], "lead_times")
    lt = lead_times.copy()
    if "item_id" not in lt.columns:
        lt["item_id"] = None
    if lt["lead_time_days"].isna().any() or (lt["lead_time_days"] < 0).any():
        raise ValueError("lead_times: lead_time_days must be >= 0 and not null")
    item_rows = lt[lt["item_id"].notna()]
    if item_rows.duplicated(KEY).any():
        raise ValueError(
            f"lead_times: duplicate item x warehouse rows: {_names(item_rows.loc[item_rows.duplicated(KEY), KEY].itertuples(index=False))}"
        )
    wh_rows = lt[lt["item_id"].isna()]
    if wh_rows["warehouse_id"].duplicated().any():
        raise ValueError("lead_times: duplicate warehouse-level rows (item_id null) for one warehouse")
    out = series.merge(item_rows[KEY + ["lead_time_days"]], on=KEY, how="left")
    out["lead_time_source"] = np.where(out["lead_time_days"].notna(), "item", None)
    wh = out["warehouse_id"].map(wh_rows.set_index("warehouse_id")["lead_time_days"])
    use_wh = out["lead_time_days"].isna() & wh.notna()
    out.loc[use_wh, "lead_time_days"] = wh[use_wh]
    out.loc[use_wh, "lead_time_source"] = "warehouse"
    missing = out["lead_time_days"].isna()
    if missing.any():
        pairs = list(out.loc[missing, KEY].itertuples(index=False, name=None))
        if default is None:
            raise LeadTimeError(
                f"no lead time for {len(pairs)} series: {_names(pairs)}; add item x warehouse or warehouse rows "
                "to lead_times, or pass default_lead_time_days",
                pairs,
            )
        out.loc[missing, "lead_time_days"] = float(default)
        out.loc[missing, "lead_time_source"] = "default"
    out["lead_time_days"] = pd.to_numeric(out["lead_time_days"]).astype(float)
    return out


def _daily(group: "pd.DataFrame") -> tuple["np.ndarray", "np.ndarray", int]:
    """A series' forecast as per-day mean and variance arrays (periods of p days spread evenly)."""
    import numpy as np

    ds = group["demand_date"].to_numpy("datetime64[D]")
    steps = np.diff(ds).astype(int)
    if len(steps) and (steps.min() != steps.max() or steps.min() <= 0):
        raise ValueError("forecast dates of a series must be regular (one step: daily or weekly)")
    p = int(steps[0]) if len(steps) else 1
    spread = group["yhat_p90"].to_numpy(float) - group["yhat_p10"].to_numpy(float)
    sigma = np.maximum(spread, 0.0) / (2.0 * P90_Z)
    mean = np.repeat(group["yhat"].to_numpy(float) / p, p)
    var = np.repeat(sigma**2 / p, p)
    return mean, var, p


def _cum_at(daily: "np.ndarray", t: float) -> float:
    """Sum of ``daily`` over the first ``t`` days (fractional days pro rata; past the end: mean rate)."""
    import numpy as np

    n = len(daily)
    cum = np.r_[0.0, np.cumsum(daily)]
    if t <= n:
        return float(np.interp(t, np.arange(n + 1), cum))
    return float(cum[-1] + (t - n) * (cum[-1] / n if n else 0.0))


def policy(
    forecast: "pd.DataFrame",
    lead_times: "pd.DataFrame",
    service_level: float = 0.95,
    review_period_days: float = 7,
    on_hand: "pd.DataFrame | None" = None,
    default_lead_time_days: float | None = None,
) -> "pd.DataFrame":
    """The inventory plan per item x warehouse from a quantile forecast (see the module docstring).

    ``forecast``: item_id, warehouse_id, demand_date, yhat, yhat_p10, yhat_p90 over the horizon (daily or
    weekly rows; one series' dates regular). ``lead_times``: warehouse_id, lead_time_days and
    optionally item_id (a row with item_id wins; item_id null = the warehouse's default). A series
    without a lead time raises ``LeadTimeError`` naming it, unless ``default_lead_time_days`` is
    given: then it is used, ``lead_time_source`` reads "default" and ``frame.attrs
    ["default_lead_time_series"]`` counts those series. ``on_hand``: item_id, warehouse_id,
    on_hand_units, on_order_units (optional; a series missing there gets null stock columns).
    Negative yhat is clipped to 0; crossed quantiles (p90 < p10) count as zero spread, and
    ``attrs["crossed_quantile_rows"]`` counts them.
    """
    import numpy as np
    import pandas as pd

    _require(forecast, FORECAST_COLUMNS, "forecast")
    z = service_z(service_level)
    if review_period_days < 0:
        raise ValueError(f"review_period_days must be >= 0, got {review_period_days}")
    if forecast.empty:
        raise ValueError("forecast is empty")
    fc = forecast[FORECAST_COLUMNS].copy()
    fc["demand_date"] = pd.to_datetime(fc["demand_date"])
    nulls = fc[["yhat", "yhat_p10", "yhat_p90"]].isna().any(axis=1)
    if nulls.any():
        pairs = fc.loc[nulls, KEY].drop_duplicates().itertuples(index=False, name=None)
        raise ValueError(f"forecast has null yhat/yhat_p10/yhat_p90 in series {_names(list(pairs))}: quantiles are required")
    if fc.duplicated(KEY + ["demand_date"]).any():
        raise ValueError("forecast has duplicate item_id x warehouse_id x ds rows")
    crossed = int((fc["yhat_p90"] < fc["yhat_p10"]).sum())
    fc["yhat"] = fc["yhat"].clip(lower=0.0)
    fc = fc.sort_values(KEY + ["demand_date"])

    series = fc[KEY].drop_duplicates().reset_index(drop=True)
    series = _resolve_lead_times(series, lead_times, default_lead_time_days)
    lead = dict(zip(zip(series["item_id"], series["warehouse_id"]), zip(series["lead_time_days"], series["lead_time_source"])))

    stock = None
    if on_hand is not None:
        _require(on_hand, KEY + ["on_hand_units", "on_order_units"], "on_hand")
        if on_hand.duplicated(KEY).any():
            raise ValueError("on_hand has duplicate item_id x warehouse_id rows")
        stock = on_hand.set_index(KEY)[["on_hand_units", "on_order_units"]].astype(float)
        stock["on_order_units"] = stock["on_order_units"].fillna(0.0)
        if stock["on_hand_units"].isna().any():
            pairs = stock.index[stock["on_hand_units"].isna()].tolist()
            raise ValueError(f"on_hand has null on_hand_units for {_names(pairs)}")

    rows = []
    for (item, wh), g in fc.groupby(KEY, sort=False):
        mean, var, _ = _daily(g)
        n = len(mean)
        L, source = lead[(item, wh)]
        LR = L + review_period_days
        demand_lt = _cum_at(mean, L)
        sigma_lt = math.sqrt(_cum_at(var, L))
        safety = z * sigma_lt
        order_up_to = _cum_at(mean, LR) + z * math.sqrt(_cum_at(var, LR))
        row = {
            "item_id": item,
            "warehouse_id": wh,
            "forecast_start": g["demand_date"].iloc[0],
            "horizon_days": n,
            "lead_time_days": L,
            "lead_time_source": source,
            "review_period_days": float(review_period_days),
            "service_level": float(service_level),
            "z": z,
            "mean_daily_demand_lt": demand_lt / L if L > 0 else float(mean[0]),
            "demand_lt": demand_lt,
            "sigma_lt": sigma_lt,
            "safety_stock": safety,
            "reorder_point": demand_lt + safety,
            "order_up_to": order_up_to,
            "horizon_extended": bool(LR > n),
            "on_hand_units": np.nan,
            "on_order_units": np.nan,
            "inventory_position": np.nan,
            "order_needed": None,
            "suggested_order_units": np.nan,
            "projected_stockout_date": pd.NaT,
            "days_of_cover": np.nan,
        }
        if stock is not None and (item, wh) in stock.index:
            oh, oo = stock.loc[(item, wh)]
            position = float(oh) + float(oo)
            needed = position <= row["reorder_point"]
            projected = position - np.cumsum(mean)
            out = np.flatnonzero(projected <= 1e-9)
            daily_rate = mean.mean()
            row.update(
                on_hand_units=float(oh),
                on_order_units=float(oo),
                inventory_position=position,
                order_needed=bool(needed),
                suggested_order_units=float(max(math.ceil(order_up_to - position - 1e-9), 0)) if needed else 0.0,
                projected_stockout_date=g["demand_date"].iloc[0] + pd.Timedelta(days=int(out[0])) if len(out) else pd.NaT,
                days_of_cover=position / daily_rate if daily_rate > 0 else math.inf,
            )
        rows.append(row)
    plan = pd.DataFrame(rows, columns=POLICY_COLUMNS)
    plan["projected_stockout_date"] = pd.to_datetime(plan["projected_stockout_date"])
    plan.attrs["default_lead_time_series"] = int((plan["lead_time_source"] == "default").sum())
    plan.attrs["crossed_quantile_rows"] = crossed
    return plan


# ----------------------------------------------------------------------------- turnover


def _simulate_many(
    demand: "np.ndarray",
    length: "np.ndarray",
    reorder_point: "np.ndarray",
    order_up_to: "np.ndarray",
    lead_time_days: "np.ndarray",
    review_period_days: float,
    opening_stock: "np.ndarray",
) -> dict:
    """``simulate_policy`` for many series at once: demand[series, day], each series' own day 0 in
    column 0 and ``length`` days long (later columns ignored). One pass over the days, vectorised
    over the series."""
    import numpy as np

    n, T = demand.shape
    lead = np.maximum(np.ceil(np.asarray(lead_time_days, dtype=float) - 1e-9).astype(int), 1)
    R = max(int(round(review_period_days)), 1)
    s, S = np.asarray(reorder_point, dtype=float), np.asarray(order_up_to, dtype=float)
    pipeline = np.zeros((T + int(lead.max(initial=1)) + 1, n))
    stock = np.asarray(opening_stock, dtype=float).copy()
    on_order = np.zeros(n)
    on_hand = np.zeros((n, T))
    sales = np.zeros((n, T))
    orders = np.zeros(n, dtype=int)
    idx = np.arange(n)
    for t in range(T):
        active = t < length
        stock += pipeline[t]
        on_order -= pipeline[t]
        sold = np.where(active, np.minimum(demand[:, t], stock), 0.0)
        stock -= sold
        if t % R == 0:
            amount = S - stock - on_order
            need = active & (stock + on_order <= s) & (amount > 0)
            k = idx[need]
            pipeline[t + lead[k], k] += amount[k]
            on_order[k] += amount[k]
            orders[k] += 1
        on_hand[:, t] = stock
        sales[:, t] = sold
    return {"on_hand": on_hand, "sales": sales, "orders": orders}


def simulate_policy(
    demand,
    reorder_point: float,
    order_up_to: float,
    lead_time_days: float,
    review_period_days: float = 1,
    opening_stock: float | None = None,
) -> dict:
    """Replay a periodic-review (R, s, S) policy over a daily demand path (lost sales).

    Day t: deliveries due on t arrive first; then sales = min(demand[t], stock) (the rest is lost);
    then, on review days (t = 0, R, 2R, ...; R < 1 counts as daily), if on hand + on order <= s an
    order of S - (on hand + on order) is placed and arrives at the start of day t + ceil(L) (L = 0
    arrives the next morning). Nothing is on order at the start; the opening stock defaults to S.
    Returns end-of-day ``on_hand`` (array), ``sales`` (array), ``lost_units``, ``orders``.
    """
    import numpy as np

    d = np.asarray(demand, dtype=float)
    opening = order_up_to if opening_stock is None else opening_stock
    out = _simulate_many(
        d[None, :],
        np.array([len(d)]),
        np.array([reorder_point]),
        np.array([order_up_to]),
        np.array([lead_time_days]),
        review_period_days,
        np.array([opening]),
    )
    on_hand, sales = out["on_hand"][0], out["sales"][0]
    return {"on_hand": on_hand, "sales": sales, "lost_units": float((d - sales).sum()), "orders": int(out["orders"][0])}


def turnover(history: "pd.DataFrame", policy_frame: "pd.DataFrame", review_every_days: int = 1) -> tuple["pd.DataFrame", dict]:
    """Inventory turnover per series and overall: the history vs the policy replayed over it.

    ``history``: item_id, warehouse_id, demand_date (daily), units (units sold), on_hand_units (end-of-day stock).
    ``policy_frame``: the output of ``policy`` (reorder_point, order_up_to, lead_time_days per series).

    History: turnover = sum(units) / mean(on_hand_units) over the series' days.
    Policy: ``simulate_policy`` replays (s = reorder_point, S = order_up_to) over the same daily demand
    units (days missing from the history count as 0 demand), starting from the history's opening stock
    (first day's on_hand + its sales) with nothing on order; turnover = sum(simulated sales) /
    mean(simulated on hand). The position is checked every ``review_every_days`` (default daily):
    the reorder point covers the lead time only, so it is a continuous-review trigger, and the
    policy's review period sizes the order (S covers lead time + review period), not the checks.
    Checking only every R days with that s runs short between checks. The demand replayed is the
    recorded sales, censored by the history's own stock-outs, so lost sales under the policy
    (``policy_lost_units``, ``policy_fill_rate``) are a lower bound. Turnover is over the history's
    span; ``*_turnover_annual`` scales it to 365 days. All series are replayed together (10 000
    series x 365 days: about 4 s).

    Series in the history without a policy row are left out and counted in the summary
    (``series_without_policy``). Summary: n_series, days, overall turnover (total sales / total mean
    on hand) for both, their ratio, total lost units and fill rate under the policy.
    """
    import numpy as np
    import pandas as pd

    _require(history, KEY + ["demand_date", "units", "on_hand_units"], "history")
    _require(policy_frame, KEY + ["reorder_point", "order_up_to", "lead_time_days"], "policy_frame")
    if history.empty:
        raise ValueError("history is empty")
    h = history[KEY + ["demand_date", "units", "on_hand_units"]].copy()
    h["demand_date"] = pd.to_datetime(h["demand_date"]).dt.normalize()
    if h.duplicated(KEY + ["demand_date"]).any():
        raise ValueError("history has duplicate item_id x warehouse_id x ds rows")
    if (h["units"] < 0).any():
        raise ValueError("history has negative y: net out returns before computing turnover")
    if policy_frame.duplicated(KEY).any():
        raise ValueError("policy_frame has duplicate item_id x warehouse_id rows")
    pol = policy_frame[KEY + ["reorder_point", "order_up_to", "lead_time_days"]]
    h = h.merge(pol[KEY].assign(_has_policy=True), on=KEY, how="left")
    skipped = int(h.loc[h["_has_policy"].isna(), KEY].drop_duplicates().shape[0])
    h = h[h["_has_policy"].notna()].drop(columns="_has_policy")
    if h.empty:
        raise ValueError("no history series has a policy row: nothing to compare")

    # one row per series, its days from its own first date in columns 0 .. length - 1
    series = h.groupby(KEY, sort=True)["demand_date"].agg(first="min", last="max").reset_index()
    series = series.merge(pol, on=KEY, how="left")
    series["s"] = np.arange(len(series))
    length = ((series["last"] - series["first"]).dt.days + 1).to_numpy()
    h = h.merge(series[KEY + ["s", "first"]], on=KEY)
    row, col = h["s"].to_numpy(), (h["demand_date"] - h["first"]).dt.days.to_numpy()
    n, T = len(series), int(length.max())
    y = np.zeros((n, T))
    y[row, col] = h["units"].to_numpy(float)
    hand = np.full((n, T), np.nan)
    hand[row, col] = h["on_hand_units"].to_numpy(float)
    first_hand = np.where(np.isfinite(hand[:, 0]), hand[:, 0], 0.0)
    sim = _simulate_many(
        y,
        length,
        series["reorder_point"].to_numpy(float),
        series["order_up_to"].to_numpy(float),
        series["lead_time_days"].to_numpy(float),
        review_every_days,
        first_hand + y[:, 0],
    )
    valid = np.arange(T)[None, :] < length[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        hist_mean = np.nanmean(np.where(valid, hand, np.nan), axis=1)
        sim_mean = np.where(valid, sim["on_hand"], 0.0).sum(1) / length
        sold = y.sum(1)
        served = np.where(valid, sim["sales"], 0.0).sum(1)
        table = pd.DataFrame(
            {
                "item_id": series["item_id"],
                "warehouse_id": series["warehouse_id"],
                "days": length,
                "units_sold": sold,
                "history_mean_on_hand": hist_mean,
                "history_turnover": np.where(hist_mean > 0, sold / hist_mean, np.nan),
                "history_stockout_days": (np.where(valid, hand, np.inf) <= 0).sum(1),
                "policy_mean_on_hand": sim_mean,
                "policy_units_sold": served,
                "policy_turnover": np.where(sim_mean > 0, served / sim_mean, np.nan),
                "policy_lost_units": sold - served,
                "policy_fill_rate": np.where(sold > 0, served / sold, np.nan),
                "policy_stockout_days": (np.where(valid, sim["on_hand"], np.inf) <= 0).sum(1),
                "policy_orders": sim["orders"],
            }
        )
    for c in ("history_turnover", "policy_turnover"):
        table[f"{c}_annual"] = table[c] * 365.0 / table["days"]
    hist_inv, pol_inv = float(np.nansum(hist_mean)), float(sim_mean.sum())
    total_sold, total_served = float(sold.sum()), float(served.sum())
    hist_t = total_sold / hist_inv if hist_inv > 0 else float("nan")
    pol_t = total_served / pol_inv if pol_inv > 0 else float("nan")
    summary = {
        "n_series": int(n),
        "series_without_policy": skipped,
        "days": int(T),
        "units_sold": total_sold,
        "history_mean_on_hand": hist_inv,
        "history_turnover": hist_t,
        "policy_mean_on_hand": pol_inv,
        "policy_units_sold": total_served,
        "policy_turnover": pol_t,
        "turnover_ratio": pol_t / hist_t if hist_t > 0 else float("nan"),
        "policy_lost_units": total_sold - total_served,
        "policy_fill_rate": total_served / total_sold if total_sold > 0 else float("nan"),
    }
    return table, summary
