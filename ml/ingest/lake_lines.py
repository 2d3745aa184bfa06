"""What the lake already holds that a new export needs to know: the lines its cancellations may
return units from, and the period of the demand series it re-sends.

A cancellation line in one export (Online Retail II's 'C' invoices) often returns units bought in
an earlier export (a January credit note for a December invoice). Ingestion matches it against the
committed order lines of the lake, read the way the warehouse reads them (dbt staging, see
docs/warehouse.md "Merging exports"): the latest export's copy of each line (order_id, item_id, n-th
line of that item in the order), its order's latest customer and time, and the units that the
returns already recorded took from it. Read-only, DuckDB over the committed Parquet files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ml.lake import committed_files, read_commits

COLUMNS = ["user_id", "item_id", "order_id", "timestamp", "left"]


class EarlierLines:
    """What ``transform(earlier_lines=...)`` asks the lake (its committed files)."""

    def __init__(self, lake_dir: Path):
        self.lake_dir = Path(lake_dir)

    def __call__(self, items: list[str], skip_orders: set[str], skip_cancellations: set[str]) -> pd.DataFrame:
        """The lake's lines of these items a cancellation may still take units from."""
        return remaining_units(self.lake_dir, items, skip_orders=skip_orders, skip_cancellations=skip_cancellations)

    def returned(self, orders: set[str], skip_cancellations: set[str]) -> pd.DataFrame:
        """Units that returns already in the lake took from these orders (order_id, item_id, units),
        not counting those of cancellations in ``skip_cancellations``: a re-sent order's lines have
        less left to return than their quantity."""
        return _returned(self.lake_dir, orders, skip_cancellations)

    def demand_period(self, keys: pd.DataFrame) -> str | None:
        """The period (day | week) the lake's demand_history holds for these item x warehouse series,
        when they agree: a file of one date cannot tell a re-sent week from a day."""
        files = committed_files(self.lake_dir, "demand_history")
        if not files or keys.empty:
            return None
        con = _connect(self.lake_dir, keys=keys)
        try:
            found = con.execute(f"""select distinct d.period from read_parquet({_paths(files)}) d
                                    join keys k using (item_id, warehouse_id)""").fetchall()
        finally:
            con.close()
        return found[0][0] if len(found) == 1 else None


def _connect(lake_dir: Path, **frames: pd.DataFrame):
    """A DuckDB connection (UTC) with ``seqs`` (stem -> commit seq) and the given frames registered."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("seqs", pd.DataFrame([(c["stem"], c["seq"]) for c in read_commits(lake_dir)], columns=["stem", "seq"]))
    for name, frame in frames.items():
        con.register(name, frame)
    return con


def _ids(values) -> pd.DataFrame:
    return pd.DataFrame({"order_id": sorted(values)}, dtype="string")


def _paths(paths: list[Path]) -> str:
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"


def _returned_units_sql(files: list[Path], where: str = "true") -> str:
    """Units per (order_id, item_id) taken by the lake's returns (the latest export's copy of each
    return_id, as dbt's stg_lake__returns), leaving out the cancellations in table ``skip_canc``."""
    return f"""
        select order_id, item_id, sum(quantity) as units from (
            select r.*, s.seq from read_parquet({_paths(files)}, filename=true) r
            join seqs s on s.stem = parse_filename(r.filename, true)
            where {where} and split_part(r.return_id, '|', 1) not in (select order_id from skip_canc)
            qualify row_number() over (partition by return_id order by s.seq desc) = 1
        ) group by 1, 2"""


def earlier_lines(lake_dir: Path) -> EarlierLines:
    return EarlierLines(lake_dir)


def _returned(lake_dir: Path, orders: set[str], skip_cancellations: set[str]) -> pd.DataFrame:
    files = committed_files(lake_dir, "returns")
    if not files or not orders:
        return pd.DataFrame(columns=["order_id", "item_id", "units"])
    con = _connect(lake_dir, wanted=_ids(orders), skip_canc=_ids(skip_cancellations))
    try:
        return con.execute(_returned_units_sql(files, "r.order_id in (select order_id from wanted)")).df()
    finally:
        con.close()


def remaining_units(
    lake_dir: Path, items: list[str], *, skip_orders: set[str] = frozenset(), skip_cancellations: set[str] = frozenset()
) -> pd.DataFrame:
    """Per lake order x item among ``items``: the customer, the order time and the units not returned
    yet (``left`` > 0). Orders in ``skip_orders`` (the new export re-sends them) and returns recorded
    by cancellation orders in ``skip_cancellations`` (the new export re-matches them) are left out."""
    lines, orders = committed_files(lake_dir, "order_lines"), committed_files(lake_dir, "orders")
    if not items or not lines or not orders:
        return pd.DataFrame(columns=COLUMNS)
    returns = committed_files(lake_dir, "returns")
    con = _connect(
        lake_dir, wanted=pd.DataFrame({"item_id": list(items)}), skip_orders=_ids(skip_orders), skip_canc=_ids(skip_cancellations)
    )
    try:
        files = _paths
        returned = "select null::varchar as order_id, null::varchar as item_id, 0 as units where false"
        if returns:
            returned = _returned_units_sql(returns)
        return con.execute(f"""
            with l as (
                select l.order_id, l.item_id, l.quantity, coalesce(l.returned_quantity, 0) as own, s.seq,
                       row_number() over (partition by s.stem, l.order_id, l.item_id order by l.line_number) as n
                from read_parquet({files(lines)}, filename=true) l
                join seqs s on s.stem = parse_filename(l.filename, true)
                where l.item_id in (select item_id from wanted)
                  and l.order_id not in (select order_id from skip_orders)
            ),
            latest as (
                select * from l qualify row_number() over (partition by order_id, item_id, n order by seq desc) = 1
            ),
            per_item as (
                select order_id, item_id, sum(quantity - least(quantity, own)) as capacity
                from latest group by 1, 2
            ),
            o as (
                select o.order_id, o.user_id, o.ordered_at
                from read_parquet({files(orders)}, filename=true) o
                join seqs s on s.stem = parse_filename(o.filename, true)
                where o.order_id in (select order_id from per_item)
                qualify row_number() over (partition by o.order_id order by s.seq desc) = 1
            ),
            returned as ({returned})
            select o.user_id, p.item_id, p.order_id, o.ordered_at as timestamp,
                   p.capacity - coalesce(r.units, 0) as "left"
            from per_item p
            join o using (order_id)
            left join returned r on r.order_id = p.order_id and r.item_id = p.item_id
            where p.capacity - coalesce(r.units, 0) > 0
        """).df()[COLUMNS]
    finally:
        con.close()
