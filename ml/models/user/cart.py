"""Cart-abandonment analytics (``cart_abandonment``): how likely a cart is bought, by hours since the add.

The counting happens in dbt (``models/marts/exports/``): ``mart_cart_conversions`` follows every
add_to_cart for 30 days (first purchase of the item by the user, removal, re-add, censoring at the
lake's end) and ``mart_cart_conversion_curve`` counts, on a grid of hours h since the add, the fully
observed carts still open at h and how many of them are bought later. This module reads the two
Parquet exports (settings.exports_dir) and adds the statistics:

    conversion_curve(settings) -> DataFrame     the curve with Wilson confidence intervals
    estimate_decay(settings) -> dict            late_conversion_ratio = P(bought after 24 h | not within
                                                24 h) / P(bought within 24 h), delta-method CI; and
                                                late_delay_mean_hours, the exponential mean of the delay
                                                beyond 24 h (MLE, truncated at each cart's follow-up window)
    plot_curve(curve) -> Figure                 conversion rate by hours since add, with its CI band
    at_risk_carts(settings, as_of) -> DataFrame carts open at the scoring date (added within the last
                                                7 days, not bought, removed or re-added), scored with the
                                                curve's conversion rate at their age
    write_at_risk(settings, as_of) -> Path      that list as one Parquet partition per scoring date
                                                (scores_dir/cart_at_risk/scoring_date=<d>/part.parquet),
                                                overwritten on a re-run

Pure helpers (``wilson_interval``, ``ratio_interval``, ``exponential_mle``, ``interpolate_rate``)
carry the maths and are unit-tested on their own. Orders-only lakes have no cart events: every
entry point then raises ``CartDataError`` saying so.
"""

from __future__ import annotations

import math
import os
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ml.models.lifecycle.config import CONFIGS_DIR
from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

MODEL_NAME = "cart_abandonment"
CONFIG_PATH = CONFIGS_DIR / f"{MODEL_NAME}.yaml"
CONVERSIONS_MART = "mart_cart_conversions"
CURVE_MART = "mart_cart_conversion_curve"
AT_RISK = "cart_at_risk"
AT_RISK_COLUMNS = ("scoring_date", "user_id", "item_id", "event_id", "added_at", "hours_open", "p_convert", "abandonment_risk")


class CartDataError(RuntimeError):
    """Cart analytics cannot run on this warehouse (marts missing or empty, no open carts); nothing was written."""


def load_config(path: Path | str | None = None, **overrides) -> dict:
    """The config file (default configs/cart_abandonment.yaml) with keyword overrides; unknown keys raise."""
    import yaml

    config = yaml.safe_load(Path(path or CONFIG_PATH).read_text()) or {}
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown {MODEL_NAME} config keys: {', '.join(sorted(unknown))}")
    config.update(overrides)
    return config


# ----------------------------------------------------------------------------- statistics (pure)


