"""From a raw frame and a mapping to lake tables plus one reason per rejected row.

Everything here is vectorised pandas: no per-row Python loops, so the 525k-line Online Retail II
file takes seconds. The result is computed completely before anything is written.

Each source row gets at most one reason (the first that applies, in the order of ``REASON_ORDER``);
a row without one is accepted. ``read == accepted + quarantined`` always holds (asserted).

With a ``Pseudonymizer`` (ml.ingest.pseudonymize), customer identifiers are replaced by their keyed
pseudonyms once every check has run on the normalised raw ids: in the accepted rows (so every table
and every derived session is built from pseudonyms), in the side file of users, in the rows hashed
into ``event_id`` and in the quarantined rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ml.contract import EVENT_TYPES
from ml.ingest.mapping import DEMAND_REGRESSORS, FLAG_FIELDS, ID_FIELDS, NUMERIC_FIELDS, ORDER_TABLES, IngestError, Mapping
from ml.ingest.pseudonymize import PREFIXES
from ml.ingest.readers import read_source

# Documentation order: the first reason that applies to a row is the one recorded.
REASON_ORDER = (
    "filtered:<field>",
    "missing_key:<field>",
    "bad_id:<field>",
    "bad_timestamp",
    "bad_date",
    "bad_type:<field>",
    "unknown_event_type",
    "future_timestamp",
    "future_date",
    "out_of_range:<field>",
    "non_product_code",
    "duplicate",
    "off_grid_date",
    "duplicate_key",
    "order_user_conflict",
    "invalid_price",
    "invalid_quantity",
    "cancellation_matched",
    "cancellation_unmatched",
)
TEXT_FIELDS = (
    "title",
    "description",
    "category",
    "category_l1",
    "category_l2",
    "category_l3",
    "brand",
    "country",
    "region",
    "gender",
    "search_query",
    "event_type",
)
_INT_STRING = re.compile(r"^(-?\d+)\.0+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in an id: a quarantine reason
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # text keeps tabs and line breaks
INT32_MAX = 2**31 - 1
_TRUE_WORDS = {"true", "t", "yes", "y"}
_FALSE_WORDS = {"false", "f", "no", "n"}
# demand_history: unit conversions (demand.convert) and the plausible range of each regressor
_CONVERT = {
    "percent": lambda x: x / 100.0,
    "fahrenheit": lambda x: (x - 32.0) * 5.0 / 9.0,
    "inches": lambda x: x * 25.4,
}
_RANGES = {"discount_pct": (0.0, 1.0), "markdown_amount": (0.0, None), "precipitation_mm": (0.0, None), "temperature_c": (-90.0, 60.0)}


@dataclass
class Transformed:
    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame  # the original rows, plus source_row and reason
    read: int
    accepted: int
    by_reason: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)  # accepted rows worth a remark (negative units, ...)

    @property
    def quarantined(self) -> int:
        return int(sum(self.by_reason.values()))


# ----------------------------------------------------------------------------------------- parsing
def to_id(series: pd.Series) -> pd.Series:
    """Ids as strings: floats that hold integers lose their '.0' (Customer ID 13085.0 -> '13085')."""
    if pd.api.types.is_float_dtype(series):
        out = pd.Series(pd.NA, index=series.index, dtype="string")
        integral = series.notna() & (series == np.floor(series))
        out[integral] = series[integral].astype("int64").astype(str)
        other = series.notna() & ~integral
        out[other] = series[other].astype(str)
        return out
    if pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.astype("string")
    out = series.astype("string").str.strip()
    out = out.str.replace(_INT_STRING, r"\1", regex=True)
    return out.mask(out == "")


def placeholder_ids(ids: pd.Series, placeholders: list[str], zero: bool) -> pd.Series:
    """Cells that stand for 'no id': the mapping's placeholder words (case-insensitive: N/A, NULL,
    NaN, None, unknown, -) and, where ``zero``, ids made only of zeros ('0', '0000')."""
    lowered = ids.str.lower()
    hit = lowered.isin([p.lower() for p in placeholders])
    if zero:
        hit = hit | ids.str.fullmatch(r"0+").fillna(False).astype(bool)
    return hit.fillna(False).astype(bool)


def has_control_characters(series: pd.Series, pattern: re.Pattern = _CONTROL) -> pd.Series:
    """Cells holding a control character (a NUL byte, a stray line break inside an id ...)."""
    return series.astype("string").str.contains(pattern).fillna(False).astype(bool)


def to_text(series: pd.Series) -> pd.Series:
    out = series.astype("string").str.strip()
    return out.mask(out == "")


def to_number(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(numbers, bad) where bad marks cells that hold something that is not a finite number
    ('abc', 'inf', '-Infinity', 'NaN'); bad cells become null."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        num = series.astype("float64")
        bad = pd.Series(np.isinf(num.to_numpy()), index=series.index)
        return num.mask(bad), bad
    text = series.astype("string").str.strip()
    text = text.mask(text == "")
    num = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = text.notna() & (num.isna() | np.isinf(num))
    return num.mask(bad), bad


def to_flag(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(flags, bad): true/false, yes/no, y/n, t/f and numbers (0 is false, any other number true)."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype("boolean"), pd.Series(False, index=series.index)
    if pd.api.types.is_numeric_dtype(series):
        return (series != 0).astype("boolean").mask(series.isna()), pd.Series(False, index=series.index)
    text = to_text(series).str.lower()
    num = pd.to_numeric(text, errors="coerce")
    out = pd.Series(pd.NA, index=series.index, dtype="boolean")
    out[text.isin(_TRUE_WORDS).fillna(False)] = True
    out[text.isin(_FALSE_WORDS).fillna(False)] = False
    numeric = out.isna() & num.notna()
    out[numeric] = num[numeric] != 0
    return out, text.notna() & out.isna()


def _parse_parts(text: pd.Series, formats) -> list[pd.Series]:
    """Datetime parts of ``text`` (strings), each value parsed by the first of ``formats`` that fits
    it (a str or a list; None: the format pandas infers from the column, then every value left over
    on its own, month first), so one file may mix formats. Parts may be naive or tz-aware."""
    candidates = ([formats] if isinstance(formats, str) else list(formats)) if formats else [None, "mixed"]
    left = text.dropna()
    parts = []
    for fmt in candidates:
        if left.empty:
            break
        try:
            ts = pd.to_datetime(left, format=fmt, errors="coerce")
        except (ValueError, TypeError):  # mixed offsets / naive and aware together
            ts = pd.to_datetime(left, format=fmt, errors="coerce", utc=True)
        if not pd.api.types.is_datetime64_any_dtype(ts):
            ts = pd.to_datetime(left, format=fmt, errors="coerce", utc=True)
        parts.append(ts.dropna())
        left = left[ts.isna()]
    return parts


def to_day(series: pd.Series, fmt) -> tuple[pd.Series, pd.Series]:
    """(days, bad): calendar dates as midnight datetime64, no time-zone conversion (a date is the
    export's own day; an aware timestamp keeps its local date). ``fmt``: see _parse_parts."""
    if pd.api.types.is_datetime64_any_dtype(series):
        ts = present = series
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_localize(None)
    else:
        text = to_id(series) if pd.api.types.is_numeric_dtype(series) else to_text(series)  # 20240301 -> '20240301'
        present = text
        ts = pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
        for part in _parse_parts(text, fmt):
            if getattr(part.dt, "tz", None) is not None:
                part = part.dt.tz_localize(None)
            ts.loc[part.index] = part.astype("datetime64[ns]")
    days = ts.dt.normalize().astype("datetime64[ns]")
    return days, present.notna() & days.isna()


def to_utc(series: pd.Series, spec) -> pd.Series:
    """Timestamps as tz-aware UTC. Naive values are read in ``spec.timezone``; epochs use ``spec.unit``."""
    if spec.unit:
        num, _ = to_number(series)
        return pd.to_datetime(num, unit=spec.unit, utc=True, errors="coerce")
    if pd.api.types.is_datetime64_any_dtype(series):
        return _as_utc(series, spec.timezone)
    out = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]")
    for part in _parse_parts(to_text(series), spec.format):
        out.loc[part.index] = _as_utc(part, spec.timezone)
    return out


