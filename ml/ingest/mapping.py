"""Declarative ingestion mappings: which source column feeds which lake field, and how.

A mapping is a small YAML file validated by :class:`Mapping` (pydantic, unknown keys refused).
Shipped presets live in ``ml/ingest/presets/<name>.yaml``; ``load_mapping`` accepts a preset name,
a path to a YAML file, a dict or a ``Mapping``. docs/ingestion.md documents every key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml.contract import EVENT_TYPES, TABLES

PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESETS: tuple[str, ...] = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))

# The canonical fields a source column can feed (the lake's vocabulary, plus a few inputs such as
# ``timestamp``, ``category`` (a dotted path split into levels) and ``age``).
FieldName = Literal[
    "user_id",
    "order_id",
    "item_id",
    "timestamp",
    "quantity",
    "price",
    "event_type",
    "session_id",
    "search_query",
    "rating",
    "dwell_seconds",
    "title",
    "description",
    "category",
    "category_l1",
    "category_l2",
    "category_l3",
    "brand",
    "country",
    "region",
    "warehouse_id",
    "gender",
    "age",
    "birth_year",
    "signup_at",
    # demand_history (a planner's pre-aggregated export)
    "demand_date",
    "units",
    "is_promoted",
    "discount_pct",
    "markdown_amount",
    "temperature_c",
    "precipitation_mm",
    "is_holiday",
]
ID_FIELDS = ("user_id", "order_id", "item_id", "session_id", "warehouse_id")
NUMERIC_FIELDS = (
    "quantity",
    "price",
    "rating",
    "dwell_seconds",
    "age",
    "birth_year",
    "units",
    "discount_pct",
    "markdown_amount",
    "temperature_c",
    "precipitation_mm",
)
FLAG_FIELDS = ("is_promoted", "is_holiday")
ORDER_TABLES = {"orders", "order_lines"}
DEMAND_REGRESSORS = ("is_promoted", "discount_pct", "markdown_amount", "price", "temperature_c", "precipitation_mm", "is_holiday")


class IngestError(Exception):
    """A file or mapping cannot be ingested; the message names the file and the column at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CsvOptions(_Strict):
    delimiter: str = ","
    encoding: str = "utf-8"
    quotechar: str = '"'
    typed_header: bool = False  # RecBole atomic files: strip the ':type' suffix of header names


class TimestampSpec(_Strict):
    unit: Literal["s", "ms", "us"] | None = None  # numeric epoch timestamps
    format: str | list[str] | None = None  # strptime format(s) of string timestamps, tried in order per value
    # (None: the format pandas infers from the column, then each value it does not fit on its own)
    timezone: str = "UTC"  # zone of naive timestamps; converted to UTC

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Europe/London')") from None
        return value


class Filter(_Strict):
    """Keep rows where ``field`` satisfies ``op``; the others are quarantined as ``filtered``."""

    field: str  # a canonical field (after value maps) or a source column name
    op: Literal["eq", "ne", "in", "not_in", "regex", "not_regex", "not_null"]
    value: Any = None


class SessionSpec(_Strict):
    method: Literal["column", "inactivity", "user_day"] = "column"
    gap_minutes: float = Field(30, gt=0)  # inactivity gap that starts a new session


class CancellationSpec(_Strict):
    order_prefix: str = "C"  # an order id starting with this marks a cancellation line
    match: bool = True  # match each to its original line and record returned_quantity there


class ExtraRegressor(_Strict):
    column: str
    missing: Literal["carry", "zero"] = "carry"  # carry: the forecaster carries the last value forward; zero: 0


