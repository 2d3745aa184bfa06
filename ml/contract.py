"""The data contract: the canonical raw tables of the lake, their columns, types and keys.

This module is the single source of truth for the lake's layout. The generator and every ingestion
adapter write exactly these schemas; dbt's ``sources`` declare the same columns (a test holds the two
together); docs/data_contract.md is rendered from it (``python -m ml contract --markdown``).

Lake layout (``LAKE_DIR``)::

    <table>/<file>.parquet                          small tables
    <table>/<partition_col>=YYYY-MM-DD/<file>.parquet   large tables, partitioned by day

Files are named by who wrote them (``gen-<seq>-<chunk>`` by the generator, ``ing-<sha12>-<seq>``
by ingestion, one stem per source file) and become visible only when committed: ``_commits.json``
lists the committed stems in arrival order (ml/lake.py). dbt reads ``<table>/**/*.parquet`` with
``hive_partitioning=false`` (the partition value is also a real column inside each file) and keeps
the rows of committed stems; its staging models merge exports by their commit order. A table the dataset lacks is present as
``<table>/_empty.parquet`` (the
schema, zero rows) so dbt always builds, and ``_lake.json`` lists which tables hold data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    required: bool
    description: str


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    grain: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    required: bool = False  # must the dataset have this table at all?
    partition_by: str | None = None  # a date column; the table is written one folder per day
    needed_by: tuple[str, ...] = field(default_factory=tuple)  # what degrades without it
    ingest_only: bool = False  # only ingestion writes it (the generator derives the same from other tables)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=not c.required) for c in self.columns])

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


def C(name: str, type_: pa.DataType, required: bool, description: str) -> Column:
    return Column(name, type_, required, description)


EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "search")
ORDER_STATUSES = ("completed", "cancelled", "returned")

TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table(
            "users",
            "Shopper accounts. Derived from orders/events when the export has no customer file.",
            "one row per user",
            ("user_id",),
            (
                C("user_id", pa.string(), True, "Shopper account key"),
                C("signup_at", TS, False, "Account creation time (UTC)"),
                C("country", pa.string(), False, "Country name or ISO code as exported"),
                C("region", pa.string(), False, "Sales region (joins warehouses.region)"),
                C("gender", pa.string(), False, "Self-reported gender (F/M/other); fairness audit only"),
                C("birth_year", pa.int32(), False, "Year of birth; age bands derive from it"),
            ),
            needed_by=("age/gender features, fairness audit",),
        ),
        Table(
            "items",
            "The catalogue of sellable units (SKUs).",
            "one row per item",
            ("item_id",),
            (
                C("item_id", pa.string(), True, "Sellable unit key (SKU)"),
                C("title", pa.string(), False, "Short product title"),
                C("description", pa.string(), False, "Product description text (embeddings, search)"),
                C("category_l1", pa.string(), False, "Top-level category"),
                C("category_l2", pa.string(), False, "Second-level category"),
                C("category_l3", pa.string(), False, "Leaf category"),
                C("brand", pa.string(), False, "Brand name"),
                C("price", pa.float64(), False, "List price per unit"),
                C("launch_date", pa.date32(), False, "First day the item could be sold"),
            ),
            needed_by=("category/brand features, semantic search",),
        ),
        Table(
            "warehouses",
            "Fulfilment warehouses and the region each one serves.",
            "one row per warehouse",
            ("warehouse_id",),
            (
                C("warehouse_id", pa.string(), True, "Fulfilment warehouse key"),
                C("region", pa.string(), True, "Region served (joins weather.region, users.region)"),
                C("country", pa.string(), False, "Country of the warehouse (holiday calendar)"),
            ),
        ),
        Table(
            "events",
            "Clickstream: searches, views, cart changes and purchases.",
            "one row per event",
            ("event_id",),
            (
                C("event_id", pa.string(), True, "Event key (unique per source)"),
                C("user_id", pa.string(), True, "Shopper (a session id stands in when the log has no user)"),
                C("session_id", pa.string(), True, "Browsing session"),
                C("event_type", pa.string(), True, "view | add_to_cart | remove_from_cart | purchase | search"),
                C("event_timestamp", TS, True, "When it happened (UTC)"),
                C("event_date", pa.date32(), True, "UTC date of event_timestamp (partition)"),
                C("item_id", pa.string(), False, "Item acted on (null for search)"),
                C("search_query", pa.string(), False, "Query text (search events only)"),
                C("dwell_seconds", pa.float64(), False, "Seconds on the product page (views)"),
                C("price", pa.float64(), False, "Unit price shown at the event"),
                C("order_id", pa.string(), False, "Order a purchase event belongs to"),
                C("rating", pa.float64(), False, "Explicit feedback (interaction files such as MovieLens)"),
            ),
            partition_by="event_date",
            needed_by=("activity features, sequence model, cart abandonment, co-visitation, search eval",),
        ),
        Table(
            "orders",
            "Order headers (invoices).",
            "one row per order",
            ("order_id",),
            (
                C("order_id", pa.string(), True, "Order / invoice key"),
                C("user_id", pa.string(), True, "Buyer"),
                C("ordered_at", TS, True, "Order time (UTC)"),
                C("order_date", pa.date32(), True, "UTC date of ordered_at (partition)"),
                C("warehouse_id", pa.string(), False, "Fulfilling warehouse (demand is per item x warehouse)"),
                C("status", pa.string(), False, "completed | cancelled | returned (default completed)"),
            ),
            partition_by="order_date",
            needed_by=("RFM, propensity labels, demand history, forecasting",),
        ),
        Table(
            "order_lines",
            "Order lines: what was bought, how many, at what price.",
            "one row per order line",
            ("order_id", "line_number"),
            (
                C("order_id", pa.string(), True, "Order key"),
                C("line_number", pa.int32(), True, "Line position within the order"),
                C("item_id", pa.string(), True, "Item bought"),
                C("quantity", pa.int32(), True, "Units ordered (> 0)"),
                C("unit_price", pa.float64(), False, "Price per unit before discount (>= 0; null when the log has no prices)"),
                C("order_date", pa.date32(), True, "UTC order date (partition)"),
                C("discount_amount", pa.float64(), False, "Discount on the whole line (>= 0, default 0)"),
                C("returned_quantity", pa.int32(), False, "Units later cancelled/returned (default 0)"),
            ),
            partition_by="order_date",
            needed_by=("monetary features, demand history, forecasting",),
        ),
        Table(
            "promotions",
            "Promotion calendar: price cuts per item (optionally per warehouse).",
            "one row per promotion",
            ("promotion_id",),
            (
                C("promotion_id", pa.string(), True, "Promotion key"),
                C("item_id", pa.string(), True, "Promoted item"),
                C("start_date", pa.date32(), True, "First day (inclusive)"),
                C("end_date", pa.date32(), True, "Last day (inclusive)"),
                C("discount_pct", pa.float64(), True, "Price cut as a fraction (0-1)"),
                C("warehouse_id", pa.string(), False, "Null means every warehouse"),
            ),
            needed_by=("promotion flags/regressors, promotion effect",),
        ),
        Table(
            "weather",
            "Daily weather per region.",
            "one row per region per day",
            ("region", "weather_date"),
            (
                C("region", pa.string(), True, "Region (warehouses.region)"),
                C("weather_date", pa.date32(), True, "Day"),
                C("temperature_c", pa.float64(), True, "Mean temperature, Celsius"),
                C("precipitation_mm", pa.float64(), False, "Precipitation, mm"),
            ),
            needed_by=("weather regressors in forecasting",),
        ),
        Table(
            "holidays",
            "Public holidays (country-wide when region is null).",
            "one row per holiday per country/region",
            ("holiday_date", "country", "region"),
            (
                C("holiday_date", pa.date32(), True, "Day"),
                C("country", pa.string(), True, "Country"),
                C("holiday_name", pa.string(), True, "Name"),
                C("region", pa.string(), False, "Region, when regional"),
            ),
            needed_by=("holiday flags (forecasting falls back to the `holidays` package)",),
        ),
        Table(
            "inventory_snapshots",
            "Stock on hand per item x warehouse per day, with replenishment lead time.",
            "one row per item per warehouse per snapshot day",
            ("item_id", "warehouse_id", "snapshot_date"),
            (
                C("item_id", pa.string(), True, "Item"),
                C("warehouse_id", pa.string(), True, "Warehouse"),
                C("snapshot_date", pa.date32(), True, "Day (end-of-day stock)"),
                C("on_hand_units", pa.int32(), True, "Units on hand at end of day"),
                C("lead_time_days", pa.int32(), False, "Replenishment lead time, days"),
                C("on_order_units", pa.int32(), False, "Units ordered, not yet received"),
            ),
            partition_by="snapshot_date",
            needed_by=("stock-out flags, inventory policy",),
        ),
        Table(
            "demand_history",
            "Pre-aggregated demand a planner exports from an ERP (units per item x location x day or week), "
            "with the regressors the export carries. In fct_daily_demand a series (item x warehouse) found "
            "here replaces the one derived from order lines.",
            "one row per item per warehouse per period (day or week, dated by its first day)",
            ("item_id", "warehouse_id", "demand_date"),
            (
                C("item_id", pa.string(), True, "Item"),
                C("warehouse_id", pa.string(), True, "Warehouse (the export's store / location)"),
                C("demand_date", pa.date32(), True, "First day of the period (the day; the week's first day)"),
                C("units", pa.int32(), True, "Units sold in the period as exported, net of returns (may be < 0)"),
                C("period", pa.string(), False, "day | week (ingestion sets it; the same for every row of a file)"),
                C("is_promoted", pa.bool_(), False, "The item was on promotion in the period"),
                C("discount_pct", pa.float64(), False, "Price cut as a fraction (0-1)"),
                C("markdown_amount", pa.float64(), False, "Promotional markdown in money (>= 0)"),
                C("price", pa.float64(), False, "Average selling price per unit in the period (> 0)"),
                C("temperature_c", pa.float64(), False, "Mean temperature, Celsius"),
                C("precipitation_mm", pa.float64(), False, "Precipitation, mm (>= 0)"),
                C("is_holiday", pa.bool_(), False, "The period holds a public holiday"),
            ),
            needed_by=("ERP demand series (fct_daily_demand then comes from order lines alone)",),
            ingest_only=True,
        ),
        Table(
            "demand_regressors",
            "Extra numeric regressors of a demand export, by the names its mapping gives them "
            "(demand.regressors: a price index, fuel price, unemployment, each markdown programme): one row per "
            "series, period and regressor. The forecasters use each name as a feature.",
            "one row per item per warehouse per period per regressor",
            ("item_id", "warehouse_id", "demand_date", "name"),
            (
                C("item_id", pa.string(), True, "Item"),
                C("warehouse_id", pa.string(), True, "Warehouse"),
                C("demand_date", pa.date32(), True, "First day of the period (as demand_history)"),
                C("name", pa.string(), True, "Regressor name (lower_snake_case, from the mapping)"),
                C("value", pa.float64(), True, "Its value in the period"),
            ),
            needed_by=("forecast regressors beyond the contract's promotion, price, weather and holiday columns",),
            ingest_only=True,
        ),
        Table(
            "series_attributes",
            "Static attributes of a demand series, by the names its mapping gives them (demand.attributes: store "
            "type, store size, department): one row per series and attribute, the export's latest value.",
            "one row per item per warehouse per attribute",
            ("item_id", "warehouse_id", "name"),
            (
                C("item_id", pa.string(), True, "Item"),
                C("warehouse_id", pa.string(), True, "Warehouse"),
                C("name", pa.string(), True, "Attribute name (lower_snake_case, from the mapping)"),
                C("value", pa.string(), True, "Its value as text (a number stays a number for the forecasters)"),
            ),
            needed_by=("series attributes as forecast features (global models)",),
            ingest_only=True,
        ),
        Table(
            "returns",
            "Units of an earlier order line cancelled or returned, written by ingestion where an export records "
            "cancellations as lines of their own (Online Retail II's 'C' invoices): one row per cancellation line "
            "matched to an original line of the same customer and item, in the same export or an earlier one. "
            "The warehouse adds them to that line's returned_quantity.",
            "one row per cancellation line",
            ("return_id",),
            (
                C(
                    "return_id",
                    pa.string(),
                    True,
                    "The cancellation line: <cancellation order id>|<item_id>|<n-th line of that item in it>",
                ),
                C("order_id", pa.string(), True, "The original order the units came back from"),
                C("item_id", pa.string(), True, "Item returned"),
                C("quantity", pa.int32(), True, "Units cancelled or returned (> 0)"),
                C("returned_at", TS, True, "When the cancellation was recorded (UTC)"),
            ),
            needed_by=("returns recorded as separate cancellation lines (order lines then keep their own returned_quantity only)",),
            ingest_only=True,
        ),
    ]
}

LAKE_MANIFEST = "_lake.json"
EMPTY_FILE = "_empty.parquet"


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown lake table {name!r}; the contract has {sorted(TABLES)}") from None


def conform(name: str, frame) -> pa.Table:
    """Cast a pandas frame or Arrow table to the table's schema: column order, types, no extras.

    Missing optional columns become nulls; a missing required column is an error naming it.
    """
    t = table(name)
    arrow = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    missing = [c for c in t.required_columns if c not in arrow.column_names]
    if missing:
        raise ValueError(f"{name}: required column(s) missing: {', '.join(missing)}")
    arrays = []
    for col in t.columns:
        if col.name in arrow.column_names and arrow.num_rows:
            arrays.append(arrow[col.name].cast(col.type))
        else:
            arrays.append(pa.nulls(arrow.num_rows, col.type))
    return pa.Table.from_arrays(arrays, schema=t.schema)


def table_dir(lake_dir: Path, name: str) -> Path:
    return Path(lake_dir) / table(name).name


def stage_table(lake_dir: Path, name: str, data, file_stem: str, suffix: str = "") -> tuple[int, list[tuple[Path, Path]]]:
    """Write ``data`` (conformed) as ``<file_stem>.parquet<suffix>`` files of table ``name``: one file,
    or one per day folder for a partitioned table. Returns (rows, [(written path, final path)])."""
    t = table(name)
    arrow = conform(name, data)
    root = table_dir(lake_dir, name)
    root.mkdir(parents=True, exist_ok=True)
    if arrow.num_rows == 0:
        return 0, []
    if t.partition_by is None:
        final = root / f"{file_stem}.parquet"
        pq.write_table(arrow, f"{final}{suffix}")
        return arrow.num_rows, [(Path(f"{final}{suffix}"), final)]
    import pyarrow.compute as pc

    staged = []
    for day in pc.unique(arrow[t.partition_by]).to_pylist():
        part = arrow.filter(pc.equal(arrow[t.partition_by], pa.scalar(day, type=pa.date32())))
        folder = root / f"{t.partition_by}={day.isoformat()}"
        folder.mkdir(exist_ok=True)
        final = folder / f"{file_stem}.parquet"
        pq.write_table(part, f"{final}{suffix}")
        staged.append((Path(f"{final}{suffix}"), final))
    return arrow.num_rows, staged


def write_table(lake_dir: Path, name: str, data, file_stem: str) -> list[Path]:
    """Write and commit ``data`` as ``file_stem`` files of one table (ml.lake: one commit), replacing
    earlier files of that stem. Writers of several tables use ``ml.lake.begin`` for one commit of all.
    Returns the files written."""
    from ml.lake import begin

    with begin(lake_dir, kind="write", source=f"{name}/{file_stem}") as commit:
        commit.write(name, data, file_stem)
    return [final for _, final in commit._staged]


def ensure_schema_files(lake_dir: Path) -> list[Path]:
    """Write ``<table>/_empty.parquet`` for every contract table that has no folder yet (a lake
    written before the table joined the contract), so dbt's sources resolve. Returns the files written."""
    from ml.lake import ensure_manifest

    lake_dir = Path(lake_dir)
    written = []
    if not lake_dir.exists():
        return written
    ensure_manifest(lake_dir)
    for t in TABLES.values():
        root = table_dir(lake_dir, t.name)
        if not root.exists():
            root.mkdir(parents=True)
            pq.write_table(t.schema.empty_table(), root / EMPTY_FILE)
            written.append(root / EMPTY_FILE)
    return written