def _as_utc(ts: pd.Series, zone: str) -> pd.Series:
    if ts.dt.tz is None:
        # the repeated hour of a DST change is read as standard time; a skipped one moves forward
        ts = ts.dt.tz_localize(zone, ambiguous=np.zeros(len(ts), dtype=bool), nonexistent="shift_forward")
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def slug(series: pd.Series) -> pd.Series:
    out = series.astype("string").str.lower().str.replace(r"[^0-9a-z]+", "_", regex=True).str.strip("_")
    return out.mask(out == "")


def mode_by(keys: pd.Series, values: pd.Series) -> pd.Series:
    """The most frequent non-null value per key (ties: the alphabetically first)."""
    frame = pd.DataFrame({"k": keys.values, "v": values.values}).dropna()
    if frame.empty:
        return pd.Series(dtype=object)
    counts = frame.groupby(["k", "v"], sort=False, observed=True).size().reset_index(name="n")
    counts = counts.sort_values(["k", "n", "v"], ascending=[True, False, True])
    return counts.drop_duplicates("k").set_index("k")["v"]


def split_category(path: pd.Series, sep: str) -> pd.DataFrame:
    """'electronics.audio.headphone' -> l1, l2, l3 (deeper levels stay joined in l3)."""
    parts = path.astype("string").str.split(sep, n=2, expand=True, regex=False)
    out = pd.DataFrame(index=path.index)
    for i, name in enumerate(("category_l1", "category_l2", "category_l3")):
        out[name] = parts[i].astype("string") if i in parts.columns else pd.Series(pd.NA, index=path.index, dtype="string")
    return out


# ----------------------------------------------------------------------------------------- reasons
class Reasons:
    """One reason per row; the first one set wins."""

    def __init__(self, n: int):
        self.values = np.full(n, None, dtype=object)

    @property
    def open(self) -> np.ndarray:
        return pd.isna(self.values)

    def flag(self, mask, reason: str) -> None:
        mask = np.asarray(pd.Series(mask).fillna(False).astype(bool)) & self.open
        self.values[mask] = reason

    def counts(self) -> dict[str, int]:
        series = pd.Series(self.values).dropna()
        return {k: int(v) for k, v in sorted(series.value_counts().items())}


