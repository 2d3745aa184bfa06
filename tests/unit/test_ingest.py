"""Ingestion on tiny files made in tmp_path: every bad-input class, every file error, value maps,
time zones, sessions, session-as-user, idempotency, and read == accepted + quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml.ingest import IngestError, ingest_file, ingest_landing
from ml.ingest.quarantine import LEDGER

RETAIL_COLUMNS = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]


def retail_row(
    invoice="500001",
    code="85048",
    qty=2,
    when="2010-01-05 10:00:00",
    price=1.5,
    customer=12345.0,
    country="United Kingdom",
    desc="GLASS BALL",
):
    return [invoice, code, desc, qty, when, price, customer, country]


def write_csv(path: Path, rows, columns=RETAIL_COLUMNS, **kw) -> Path:
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False, **kw)
    return path


def dirs(tmp_path):
    return {"lake_dir": tmp_path / "lake", "quarantine_dir": tmp_path / "quarantine"}


def lake(tmp_path, table) -> pd.DataFrame:
    files = [p for p in (tmp_path / "lake" / table).glob("**/ing-*.parquet")]
    return pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True) if files else pd.DataFrame()


def assert_balanced(report):
    d = report.to_dict()
    assert d["read"] == d["accepted"] + d["quarantined"]
    assert d["quarantined"] == sum(d["by_reason"].values())


# --------------------------------------------------------------------------------- bad-input classes
@pytest.mark.parametrize(
    "row, reason",
    [
        (retail_row(customer=None), "missing_key:user_id"),
        (retail_row(code=None), "missing_key:item_id"),
        (retail_row(when="yesterday-ish"), "bad_timestamp"),
        (retail_row(when=None), "missing_key:timestamp"),
        (retail_row(qty="two"), "bad_type:quantity"),
        (retail_row(qty=1.5), "bad_type:quantity"),
        (retail_row(price="cheap"), "bad_type:price"),
        (retail_row(when="2099-01-01 00:00:00"), "future_timestamp"),
        (retail_row(code="POST"), "non_product_code"),
        (retail_row(code="BANK CHARGES"), "non_product_code"),
        (retail_row(code="gift_0001_20"), "non_product_code"),
        (retail_row(code="TEST001"), "non_product_code"),
        (retail_row(price=0.0), "invalid_price"),
        (retail_row(price=-3.0), "invalid_price"),
        (retail_row(qty=-4), "invalid_quantity"),
        (retail_row(invoice="C500009", qty=-1), "cancellation_unmatched"),
    ],
)
def test_each_bad_row_is_quarantined_with_its_reason(tmp_path, row, reason):
    good = retail_row(invoice="500000", code="22041")
    path = write_csv(tmp_path / "x.csv", [good, row])
    report = ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {reason: 1}
    assert (report.read, report.accepted, report.quarantined) == (2, 1, 1)
    assert_balanced(report)
    q = pd.read_parquet(tmp_path / "quarantine" / report.sha256[:12] / "rows.parquet")
    assert q["reason"].tolist() == [reason]
    assert q["source_row"].tolist() == [1]
    assert set(RETAIL_COLUMNS) <= set(q.columns)  # the original row travels with its reason
    saved = json.loads((tmp_path / "quarantine" / report.sha256[:12] / "report.json").read_text())
    assert saved["by_reason"] == {reason: 1}


def test_exact_duplicate_lines_keep_the_first(tmp_path):
    rows = [retail_row(), retail_row(), retail_row(qty=3)]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {"duplicate": 1}
    assert len(lake(tmp_path, "order_lines")) == 2


def test_cancellation_is_matched_to_its_original_line(tmp_path):
    rows = [
        retail_row(invoice="500001", code="A1", qty=10, when="2010-01-05 10:00:00"),
        retail_row(invoice="500002", code="A1", qty=2, when="2010-01-06 10:00:00"),
        retail_row(invoice="500003", code="B2", qty=1, when="2010-01-06 10:00:00"),
        # cancels 3 of A1: the latest earlier line with enough quantity is 500001 (500002 has only 2)
        retail_row(invoice="C500004", code="A1", qty=-3, when="2010-01-07 10:00:00"),
        # cancels 1 of B2: then 500003 is fully cancelled
        retail_row(invoice="C500005", code="B2", qty=-1, when="2010-01-07 11:00:00"),
        # nothing left of B2 to cancel, another customer's A1 does not count
        retail_row(invoice="C500006", code="B2", qty=-1, when="2010-01-07 12:00:00"),
        retail_row(invoice="C500007", code="A1", qty=-1, when="2010-01-07 12:00:00", customer=999.0),
        # a cancellation before any purchase matches nothing
        retail_row(invoice="C500008", code="A1", qty=-1, when="2010-01-01 12:00:00"),
    ]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {"cancellation_matched": 2, "cancellation_unmatched": 3}
    # each matched cancellation line is a row of the returns table naming the original order; the
    # lines keep their own quantity (dbt adds the returns: tests/integration/test_lake_exports.py)
    returns = lake(tmp_path, "returns").sort_values("return_id")
    assert returns[["return_id", "order_id", "item_id", "quantity"]].values.tolist() == [
        ["C500004|A1|1", "500001", "A1", 3],
        ["C500005|B2|1", "500003", "B2", 1],
    ]
    lines = lake(tmp_path, "order_lines").set_index("order_id")
    assert (lines["returned_quantity"] == 0).all()
    assert not lines.index.str.startswith("C").any()


def test_cancellation_matches_a_purchase_of_an_earlier_export(tmp_path):
    """A January credit note returns units of a December invoice ingested from another file."""
    ingest_file(
        write_csv(tmp_path / "dec.csv", [retail_row(invoice="500001", code="A1", qty=4, when="2009-12-05 10:00:00")]),
        "online_retail_ii",
        **dirs(tmp_path),
    )
    jan = [
        retail_row(invoice="C500009", code="A1", qty=-3, when="2010-01-07 10:00:00"),
        retail_row(invoice="C500010", code="A1", qty=-2, when="2010-01-08 10:00:00"),
    ]  # only 1 left: unmatched
    report = ingest_file(write_csv(tmp_path / "jan.csv", jan), "online_retail_ii", **dirs(tmp_path))
    assert report.by_reason == {"cancellation_matched": 1, "cancellation_unmatched": 1}
    assert lake(tmp_path, "returns")[["return_id", "order_id", "quantity"]].values.tolist() == [["C500009|A1|1", "500001", 3]]
    # the same credit notes re-sent with the next export are matched again, not twice
    report = ingest_file(
        write_csv(tmp_path / "jan2.csv", jan + [retail_row(invoice="500011", when="2010-01-09 10:00:00")]),
        "online_retail_ii",
        **dirs(tmp_path),
    )
    assert report.by_reason == {"cancellation_matched": 1, "cancellation_unmatched": 1}


def test_filters_quarantine_the_rows_they_drop(tmp_path):
    mapping = tmp_path / "m.yaml"
    text = (Path(__file__).resolve().parents[2] / "ml/ingest/presets/online_retail_ii.yaml").read_text()
    mapping.write_text(text + "filters:\n  - {field: country, op: in, value: [France]}\n")
    rows = [retail_row(country="France"), retail_row(code="22041", country="Germany")]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), mapping, **dirs(tmp_path))
    assert report.by_reason == {"filtered:country": 1}
    assert lake(tmp_path, "warehouses")["warehouse_id"].tolist() == ["france"]


def test_retail_tables_ids_and_dims(tmp_path):
    rows = [
        retail_row(invoice="500001", code="85048", desc="GLASS BALL", customer=13085.0, country="France"),
        retail_row(invoice="500001", code="85048", desc="glass ball", qty=5, customer=13085.0, country="France"),
        retail_row(invoice="500002", code="85048", desc="GLASS BALL", customer=13086.0),
    ]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path))
    assert report.tables == {"items": 1, "order_lines": 3, "orders": 2, "users": 2, "warehouses": 2}
    users = lake(tmp_path, "users").set_index("user_id")
    assert sorted(users.index) == ["13085", "13086"]  # no '.0' from the float column
    assert users.loc["13085", "country"] == "France" and users.loc["13085", "region"] == "France"
    items = lake(tmp_path, "items")
    assert items["title"].tolist() == ["GLASS BALL"]  # the most frequent description
    wh = lake(tmp_path, "warehouses").set_index("warehouse_id")
    assert wh.loc["united_kingdom", "region"] == "United Kingdom"
    lines = lake(tmp_path, "order_lines").sort_values(["order_id", "line_number"])
    assert lines["line_number"].tolist() == [1, 2, 1]
    orders = lake(tmp_path, "orders").set_index("order_id")
    assert orders.loc["500001", "warehouse_id"] == "france"
    manifest = json.loads((tmp_path / "lake" / "_lake.json").read_text())
    assert manifest["tables"]["orders"]["rows"] == 2
    assert (tmp_path / "lake" / "events" / "_empty.parquet").exists()


# --------------------------------------------------------------------------------- time zones
def test_naive_local_time_is_converted_to_utc(tmp_path):
    rows = [
        retail_row(invoice="1", when="2010-07-01 08:30:00"),  # BST (UTC+1)
        retail_row(invoice="2", when="2010-01-05 23:30:00"),  # GMT
        retail_row(invoice="3", when="2010-06-30 00:30:00"),  # BST: previous UTC day
    ]
    ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path))
    orders = lake(tmp_path, "orders").set_index("order_id")
    assert str(orders["ordered_at"].dt.tz) == "UTC"
    assert orders.loc["1", "ordered_at"] == pd.Timestamp("2010-07-01 07:30", tz="UTC")
    assert orders.loc["2", "ordered_at"] == pd.Timestamp("2010-01-05 23:30", tz="UTC")
    assert str(orders.loc["3", "order_date"]) == "2010-06-29"
    assert str(lake(tmp_path, "order_lines").set_index("order_id").loc["3", "order_date"]) == "2010-06-29"


# --------------------------------------------------------------------------------- REES46
REES_COLUMNS = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id", "user_session"]


def rees_rows():
    s1, s2 = "26dd6e6e-4dac-4778-8d2c-92e149dab885", "3c80f0d6-e9ec-4181-8c5c-837a30be2d68"
    return [
        ["2019-10-01 00:00:00 UTC", "view", 44600062, 2103807459595387724, "", "shiseido", 35.79, 541312140, s1],
        [
            "2019-10-01 00:00:05 UTC",
            "cart",
            3900821,
            2053013552326770905,
            "appliances.environment.water_heater",
            "aqua",
            33.20,
            554748717,
            s2,
        ],
        [
            "2019-10-01 00:01:00 UTC",
            "purchase",
            3900821,
            2053013552326770905,
            "appliances.environment.water_heater",
            "aqua",
            33.20,
            554748717,
            s2,
        ],
        ["2019-10-01 00:02:00 UTC", "purchase", 1004258, 2053013555631882655, "electronics.smartphone", "apple", 732.07, 554748717, s2],
        [
            "2019-10-01 00:03:00 UTC",
            "remove_from_cart",
            1004258,
            2053013555631882655,
            "electronics.smartphone",
            "apple",
            0.0,
            554748717,
            s2,
        ],
        ["2019-10-01 00:04:00 UTC", "wishlist", 1004258, 2053013555631882655, "electronics.smartphone", "apple", 732.07, 554748717, s2],
    ]


def test_rees46_events_items_and_orders(tmp_path):
    path = write_csv(tmp_path / "2019-Oct.csv", rees_rows(), columns=REES_COLUMNS)
    report = ingest_file(path, "rees46", **dirs(tmp_path))
    assert report.by_reason == {"unknown_event_type": 1}
    assert_balanced(report)
    events = lake(tmp_path, "events")
    assert sorted(events["event_type"]) == ["add_to_cart", "purchase", "purchase", "remove_from_cart", "view"]
    assert events["event_timestamp"].min() == pd.Timestamp("2019-10-01 00:00:00", tz="UTC")
    assert events["session_id"].nunique() == 2 and events["event_id"].is_unique
    assert events.loc[events["event_type"] == "remove_from_cart", "price"].isna().all()  # 0 shown price -> null
    items = lake(tmp_path, "items").set_index("item_id")
    assert items.loc["3900821", ["category_l1", "category_l2", "category_l3"]].tolist() == ["appliances", "environment", "water_heater"]
    assert items.loc["1004258", "category_l2"] == "smartphone" and pd.isna(items.loc["1004258", "category_l3"])
    assert pd.isna(items.loc["44600062", "category_l1"]) and items.loc["1004258", "brand"] == "apple"
    orders, lines = lake(tmp_path, "orders"), lake(tmp_path, "order_lines")
    assert len(orders) == 1 and orders["order_id"][0] == rees_rows()[1][-1]  # one order per session
    assert sorted(lines["line_number"]) == [1, 2] and (lines["quantity"] == 1).all()
    assert sorted(lines["unit_price"]) == [33.20, 732.07]
    purchases = events[events["event_type"] == "purchase"]
    assert (purchases["order_id"] == orders["order_id"][0]).all()


# --------------------------------------------------------------------------------- RetailRocket
def test_retailrocket_value_maps_sessions_and_transactions(tmp_path):
    t0 = 1433221332117  # unix ms
    minute = 60_000
    rows = [
        [t0, 257597, "view", 355908, ""],
        [t0 + 10 * minute, 257597, "addtocart", 355908, ""],
        [t0 + 20 * minute, 257597, "transaction", 355908, 4000],
        [t0 + 20 * minute, 257597, "transaction", 248676, 4000],
        [t0 + 90 * minute, 257597, "view", 355908, ""],  # > 30 idle minutes: a new session
        [t0, 992329, "view", 248676, ""],
        [t0 + 5 * minute, 992329, "transaction", 248676, ""],  # a transaction without its id
    ]
    path = write_csv(tmp_path / "events.csv", rows, columns=["timestamp", "visitorid", "event", "itemid", "transactionid"])
    report = ingest_file(path, "retailrocket", **dirs(tmp_path))
    assert report.by_reason == {"missing_key:order_id": 1}
    events = lake(tmp_path, "events")
    assert set(events["event_type"]) == {"view", "add_to_cart", "purchase"}
    assert events["event_timestamp"].min() == pd.Timestamp(t0, unit="ms", tz="UTC")
    sessions = events.groupby("user_id")["session_id"].nunique()
    assert sessions.to_dict() == {"257597": 2, "992329": 1}
    orders, lines = lake(tmp_path, "orders"), lake(tmp_path, "order_lines")
    assert orders["order_id"].tolist() == ["4000"] and orders["user_id"].tolist() == ["257597"]
    assert len(lines) == 2 and lines["unit_price"].isna().all() and (lines["quantity"] == 1).all()


# --------------------------------------------------------------------------------- session as user
def test_sessions_stand_in_for_users(tmp_path):
    mapping = tmp_path / "sessions_only.yaml"
    mapping.write_text(
        "columns: {timestamp: ts, session_id: sid, item_id: sku, event_type: kind}\n"
        "user_from_session: true\n"
        "value_maps: {event_type: {click: view}}\n"
        "produces: [events, users]\n"
    )
    rows = [
        ["2020-01-01T10:00:00Z", "s1", "a", "click"],
        ["2020-01-01T10:01:00Z", "s1", "b", "click"],
        ["2020-01-01T11:00:00Z", "s2", "a", "search"],
        ["2020-01-01T11:00:00Z", "", "a", "click"],
    ]
    path = write_csv(tmp_path / "log.csv", rows, columns=["ts", "sid", "sku", "kind"])
    report = ingest_file(path, mapping, **dirs(tmp_path))
    assert report.by_reason == {"missing_key:session_id": 1}
    events = lake(tmp_path, "events")
    assert (events["user_id"] == events["session_id"]).all()
    assert sorted(lake(tmp_path, "users")["user_id"]) == ["s1", "s2"]


# --------------------------------------------------------------------------------- RecBole atomic
def test_movielens_atomic_with_side_files(tmp_path):
    (tmp_path / "ml.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t881250949\n1\t11\t3\t881250950\n2\t10\t5\t891717742\n1\t12\t2\t881350949\n"
    )
    (tmp_path / "ml.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Comedy\n11\tHeat\t1995\tAction\n12\tCasino\t1995\tDrama\n13\tNever rated\t1990\tDrama\n"
    )
    (tmp_path / "ml.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n"
    )
    report = ingest_file(tmp_path / "ml.inter", "movielens_atomic", **dirs(tmp_path))
    assert report.tables == {"events": 4, "items": 4, "users": 2}
    events = lake(tmp_path, "events")
    assert (events["event_type"] == "view").all() and sorted(events["rating"]) == [2, 3, 4, 5]
    assert events.groupby("user_id")["session_id"].nunique().to_dict() == {"1": 2, "2": 1}  # per user-day
    users = lake(tmp_path, "users").set_index("user_id")
    assert users.loc["1", "birth_year"] == 1997 - 24 and users.loc["2", "gender"] == "F"
    items = lake(tmp_path, "items").set_index("item_id")
    assert items.loc["10", "title"] == "Toy Story" and items.loc["10", "category_l1"] == "Animation Comedy"


# --------------------------------------------------------------------------------- file errors
def assert_nothing_written(tmp_path):
    for folder in ("lake", "quarantine"):
        root = tmp_path / folder
        assert not root.exists() or not any(root.rglob("*")), f"{folder} was written to"


def test_missing_required_column_names_file_and_column(tmp_path):
    frame = pd.DataFrame([retail_row()], columns=RETAIL_COLUMNS).drop(columns=["Customer ID"])
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(IngestError, match=r"export\.csv.*'Customer ID'"):
        ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("content, message", [(b"", "empty"), (",".join(RETAIL_COLUMNS).encode() + b"\n", "no rows")])
def test_empty_files(tmp_path, content, message):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(IngestError, match=rf"empty\.csv.*{message}"):
        ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    assert_nothing_written(tmp_path)


def test_wrong_encoding_is_a_clear_error_and_the_right_one_reads(tmp_path):
    path = write_csv(tmp_path / "latin.csv", [retail_row(desc="CRÈME BRÛLÉE SET", country="Österreich")], encoding="latin-1")
    with pytest.raises(IngestError, match=r"latin\.csv: not valid utf-8.*csv\.encoding"):
        ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    assert_nothing_written(tmp_path)
    mapping = tmp_path / "latin.yaml"
    preset = (Path(__file__).resolve().parents[2] / "ml/ingest/presets/online_retail_ii.yaml").read_text()
    mapping.write_text(preset + "csv:\n  encoding: latin-1\n")
    ingest_file(path, mapping, **dirs(tmp_path))
    assert lake(tmp_path, "items")["title"].tolist() == ["CRÈME BRÛLÉE SET"]


def test_a_bad_byte_deep_in_the_file_is_named_by_its_file_offset_and_line(tmp_path):
    rows = [retail_row(invoice=f"5{i:05d}") for i in range(300)] + [retail_row(desc="CRÈME")]
    path = write_csv(tmp_path / "latin.csv", rows, encoding="latin-1")
    offset = path.read_bytes().index("È".encode("latin-1"))
    with pytest.raises(IngestError, match=rf"not valid utf-8 text at byte {offset:,} \(line 302\)"):
        ingest_file(path, "online_retail_ii", **dirs(tmp_path))


def test_unreadable_xlsx(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(IngestError, match=r"broken\.xlsx: cannot read as xlsx"):
        ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    assert_nothing_written(tmp_path)


def test_xlsx_and_parquet_read_like_csv(tmp_path):
    rows = [retail_row(), retail_row(invoice="500002", code="22041", customer=None), retail_row(code="POST")]
    frame = pd.DataFrame(rows, columns=RETAIL_COLUMNS)
    reports = {}
    for suffix in ("csv", "parquet", "xlsx"):
        path = tmp_path / f"x.{suffix}"
        if suffix == "xlsx":
            frame.assign(InvoiceDate=pd.to_datetime(frame["InvoiceDate"])).to_excel(path, index=False)
        else:
            getattr(frame, f"to_{suffix}")(path, index=False)
        reports[suffix] = ingest_file(path, "online_retail_ii", **dirs(tmp_path / suffix)).to_dict()
    assert {k: (r["accepted"], r["by_reason"]) for k, r in reports.items()} == {
        k: (1, {"missing_key:user_id": 1, "non_product_code": 1}) for k in reports
    }
    for suffix in reports:
        assert lake(tmp_path / suffix, "users")["user_id"].tolist() == ["12345"]


# --------------------------------------------------------------------------------- idempotency
def counts(tmp_path):
    return {t: len(lake(tmp_path, t)) for t in ("orders", "order_lines", "users", "items", "warehouses")}


def test_reingest_adds_nothing(tmp_path):
    path = write_csv(tmp_path / "x.csv", [retail_row(), retail_row(invoice="500002", code="22041")])
    first = ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    before = counts(tmp_path)
    second = ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    assert second.skipped and not first.skipped
    assert second.to_dict() | {"skipped": False} == first.to_dict()
    assert counts(tmp_path) == before
    forced = ingest_file(path, "online_retail_ii", **dirs(tmp_path), force=True)
    assert not forced.skipped and counts(tmp_path) == before
    ledger = (tmp_path / "lake" / LEDGER).read_text().splitlines()
    assert len(ledger) == 2  # first + forced; the skipped call records nothing


def test_ingest_landing_takes_only_new_files(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    write_csv(landing / "a.csv", [retail_row()])
    first = ingest_landing(landing, "online_retail_ii", **dirs(tmp_path))
    assert [Path(r.file).name for r in first] == ["a.csv"]
    write_csv(landing / "b.csv", [retail_row(invoice="500009", code="22041")])
    second = ingest_landing(landing, "online_retail_ii", **dirs(tmp_path))
    assert [Path(r.file).name for r in second] == ["b.csv"]
    assert ingest_landing(landing, "online_retail_ii", **dirs(tmp_path)) == []
    assert counts(tmp_path)["orders"] == 2


def test_ingest_landing_reports_a_bad_file_after_the_good_ones(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    write_csv(landing / "a.csv", [retail_row()])
    (landing / "b.csv").write_bytes(b"")
    write_csv(landing / "c.csv", [retail_row(invoice="500002", qty="inf")])  # one bad cell: a quarantined row
    with pytest.raises(IngestError, match=r"(?s)1 of 3 new file\(s\).*b\.csv.*empty") as err:
        ingest_landing(landing, "online_retail_ii", **dirs(tmp_path))
    assert counts(tmp_path)["orders"] == 1
    assert [Path(f).name for f, _ in err.value.failed] == ["b.csv"]
    assert (landing / "_failed" / "b.csv").exists() and not (landing / "b.csv").exists()
    assert "empty" in (landing / "_failed" / "b.csv.error.txt").read_text()
    assert [r.by_reason for r in err.value.reports] == [{}, {"bad_type:quantity": 1}]
    assert ingest_landing(landing, "online_retail_ii", **dirs(tmp_path)) == []  # the failed file is not retried