class DemandSpec(_Strict):
    """How a pre-aggregated demand export becomes ``demand_history`` rows."""

    period: Literal["auto", "day", "week"] = "auto"  # auto: week when every date falls on one weekday
    week_date: Literal["start", "end"] = "start"  # end: weekly rows dated by their last day move to the first
    date_format: str | list[str] | None = None  # strptime format(s) of columns.demand_date (None: inferred per value)
    duplicate_keys: Literal["quarantine", "sum"] = "quarantine"  # rows repeating an item x warehouse x date
    units_scale: float = Field(1.0, gt=0)  # units = exported value x this (100: dollars with cents -> cents)
    fractional_units: bool = False  # round fractional units (after units_scale) instead of quarantining them
    convert: dict[Literal["discount_pct", "temperature_c", "precipitation_mm"], Literal["percent", "fahrenheit", "inches"]] = {}
    # extra numeric regressors by name -> lake table demand_regressors (name: source column, or
    # {column, missing: zero} where an empty cell means 0, e.g. a markdown not run that week)
    regressors: dict[str, str | ExtraRegressor] = {}
    # static series attributes by name (store type, store size, department) -> lake table series_attributes
    attributes: dict[str, str] = {}

    @model_validator(mode="after")
    def _known_conversions(self) -> "DemandSpec":
        allowed = {"discount_pct": "percent", "temperature_c": "fahrenheit", "precipitation_mm": "inches"}
        for name, unit in self.convert.items():
            if allowed[name] != unit:
                raise ValueError(f"demand.convert.{name} can only be {allowed[name]!r}, not {unit!r}")
        reserved = {
            "item_id",
            "warehouse_id",
            "ds",
            "y",
            "demand_date",
            "units",
            "period",
            "category_l1",
            "on_hand_units",
            *DEMAND_REGRESSORS,
        }
        for kind, names in (("regressors", self.regressors), ("attributes", self.attributes)):
            for name in names:
                if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name) or name in reserved:
                    raise ValueError(
                        f"demand.{kind}: {name!r} must be a lower_snake_case name (a-z, 0-9, _) and not "
                        f"one of the contract's columns {sorted(reserved)}"
                    )
        both = sorted(set(self.regressors) & set(self.attributes))
        if both:
            raise ValueError(f"demand: {both} named both as a regressor and as an attribute")
        return self

    def regressor_specs(self) -> dict[str, ExtraRegressor]:
        return {n: ExtraRegressor(column=v) if isinstance(v, str) else v for n, v in self.regressors.items()}


class SideFile(_Strict):
    """A sibling file (same stem, other suffix) feeding items or users, e.g. RecBole ``.item``."""

    suffix: str
    columns: dict[FieldName, str]
    required: bool = False