# ----------------------------------------------------------------------------------------- main
def transform(
    raw: pd.DataFrame, mapping: Mapping, *, path: Path, now: datetime | None = None, pseudonymizer=None, earlier_lines=None
) -> Transformed:
    """The lake tables and the quarantine of one source frame. ``pseudonymizer``: see the module doc.

    ``earlier_lines(items, skip_orders, skip_cancellations)``: the order lines the lake already holds
    for those items that a cancellation may still return units from (a frame of user_id, item_id,
    order_id, timestamp, left; ml.ingest.lake_lines), so a cancellation in this export matches a
    purchase of an earlier export; and ``earlier_lines.demand_period(keys)``, the period of demand
    series the lake already holds (a re-sent single week is a week, not a day)."""
    path = Path(path)
    now = now or datetime.now(timezone.utc)
    raw = raw.reset_index(drop=True)
    n = len(raw)
    produces = set(mapping.produces)
    check_columns(raw, mapping, path)

    # --- parse every mapped field ---------------------------------------------------------------
    f: dict[str, pd.Series] = {}
    bad_type: dict[str, pd.Series] = {}
    for name, column in mapping.columns.items():
        src = raw[column] if column in raw.columns else pd.Series(pd.NA, index=raw.index, dtype="string")
        if name in mapping.value_maps:
            text = to_id(src) if name in ID_FIELDS or pd.api.types.is_numeric_dtype(src) else to_text(src)
            src = text.map(lambda v, m=mapping.value_maps[name]: m.get(v, v) if isinstance(v, str) else v).astype("string")
        f[name] = src
    for name, value in mapping.constants.items():
        if name not in f:
            f[name] = pd.Series([value] * n, index=raw.index)

    if "timestamp" in f:
        ts_raw = f["timestamp"]
        f["timestamp"] = to_utc(ts_raw, mapping.timestamp)
        bad_ts = ts_raw.notna() & f["timestamp"].isna()
    else:
        bad_ts = pd.Series(False, index=raw.index)
    if "signup_at" in f:
        f["signup_at"] = to_utc(f["signup_at"], mapping.timestamp)
    if "demand_date" in f:
        f["demand_date"], bad_date = to_day(f["demand_date"], mapping.demand.date_format)
    else:
        bad_date = pd.Series(False, index=raw.index)
    bad_id: dict[str, pd.Series] = {}
    parse_notes: dict[str, int] = {}
    for name in list(f):
        if name in ID_FIELDS:
            f[name] = to_id(f[name])
            bad_id[name] = has_control_characters(f[name])
            gone = placeholder_ids(f[name], mapping.missing_ids, name in mapping.zero_ids_missing) & ~bad_id[name]
            if gone.any():
                parse_notes[f"placeholder_id:{name}"] = int(gone.sum())
                f[name] = f[name].mask(gone)
        elif name in NUMERIC_FIELDS:
            f[name], bad_type[name] = to_number(f[name])
        elif name in FLAG_FIELDS:
            f[name], bad_type[name] = to_flag(f[name])
        elif name in TEXT_FIELDS:
            text = to_text(f[name])
            dirty = has_control_characters(text, _CONTROL_IN_TEXT)
            if dirty.any():  # a NUL or a stray control byte in a title: removed, counted
                parse_notes[f"control_characters_removed:{name}"] = int(dirty.sum())
                text = to_text(text.str.replace(_CONTROL_IN_TEXT, " ", regex=True))
            f[name] = text
    out_of_range: dict[str, pd.Series] = {}
    if "units" in f and (mapping.demand.units_scale != 1 or mapping.demand.fractional_units):
        scaled = f["units"] * mapping.demand.units_scale  # dollars -> cents, hectolitres -> litres ...
        rounded = scaled.round()
        if mapping.demand.fractional_units and (scaled != rounded).any():
            parse_notes["units_rounded"] = int((scaled.notna() & (scaled != rounded)).sum())
            scaled = rounded
        f["units"] = scaled
    for name in ("quantity", "units"):  # whole numbers that fit the lake's 32-bit integers
        if name in f:
            q = f[name]
            bad_type[name] = bad_type[name] | (q.notna() & (q != np.floor(q)))
            out_of_range[name] = q.notna() & (q.abs() > INT32_MAX)
    for name, unit in mapping.demand.convert.items():
        if name in f:
            f[name] = _CONVERT[unit](f[name])
    demand = "demand_history" in produces
    if demand and "warehouse_id" not in f and mapping.warehouse_from in f:
        f["warehouse_id"] = slug(f[mapping.warehouse_from])  # needed now: a row without a location is rejected
    source_ids = {name: f[name] for name in PREFIXES if name in f}  # normalised, before any stand-in
    if mapping.user_from_session:  # the session stands in where the log has no user
        f["user_id"] = f["user_id"].fillna(f["session_id"]) if "user_id" in f else f["session_id"]
    if "event_type" not in f:
        f["event_type"] = pd.Series(mapping.default_event_type, index=raw.index, dtype="string")
    is_purchase = (f["event_type"] == "purchase").fillna(False)
    is_search = (f["event_type"] == "search").fillna(False)

    r = Reasons(n)
    # --- filters ---------------------------------------------------------------------------------
    for flt in mapping.filters:
        values = f[flt.field] if flt.field in f else raw[flt.field]
        r.flag(~_keep(values, flt.op, flt.value), f"filtered:{flt.field}")

    # --- missing keys ----------------------------------------------------------------------------
    lines_from_rows = mapping.orders_from == "lines" and bool(produces & ORDER_TABLES)
    required: list[tuple[str, pd.Series]] = []
    if mapping.user_from_session or (mapping.session and mapping.session.method == "column"):
        required.append(("session_id", None))
    if "timestamp" in f:
        required.append(("timestamp", None))
    if lines_from_rows:
        required.append(("order_id", None))
    if "user_id" in f and produces & {"events", "orders", "order_lines", "users"}:
        required.append(("user_id", None))
    if "item_id" in f:
        required.append(("item_id", None if lines_from_rows or "events" not in produces else ~is_search))
    if mapping.orders_from == "purchase_events" and produces & ORDER_TABLES:
        required.append((mapping.order_key, is_purchase))
    if "event_type" in mapping.columns:
        required.append(("event_type", None))
    if lines_from_rows and "quantity" in f:
        required.append(("quantity", None))
    if demand:
        required += [("warehouse_id", None), ("demand_date", None), ("units", None)]
    for name, where in required:
        series = f["timestamp"] if name == "timestamp" else f[name]
        unparseable = {"timestamp": bad_ts, "demand_date": bad_date}.get(name, bad_type.get(name, False))
        missing = series.isna() & ~unparseable
        r.flag(missing if where is None else (missing & where), f"missing_key:{name}")

    # --- unparseable values ----------------------------------------------------------------------
    for name, bad in bad_id.items():
        r.flag(bad, f"bad_id:{name}")
    r.flag(bad_ts, "bad_timestamp")
    r.flag(bad_date, "bad_date")
    for name, bad in bad_type.items():
        r.flag(bad, f"bad_type:{name}")
    r.flag(~f["event_type"].isin(EVENT_TYPES).fillna(False), "unknown_event_type")
    if mapping.reject_future and "timestamp" in f:
        r.flag(f["timestamp"] > pd.Timestamp(now), "future_timestamp")
    if mapping.reject_future and "demand_date" in f:
        r.flag(f["demand_date"] > pd.Timestamp(now.astimezone(timezone.utc).date()), "future_date")
    for name, outside in out_of_range.items():
        r.flag(outside, f"out_of_range:{name}")
    if demand:
        for name, (low, high) in _RANGES.items():
            if name in f:
                outside = (f[name] < low) if high is None else ((f[name] < low) | (f[name] > high))
                r.flag(outside, f"out_of_range:{name}")

    # --- business rules --------------------------------------------------------------------------
    if mapping.non_product_codes and "item_id" in f:
        pattern = "|".join(f"(?:{p})" for p in mapping.non_product_codes)
        r.flag(f["item_id"].str.fullmatch(pattern, case=False), "non_product_code")
    r.flag(raw.duplicated(keep="first"), "duplicate")
    period = None
    if demand:
        period = _demand_period(f, r, mapping, lake_period=getattr(earlier_lines, "demand_period", None))

    cancel = pd.Series(False, index=raw.index)
    if mapping.cancellations and lines_from_rows:
        cancel = f["order_id"].str.startswith(mapping.cancellations.order_prefix).fillna(False)
    line_rows = (pd.Series(lines_from_rows, index=raw.index) | (is_purchase & (mapping.orders_from == "purchase_events"))) & ~cancel
    if produces & ORDER_TABLES and "user_id" in f:  # one order, one customer
        key = f["order_id"] if lines_from_rows else f.get(mapping.order_key)
        if key is not None:
            rows = pd.DataFrame({"o": key, "u": f["user_id"]})[r.open & line_rows.values]
            users_per_order = rows.dropna().groupby("o")["u"].nunique()
            conflicted = users_per_order.index[users_per_order > 1]
            r.flag(line_rows & key.isin(conflicted), "order_user_conflict")
    if "price" in f:
        r.flag(line_rows & (f["price"] <= 0), "invalid_price")
    if "quantity" in f:
        r.flag(line_rows & (f["quantity"] <= 0), "invalid_quantity")
    returns = None
    if cancel.any():
        returns, cancel_rows = _returns(f, r, cancel, line_rows, mapping, earlier_lines, pseudonymizer)
        r.flag(cancel & raw.index.isin(cancel_rows), "cancellation_matched")
        r.flag(cancel, "cancellation_unmatched")

    # --- accepted rows -> tables -----------------------------------------------------------------
    ok = r.open
    accepted = pd.DataFrame({k: v[ok] for k, v in f.items()})
    accepted["_row"] = np.flatnonzero(ok)
    accepted["returned_quantity"] = 0  # returns are rows of their own (the returns table), merged by dbt
    if "price" in accepted and not lines_from_rows:
        accepted["price"] = accepted["price"].mask(accepted["price"] <= 0)  # a 0 shown price is unknown
    if pseudonymizer is not None:  # every check above ran on raw ids; from here on only pseudonyms
        for name in PREFIXES:
            if name in accepted:
                accepted[name] = pseudonymizer.pseudonymize(accepted[name], name)
        raw = _pseudonymize_source(raw, mapping, source_ids, pseudonymizer)
    notes: dict[str, int] = {}
    notes.update(parse_notes)
    tables = _build_tables(accepted, raw, ok, mapping, path, period=period, notes=notes, pseudonymizer=pseudonymizer)
    if returns is not None and "order_lines" in produces:
        tables["returns"] = returns

    by_reason = r.counts()
    quarantine = raw.loc[~ok].copy()
    for col in quarantine.columns:
        if quarantine[col].dtype == object:
            quarantine[col] = quarantine[col].astype("string")
    quarantine.insert(0, "reason", pd.array(r.values[~ok].astype(str), dtype="string"))
    quarantine.insert(0, "source_row", np.flatnonzero(~ok))
    result = Transformed(
        tables=tables, quarantine=quarantine.reset_index(drop=True), read=n, accepted=int(ok.sum()), by_reason=by_reason, notes=notes
    )
    assert result.read == result.accepted + result.quarantined, "every row is accepted or quarantined"
    return result


