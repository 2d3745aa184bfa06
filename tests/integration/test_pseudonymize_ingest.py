"""Pseudonymisation on the real samples in shared/data: Online Retail II through its adapter with a
key is exactly the raw ingest with every customer id replaced by its pseudonym; no raw customer id
is left anywhere in the lake or the quarantine, the key nowhere on disk; MovieLens (events, .user
side file, derived sessions) joins into the same id space; another key or no key is refused; the
generator writes the same pseudonyms. Skips (fails under REQUIRE_SERVICES=1) without the samples."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml.ingest import IdSpaceError, ingest_file
from ml.ingest.pseudonymize import MARKER, Pseudonymizer, read_marker
from ml.ingest.transform import to_id
from tests.conftest import shared_file

pytestmark = pytest.mark.integration

RETAIL = ("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet")
MOVIELENS = ("movielens_100k", "ml-100k.inter")
KEY_A = "integration-key-A-4c1f0e9a7d2b6e8f3a5c"
KEY_B = "integration-key-B-9e2d4b6a8c0f1e3d5b7a"
USER = r"^u_[0-9a-f]{32}$"


def dirs(root: Path) -> dict:
    return {"lake_dir": root / "lake", "quarantine_dir": root / "quarantine"}


def read(root: Path, table: str) -> pd.DataFrame:
    files = [p for p in (root / "lake" / table).glob("**/*.parquet") if p.name != "_empty.parquet"]
    return pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True)


def sql(root: Path, query: str):
    con = duckdb.connect()
    for table in ("orders", "users", "events"):
        query = query.replace(
            "{" + table + "}", f"read_parquet('{root}/lake/{table}/**/*.parquet', hive_partitioning=false, union_by_name=true)"
        )
    return con.sql(query).fetchall()


@pytest.fixture(scope="module")
def retail(tmp_path_factory):
    """The Online Retail sample ingested twice: raw (no key) and with KEY_A."""
    path = shared_file(*RETAIL)
    root = tmp_path_factory.mktemp("pseudonymize")
    reports = {}
    for name, key in (("raw", None), ("keyed", KEY_A)):
        reports[name] = ingest_file(path, "online_retail_ii", **dirs(root / name), pseudonymize_key=key)
    raw_ids = set(to_id(pd.read_parquet(path, columns=["Customer ID"])["Customer ID"]).dropna())
    return {"path": path, "root": root, "reports": reports, "raw_ids": raw_ids}


def test_keyed_lake_is_the_raw_lake_with_pseudonyms(retail):
    raw, keyed = retail["root"] / "raw", retail["root"] / "keyed"
    pz = Pseudonymizer(KEY_A)
    a, b = retail["reports"]["raw"].to_dict(), retail["reports"]["keyed"].to_dict()
    assert b.pop("pseudonymized") == pz.fingerprint
    assert a == b  # same rows read, accepted, quarantined and written, for the same reasons
    for table, key in (("orders", "order_id"), ("users", "user_id")):
        plain = read(raw, table)
        plain["user_id"] = pz.pseudonymize(plain["user_id"].astype("string")).astype(object)
        mine = read(keyed, table)
        sort = [key] if table == "orders" else ["user_id"]
        pd.testing.assert_frame_equal(
            plain.sort_values(sort).reset_index(drop=True), mine.sort_values(sort).reset_index(drop=True), check_dtype=False
        )


def test_every_user_id_is_a_pseudonym_and_orders_join_users(retail):
    keyed = retail["root"] / "keyed"
    assert sql(keyed, f"select count(*) from {{users}} where not regexp_matches(user_id, '{USER}')") == [(0,)]
    assert sql(keyed, f"select count(*) from {{orders}} where not regexp_matches(user_id, '{USER}')") == [(0,)]
    assert sql(keyed, "select count(*) from {orders} o left join {users} u using (user_id) where u.user_id is null") == [(0,)]
    assert sql(keyed, "select count(distinct user_id) from {users}") == [(4_285,)]  # as documented for the raw ingest


def test_no_raw_customer_id_anywhere_in_the_lake_or_quarantine(retail):
    """Every string value of every Parquet file. A raw id may only show up as a stock code that
    happens to read like one ('15056', ...), in an item column (item_id; StockCode in the quarantine)."""
    keyed, raw_ids = retail["root"] / "keyed", retail["raw_ids"]
    stock_codes = set(pd.read_parquet(retail["path"], columns=["StockCode"])["StockCode"].dropna().astype(str))
    checked = 0
    for path in keyed.rglob("*.parquet"):
        table = pq.read_table(path)
        for name in table.column_names:
            if not pa.types.is_string(table.schema.field(name).type):
                continue
            hits = set(table[name].drop_null().to_pylist()) & raw_ids
            checked += table.num_rows
            allowed = name in ("item_id", "StockCode") and hits <= stock_codes
            assert not hits or allowed, f"{path.relative_to(keyed)}:{name} holds raw customer ids {sorted(hits)[:5]}"
    assert checked > 1_000_000
    quarantine = pd.read_parquet(keyed / "quarantine" / retail["reports"]["keyed"].sha256[:12] / "rows.parquet")
    ids = quarantine["Customer ID"].dropna()
    assert len(ids) == 125_907 - 107_927 and ids.str.fullmatch(USER).all()


def test_the_key_is_nowhere_on_disk_and_the_marker_has_its_fingerprint(retail):
    keyed = retail["root"] / "keyed"
    for path in keyed.rglob("*"):
        if path.is_file():
            assert KEY_A.encode() not in path.read_bytes(), path
    marker = read_marker(keyed / "lake")
    assert marker["key_fingerprint"] == Pseudonymizer(KEY_A).fingerprint
    assert not (retail["root"] / "raw" / "lake" / MARKER).exists()


def test_other_datasets_join_the_same_id_space_and_other_keys_are_refused(retail, tmp_path):
    lake_root = tmp_path / "lake_copy"
    shutil.copytree(retail["root"] / "keyed", lake_root)
    movielens = shared_file(*MOVIELENS)
    for key in (KEY_B, None):
        with pytest.raises(IdSpaceError, match=r"fresh LAKE_DIR"):
            ingest_file(movielens, "movielens_atomic", **dirs(lake_root), pseudonymize_key=key)
    assert not list((lake_root / "lake" / "events").glob("**/ing-*.parquet"))  # the refused file wrote nothing

    report = ingest_file(movielens, "movielens_atomic", **dirs(lake_root), pseudonymize_key=KEY_A)
    assert report.tables == {"events": 100_000, "items": 1_682, "users": 943}
    assert sql(lake_root, f"select count(*) from {{events}} where not regexp_matches(user_id, '{USER}')") == [(0,)]
    assert sql(lake_root, "select count(*) from {events} where not regexp_matches(session_id, '^u_[0-9a-f]{32}-[0-9]{8}$')") == [(0,)]
    assert sql(lake_root, "select count(*) from {events} e left join {users} u using (user_id) where u.user_id is null") == [(0,)]
    (with_age,) = sql(lake_root, "select count(*) from {users} where birth_year is not null")[0]
    assert with_age == 943  # the .user side file joined through the pseudonyms
    raw_ml = {str(i) for i in range(1, 944)}
    assert not set(read(lake_root, "events")["user_id"]) & raw_ml

    # re-ingesting the retail sample with another key would leave MovieLens' KEY_A pseudonyms beside it
    before = sorted(p.name for p in (lake_root / "lake" / "users").iterdir())
    with pytest.raises(IdSpaceError, match="another key"):
        ingest_file(retail["path"], "online_retail_ii", **dirs(lake_root), pseudonymize_key=KEY_B, force=True)
    assert sorted(p.name for p in (lake_root / "lake" / "users").iterdir()) == before
    assert read_marker(lake_root / "lake")["key_fingerprint"] == Pseudonymizer(KEY_A).fingerprint


def test_the_generator_writes_the_same_pseudonyms(tmp_path):
    from ml.generate import generate

    lake = tmp_path / "lake"
    generate(scale="tiny", seed=3, lake_dir=lake, pseudonymize_key=KEY_A)
    pz = Pseudonymizer(KEY_A)
    users = read(tmp_path, "users")["user_id"]
    assert users.str.fullmatch(USER).all() and pz.pseudonym("u0000000") in set(users)
    latent = pd.read_parquet(lake / "_generator" / "users_latent.parquet")["user_id"]
    assert set(latent) == set(users)  # the saved truth joins the pseudonymised tables
    for table in ("events", "orders"):
        assert set(read(tmp_path, table)["user_id"]) <= set(users)
    assert read_marker(lake)["key_fingerprint"] == pz.fingerprint
    # a raw ingest next to generated pseudonyms is refused; regenerating without a key resets the lake
    export = tmp_path / "x.csv"
    pd.DataFrame(
        [["500001", "85048", "BALL", 1, "2010-01-05 10:00:00", 1.5, 13085.0, "United Kingdom"]],
        columns=["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"],
    ).to_csv(export, index=False)
    with pytest.raises(IdSpaceError):
        ingest_file(export, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=None)
    generate(scale="tiny", seed=3, lake_dir=lake, pseudonymize_key=None)
    assert not (lake / MARKER).exists() and not read(tmp_path, "users")["user_id"].str.match(r"^u_").any()
    ingest_file(export, "online_retail_ii", **dirs(tmp_path), pseudonymize_key=None)
    with pytest.raises(IdSpaceError, match="holds raw user ids"):  # now ingested raw rows stay: no keyed regenerate
        generate(scale="tiny", seed=3, lake_dir=lake, pseudonymize_key=KEY_A)
    assert re.fullmatch(r"u\d{7}", read(tmp_path, "users")["user_id"].iloc[0])
