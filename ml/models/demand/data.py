"""Demand series for forecasting: frequency, the rules for bad input, holidays, future regressors and
the global models' features.

The series frame (the one input every demand model takes), one row per series per period:
    item_id, warehouse_id   str, the series key (a series = one item x warehouse)
    demand_date                      datetime64[ns], naive dates; daily ("D") or weekly ("W-SUN" = the week ending Sunday)
    units                       float units (0 allowed)
    regressors (optional)   is_promoted, discount_pct, temperature_c, precipitation_mm, is_holiday, price and any
                            other numeric column: used only when present (``detect_regressors``)
    category_l1 (optional)  a static attribute of the item
    attr_<name> (optional)  static series attributes from the export (store type, size): a number, or text
                            (a category to the global models)

    infer_frequency(demand_date | frame) -> "D" | "W-MON".."W-SUN"
    prepare(frame, freq=None, *, min_history, country=None) -> (clean frame, report)
    detect_regressors(frame) -> list[str]
    holidays_frame(countries, years, subdiv=None) -> DataFrame[holiday_date, country, holiday_name]
    future_frame(history, horizon, freq, known=None, country=None) -> (future frame, report)
    future_periods(last, horizon, freq) -> DataFrame   (the keys and dates of the periods after each series)
    make_features(frame, horizon, freq, *, future=None, ...) -> DataFrame   (global LightGBM rows)
    to_panel(frame, freq, regressors=(), future=None) -> Panel              ([series, period] arrays)
    synthetic_frame(n_series, periods, freq, seed, ...) -> DataFrame          (tests and bench)
    helpers: step, period_dates, season_length, default_horizon (28 days / 8 weeks), snap, series_scale,
             lookback, sample_positions, calendar

Bad input (``prepare``): each rule is counted per series in the report (item_id, warehouse_id, rule,
rows, reason) and never raises; one bad series never fails the batch.
    missing_key      null item_id / warehouse_id / unparseable demand_date: rows dropped
    nan_y            non-numeric or null units: rows dropped (the period is then a gap, below)
    off_grid         a date off the frequency's grid (a time of day, a weekly row on another weekday):
                     moved to its period (the day; the week ending on the anchor day)
    duplicate_date   several rows for one series and period: units summed, is_* flags max, other regressors mean
    negative_y       negative units (returns): clipped to 0 in the demand signal
    gap              a period without a row between the series' first date and the frame's last date:
                     units = 0 (no sale recorded), regressors carried forward
    regressor_filled a null regressor on an observed row: carried forward, else back, else the column median
    all_zero         no positive demand at all: series skipped (forecast 0; nothing to learn)
    too_short        fewer than ``min_history`` periods: series skipped from model fitting and the backtest;
                     serve it the moving-average baseline over what it has, i.e.
                     ``MovingAverage().fit(prepare(rows, freq, min_history=1)[0])``
A frame whose dates fit neither a daily nor a weekly grid raises (``infer_frequency``): no frequency,
no batch.

Future regressors (``future_frame``): a value missing from the promotion calendar / weather table is
filled and reported (rule future_regressor_filled): is_promoted, discount_pct and markdown_amount 0 (no promotion
planned), is_holiday from the holiday calendar when a country is known (else 0), price the last known
price, anything else (weather) the series' mean over the last ``horizon`` periods.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

KEYS = ["item_id", "warehouse_id"]
REGRESSORS = ("is_promoted", "discount_pct", "temperature_c", "precipitation_mm", "is_holiday", "price")
STATIC = ("category_l1",)
ATTRIBUTE_PREFIX = "attr_"  # static series attributes from the export (store type, size): attr_<name>
REPORT_COLUMNS = [*KEYS, "rule", "rows", "reason"]
WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_ZERO_FILLED = ("is_promoted", "discount_pct", "markdown_amount")  # unknown future promotion / markdown = none planned
Country = str | Iterable[str] | Mapping[str, str] | None  # one country, several, or warehouse_id -> country


# ------------------------------------------------------------------------------------ frequency


def _check_freq(freq: str) -> str:
    if freq != "D" and not (freq.startswith("W-") and freq[2:] in WEEKDAYS):
        raise ValueError(f"frequency must be 'D' or 'W-<DAY>' (W-MON..W-SUN), not {freq!r}")
    return freq


def step(freq: str) -> np.timedelta64:
    """The length of one period."""
    return np.timedelta64(1 if _check_freq(freq) == "D" else 7, "D")


def period_dates(start, positions, freq: str) -> np.ndarray:
    """datetime64[ns] of the periods ``positions`` (ints) after ``start``."""
    return (np.datetime64(pd.Timestamp(start), "ns") + np.asarray(positions, np.int64) * step(freq)).astype("datetime64[ns]")


def season_length(freq: str) -> int:
    """Periods in the main seasonal cycle: 7 (a week of days) or 52 (a year of weeks)."""
    return 7 if _check_freq(freq) == "D" else 52


def default_horizon(freq: str) -> int:
    """28 days or 8 weeks."""
    return 28 if _check_freq(freq) == "D" else 8


def infer_frequency(ds) -> str:
    """ "D" or "W-<DAY>" from dates (a Series/array of dates, or a series frame: steps within each series).

    The most common step between consecutive distinct dates decides: 1 day -> daily, 7 days -> weekly
    anchored on the most common weekday. Times of day are ignored (``prepare`` moves them to the day).
    Raises ValueError naming the problem otherwise (e.g. monthly or irregular dates).
    """
    if isinstance(ds, pd.DataFrame):
        frame = ds.assign(demand_date=pd.to_datetime(ds["demand_date"], errors="coerce").dt.normalize()).dropna(subset=["demand_date"])
        frame = frame.drop_duplicates([*KEYS, "demand_date"]).sort_values([*KEYS, "demand_date"])
        dates = frame["demand_date"]
        steps = frame.groupby(KEYS, sort=False)["demand_date"].diff().dropna()
    else:
        dates = pd.Series(pd.to_datetime(pd.Series(ds), errors="coerce").dt.normalize().dropna().unique()).sort_values()
        steps = dates.diff().dropna()
    if steps.empty:
        raise ValueError("cannot infer the frequency: no series has two distinct dates")
    days = steps.dt.days.value_counts()
    common = int(days.index[days.to_numpy().argmax()])
    if common == 1:
        return "D"
    if common == 7:
        return "W-" + WEEKDAYS[int(dates.dt.weekday.mode().iloc[0])]
    seen = ", ".join(f"{d} days x{n}" for d, n in days.head(5).items())
    raise ValueError(f"irregular dates: the most common step is {common} days (seen {seen}); expected 1 (daily) or 7 (weekly)")


def snap(ds: pd.Series, freq: str) -> pd.Series:
    """Dates moved onto the grid: the day, or the week ending on the anchor weekday (pandas W-<DAY>)."""
    day = pd.to_datetime(ds).dt.normalize()
    if _check_freq(freq) == "D":
        return day
    ahead = (WEEKDAYS.index(freq[2:]) - day.dt.weekday) % 7
    return day + pd.to_timedelta(ahead, unit="D")


# --------------------------------------------------------------------------------- bad input


def _counts(frame: pd.DataFrame, mask, rule: str, reason: str) -> pd.DataFrame:
    """Report rows: per series, how many rows ``mask`` marks under ``rule``."""
    mask = pd.Series(np.asarray(mask, bool), index=frame.index)
    if not mask.any():
        return pd.DataFrame(columns=REPORT_COLUMNS)
    counts = frame.loc[mask].groupby(KEYS, dropna=False, sort=True).size().rename("rows").reset_index()
    return counts.assign(rule=rule, reason=reason)[REPORT_COLUMNS]


def _aggregate(frame: pd.DataFrame, regressors: list[str]) -> pd.DataFrame:
    how = {"units": "sum", **{r: "max" if r.startswith("is_") else "mean" for r in regressors}}
    how.update({c: "first" for c in static_columns(frame)})
    return frame.groupby([*KEYS, "demand_date"], sort=True, as_index=False).agg(how)


def _complete(frame: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Every period from each series' first date to the frame's last date (new rows have NaN values)."""
    span = frame.groupby(KEYS, sort=True)["demand_date"].min().rename("start").reset_index()
    periods = ((frame["demand_date"].max() - span["start"]) // step(freq)).to_numpy(np.int64) + 1
    rows = np.repeat(np.arange(len(span)), periods)
    offsets = np.arange(len(rows)) - np.repeat(np.cumsum(periods) - periods, periods)
    grid = span.iloc[rows, :2].reset_index(drop=True)
    grid["demand_date"] = (span["start"].to_numpy()[rows] + offsets * step(freq)).astype("datetime64[ns]")
    return grid.merge(frame, on=[*KEYS, "demand_date"], how="left")


def prepare(
    frame: pd.DataFrame, freq: str | None = None, *, min_history: int, country: Country = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The series frame cleaned by the bad-input rules (module docstring), and the report of what each did.

    ``freq``: None infers it. ``min_history``: periods a series needs to be modelled. ``country``: when
    the frame has no is_holiday column, add one from the ``holidays`` package (a country code, several,
    or a mapping warehouse_id -> country). Returns (clean, report); clean is sorted by key and demand_date, one
    row per series per period from the series' first date to the frame's last date.
    """
    missing = [c for c in (*KEYS, "demand_date", "units") if c not in frame.columns]
    if missing:
        raise ValueError(f"the series frame lacks columns {missing}")
    regressors = detect_regressors(frame, constant_ok=True)
    df = frame[[*KEYS, "demand_date", "units", *regressors, *static_columns(frame)]].copy()
    df["demand_date"] = pd.to_datetime(df["demand_date"], errors="coerce", utc=True).dt.tz_localize(None)  # naive (UTC when zoned)
    df["units"] = pd.to_numeric(df["units"], errors="coerce").astype(float)
    for r in regressors:
        df[r] = pd.to_numeric(df[r], errors="coerce").astype(float)
    reports = []

    bad_key = df[KEYS].isna().any(axis=1) | df["demand_date"].isna()
    reports.append(_counts(df, bad_key, "missing_key", "null item_id/warehouse_id or unparseable ds: rows dropped"))
    df = df.loc[~bad_key]
    df[KEYS] = df[KEYS].astype(str)
    nan_y = df["units"].isna() | ~np.isfinite(df["units"])
    reports.append(_counts(df, nan_y, "nan_y", "non-numeric or null y: rows dropped (the period becomes a gap)"))
    df = df.loc[~nan_y]
    if df.empty:
        return df, _report(reports)

    freq = _check_freq(freq or infer_frequency(df))
    snapped = snap(df["demand_date"], freq)
    reports.append(_counts(df, snapped != df["demand_date"], "off_grid", f"date off the {freq} grid: moved to its period"))
    df["demand_date"] = snapped
    duplicate = df.duplicated([*KEYS, "demand_date"])
    reports.append(_counts(df, duplicate, "duplicate_date", "several rows for one period: y summed, flags max, regressors mean"))
    df = _aggregate(df, regressors)
    negative = df["units"] < 0
    reports.append(_counts(df, negative, "negative_y", "negative units (returns): clipped to 0"))
    df["units"] = df["units"].clip(lower=0)
    nan_regressor = df[regressors].isna().any(axis=1)

    df = _complete(df, freq)
    gap = df["units"].isna()
    reports.append(_counts(df, gap, "gap", "no row for the period: y = 0, regressors carried forward"))
    reports.append(
        _counts(
            df.loc[~gap], nan_regressor.to_numpy(), "regressor_filled", "null regressor: carried forward, else back, else the column median"
        )
    )
    df["units"] = df["units"].fillna(0.0)
    for col in [*regressors, *static_columns(df)]:
        df[col] = df.groupby(KEYS, sort=False)[col].ffill()
        df[col] = df[col].fillna(df.groupby(KEYS, sort=False)[col].transform("first"))  # leading nulls: back
    df[regressors] = df[regressors].fillna(df[regressors].median()).fillna(0.0)
    if "is_holiday" not in df.columns and country:
        df["is_holiday"] = _holiday_flags(df, freq, country)

    by_series = df.groupby(KEYS, sort=False)["units"]
    all_zero = by_series.transform("sum").eq(0).to_numpy()
    reports.append(_counts(df, all_zero, "all_zero", "no positive demand: skipped, forecast 0"))
    short = ~all_zero & by_series.transform("size").lt(min_history).to_numpy()
    reports.append(_counts(df, short, "too_short", f"fewer than {min_history} periods: skipped, served by the moving-average baseline"))
    clean = df.loc[~all_zero & ~short].reset_index(drop=True)
    report = _report(reports)
    if len(report):
        log.info("prepare: rows per rule %s", report.groupby("rule")["rows"].sum().to_dict())
    return clean, report


def _report(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    report = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=REPORT_COLUMNS)
    return report.astype({"rows": int})


def static_columns(frame: pd.DataFrame) -> list[str]:
    """The static series columns present: category_l1 and the export's attributes (attr_<name>)."""
    return [c for c in frame.columns if c in STATIC or str(c).startswith(ATTRIBUTE_PREFIX)]


def detect_regressors(frame: pd.DataFrame, constant_ok: bool = False) -> list[str]:
    """Numeric columns other than the key, demand_date, units and static attributes, that vary (``constant_ok``: or not).

    The known regressors come first in their canonical order, then any other numeric column (e.g. an
    ERP's markdown amount).
    """
    other = [c for c in frame.columns if c not in (*KEYS, "demand_date", "units", *static_columns(frame), *REGRESSORS)]
    found = []
    for col in [*(c for c in REGRESSORS if c in frame.columns), *other]:
        values = pd.to_numeric(frame[col], errors="coerce") if frame[col].dtype == object else frame[col]
        if pd.api.types.is_numeric_dtype(values) and values.notna().any() and (constant_ok or values.nunique() > 1):
            found.append(col)
    return found


# ----------------------------------------------------------------------------------- holidays


def holidays_frame(countries: str | Iterable[str], years: Iterable[int], subdiv: str | None = None) -> pd.DataFrame:
    """Public holidays from the ``holidays`` package: holiday_date, country, holiday_name (the lake's holidays table)."""
    import holidays

    rows = []
    for country in [countries] if isinstance(countries, str) else countries:
        calendar = holidays.country_holidays(country, years=sorted(set(years)), subdiv=subdiv)
        rows += [(pd.Timestamp(day), country, name) for day, name in sorted(calendar.items())]
    return pd.DataFrame(rows, columns=["holiday_date", "country", "holiday_name"])


def _holiday_flags(frame: pd.DataFrame, freq: str, country: Country) -> np.ndarray:
    """1.0 where a row's period (day, or week) holds a public holiday of its country."""
    by_warehouse = isinstance(country, Mapping)
    countries = set(country.values()) if by_warehouse else country
    years = range(frame["demand_date"].dt.year.min() - 1, frame["demand_date"].dt.year.max() + 2)
    hol = holidays_frame(countries, years)
    hol = hol.assign(demand_date=snap(hol["holiday_date"], freq))
    rows = frame[["warehouse_id", "demand_date"]].copy()
    if by_warehouse:
        rows["country"] = rows["warehouse_id"].map(country)
        keys = hol[["country", "demand_date"]].drop_duplicates().assign(flag=1.0)
        return rows.merge(keys, on=["country", "demand_date"], how="left")["flag"].fillna(0.0).to_numpy()
    return rows["demand_date"].isin(hol["demand_date"]).to_numpy(float)


# ------------------------------------------------------------------------------ future regressors


def future_periods(last: pd.DataFrame, horizon: int, freq: str) -> pd.DataFrame:
    """item_id, warehouse_id, demand_date: the ``horizon`` periods after each row's ``demand_date`` (one row per series in ``last``)."""
    future = last[KEYS].iloc[np.repeat(np.arange(len(last)), horizon)].reset_index(drop=True)
    h = np.tile(np.arange(1, horizon + 1), len(last))
    future["demand_date"] = (np.repeat(last["demand_date"].to_numpy(), horizon) + h * step(freq)).astype("datetime64[ns]")
    return future


def future_frame(
    history: pd.DataFrame,
    horizon: int,
    freq: str,
    known: pd.DataFrame | None = None,
    regressors: list[str] | None = None,
    country: Country = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``horizon`` periods after each series' last date with regressor values, and the fill report.

    ``known``: item_id, warehouse_id, demand_date and regressor columns where known (promotion calendar,
    weather table); a value it lacks is filled by the rule in the module docstring and counted.
    ``regressors``: None = those of ``history``. Returns (future, report).
    """
    regressors = detect_regressors(history, constant_ok=True) if regressors is None else list(regressors)
    history = history.sort_values([*KEYS, "demand_date"])
    future = future_periods(history.groupby(KEYS, sort=True).tail(1), horizon, freq)
    if known is not None and len(known):
        have = [r for r in regressors if r in known.columns]
        known = known[[*KEYS, "demand_date", *have]].assign(demand_date=pd.to_datetime(known["demand_date"]))
        future = future.merge(known.drop_duplicates([*KEYS, "demand_date"]), on=[*KEYS, "demand_date"], how="left")
    tail = history.groupby(KEYS, sort=True).tail(horizon).groupby(KEYS, sort=True)
    reports = []
    for r in regressors:
        if r not in future.columns:
            future[r] = np.nan
        unknown = future[r].isna()
        if r in _ZERO_FILLED:
            fill, how = 0.0, "0 (no promotion planned)"
        elif r == "is_holiday":
            fill = _holiday_flags(future, freq, country) if country else 0.0
            how = "the holiday calendar" if country else "0 (no country configured)"
        elif r == "price":
            fill, how = _per_series(future, tail[r].last()), "the last known price"
        else:
            fill, how = _per_series(future, tail[r].mean()), f"the mean of the last {horizon} periods"
        future[r] = future[r].fillna(pd.Series(np.broadcast_to(fill, len(future)), index=future.index))
        future[r] = future[r].fillna(history[r].median()).fillna(0.0)  # a series that never had the value
        reports.append(_counts(future, unknown, "future_regressor_filled", f"{r} unknown: {how}"))
    for col in static_columns(history):
        future[col] = _per_series(future, history.groupby(KEYS)[col].last())
    return future, _report(reports)


def _per_series(rows: pd.DataFrame, values: pd.Series) -> np.ndarray:
    """A per-series value (Series indexed by the key) for each row of ``rows``."""
    return rows[KEYS].merge(values.rename("_value").reset_index(), on=KEYS, how="left")["_value"].to_numpy()


# --------------------------------------------------------------------------------------- panel


@dataclass
class Panel:
    """Series as [series, period] arrays on one date grid (what the vectorised models compute on)."""

    keys: pd.DataFrame  # one row per series: item_id, warehouse_id (+ the static columns); row i = series i
    dates: pd.DatetimeIndex  # the grid, one period apart
    y: np.ndarray  # float64 [series, periods]; NaN where the series has no row (before its start, the future)
    x: dict[str, np.ndarray]  # regressor -> float64 [series, periods]
    first: np.ndarray  # int [series]: position of each series' first row
    last: np.ndarray  # int [series]: position of each series' last row with units (the forecast origin)
    freq: str


def to_panel(frame: pd.DataFrame, freq: str, regressors=(), future: pd.DataFrame | None = None) -> Panel:
    """The frame (and, when given, the future frame's regressors) on one grid of periods.

    Series come from ``frame`` in sorted key order; future rows of other series are ignored.
    """
    keys = frame[[*KEYS, *static_columns(frame)]].drop_duplicates(KEYS).sort_values(KEYS)
    keys = keys.reset_index(drop=True)
    index = pd.MultiIndex.from_frame(keys[KEYS])
    rows = frame if future is None else pd.concat([frame, future.drop(columns="units", errors="ignore")], ignore_index=True)
    s = index.get_indexer(pd.MultiIndex.from_frame(rows[KEYS]))
    rows = rows.loc[s >= 0]
    s = s[s >= 0]
    start = rows["demand_date"].min()
    t = ((rows["demand_date"] - start) // step(freq)).to_numpy(np.int64)
    dates = pd.DatetimeIndex(period_dates(start, np.arange(t.max() + 1 if len(t) else 0), freq))
    shape = (len(keys), len(dates))

    def scatter(values) -> np.ndarray:
        out = np.full(shape, np.nan)
        out[s, t] = np.asarray(values, float)
        return out

    y = scatter(rows["units"].to_numpy(float) if "units" in rows else np.nan)
    observed = ~np.isnan(y)
    first = np.full(len(keys), shape[1] - 1)
    np.minimum.at(first, s, t)
    last = np.where(observed.any(axis=1), shape[1] - 1 - np.argmax(observed[:, ::-1], axis=1), -1)
    x = {r: scatter(rows[r]) for r in regressors}
    return Panel(keys, dates, y, x, first, last, freq)


def calendar(dates: pd.DatetimeIndex, freq: str) -> dict[str, np.ndarray]:
    """Calendar features of each date: day of week (daily only), ISO week of year, month."""
    out = {"week_of_year": dates.isocalendar().week.to_numpy(np.float64), "month": dates.month.to_numpy(np.float64)}
    if freq == "D":
        out = {"day_of_week": dates.dayofweek.to_numpy(np.float64), **out}
    return out


# ------------------------------------------------------------------------------------ features


def default_lags(freq: str) -> tuple[int, ...]:
    """Lags back from the forecast origin (0 = the origin's own period)."""
    return (0, 1, 2, 3, 4, 5, 6, 13, 20, 27) if freq == "D" else (0, 1, 2, 3, 4, 7, 12, 25, 51)


def default_windows(freq: str) -> tuple[int, ...]:
    """Rolling windows ending at the origin."""
    return (7, 28) if freq == "D" else (4, 13)


N_SEASONS = 4  # same-phase values averaged in the season_mean feature


def lookback(horizon: int, freq: str, lags=None, windows=None) -> int:
    """Periods of history the features of a forecast read (the tail a fitted model keeps)."""
    m = season_length(freq)
    return max(max(lags or default_lags(freq)), max(windows or default_windows(freq)), m * (-(-horizon // m) + N_SEASONS - 1)) + 1


def series_scale(frame: pd.DataFrame) -> pd.Series:
    """Per series: mean demand (floored at 0.1 units), the divisor that puts big and small series on one scale."""
    return frame.groupby(KEYS, sort=True)["units"].mean().clip(lower=0.1).rename("scale")


def sample_positions(lo: np.ndarray, hi: np.ndarray, max_n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions drawn from per-group ranges [lo, hi] (arrays, one range per group; empty when hi < lo):
    all of them, or at most ``max_n`` drawn uniformly over the union (seeded). Returns (group, position)."""
    counts = np.maximum(np.asarray(hi) - np.asarray(lo) + 1, 0).ravel()
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    if max_n and total > max_n:  # draw without materialising every position (0.67 GB at 10k series)
        flat = np.unique(np.random.default_rng(seed).integers(0, total, max_n))
    else:
        flat = np.arange(total)
    group = np.searchsorted(ends, flat, side="right")
    return group, np.asarray(lo).ravel()[group] + flat - (ends[group] - counts[group])


def make_features(
    frame: pd.DataFrame,
    horizon: int,
    freq: str,
    *,
    future: pd.DataFrame | None = None,
    regressors: list[str] | None = None,
    lags=None,
    windows=None,
    scale: pd.Series | None = None,
    max_rows: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Direct multi-horizon rows for the global model: one row per (series, origin, h), predicting the
    demand h periods after the origin from what is known at the origin, so no lag can leak.

    Without ``future``: training rows, every origin with a full target (at most ``max_rows``, sampled).
    With ``future`` (keys, demand_date, regressors of the forecast periods): forecast rows, origin = each series'
    last date, h = 1..horizon, units = NaN.

    Columns: item_id, warehouse_id (category), origin, demand_date (the target date), h, units (target / scale),
    scale, and the features: lag_<k> (demand k periods before the origin), roll_mean_<w>, roll_std_<w>
    (windows ending at the origin), zero_share (share of zero periods in the longest window),
    seasonal_naive (the last same-phase value at or before the origin) and season_mean (the mean of the
    last 4 such values), calendar of the target (day_of_week for daily, week_of_year, month), the
    regressors at the target, log_scale, the static columns when present (category_l1, attr_<name>:
    text as a category, numbers as numbers). Demand columns are divided by the series' scale
    (``series_scale``, of ``frame`` unless given).
    """
    regressors = detect_regressors(frame) if regressors is None else list(regressors)
    lags, windows = tuple(lags or default_lags(freq)), tuple(windows or default_windows(freq))
    panel = to_panel(frame, freq, regressors, future)
    own = series_scale(frame)  # a series the given scale lacks gets its own
    scale = own if scale is None else scale.reindex(own.index).fillna(own)
    scale = scale.to_numpy(float)  # series_scale and to_panel both sort by key
    if future is None:
        h = np.arange(1, horizon + 1)
        lo = np.broadcast_to((panel.first + min(windows))[:, None], (len(panel.keys), horizon))
        pair, origin = sample_positions(lo, panel.last[:, None] - h, max_rows, seed)  # the target stays in history
        s, h = np.divmod(pair, horizon)
        h = h + 1
    else:
        has = panel.last >= 0
        s = np.repeat(np.flatnonzero(has), horizon)
        origin = panel.last[s]
        h = np.tile(np.arange(1, horizon + 1), int(has.sum()))
    pad = lookback(horizon, freq, lags, windows)
    width = max(panel.y.shape[1], int((origin + h).max(initial=0)) + 1)
    ys = np.full((len(panel.keys), pad + width), np.nan)
    ys[:, pad : pad + panel.y.shape[1]] = panel.y / scale[:, None]
    o, p = origin + pad, origin + h + pad  # positions in the padded arrays

    out = {"h": h.astype(np.float32)}
    for k in lags:
        out[f"lag_{k}"] = ys[s, o - k]
    observed = ~np.isnan(ys)
    filled = np.where(observed, ys, 0.0)
    csum = np.concatenate([np.zeros((len(ys), 1)), filled.cumsum(axis=1)], axis=1)
    csq = np.concatenate([np.zeros((len(ys), 1)), (filled**2).cumsum(axis=1)], axis=1)
    cnt = np.concatenate([np.zeros((len(ys), 1)), observed.cumsum(axis=1)], axis=1)
    czero = np.concatenate([np.zeros((len(ys), 1)), (observed & (filled == 0)).cumsum(axis=1)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        for w in windows:
            n = cnt[s, o + 1] - cnt[s, o + 1 - w]
            mean = (csum[s, o + 1] - csum[s, o + 1 - w]) / n
            out[f"roll_mean_{w}"] = mean
            out[f"roll_std_{w}"] = np.sqrt(np.maximum((csq[s, o + 1] - csq[s, o + 1 - w]) / n - mean**2, 0.0))
        w = max(windows)
        out["zero_share"] = (czero[s, o + 1] - czero[s, o + 1 - w]) / (cnt[s, o + 1] - cnt[s, o + 1 - w])
        m = season_length(freq)
        back = p - m * -(-h // m)  # the last same-phase position at or before the origin
        out["seasonal_naive"] = ys[s, back]
        same = np.stack([ys[s, back - m * j] for j in range(N_SEASONS)])
        out["season_mean"] = np.nansum(same, axis=0) / (~np.isnan(same)).sum(axis=0)
    grid = pd.DatetimeIndex(period_dates(panel.dates[0], np.arange(width), freq))
    out.update({name: values[origin + h] for name, values in calendar(grid, freq).items()})
    for r in regressors:
        values = np.full((len(panel.keys), width), np.nan)
        values[:, : panel.y.shape[1]] = panel.x[r]
        out[r] = values[s, origin + h]
    out["log_scale"] = np.log1p(scale[s])

    rows = pd.DataFrame({c: v.astype(np.float32) for c, v in out.items()})
    keys = panel.keys.iloc[s].reset_index(drop=True)
    head = pd.DataFrame(
        {
            "item_id": keys["item_id"].astype("category"),
            "warehouse_id": keys["warehouse_id"].astype("category"),
            "origin": period_dates(panel.dates[0], origin, freq),
            "demand_date": period_dates(panel.dates[0], origin + h, freq),
            "units": ys[s, p],
            "scale": scale[s],
        }
    )
    for col in static_columns(keys):  # text attributes as categories, numbers as numbers
        values = keys[col]
        rows[col] = values.astype(np.float32) if pd.api.types.is_numeric_dtype(values) else values.astype("category")
    return pd.concat([head, rows], axis=1)


FEATURE_META = ("origin", "demand_date", "units", "scale")  # make_features columns that are not features (the keys are)


# ------------------------------------------------------------------------------------ synthetic


def synthetic_frame(
    n_series: int = 20,
    periods: int = 365,
    freq: str = "D",
    seed: int = 0,
    promo_lift: float = 1.0,
    temp_effect: float = 0.03,
    start: str = "2023-01-02",
) -> pd.DataFrame:
    """Generated demand with planted effects (tests and bench): per series a level (log-normal), a weekly
    profile (daily data), a yearly cycle, promotions in 5-period runs multiplying demand by
    ``1 + promo_lift``, temperature multiplying it by ``exp(temp_effect * (temperature_c - 15))``, Poisson noise.
    Columns: item_id, warehouse_id, demand_date, units, is_promoted, discount_pct, temperature_c, category_l1."""
    rng = np.random.default_rng(seed)
    dates = pd.DatetimeIndex(period_dates(start, np.arange(periods), freq))
    level = np.exp(rng.normal(1.5, 1.0, n_series))[:, None]
    phase = dates.dayofweek.to_numpy() + rng.uniform(0, 7, (n_series, 1))
    weekly = 1 + rng.uniform(0.2, 0.8, (n_series, 1)) * np.sin(2 * np.pi * phase / 7)
    if freq != "D":
        weekly = np.ones_like(weekly)
    yearly = 1 + 0.3 * np.sin(2 * np.pi * dates.dayofyear.to_numpy() / 365.25)
    starts = rng.random((n_series, periods)) < 0.02
    promo = np.minimum(sum(np.roll(starts, k, axis=1) * (np.arange(periods) >= k) for k in range(5)), 1)
    temp = 12 + 10 * np.sin(2 * np.pi * (dates.dayofyear.to_numpy() - 110) / 365.25) + rng.normal(0, 3, (n_series, periods))
    mean = level * weekly * yearly * (1 + promo_lift * promo) * np.exp(temp_effect * (temp - 15))
    return pd.DataFrame(
        {
            "item_id": np.repeat([f"I{i:05d}" for i in range(n_series)], periods),
            "warehouse_id": np.repeat([f"W{i % 3 + 1}" for i in range(n_series)], periods),
            "demand_date": np.tile(dates, n_series),
            "units": rng.poisson(mean).ravel().astype(float),
            "is_promoted": promo.ravel().astype(float),
            "discount_pct": (promo * 0.2).ravel(),
            "temperature_c": temp.ravel().round(1),
            "category_l1": np.repeat([f"cat_{i % 4}" for i in range(n_series)], periods),
        }
    )
