"""The lake contract: conforming frames, the lake writer's replace-not-append rule, the status file."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml import contract


def _events(n: int, day: str = "2024-03-01") -> pd.DataFrame:
    ts = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(range(n), unit="min")
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": "u1",
            "session_id": "s1",
            "event_type": "view",
            "event_timestamp": ts,
            "event_date": ts.date,
            "item_id": "i1",
        }
    )


def test_conform_orders_columns_and_fills_optional():
    table = contract.conform("events", _events(3))
    assert table.schema == contract.table("events").schema
    assert table.column("search_query").null_count == 3


def test_conform_names_missing_required_column():
    with pytest.raises(ValueError, match="session_id"):
        contract.conform("events", _events(2).drop(columns=["session_id"]))


def test_write_table_partitions_by_day_and_replaces_same_stem(tmp_path):
    frame = pd.concat([_events(2, "2024-03-01"), _events(3, "2024-03-02").assign(event_id=lambda d: "x" + d.event_id)])
    written = contract.write_table(tmp_path, "events", frame, file_stem="gen")
    assert sorted(p.parent.name for p in written) == ["event_date=2024-03-01", "event_date=2024-03-02"]
    contract.write_table(tmp_path, "events", frame, file_stem="gen")  # same writer again: replaced, not added
    files = list((tmp_path / "events").glob("**/*.parquet"))
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in files) == 5


def test_finalize_lake_records_presence_and_writes_schema_files(tmp_path):
    contract.write_table(tmp_path, "events", _events(4), file_stem="gen")
    status = contract.finalize_lake(tmp_path)
    assert status["tables"]["events"] == {"present": True, "rows": 4, "files": 1}
    assert status["tables"]["orders"]["present"] is False
    assert status["missing_required"] == []
    empty = pq.read_table(tmp_path / "orders" / contract.EMPTY_FILE)
    assert empty.num_rows == 0 and empty.schema == contract.table("orders").schema
    with pytest.raises(contract.MissingTableError, match="orders"):
        contract.require_tables(tmp_path, "events", "orders", stage="demand forecasting")
    contract.require_tables(tmp_path, "events", stage="activity features")


def test_empty_lake_is_flagged(tmp_path):
    assert contract.finalize_lake(tmp_path)["missing_required"] == ["orders or events"]


def test_partition_column_matches_folder(tmp_path):
    contract.write_table(tmp_path, "events", _events(2, "2024-05-07"), file_stem="gen")
    (path,) = (tmp_path / "events").glob("**/gen.parquet")
    assert pq.read_table(path).column("event_date").to_pylist() == [dt.date(2024, 5, 7)] * 2


def test_docs_tables_are_current():
    assert contract.render_docs(contract.DOCS_PATH.read_text()) == contract.DOCS_PATH.read_text(), (
        "docs/data_contract.md is stale: run `ecomml contract --update-docs`"
    )


def test_a_lake_from_before_a_new_table_gets_its_schema_file(tmp_path):
    import pyarrow.parquet as pq

    from ml.contract import EMPTY_FILE, TABLES, ensure_schema_files, finalize_lake, table_dir

    finalize_lake(tmp_path)
    newest = next(iter(TABLES.values()))
    target = table_dir(tmp_path, newest.name)
    (target / EMPTY_FILE).unlink()
    target.rmdir()  # the lake predates this table
    assert ensure_schema_files(tmp_path) == [target / EMPTY_FILE]
    assert pq.read_schema(target / EMPTY_FILE).names == newest.schema.names
    assert ensure_schema_files(tmp_path) == []  # idempotent; existing folders are never touched