def _pseudonymize_source(raw: pd.DataFrame, mapping: Mapping, source_ids: dict[str, pd.Series], pseudonymizer) -> pd.DataFrame:
    """A copy of the source rows whose identifier columns hold pseudonyms of their normalised ids
    (what ``event_id`` hashes and the quarantine keeps). A column feeding both fields keeps the user's."""
    out = raw.copy()
    for name in ("session_id", "user_id"):
        column = mapping.columns.get(name)
        if column in out.columns and name in source_ids:
            out[column] = pseudonymizer.pseudonymize(source_ids[name], name)
    return out


def check_columns(raw: pd.DataFrame, mapping: Mapping, path: Path) -> None:
    have = set(raw.columns)
    for name, column in mapping.columns.items():
        if column not in have and name not in mapping.optional_columns:
            raise IngestError(f"{path}: required column {column!r} (mapped to {name}) is missing; the file has columns {list(raw.columns)}")
    extra = {
        **{f"demand.regressors.{n}": r.column for n, r in mapping.demand.regressor_specs().items()},
        **{f"demand.attributes.{n}": c for n, c in mapping.demand.attributes.items()},
    }
    for where, column in extra.items():
        if column not in have:
            raise IngestError(f"{path}: column {column!r} ({where}) is missing; the file has columns {list(raw.columns)}")
    for flt in mapping.filters:
        if flt.field not in mapping.columns and flt.field not in mapping.constants and flt.field not in have:
            raise IngestError(f"{path}: filter column {flt.field!r} is neither a mapped field nor a column of the file")