def finalize_lake(lake_dir: Path) -> dict:
    """Give every contract table a readable schema file and record which tables hold data.

    Writes ``<table>/_empty.parquet`` (zero rows) for every table so dbt's sources always resolve,
    and ``_lake.json``: for each table, whether it has rows and how many files. Returns that dict.
    """
    from ml.lake import committed_files, ensure_manifest

    lake_dir = Path(lake_dir)
    ensure_manifest(lake_dir)
    status = {}
    for t in TABLES.values():
        root = table_dir(lake_dir, t.name)
        root.mkdir(parents=True, exist_ok=True)
        empty = root / EMPTY_FILE
        if not empty.exists():
            pq.write_table(t.schema.empty_table(), empty)
        files = committed_files(lake_dir, t.name)
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
        status[t.name] = {"present": rows > 0, "rows": rows, "files": len(files)}
    missing_required = [n for n, s in status.items() if TABLES[n].required and not s["present"]]
    if not (status["orders"]["present"] or status["events"]["present"]):
        missing_required.append("orders or events")
    manifest = {"tables": status, "missing_required": missing_required}
    (lake_dir / LAKE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def lake_status(lake_dir: Path) -> dict:
    """The ``_lake.json`` written by the last ``finalize_lake`` (empty dict when the lake is new)."""
    path = Path(lake_dir) / LAKE_MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


class MissingTableError(RuntimeError):
    """A stage needs a lake table the dataset does not have."""


def require_tables(lake_dir: Path, *names: str, stage: str) -> None:
    """Raise a clear MissingTableError when ``stage`` needs tables this lake lacks."""
    status = lake_status(lake_dir).get("tables", {})
    absent = [n for n in names if not status.get(n, {}).get("present")]
    if absent:
        raise MissingTableError(
            f"{stage} needs lake table(s) {', '.join(absent)}, which this dataset does not have "
            f"(see docs/data_contract.md for what each table enables)"
        )


DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "data_contract.md"
DOCS_BEGIN, DOCS_END = "<!-- contract:begin (generated by `ecomml contract --update-docs`) -->", "<!-- contract:end -->"


def render_docs(text: str) -> str:
    """``text`` (docs/data_contract.md) with the generated tables section replaced by the current contract."""
    head, _, rest = text.partition(DOCS_BEGIN)
    _, _, tail = rest.partition(DOCS_END)
    return f"{head}{DOCS_BEGIN}\n\n{markdown()}\n{DOCS_END}{tail}"


def markdown() -> str:
    """The contract as Markdown (the generated section of docs/data_contract.md)."""
    lines = []
    for t in TABLES.values():
        need = "**required**" if t.required else "optional"
        text = f"{t.description} Grain: {t.grain}. Key: `{', '.join(t.key)}`."
        if t.partition_by:
            text += f" Partitioned by `{t.partition_by}` (one folder per day)."
        if t.needed_by:
            text += f" Without it: no {'; '.join(t.needed_by)}."
        if t.ingest_only:
            text += " Written by ingestion only (the generator does not write it)."
        lines += [f"### `{t.name}` ({need})", "", text, "", "| column | type | required | description |", "|---|---|---|---|"]
        lines += [f"| `{c.name}` | {c.type} | {'yes' if c.required else ''} | {c.description} |" for c in t.columns]
        lines.append("")
    return "\n".join(lines)