def _z(confidence: float) -> float:
    from statistics import NormalDist

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes, trials, confidence: float = 0.95) -> tuple["np.ndarray", "np.ndarray"]:
    """Wilson score interval of a binomial proportion, element-wise; NaN where trials == 0."""
    import numpy as np

    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("successes must lie in [0, trials]")
    z = _z(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
        low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def ratio_interval(n_carts: int, n_within: int, n_late: int, confidence: float = 0.95) -> dict:
    """R = P(late | not within) / P(within) from counts, with a delta-method interval on log R.

    With p = n_within / n_carts and q = n_late / (n_carts - n_within), R = q / p and (multinomial
    counts, p and q asymptotically independent) Var(log R) ~ (1 - q) / n_late + (1 - p) / n_within.
    """
    if not 0 < n_within < n_carts:
        raise ValueError(f"need 0 < n_within < n_carts, got n_within={n_within}, n_carts={n_carts}")
    if not 0 < n_late <= n_carts - n_within:
        raise ValueError(f"need 0 < n_late <= n_carts - n_within, got n_late={n_late}")
    p = n_within / n_carts
    q = n_late / (n_carts - n_within)
    ratio = q / p
    se = math.sqrt((1.0 - q) / n_late + (1.0 - p) / n_within)
    z = _z(confidence)
    return {"ratio": ratio, "ci_low": ratio * math.exp(-z * se), "ci_high": ratio * math.exp(z * se), "se_log": se}


def exponential_mle(delays, limits=None, confidence: float = 0.95) -> dict:
    """Mean of an exponential from delays each seen only up to its limit (a truncated sample).

    A delay d_i is observed only when d_i <= limits[i] (the follow-up window: beyond it the
    conversion is never seen), so the log-likelihood of the mean mu is
    sum(-log mu - d_i / mu - log(1 - exp(-limits[i] / mu))). Without limits (or infinite ones) the
    MLE is the sample mean. The interval is the profile-likelihood interval (likelihood-ratio test).
    """
    import numpy as np
    from scipy import optimize, stats

    d = np.asarray(delays, dtype=float)
    c = np.full_like(d, np.inf) if limits is None else np.broadcast_to(np.asarray(limits, dtype=float), d.shape)
    if d.size < 2:
        raise ValueError(f"need at least 2 delays, got {d.size}")
    if np.any(d < 0) or np.any(~np.isfinite(d)):
        raise ValueError("delays must be finite and >= 0")
    if np.any(d > c + 1e-9):
        raise ValueError("a delay exceeds its limit: it could not have been observed")
    c = np.maximum(c, 1e-9)  # a zero window (delay 0 at the very end of the data) keeps a finite likelihood
    finite = np.isfinite(c)

    def loglik(log_mu: float) -> float:
        mu = math.exp(log_mu)
        value = -d.size * log_mu - d.sum() / mu
        if finite.any():
            value -= np.log(-np.expm1(-c[finite] / mu)).sum()
        return float(value)

    mean = float(d.mean())
    lo_b, hi_b = math.log(max(mean, 1e-9) / 100.0), math.log(max(mean, 1e-9) * 1e4)
    if finite.any():
        best = optimize.minimize_scalar(lambda t: -loglik(t), bounds=(lo_b, hi_b), method="bounded", options={"xatol": 1e-10})
        log_mu = float(best.x)
        if log_mu > hi_b - 1e-3:
            raise ValueError("the delays look flat within their limits: the exponential mean is not identified")
    else:
        log_mu = math.log(mean)
    peak = loglik(log_mu)
    drop = stats.chi2.ppf(confidence, df=1) / 2.0

    def excess(t: float) -> float:
        return peak - loglik(t) - drop

    low = optimize.brentq(excess, lo_b, log_mu) if excess(lo_b) > 0 else lo_b
    high = optimize.brentq(excess, log_mu, hi_b) if excess(hi_b) > 0 else math.inf
    return {
        "mean": math.exp(log_mu),
        "ci_low": math.exp(low),
        "ci_high": math.exp(high) if math.isfinite(high) else math.inf,
        "n": int(d.size),
        "naive_mean": mean,
    }


def interpolate_rate(curve: "pd.DataFrame", hours) -> "np.ndarray":
    """The curve's conversion_rate at ``hours`` since add: linear between grid points, flat beyond them."""
    import numpy as np

    points = curve.dropna(subset=["conversion_rate"]).sort_values("hours_since_add")
    if points.empty:
        raise CartDataError("the conversion curve has no rate to interpolate")
    return np.interp(np.asarray(hours, dtype=float), points["hours_since_add"].to_numpy(float), points["conversion_rate"].to_numpy(float))


# ----------------------------------------------------------------------------- reading the marts


def export_path(settings: Settings, mart: str) -> Path:
    """Where dbt writes an export mart: settings.exports_dir/<mart>.parquet."""
    return Path(settings.exports_dir) / f"{mart}.parquet"


def _read_mart(settings: Settings, mart: str, key: str) -> "pd.DataFrame":
    import pandas as pd

    path = export_path(settings, mart)
    if not path.exists():
        raise CartDataError(f"{path} not found: build the warehouse first (`ecomml warehouse build`)")
    frame = pd.read_parquet(path)
    # An empty external model leaves one all-null placeholder row (dbt-duckdb keeps the schema that way).
    frame = frame[frame[key].notna()].reset_index(drop=True)
    if frame.empty:
        raise CartDataError(
            f"{mart} is empty: cart analytics need clickstream events (add_to_cart, purchase) followed "
            "for 30 days; an orders-only lake (or one shorter than 30 days) has none"
        )
    return frame


def read_conversions(settings: Settings) -> "pd.DataFrame":
    """mart_cart_conversions (one row per add_to_cart); CartDataError when missing or empty."""
    return _read_mart(settings, CONVERSIONS_MART, "event_id")


def read_curve(settings: Settings) -> "pd.DataFrame":
    """mart_cart_conversion_curve sorted by hours_since_add; CartDataError when missing or empty."""
    return _read_mart(settings, CURVE_MART, "hours_since_add").sort_values("hours_since_add").reset_index(drop=True)


# ----------------------------------------------------------------------------- analyses


def conversion_curve(settings: Settings, config: dict | None = None) -> "pd.DataFrame":
    """The curve mart plus Wilson intervals: ci_low/ci_high of conversion_rate (n_converted / n_open)
    and late_ci_low/late_ci_high of late_conversion_rate (n_late_converted / n_not_purchased)."""
    config = config or load_config()
    curve = read_curve(settings)
    confidence = float(config["confidence"])
    curve["ci_low"], curve["ci_high"] = wilson_interval(curve["n_converted"], curve["n_open"], confidence)
    curve["late_ci_low"], curve["late_ci_high"] = wilson_interval(curve["n_late_converted"], curve["n_not_purchased"], confidence)
    curve.attrs["confidence"] = confidence
    return curve


def estimate_decay(settings: Settings, config: dict | None = None) -> dict:
    """The two planted cart parameters, recovered with confidence intervals.

    late_conversion_ratio: from the curve's row at threshold_hours (counted in SQL over fully observed
    adds, removed ones included): P(bought after | not within) / P(bought within), delta method.
    late_delay_mean_hours: mean of (hours_to_purchase - threshold) over adds bought after the
    threshold, as an exponential truncated at each add's window (observed_hours - threshold, at most
    window_hours - threshold): censored adds near the lake's end contribute without biasing it.
    """
    import numpy as np

    config = config or load_config()
    threshold = float(config["threshold_hours"])
    confidence = float(config["confidence"])
    curve = read_curve(settings)
    row = curve[curve["hours_since_add"] == threshold]
    if row.empty:
        raise CartDataError(f"{CURVE_MART} has no row at hours_since_add = {threshold:g} (threshold_hours must be a grid point)")
    row = row.iloc[0]
    n_carts, n_within, n_late = int(row["n_carts"]), int(row["n_purchased"]), int(row["n_late_converted"])
    try:
        ratio = ratio_interval(n_carts, n_within, n_late, confidence)
    except ValueError as exc:
        raise CartDataError(f"too few cart conversions to estimate the late-conversion ratio: {exc}") from exc

    carts = read_conversions(settings)
    hours = carts["hours_to_purchase"].to_numpy(float)
    late = np.nan_to_num(hours, nan=-1.0) >= threshold
    limits = np.minimum(carts["observed_hours"].to_numpy(float), float(config["window_hours"])) - threshold
    delays = hours[late] - threshold
    try:
        delay = exponential_mle(delays, limits[late], confidence)
    except ValueError as exc:
        raise CartDataError(f"cannot estimate the late-purchase delay: {exc}") from exc
    return {
        "late_conversion_ratio": ratio["ratio"],
        "late_conversion_ratio_ci": (ratio["ci_low"], ratio["ci_high"]),
        "late_delay_mean_hours": delay["mean"],
        "late_delay_mean_hours_ci": (delay["ci_low"], delay["ci_high"]),
        "n": n_carts,
        "n_within": n_within,
        "n_late": n_late,
        "n_delays": delay["n"],
        "purchased_within_rate": n_within / n_carts,
        "late_conversion_rate": n_late / (n_carts - n_within),
        "threshold_hours": threshold,
        "confidence": confidence,
    }


def plot_curve(curve: "pd.DataFrame") -> "Figure":
    """Conversion rate of carts still open by hours since add (log-ish x axis), with the CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = curve["hours_since_add"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(x, curve["conversion_rate"], marker="o", color="#1f77b4", label="open carts: P(bought later within 30 d)")
    if {"ci_low", "ci_high"} <= set(curve.columns):
        level = curve.attrs.get("confidence", 0.95)
        ax.fill_between(x, curve["ci_low"], curve["ci_high"], color="#1f77b4", alpha=0.2, label=f"{level:.0%} Wilson CI")
    if "late_conversion_rate" in curve.columns:
        ax.plot(x, curve["late_conversion_rate"], ls="--", color="#ff7f0e", label="all not-yet-bought carts (removed included)")
    ax.axvline(24, color="grey", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=1.0)
    ticks = [t for t in (0, 1, 4, 12, 24, 48, 96, 168, 336, 504) if t <= np.nanmax(x)]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("hours since add to cart")
    ax.set_ylabel("conversion rate")
    ax.set_ylim(0, 1)
    ax.set_title("Cart conversion by hours since add")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def at_risk_carts(settings: Settings, as_of: date, config: dict | None = None) -> "pd.DataFrame":
    """Carts open at ``as_of`` 00:00 UTC (data up to the end of the previous day), highest risk first.

    Open: added in the last at_risk_days days before as_of and, before as_of, not bought, not removed
    and not re-added (a re-add is a new cart). One row per open cart: scoring_date, user_id, item_id,
    event_id, added_at, hours_open, p_convert (the curve's conversion_rate at hours_open,
    interpolated) and abandonment_risk = 1 - p_convert. An empty list is a valid answer.
    """
    import pandas as pd

    config = config or load_config()
    carts = read_conversions(settings)
    curve = read_curve(settings)
    as_of_at = pd.Timestamp(as_of).tz_localize("UTC")
    data_end = carts["observed_until"].max()
    latest = data_end.normalize() + pd.Timedelta(days=1)
    if as_of_at > latest:
        raise CartDataError(f"as_of {as_of} lies after the cart data (they end at {data_end}); the latest scoring date is {latest.date()}")
    start = as_of_at - pd.Timedelta(days=int(config["at_risk_days"]))

    def not_before(column: str) -> pd.Series:
        return carts[column].isna() | (carts[column] >= as_of_at)

    open_ = carts[
        (carts["added_at"] >= start)
        & (carts["added_at"] < as_of_at)
        & not_before("purchased_at")
        & not_before("removed_at")
        & not_before("readded_at")
    ].copy()
    open_["scoring_date"] = pd.Timestamp(as_of).date()
    open_["hours_open"] = (as_of_at - open_["added_at"]).dt.total_seconds() / 3600.0
    open_["p_convert"] = interpolate_rate(curve, open_["hours_open"]) if len(open_) else pd.Series(dtype=float)
    open_["abandonment_risk"] = 1.0 - open_["p_convert"]
    open_ = open_.sort_values(["abandonment_risk", "user_id", "item_id", "event_id"], ascending=[False, True, True, True])
    return open_[list(AT_RISK_COLUMNS)].reset_index(drop=True)


def at_risk_partition(settings: Settings, as_of: date) -> Path:
    """scores_dir/cart_at_risk/scoring_date=<as_of>/part.parquet."""
    return Path(settings.scores_dir) / AT_RISK / f"scoring_date={as_of.isoformat()}" / "part.parquet"


def write_at_risk(settings: Settings, as_of: date, config: dict | None = None) -> Path:
    """Write at_risk_carts(as_of) to its scoring-date partition, replacing it (atomic rename); returns the path.

    The file holds every column but scoring_date, which the partition folder carries:
    ``pd.read_parquet(scores_dir / "cart_at_risk")`` reads all dates with their scoring_date.

    An empty list raises CartDataError (the issue's bad-input rule: an empty scoring population is
    an error, and the partition already served stays as it is).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = at_risk_carts(settings, as_of, config)
    if frame.empty:
        raise CartDataError(f"no open carts at {as_of}: nothing written, any earlier list for that date stays")
    path = at_risk_partition(settings, as_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hive layout: the scoring date lives in the folder name only (a scoring_date column in the file too
    # would clash with the partition key when the whole folder is read, e.g. pd.read_parquet(root)).
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("event_id", pa.string()),
            ("added_at", pa.timestamp("us", tz="UTC")),
            ("hours_open", pa.float64()),
            ("p_convert", pa.float64()),
            ("abandonment_risk", pa.float64()),
        ]
    )
    table = pa.Table.from_pandas(frame.drop(columns="scoring_date"), schema=schema, preserve_index=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    for stale in path.parent.iterdir():  # anything else in the partition would be read as part of it
        if stale != path and not stale.name.startswith("."):
            stale.unlink()
    return path


# --- what the DAGs and the CLI run ---------------------------------------------------------------


def latest_scoring_date(settings: Settings) -> date:
    """The day after the cart data ends: the scoring date of today's at-risk list."""
    carts = read_conversions(settings)
    if carts.empty:
        raise CartDataError(f"{CONVERSIONS_MART} is empty: cart analytics need clickstream events (add_to_cart); this lake is orders-only")
    return carts["observed_until"].max().normalize().date() + timedelta(days=1)


def analyze(settings: Settings, config: dict | None = None) -> dict:
    """The curve, the decay estimate and an HTML report (reports_dir/cart_abandonment/<date>/).

    Orders-only lakes: {"status": "skipped", "reason": ...} (logged), not an error: the other
    user models still run on such data.
    """
    from datetime import datetime, timezone

    from ml.models.lifecycle.report import Report, report_dir

    try:
        curve = conversion_curve(settings, config)
        decay = estimate_decay(settings, config)
    except CartDataError as exc:
        return {"status": "skipped", "reason": str(exc)}
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    report = Report("Cart abandonment: conversion by hours since add-to-cart", subtitle=f"analysis {run_id}")
    low, high = decay["late_conversion_ratio_ci"]
    report.text(
        f"Carts not bought within 24 h convert later at {decay['late_conversion_ratio']:.2f}x the within-24 h rate "
        f"(95 % CI {low:.2f}-{high:.2f}); late purchases come a mean {decay['late_delay_mean_hours']:.0f} h "
        "after the first 24 h."
    )
    report.metrics("Decay estimate", {k: v for k, v in decay.items() if not isinstance(v, (list, tuple, dict))})
    report.figure("conversion_curve", plot_curve(curve))
    report.table("Conversion curve", curve)
    path = report.write(report_dir(settings, MODEL_NAME, run_id), model=MODEL_NAME, run_id=run_id)
    return {"status": "analyzed", "report": str(path), **{k: v for k, v in decay.items() if not isinstance(v, dict)}}


def score_at_risk(settings: Settings, as_of: date | None = None) -> dict:
    """Write the at-risk list of ``as_of`` (default: the day after the data ends).

    Orders-only lakes and days without open carts: {"status": ..., "reason": ...}, nothing written
    (an earlier list of that date stays).
    """
    try:
        as_of = as_of or latest_scoring_date(settings)
        path = write_at_risk(settings, as_of)
    except CartDataError as exc:
        return {"status": "skipped", "reason": str(exc)}
    import pyarrow.parquet as pq

    return {"status": "scored", "scoring_date": as_of.isoformat(), "rows": pq.ParquetFile(path).metadata.num_rows, "path": str(path)}