def _demand_period(f: dict[str, pd.Series], r: Reasons, mapping: Mapping, lake_period=None) -> str:
    """The file's period (day | week) for demand_history. Weekly rows dated by their last day move to
    their first; rows off the file's weekday grid become ``off_grid_date`` and rows repeating an
    item x warehouse x date ``duplicate_key`` (unless ``demand.duplicate_keys: sum``)."""
    spec = mapping.demand
    dates = f["demand_date"]
    open_dates = dates[r.open].dropna()
    period = spec.period
    if period == "auto":
        one_weekday = open_dates.dt.weekday.nunique() == 1
        period = "week" if one_weekday and open_dates.nunique() >= 2 else "day"
        if open_dates.nunique() == 1 and lake_period is not None:  # one date cannot tell: a re-sent week?
            keys = pd.DataFrame({k: f[k][r.open] for k in ("item_id", "warehouse_id")}).drop_duplicates()
            period = lake_period(keys) or period
        distinct = pd.Series(open_dates.unique()).sort_values()
        if period == "day" and len(distinct) >= 3 and (distinct.dt.day == 1).all() and distinct.diff().dt.days.min() >= 28:
            raise IngestError(
                f"the export's {len(distinct)} dates ({distinct.iloc[0]:%Y-%m-%d} .. {distinct.iloc[-1]:%Y-%m-%d}) are all "
                f"the 1st of a month: monthly demand, which the warehouse and the forecasters do not model (they take "
                f"days and weeks; as daily rows each month would read as one day of sales and 27-30 days of none). "
                f"Nothing was written. An export of daily or weekly rows works; set demand.period: day to load "
                f"these rows as single days anyway"
            )
    if period == "week":
        if spec.week_date == "end":
            f["demand_date"] = dates = dates - pd.Timedelta(days=6)
            open_dates = dates[r.open].dropna()
        if len(open_dates):
            anchor = open_dates.dt.weekday.value_counts().sort_index().idxmax()  # the file's week start
            r.flag(dates.notna() & (dates.dt.weekday != anchor), "off_grid_date")
    if spec.duplicate_keys == "quarantine":
        keys = pd.DataFrame({k: f[k] for k in ("item_id", "warehouse_id", "demand_date")})
        open_rows = pd.Series(r.open, index=keys.index)
        r.flag(open_rows & keys[open_rows].duplicated(keep="first").reindex(keys.index, fill_value=False), "duplicate_key")
    return period


def _keep(values: pd.Series, op: str, value) -> pd.Series:
    if op == "eq":
        keep = values == value
    elif op == "ne":
        keep = values != value
    elif op == "in":
        keep = values.isin(list(value))
    elif op == "not_in":
        keep = ~values.isin(list(value))
    elif op == "regex":
        keep = values.astype("string").str.fullmatch(str(value))
    elif op == "not_regex":
        keep = ~values.astype("string").str.fullmatch(str(value)).fillna(False)
    else:  # not_null
        keep = values.notna()
    return pd.Series(keep, index=values.index).fillna(op in ("ne", "not_in", "not_regex")).astype(bool)


