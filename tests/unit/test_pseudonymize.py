"""Pseudonymisation of user ids at ingestion: the keyed hash itself, normalisation before hashing,
every user-bearing preset on tiny files, the lake's id-space record, and the key never shown or
written. The real samples go through it in tests/integration/test_pseudonymize_ingest.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest

from ml.ingest import IdSpaceError, IngestError, ingest_file, ingest_landing, load_mapping
from ml.ingest.pseudonymize import MARKER, Pseudonymizer, check_id_space, pseudonymizer_for, read_marker, record_id_space
from ml.ingest.transform import transform
from ml.settings import Secrets, get_secrets, settings_for

KEY_A = "test-key-A-0123456789abcdef0123456789"
KEY_B = "test-key-B-0123456789abcdef0123456789"
USER = re.compile(r"^u_[0-9a-f]{32}$")
SESSION = re.compile(r"^s_[0-9a-f]{32}$")
DERIVED_SESSION = re.compile(r"^u_[0-9a-f]{32}-\d{8}(T\d{6})?$")  # <user pseudonym>-<first event time> / -<YYYYMMDD>

RETAIL_COLUMNS = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]


def retail_row(
    invoice="500001", code="85048", qty=2, when="2010-01-05 10:00:00", price=1.5, customer="cust-7781", country="United Kingdom"
):
    return [invoice, code, "GLASS BALL", qty, when, price, customer, country]


def write_csv(path: Path, rows, columns=RETAIL_COLUMNS) -> Path:
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def dirs(root: Path) -> dict:
    return {"lake_dir": root / "lake", "quarantine_dir": root / "quarantine"}


def lake(root: Path, table: str) -> pd.DataFrame:
    files = sorted((root / "lake" / table).glob("**/ing-*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True) if files else pd.DataFrame()


def string_values(root: Path) -> set[str]:
    """Every string value of every Parquet file under ``root`` (lake and quarantine)."""
    values: set[str] = set()
    for path in root.rglob("*.parquet"):
        table = pq.read_table(path)
        for name in table.column_names:
            if pa.types.is_string(table.schema.field(name).type) or pa.types.is_large_string(table.schema.field(name).type):
                values.update(v for v in table[name].to_pylist() if v is not None)
    return values


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------- the keyed hash
def test_pseudonym_is_prefixed_truncated_hmac_sha256():
    pz = Pseudonymizer(KEY_A)
    expected = hmac.new(KEY_A.encode(), b"13085", hashlib.sha256).hexdigest()[:32]
    assert pz.pseudonym("13085") == "u_" + expected
    assert pz.pseudonym("13085", "session_id") == "s_" + expected
    assert USER.match(pz.pseudonym("13085"))


def test_deterministic_and_key_dependent():
    ids = pd.Series(["13085", "13086", "13085"], dtype="string")
    first, again = Pseudonymizer(KEY_A).pseudonymize(ids), Pseudonymizer(KEY_A).pseudonymize(ids)
    other = Pseudonymizer(KEY_B).pseudonymize(ids)
    assert first.tolist() == again.tolist()
    assert first[0] == first[2] != first[1]
    assert not set(first) & set(other)
    assert Pseudonymizer(KEY_A).fingerprint != Pseudonymizer(KEY_B).fingerprint


def test_nulls_stay_null_and_no_raw_id_survives():
    ids = pd.Series(["13085", pd.NA, "cust-7781"], dtype="string", index=[10, 11, 12])
    out = Pseudonymizer(KEY_A).pseudonymize(ids)
    assert out.index.tolist() == [10, 11, 12] and str(out.dtype) == "string"
    assert pd.isna(out[11])
    for raw, pseudonym in zip(["13085", "cust-7781"], out.dropna()):
        assert USER.match(pseudonym) and raw not in pseudonym


def test_key_is_never_shown_or_pickled():
    pz = Pseudonymizer(KEY_A)
    assert KEY_A not in repr(pz) and KEY_A not in str(pz)
    with pytest.raises(TypeError):
        pickle.dumps(pz)
    with pytest.raises(ValueError) as err:
        Pseudonymizer("short-secret-key")
    assert "short-secret-key" not in str(err.value)


def test_no_key_means_no_pseudonymizer(monkeypatch):
    monkeypatch.delenv("PSEUDONYMIZE_KEY", raising=False)
    get_secrets.cache_clear()
    try:
        assert pseudonymizer_for(None) is None
        assert pseudonymizer_for() is None
        assert pseudonymizer_for(KEY_A).fingerprint == Pseudonymizer(KEY_A).fingerprint
    finally:
        get_secrets.cache_clear()


# --------------------------------------------------------------------------------- settings
def test_key_comes_from_the_environment_and_stays_out_of_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("PSEUDONYMIZE_KEY", KEY_A)
    get_secrets.cache_clear()
    try:
        secrets = get_secrets()
        assert secrets.pseudonymize_key.get_secret_value() == KEY_A
        assert KEY_A not in repr(secrets) and KEY_A not in secrets.model_dump_json()
        assert secrets.subprocess_env() == {"PSEUDONYMIZE_KEY": KEY_A}  # for a child that needs it, explicitly
        assert pseudonymizer_for().fingerprint == Pseudonymizer(KEY_A).fingerprint
        env = settings_for(data_dir=tmp_path).as_env()  # printed by `ecomml settings`, rendered into Feast's yaml
        assert "PSEUDONYMIZE_KEY" not in env and KEY_A not in json.dumps(env)
    finally:
        get_secrets.cache_clear()


def test_short_key_is_refused_without_echoing_it():
    with pytest.raises(pydantic.ValidationError) as err:
        Secrets(pseudonymize_key="too-short-secret")
    assert "too-short-secret" not in str(err.value) and "at least 32" in str(err.value)
    assert Secrets(pseudonymize_key="").pseudonymize_key is None


def test_ingest_reads_the_key_from_the_environment_by_default(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "x.csv", [retail_row()])
    monkeypatch.setenv("PSEUDONYMIZE_KEY", KEY_A)
    get_secrets.cache_clear()
    try:
        report = ingest_file(path, "online_retail_ii", **dirs(tmp_path))
    finally:
        get_secrets.cache_clear()
    assert report.pseudonymized == Pseudonymizer(KEY_A).fingerprint
    assert lake(tmp_path, "users")["user_id"].tolist() == [Pseudonymizer(KEY_A).pseudonym("cust-7781")]


# --------------------------------------------------------------------------------- normalisation
def test_ids_are_normalised_before_hashing(tmp_path):
    """' 13085 ', '13085.0' and 13085.0 are one customer to the ingest, so one pseudonym."""
    rows = [
        retail_row(invoice="500001", customer=" 13085 "),
        retail_row(invoice="500002", customer="13085.0"),
        retail_row(invoice="500003", customer="13086"),
    ]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    assert report.by_reason == {}
    pz = Pseudonymizer(KEY_A)
    orders = lake(tmp_path, "orders").set_index("order_id")["user_id"]
    assert orders.to_dict() == {"500001": pz.pseudonym("13085"), "500002": pz.pseudonym("13085"), "500003": pz.pseudonym("13086")}
    parquet = pd.DataFrame([retail_row(invoice="500004", customer=13085.0)], columns=RETAIL_COLUMNS)
    parquet.to_parquet(tmp_path / "y.parquet")
    ingest_file(tmp_path / "y.parquet", "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    assert lake(tmp_path, "orders").set_index("order_id").loc["500004", "user_id"] == pz.pseudonym("13085")
    assert sorted(lake(tmp_path, "users")["user_id"].unique()) == sorted({pz.pseudonym("13085"), pz.pseudonym("13086")})


def test_checks_run_on_raw_ids_and_cancellations_still_match(tmp_path):
    """Filters and cancellation matching see the normalised raw ids; the lake sees only pseudonyms."""
    rows = [
        retail_row(invoice="500001", qty=3),
        retail_row(invoice="C500002", qty=-1, when="2010-01-06 10:00:00"),
        retail_row(invoice="500003", customer=None),
    ]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    assert report.by_reason == {"cancellation_matched": 1, "missing_key:user_id": 1}
    assert lake(tmp_path, "returns")["quantity"].tolist() == [1]


# --------------------------------------------------------------------------------- every preset
REES_COLUMNS = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id", "user_session"]
REES_SESSIONS = ("26dd6e6e-4dac-4778-8d2c-92e149dab885", "3c80f0d6-e9ec-4181-8c5c-837a30be2d68")


def rees46(root: Path) -> tuple[Path, str, set[str]]:
    s1, s2 = REES_SESSIONS
    rows = [
        ["2019-10-01 00:00:00 UTC", "view", 44600062, 1, "", "shiseido", 35.79, 541312140, s1],
        ["2019-10-01 00:00:05 UTC", "cart", 3900821, 2, "appliances.environment", "aqua", 33.20, 554748717, s2],
        ["2019-10-01 00:01:00 UTC", "purchase", 3900821, 2, "appliances.environment", "aqua", 33.20, 554748717, s2],
        ["2019-10-01 00:04:00 UTC", "wishlist", 1004258, 3, "electronics.smartphone", "apple", 732.07, 554748717, s2],
    ]
    return write_csv(root / "2019-Oct.csv", rows, REES_COLUMNS), "rees46", {"541312140", "554748717", s1, s2}


def retailrocket(root: Path) -> tuple[Path, str, set[str]]:
    t0, minute = 1433221332117, 60_000
    rows = [
        [t0, 257597, "view", 355908, ""],
        [t0 + 10 * minute, 257597, "addtocart", 355908, ""],
        [t0 + 20 * minute, 257597, "transaction", 355908, 4000],
        [t0 + 90 * minute, 257597, "view", 355908, ""],
        [t0, 992329, "view", 248676, ""],
        [t0 + 5 * minute, 992329, "transaction", 248676, ""],
    ]
    path = write_csv(root / "events.csv", rows, ["timestamp", "visitorid", "event", "itemid", "transactionid"])
    return path, "retailrocket", {"257597", "992329"}


def movielens(root: Path) -> tuple[Path, str, set[str]]:
    (root / "ml.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u-301\t10\t4\t881250949\nu-301\t11\t3\t881350949\nu-302\t10\t5\t891717742\n"
    )
    (root / "ml.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n10\tToy Story\tAnimation\n")
    (root / "ml.user").write_text(
        "user_id:token\tage:token\tgender:token\nu-301\t24\tM\nu-302\t53\tF\nu-303\t40\tF\n"
    )  # u-303 rated nothing: added from .user
    return root / "ml.inter", "movielens_atomic", {"u-301", "u-302", "u-303"}


def online_retail(root: Path) -> tuple[Path, str, set[str]]:
    rows = [retail_row(), retail_row(invoice="500002", customer="cust-9912"), retail_row(invoice="500003", customer=None)]
    return write_csv(root / "retail.csv", rows), "online_retail_ii", {"cust-7781", "cust-9912"}


def sessions_as_users(root: Path) -> tuple[Path, str, set[str]]:
    mapping = root / "sessions_only.yaml"
    mapping.write_text("columns: {timestamp: ts, session_id: sid, item_id: sku}\nuser_from_session: true\nproduces: [events, users]\n")
    rows = [
        ["2020-01-01T10:00:00Z", "sess-aa11", "a"],
        ["2020-01-01T10:01:00Z", "sess-aa11", "b"],
        ["2020-01-01T11:00:00Z", "sess-bb22", "a"],
    ]
    return write_csv(root / "log.csv", rows, ["ts", "sid", "sku"]), str(mapping), {"sess-aa11", "sess-bb22"}


@pytest.mark.parametrize("make", [rees46, retailrocket, movielens, online_retail, sessions_as_users])
def test_every_user_bearing_preset_writes_only_pseudonyms(tmp_path, make):
    path, mapping, raw_ids = make(tmp_path)
    ingest_file(path, mapping, **dirs(tmp_path), pseudonymize_key=KEY_A)
    pz = Pseudonymizer(KEY_A)
    tables = {t: lake(tmp_path, t) for t in ("users", "events", "orders")}
    users = set(tables["users"]["user_id"])
    assert users and all(USER.match(u) for u in users)
    for name in ("events", "orders"):
        frame = tables[name]
        if not frame.empty:
            assert frame["user_id"].map(lambda u: bool(USER.match(u))).all()
            assert set(frame["user_id"]) <= users  # the join to users still holds
    if not tables["events"].empty:
        sessions = tables["events"]["session_id"]
        assert sessions.map(lambda s: bool(SESSION.match(s) or DERIVED_SESSION.match(s))).all()
    if mapping == "movielens_atomic":
        assert pz.pseudonym("u-303") in users  # a user only the .user side file lists
    # no raw id, anywhere, as a value or inside one (derived sessions, event ids, the quarantine)
    values = string_values(tmp_path)
    leaks = {raw for raw in raw_ids for v in values if raw in v}
    assert not leaks, f"raw ids in the lake or quarantine: {leaks}"


def test_source_sessions_and_orders_keyed_by_them_share_one_pseudonym(tmp_path):
    path, mapping, _ = rees46(tmp_path)
    ingest_file(path, mapping, **dirs(tmp_path), pseudonymize_key=KEY_A)
    pz = Pseudonymizer(KEY_A)
    events, orders = lake(tmp_path, "events"), lake(tmp_path, "orders")
    assert sorted(events["session_id"].unique()) == sorted(pz.pseudonym(s, "session_id") for s in REES_SESSIONS)
    assert orders["order_id"].tolist() == [pz.pseudonym(REES_SESSIONS[1], "session_id")]  # order_key: session_id
    assert set(events.loc[events["event_type"] == "purchase", "order_id"]) == set(orders["order_id"])


def test_event_ids_are_stable_under_a_key_and_differ_from_raw(tmp_path):
    path, mapping, _ = retailrocket(tmp_path)
    spec, raw = load_mapping(mapping), pd.read_csv(path, dtype=str)
    plain = transform(raw, spec, path=path).tables["events"]["event_id"]
    keyed = transform(raw, spec, path=path, pseudonymizer=Pseudonymizer(KEY_A)).tables["events"]["event_id"]
    again = transform(raw, spec, path=path, pseudonymizer=Pseudonymizer(KEY_A)).tables["events"]["event_id"]
    assert keyed.tolist() == again.tolist() and keyed.is_unique
    assert not set(keyed) & set(plain)  # an unkeyed hash of the raw row would let a guessed visitor id be tested


def test_quarantined_rows_keep_pseudonyms_not_raw_ids(tmp_path):
    rows = [retail_row(), retail_row(invoice="500002", code="POST", customer="cust-5550")]
    report = ingest_file(write_csv(tmp_path / "x.csv", rows), "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    quarantine = pd.read_parquet(tmp_path / "quarantine" / report.sha256[:12] / "rows.parquet")
    assert quarantine["reason"].tolist() == ["non_product_code"]
    assert quarantine["Customer ID"].tolist() == [Pseudonymizer(KEY_A).pseudonym("cust-5550")]


def test_without_a_key_nothing_changes(tmp_path):
    """No key: raw ids, no marker, the report as before, and transform's output identical to before."""
    path, mapping, _ = online_retail(tmp_path)
    report = ingest_file(path, mapping, **dirs(tmp_path), pseudonymize_key=None)
    assert "pseudonymized" not in report.to_dict()
    assert not (tmp_path / "lake" / MARKER).exists()
    assert sorted(lake(tmp_path, "users")["user_id"]) == ["cust-7781", "cust-9912"]
    spec, raw = load_mapping(mapping), pd.read_csv(path, dtype=str)
    default, explicit = transform(raw, spec, path=path), transform(raw, spec, path=path, pseudonymizer=None)
    for name, frame in default.tables.items():
        pd.testing.assert_frame_equal(frame, explicit.tables[name])
    pd.testing.assert_frame_equal(default.quarantine, explicit.quarantine)