class Mapping(_Strict):
    name: str
    description: str = ""
    format: Literal["auto", "csv", "parquet", "xlsx"] = "auto"
    csv: CsvOptions = CsvOptions()
    sheet: str | int = 0  # XLSX sheet name or index
    columns: dict[FieldName, str]
    optional_columns: list[FieldName] = []  # mapped fields the file may lack (null when absent)
    timestamp: TimestampSpec = TimestampSpec()
    value_maps: dict[FieldName, dict[str, str | None]] = {}  # null: the value means 'unknown'
    # id cells meaning 'no id' (case-insensitive; empty cells always are): missing_key:<field>
    missing_ids: list[str] = ["N/A", "NULL", "NaN", "None", "unknown", "-"]
    zero_ids_missing: list[FieldName] = ["user_id"]  # fields whose all-zero ids ('0', '000') mean 'no id'
    max_quarantine_share: float | None = Field(None, ge=0, le=1)  # None: INGEST_MAX_QUARANTINE_SHARE
    expected_reasons: list[str] = []  # quarantine reasons this export has by nature: not counted as bad data
    constants: dict[FieldName, Any] = {}
    filters: list[Filter] = []
    non_product_codes: list[str] = []  # regexes, full match on item_id, case-insensitive
    cancellations: CancellationSpec | None = None
    session: SessionSpec | None = None
    user_from_session: bool = False
    warehouse_from: FieldName | None = None  # derive warehouse_id as a slug of this field
    produces: list[str]
    orders_from: Literal["lines", "purchase_events"] | None = None
    order_key: Literal["order_id", "session_id"] = "order_id"  # groups purchase events into orders
    default_event_type: str = "view"
    category_separator: str = "."  # splits columns.category ('electronics.audio') into category_l1..l3
    reject_future: bool = True
    items_file: SideFile | None = None
    users_file: SideFile | None = None
    demand: DemandSpec = DemandSpec()

    @field_validator("produces")
    @classmethod
    def _known_tables(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in TABLES]
        if unknown:
            raise ValueError(f"unknown lake table(s) {unknown}; the contract has {sorted(TABLES)}")
        if not value:
            raise ValueError("produces must name at least one lake table")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Mapping":
        has = self.has
        produces = set(self.produces)
        if not has("timestamp") and produces & {"events", "orders", "order_lines"}:
            raise ValueError("columns.timestamp is required to produce events or orders")
        if "events" in produces:
            if not (has("user_id") or self.user_from_session):
                raise ValueError("events need columns.user_id (or user_from_session: true)")
            if self.session is None and not has("session_id"):
                raise ValueError("events need a session: columns.session_id or session.method")
        if self.user_from_session and not (has("session_id") and (self.session is None or self.session.method == "column")):
            raise ValueError("user_from_session needs columns.session_id (a session column in the log)")
        if self.session and self.session.method == "column" and not has("session_id"):
            raise ValueError("session.method 'column' needs columns.session_id")
        if produces & ORDER_TABLES:
            if self.orders_from is None:
                raise ValueError("producing orders/order_lines needs orders_from: lines | purchase_events")
            key = "order_id" if self.orders_from == "lines" else self.order_key
            if not has(key):
                raise ValueError(f"orders_from {self.orders_from} needs columns.{key}")
            if not has("item_id"):
                raise ValueError("order lines need columns.item_id")
        if self.orders_from == "purchase_events" and "events" not in produces and not has("event_type"):
            raise ValueError("orders_from purchase_events needs columns.event_type")
        if "items" in produces and not has("item_id"):
            raise ValueError("items need columns.item_id")
        if "users" in produces and not (has("user_id") or self.user_from_session):
            raise ValueError("users need columns.user_id (or user_from_session: true)")
        if "warehouses" in produces and not (has("warehouse_id") or self.warehouse_from):
            raise ValueError("warehouses need columns/constants.warehouse_id or warehouse_from")
        if "demand_history" in produces:
            for name in ("item_id", "demand_date", "units"):
                if name not in self.columns:
                    raise ValueError(f"demand_history needs columns.{name}")
            if not (has("warehouse_id") or self.warehouse_from):
                raise ValueError("demand_history needs a location: columns/constants.warehouse_id or warehouse_from")
            if produces & (ORDER_TABLES | {"events"}):
                raise ValueError(
                    "demand_history rows are pre-aggregated demand: a file producing them cannot also produce events or orders"
                )
        if (self.demand.regressors or self.demand.attributes) and "demand_history" not in produces:
            raise ValueError("demand.regressors / demand.attributes belong to a demand export: produces needs demand_history")
        for field, values in self.value_maps.items():
            if field == "event_type":
                bad = sorted({v for v in values.values() if v not in EVENT_TYPES})
                if bad:
                    raise ValueError(f"value_maps.event_type maps to {bad}, not in {list(EVENT_TYPES)}")
        if self.default_event_type not in EVENT_TYPES:
            raise ValueError(f"default_event_type must be one of {list(EVENT_TYPES)}")
        for field in self.optional_columns:
            if field not in self.columns:
                raise ValueError(f"optional_columns names {field!r}, which columns does not map")
        return self

    def has(self, field: str) -> bool:
        """Is ``field`` fed by a source column or a constant?"""
        return field in self.columns or field in self.constants


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        elif err["type"] == "literal_error":
            parts.append(f"{loc}: {err['msg']} (got {err['input']!r})")
        else:
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def load_mapping(mapping: "str | Path | dict | Mapping") -> Mapping:
    """A validated Mapping from a preset name, a YAML path, a dict or a Mapping."""
    if isinstance(mapping, Mapping):
        return mapping
    source = "mapping"
    if isinstance(mapping, dict):
        data = mapping
    else:
        text_name = str(mapping)
        if text_name in PRESETS:
            path = PRESET_DIR / f"{text_name}.yaml"
        else:
            path = Path(mapping)
            if not path.exists():
                raise IngestError(f"mapping {text_name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file")
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise IngestError(f"mapping {source}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise IngestError(f"mapping {source}: expected a YAML mapping at the top level")
        data.setdefault("name", path.stem)
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise IngestError(f"mapping {source}: {_format_errors(exc)}") from None