def _returns(
    f, r: Reasons, cancel: pd.Series, line_rows: pd.Series, mapping: Mapping, earlier_lines, pseudonymizer
) -> tuple[pd.DataFrame | None, np.ndarray]:
    """Match the open cancellation lines to original lines of the same customer and item: this
    export's, and (with ``earlier_lines``) the lake's from earlier exports. Returns the returns table
    rows (one per matched cancellation line) and the matched cancellation rows."""
    cancel_open = r.open & cancel.values
    if not mapping.cancellations.match or not cancel_open.any():
        return None, np.array([], dtype=int)
    users = f["user_id"]
    lake = None
    if earlier_lines is not None:
        lake = earlier_lines(
            items=sorted(set(f["item_id"][cancel_open].dropna())),
            skip_orders=set(f["order_id"][r.open & line_rows.values].dropna()),  # this export's copy replaces them
            skip_cancellations=set(f["order_id"][cancel_open].dropna()),  # re-matched now
        )
        if lake is not None and lake.empty:
            lake = None
        if lake is not None and pseudonymizer is not None:  # the lake holds pseudonyms: compare like with like
            users = pseudonymizer.pseudonymize(users, "user_id")
    cols = ["item_id", "timestamp", "order_id"]
    canc = pd.DataFrame({c: f[c][cancel_open] for c in cols})
    canc["user_id"] = users[cancel_open]
    canc["need"] = -f["quantity"][cancel_open]
    canc["row_c"] = np.flatnonzero(cancel_open)
    # the n-th line of an item within its cancellation order: the cancellation line's identity
    canc["n"] = canc.groupby(["order_id", "item_id"], sort=False).cumcount() + 1
    original_open = r.open & line_rows.values
    orig = pd.DataFrame({c: f[c][original_open] for c in cols})
    orig["user_id"] = users[original_open]
    orig["left"] = f["quantity"][original_open]
    orig["row_o"] = np.flatnonzero(original_open)
    if earlier_lines is not None and hasattr(earlier_lines, "returned"):
        taken = earlier_lines.returned(set(orig["order_id"].dropna()), set(canc["order_id"].dropna()))
        if len(taken):  # units of this export's orders that earlier exports' returns already took
            orig = _take_returned(orig, taken)
    if lake is not None:
        lake = lake.assign(row_o=-1 - np.arange(len(lake)))  # negative: not a row of this file
        orig = pd.concat([orig, lake[orig.columns]], ignore_index=True)
    pairs = _match_cancellations(canc[canc["need"] > 0], orig)
    if pairs.empty:
        return None, np.array([], dtype=int)
    pairs = pairs.merge(canc[["row_c", "order_id", "item_id", "n", "timestamp"]], on="row_c")
    out = pd.DataFrame(
        {
            "return_id": pairs["order_id"] + "|" + pairs["item_id"] + "|" + pairs["n"].astype(str),
            "order_id": pairs["order_id_o"].values,
            "item_id": pairs["item_id"].values,
            "quantity": pairs["need"].astype("int64").values,
            "returned_at": pairs["timestamp"].values,
        }
    )
    return out, pairs["row_c"].to_numpy()


def _take_returned(orig: pd.DataFrame, taken: pd.DataFrame) -> pd.DataFrame:
    """``orig`` with each (order_id, item_id)'s returned units taken from its lines, last line first."""
    orig = orig.sort_values("row_o", ascending=False)
    units = orig.merge(taken, on=["order_id", "item_id"], how="left")["units"].fillna(0).to_numpy()
    before = orig.groupby(["order_id", "item_id"], sort=False)["left"].cumsum().to_numpy() - orig["left"].to_numpy()
    take = np.clip(units - before, 0, orig["left"].to_numpy())
    return orig.assign(left=orig["left"].to_numpy() - take).sort_values("row_o")


def _match_cancellations(canc: pd.DataFrame, orig: pd.DataFrame) -> pd.DataFrame:
    """Match cancellation lines (row_c, user_id, item_id, timestamp, order_id, need) to original
    orders (order_id, user_id, item_id, timestamp, left: units of that item in the order not returned
    yet) one at a time in time order: each takes the latest earlier order of the same customer with
    enough of the item left (ties: the greater order id). Sequential, so the result does not depend
    on how the history was cut into exports. Returns the matches: row_c, order_id_o, need."""
    columns = {"row_c": "int64", "order_id_o": "string", "need": "float64"}
    if canc.empty or orig.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    orig = orig.groupby(["user_id", "item_id", "order_id"], as_index=False, sort=False).agg(
        timestamp=("timestamp", "min"), left=("left", "sum")
    )
    wanted = canc.set_index(["user_id", "item_id"]).index
    orig = orig[orig.set_index(["user_id", "item_id"]).index.isin(wanted)]
    orig = orig.sort_values(["timestamp", "order_id"], ascending=False)
    candidates: dict[tuple, list] = {}
    for user, item, order, ts, left in orig[["user_id", "item_id", "order_id", "timestamp", "left"]].itertuples(index=False):
        candidates.setdefault((user, item), []).append([ts, order, left])
    matches = []
    for row, user, item, ts, order, need in canc.sort_values(["timestamp", "row_c"])[
        ["row_c", "user_id", "item_id", "timestamp", "order_id", "need"]
    ].itertuples(index=False):
        for cand in candidates.get((user, item), ()):
            if cand[0] <= ts and cand[1] != order and cand[2] >= need:
                cand[2] -= need
                matches.append((row, cand[1], need))
                break
    out = pd.DataFrame(matches, columns=list(columns))
    return out.astype(columns)


def _dates(ts: pd.Series) -> pd.Series:
    return ts.dt.tz_convert("UTC").dt.date