# --------------------------------------------------------------------------------- the id space
def test_marker_records_the_fingerprint_never_the_key(tmp_path):
    path, mapping, _ = online_retail(tmp_path)
    report = ingest_file(path, mapping, **dirs(tmp_path), pseudonymize_key=KEY_A)
    marker = read_marker(tmp_path / "lake")
    expected = hmac.new(KEY_A.encode(), b"fingerprint", hashlib.sha256).hexdigest()[:8]
    assert marker["key_fingerprint"] == expected == report.pseudonymized
    assert marker["user_ids"] == "pseudonymized"
    assert KEY_A.encode() not in all_bytes(tmp_path)  # lake, quarantine, ledger, marker, source


@pytest.mark.parametrize("second_key", [KEY_B, None], ids=["another_key", "no_key"])
def test_a_pseudonymised_lake_refuses_another_id_space(tmp_path, second_key):
    ingest_file(write_csv(tmp_path / "a.csv", [retail_row()]), "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    before = snapshot(tmp_path / "lake")
    other = write_csv(tmp_path / "b.csv", [retail_row(invoice="500009", customer="cust-1234")])
    with pytest.raises(IdSpaceError, match="fresh LAKE_DIR") as err:
        ingest_file(other, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=second_key)
    assert Pseudonymizer(KEY_A).fingerprint in str(err.value) and KEY_B not in str(err.value)
    assert snapshot(tmp_path / "lake") == before  # nothing written
    ingest_file(other, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)  # the same key is fine
    assert len(lake(tmp_path, "orders")) == 2


def test_a_raw_lake_refuses_pseudonyms(tmp_path):
    ingest_file(write_csv(tmp_path / "a.csv", [retail_row()]), "online_retail_ii", **dirs(tmp_path), pseudonymize_key=None)
    other = write_csv(tmp_path / "b.csv", [retail_row(invoice="500009")])
    with pytest.raises(IdSpaceError, match="holds raw user ids"):
        ingest_file(other, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    assert not (tmp_path / "lake" / MARKER).exists()
    assert lake(tmp_path, "orders")["user_id"].tolist() == ["cust-7781"]


def test_skipped_file_still_checks_the_key(tmp_path):
    path = write_csv(tmp_path / "a.csv", [retail_row()])
    ingest_file(path, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    with pytest.raises(IdSpaceError):
        ingest_file(path, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_B)


def test_rewriting_every_user_row_may_change_the_id_space(tmp_path):
    """A forced re-ingest of the lake's only file replaces all of its user rows: nothing to mix with."""
    path = write_csv(tmp_path / "a.csv", [retail_row()])
    ingest_file(path, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    ingest_file(path, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_B, force=True)
    assert read_marker(tmp_path / "lake")["key_fingerprint"] == Pseudonymizer(KEY_B).fingerprint
    assert lake(tmp_path, "users")["user_id"].tolist() == [Pseudonymizer(KEY_B).pseudonym("cust-7781")]
    ingest_file(path, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=None, force=True)
    assert not (tmp_path / "lake" / MARKER).exists()
    assert lake(tmp_path, "users")["user_id"].tolist() == ["cust-7781"]


def test_ingest_landing_stops_at_once_on_a_key_mismatch(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    write_csv(landing / "a.csv", [retail_row()])
    ingest_landing(landing, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    write_csv(landing / "b.csv", [retail_row(invoice="500009")])
    write_csv(landing / "c.csv", [retail_row(invoice="500010")])
    with pytest.raises(IdSpaceError) as err:
        ingest_landing(landing, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_B)
    assert "file(s)" not in str(err.value)  # one error about the lake, not one per file
    assert isinstance(err.value, IngestError)  # the CLI and the ingest task report it like any ingest error
    assert len(lake(tmp_path, "orders")) == 1


def test_files_without_user_ids_do_not_touch_the_id_space(tmp_path):
    ingest_file(write_csv(tmp_path / "a.csv", [retail_row()]), "online_retail_ii", **dirs(tmp_path), pseudonymize_key=KEY_A)
    erp = write_csv(tmp_path / "erp.csv", [["A-100", "berlin", "2024-03-04", 12]], ["sku", "store", "date", "units_sold"])
    for key in (None, KEY_B):
        ingest_file(erp, "erp_demand", **dirs(tmp_path), pseudonymize_key=key, force=True)
    assert read_marker(tmp_path / "lake")["key_fingerprint"] == Pseudonymizer(KEY_A).fingerprint


def test_check_and_record_on_an_empty_lake(tmp_path):
    root = tmp_path / "lake"
    check_id_space(root, Pseudonymizer(KEY_A))  # nothing there: any id space may start
    record_id_space(root, None, writer="test")
    assert not (root / MARKER).exists()  # a raw lake gets no file at all
    record_id_space(root, Pseudonymizer(KEY_A), writer="test")
    assert json.loads((root / MARKER).read_text())["recorded_by"] == "test"


@pytest.mark.parametrize("key", [" " * 32, "a" * 40, " " + "k" * 40])
def test_a_key_that_is_not_a_random_secret_is_refused(key):
    with pytest.raises(ValueError, match="must be a random secret"):
        Secrets(pseudonymize_key=key)


def test_a_bad_key_in_the_environment_is_one_line_naming_the_setting(monkeypatch):
    from ml.settings import SettingsError, get_secrets

    monkeypatch.setenv("PSEUDONYMIZE_KEY", "too-short-secret")
    get_secrets.cache_clear()
    try:
        with pytest.raises(SettingsError) as err:
            get_secrets()
    finally:
        get_secrets.cache_clear()
    assert str(err.value).startswith("PSEUDONYMIZE_KEY") and "\n" not in str(err.value)
    assert "too-short-secret" not in str(err.value)