def _build_tables(
    a: pd.DataFrame,
    raw: pd.DataFrame,
    ok: np.ndarray,
    mapping: Mapping,
    path: Path,
    *,
    period: str | None = None,
    notes: dict[str, int] | None = None,
    pseudonymizer=None,
) -> dict[str, pd.DataFrame]:
    produces = set(mapping.produces)
    notes = {} if notes is None else notes
    out: dict[str, pd.DataFrame] = {}
    has = lambda name: name in a.columns  # noqa: E731

    # warehouse per row
    if has("warehouse_id"):
        pass
    elif mapping.warehouse_from and has(mapping.warehouse_from):
        a["warehouse_id"] = slug(a[mapping.warehouse_from])

    # sessions
    if mapping.session and mapping.session.method != "column" and has("timestamp"):
        a = a.sort_values(["user_id", "timestamp", "_row"], kind="stable")
        if mapping.session.method == "inactivity":
            gap = a["timestamp"].diff() > pd.Timedelta(minutes=mapping.session.gap_minutes)
            changed = (a["user_id"] != a["user_id"].shift()).fillna(True).astype(bool)
            new = gap.fillna(False).astype(bool) | changed
            # named by the user and the session's first event (not a running number), so one session
            # gets one id in every export that carries it, and two exports never reuse an id
            start = a["timestamp"].where(new).ffill()
            a["session_id"] = a["user_id"] + "-" + start.dt.strftime("%Y%m%dT%H%M%S")
        else:  # user_day
            a["session_id"] = a["user_id"] + "-" + a["timestamp"].dt.strftime("%Y%m%d")
        a = a.sort_values("_row", kind="stable")

    if has("category") and not any(has(c) for c in ("category_l1", "category_l2", "category_l3")):
        levels = split_category(a["category"], mapping.category_separator)
        for col in levels.columns:
            a[col] = levels[col]

    if has("timestamp"):
        a["_date"] = _dates(a["timestamp"])

    # --- orders / order_lines --------------------------------------------------------------------
    lines = None
    if produces & ORDER_TABLES:
        if mapping.orders_from == "lines":
            lines = a.copy()
        else:
            lines = a[a["event_type"] == "purchase"].copy()
            lines["order_id"] = lines[mapping.order_key]
            lines = lines.sort_values(["order_id", "timestamp", "_row"], kind="stable")
        if not has("quantity"):
            lines["quantity"] = 1
        lines["unit_price"] = lines["price"] if "price" in lines else np.nan
        head = lines.groupby("order_id", sort=False).agg(
            user_id=("user_id", "first"),
            ordered_at=("timestamp", "min"),
            **({"warehouse_id": ("warehouse_id", "first")} if "warehouse_id" in lines else {}),
        )
        head["order_date"] = _dates(head["ordered_at"])
        lines["line_number"] = lines.groupby("order_id", sort=False).cumcount() + 1
        lines["order_date"] = lines["order_id"].map(head["order_date"])
        lines["discount_amount"] = 0.0
        lines["quantity"] = lines["quantity"].astype("int64")
        fully = (lines["returned_quantity"] >= lines["quantity"]).groupby(lines["order_id"], sort=False).all()
        head["status"] = np.where(fully.reindex(head.index).fillna(False), "cancelled", "completed")
        if "orders" in produces:
            out["orders"] = head.reset_index()
        if "order_lines" in produces:
            out["order_lines"] = lines[
                ["order_id", "line_number", "item_id", "quantity", "unit_price", "order_date", "discount_amount", "returned_quantity"]
            ].reset_index(drop=True)

    # --- demand_history --------------------------------------------------------------------------
    if "demand_history" in produces:
        out["demand_history"] = _demand_rows(a, mapping, period, notes)
        out.update(_demand_extras(a, raw, mapping, notes))

    # --- events ----------------------------------------------------------------------------------
    if "events" in produces:
        hashes = pd.util.hash_pandas_object(raw, index=False).to_numpy()[a["_row"].to_numpy()]
        ev = pd.DataFrame(
            {
                "event_id": [f"{h:016x}" for h in hashes],
                "user_id": a["user_id"].values,
                "session_id": a["session_id"].values,
                "event_type": a["event_type"].values,
                "event_timestamp": a["timestamp"].values,
                "event_date": a["_date"].values,
            }
        )
        for name in ("item_id", "search_query", "dwell_seconds", "price", "rating"):
            if has(name):
                ev[name] = a[name].values
        if lines is not None or (mapping.orders_from == "purchase_events"):
            key = a["order_id"] if mapping.orders_from == "lines" else a.get(mapping.order_key)
            if key is not None:
                ev["order_id"] = key.where(a["event_type"] == "purchase").values
        elif has("order_id"):
            ev["order_id"] = a["order_id"].where(a["event_type"] == "purchase").values
        ev["event_timestamp"] = pd.to_datetime(ev["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
        out["events"] = ev

    # --- users -----------------------------------------------------------------------------------
    if "users" in produces:
        users = pd.DataFrame(index=pd.Index(a["user_id"].dropna().unique(), name="user_id"))
        for name in ("country", "region", "gender"):
            if has(name):
                users[name] = mode_by(a["user_id"], a[name])
        if has("birth_year"):
            users["birth_year"] = mode_by(a["user_id"], a["birth_year"])
        if has("signup_at"):
            users["signup_at"] = a.groupby("user_id")["signup_at"].min()
        users = _merge_side(users, mapping.users_file, path, mapping, "user_id", pseudonymizer)
        if "age" in users.columns:
            year = a.groupby("user_id")["timestamp"].min().dt.year if has("timestamp") else pd.Series(dtype=float)
            fallback = int(a["timestamp"].max().year) if has("timestamp") and len(a) else datetime.now().year
            ref = year.reindex(users.index).fillna(fallback)
            age = pd.to_numeric(users["age"], errors="coerce")
            derived = (ref - age).astype("Int64")
            users["birth_year"] = users["birth_year"].fillna(derived) if "birth_year" in users else derived
        out["users"] = users.reset_index()

    # --- items -----------------------------------------------------------------------------------
    if "items" in produces:
        items = pd.DataFrame(index=pd.Index(a["item_id"].dropna().unique(), name="item_id"))
        for name in ("title", "description", "category_l1", "category_l2", "category_l3", "brand"):
            if has(name):
                items[name] = mode_by(a["item_id"], a[name])
        if has("price"):
            items["price"] = a[a["price"] > 0].groupby("item_id")["price"].median()
        items = _merge_side(items, mapping.items_file, path, mapping, "item_id")
        out["items"] = items.reset_index()

    # --- warehouses ------------------------------------------------------------------------------
    if "warehouses" in produces and has("warehouse_id"):
        wh = pd.DataFrame(index=pd.Index(a["warehouse_id"].dropna().unique(), name="warehouse_id"))
        region_src = (
            "region" if has("region") else (mapping.warehouse_from if mapping.warehouse_from and has(mapping.warehouse_from) else None)
        )
        wh["region"] = mode_by(a["warehouse_id"], a[region_src]) if region_src else pd.NA
        wh["region"] = wh["region"].fillna(pd.Series(wh.index, index=wh.index))
        if has("country"):
            wh["country"] = mode_by(a["warehouse_id"], a["country"])
        out["warehouses"] = wh.reset_index()
    return out


def _demand_rows(a: pd.DataFrame, mapping: Mapping, period: str, notes: dict[str, int]) -> pd.DataFrame:
    """demand_history rows from the accepted rows. Negative units (net of returns) are kept and counted;
    with ``demand.duplicate_keys: sum`` the rows of one item x warehouse x date become one."""
    key = ["item_id", "warehouse_id", "demand_date"]
    cols = key + ["units"] + [c for c in DEMAND_REGRESSORS if c in a.columns]
    d = a[cols].copy()
    negative = int((d["units"] < 0).sum())
    if negative:
        notes["negative_units"] = negative
    if mapping.demand.duplicate_keys == "sum" and d.duplicated(key).any():
        notes["duplicate_keys_summed"] = int(d.duplicated(key).sum())
        how = {
            "units": "sum",
            "is_promoted": "max",
            "is_holiday": "max",
            "discount_pct": "max",
            "markdown_amount": lambda s: s.sum(min_count=1),
            "price": "mean",
            "temperature_c": "mean",
            "precipitation_mm": "mean",
        }
        d = d.groupby(key, sort=False, as_index=False).agg({c: how[c] for c in cols if c not in key})
    d["units"] = d["units"].astype("int64")
    d["demand_date"] = d["demand_date"].dt.date
    d["period"] = period
    if len(d):
        notes[f"period_{period}"] = int(len(d))
    return d.reset_index(drop=True)


def _demand_extras(a: pd.DataFrame, raw: pd.DataFrame, mapping: Mapping, notes: dict[str, int]) -> dict[str, pd.DataFrame]:
    """demand_regressors and series_attributes from the source columns ``demand.regressors`` /
    ``demand.attributes`` name, for the accepted rows. A regressor cell that is not a finite number is
    left out and counted in notes (regressor_not_numeric:<name>); an empty cell is left out, or 0 with
    ``missing: zero``; rows of one key (``duplicate_keys: sum``) average. An attribute keeps the series'
    most common value."""
    spec, out = mapping.demand, {}
    key = ["item_id", "warehouse_id", "demand_date"]
    rows = a["_row"].to_numpy()
    if spec.regressors:
        parts = []
        for name, reg in spec.regressor_specs().items():
            cell = pd.Series(raw[reg.column].to_numpy()[rows], index=a.index)
            value, bad = to_number(cell)
            if bad.any():
                notes[f"regressor_not_numeric:{name}"] = int(bad.sum())
            if reg.missing == "zero":
                value = value.mask(value.isna() & ~bad, 0.0)
            part = a[key].assign(name=name, value=value.to_numpy()).dropna(subset=["value"])
            parts.append(part)
        regs = pd.concat(parts, ignore_index=True)
        regs = regs.groupby([*key, "name"], sort=False, as_index=False)["value"].mean()
        regs["demand_date"] = regs["demand_date"].dt.date
        out["demand_regressors"] = regs
    if spec.attributes:
        parts = []
        for name, column in spec.attributes.items():
            text = to_text(pd.Series(raw[column].to_numpy()[rows], index=a.index))
            frame = a[["item_id", "warehouse_id"]].assign(value=text.to_numpy()).dropna(subset=["value"])
            if len(frame):
                series = pd.Series(list(zip(frame["item_id"], frame["warehouse_id"])), index=frame.index)
                value = mode_by(series, frame["value"])
                parts.append(
                    pd.DataFrame(
                        {
                            "item_id": [k[0] for k in value.index],
                            "warehouse_id": [k[1] for k in value.index],
                            "name": name,
                            "value": value.to_numpy(),
                        }
                    )
                )
        out["series_attributes"] = (
            pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["item_id", "warehouse_id", "name", "value"])
        )
    return out


def _merge_side(frame: pd.DataFrame, side, path: Path, mapping: Mapping, key: str, pseudonymizer=None) -> pd.DataFrame:
    """Add a sibling file's columns (side values win; keys only in the side file are added).
    With a pseudonymizer, a users file's ids become pseudonyms like the frame's."""
    if side is None:
        return frame
    side_path = path.with_suffix(side.suffix)
    if not side_path.exists():
        if side.required:
            raise IngestError(f"{path}: the mapping needs the sibling file {side_path.name}, which is missing")
        return frame
    raw = read_source(side_path, mapping)
    missing = [c for c in side.columns.values() if c not in raw.columns]
    if missing:
        raise IngestError(f"{side_path}: required column {missing[0]!r} is missing; the file has {list(raw.columns)}")
    if key not in side.columns:
        raise IngestError(f"mapping {mapping.name}: {side.suffix} file needs columns.{key}")
    data = pd.DataFrame({name: raw[col] for name, col in side.columns.items()})
    data[key] = to_id(data[key])
    if pseudonymizer is not None and key in PREFIXES:
        data[key] = pseudonymizer.pseudonymize(data[key], key)
    for name in data.columns:
        if name != key:
            data[name] = to_text(data[name])
    if "category" in data and "category_l1" not in data:
        data = data.join(split_category(data.pop("category"), mapping.category_separator))
    data = data.dropna(subset=[key]).drop_duplicates(key).set_index(key)
    merged = data.combine_first(frame) if not frame.empty else data
    return merged.rename_axis(key)
