"""The fast serializers of ml.features.materialize produce exactly Feast's bytes.

Feast's materialization turns a column into ValueProtos with
``python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)`` and stores
``SerializeToString()``; entity keys with ``serialize_entity_key``; SQLite's value_text with
``extract_text_and_num``; timestamps through its sqlite3 adapter and protobuf Timestamp. Each test
feeds the same Arrow column to both and compares bytes, on the values that usually break encoders.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from ml.features import materialize as m

INT_EDGES = [0, 1, -1, 127, 128, 300, 16383, 16384, 2**31 - 1, -(2**31), 2**53, -(2**53), 2**62, 2**63 - 1, -(2**63)]
# With a null in the column Feast's to_numpy() makes the int64 column float64, so beyond 2**53 it
# rounds (and raises past 2**63 - 1); we keep the exact integer. Equal bytes up to 2**53:
INT_EDGES_NULLABLE = [v for v in INT_EDGES if abs(v) <= 2**53] + [None]
FLOAT_EDGES = [0.0, -0.0, 1.5, -2.25, 0.1, 1e300, -1e-300, 5e-324, float("inf"), float("-inf"), float("nan"), 100.0, 1e16, None]
STRINGS = ["", "a", "user_000001", "é", "日本語", "x" * 127, "y" * 128, "z" * 20000, "\x00nul", None]
TIMES = [
    datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=timezone.utc),
    datetime(1900, 1, 1, tzinfo=timezone.utc),
    datetime(1970, 1, 1, tzinfo=timezone.utc),
    None,
]


def feast_bytes(array: pa.Array, value_type) -> list[bytes]:
    from feast.type_map import python_values_to_proto_values

    return [v.SerializeToString() for v in python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)]


def feast_texts(array: pa.Array, value_type) -> list:
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values

    return [extract_text_and_num(v, False)[0] for v in python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)]


def cases():
    from feast.value_type import ValueType as V

    return [
        ("int64", pa.array(INT_EDGES, pa.int64()), V.INT64),
        ("int64 with nulls", pa.array(INT_EDGES_NULLABLE, pa.int64()), V.INT64),
        ("int32", pa.array([0, 1, -1, 2**31 - 1, -(2**31), None], pa.int32()), V.INT32),
        ("int64 from int32", pa.array([5, -7, None], pa.int32()), V.INT64),
        ("double", pa.array(FLOAT_EDGES, pa.float64()), V.DOUBLE),
        ("double from int", pa.array([0, 3, -4, 2**40], pa.int64()), V.DOUBLE),
        ("float", pa.array([0.0, 0.1, -3.5, 1e38, float("nan"), None], pa.float32()), V.FLOAT),
        ("bool", pa.array([True, False, None], pa.bool_()), V.BOOL),
        ("string", pa.array(STRINGS, pa.string()), V.STRING),
        ("large string", pa.array(STRINGS, pa.large_string()), V.STRING),
        ("timestamp us utc", pa.array(TIMES, pa.timestamp("us", tz="UTC")), V.UNIX_TIMESTAMP),
        ("timestamp ns naive", pa.array([np.datetime64("2024-05-06T07:08:09.123456789"), None], pa.timestamp("ns")), V.UNIX_TIMESTAMP),
        ("date", pa.array([0, -1, 19000, None], pa.date32()), V.UNIX_TIMESTAMP),
        ("all-null timestamp", pa.array([None, None], pa.timestamp("us", tz="UTC")), V.UNIX_TIMESTAMP),
        ("all-null int", pa.array([None, None], pa.int64()), V.INT64),
        ("all-null string", pa.array([None, None], pa.string()), V.STRING),
        ("empty", pa.array([], pa.int64()), V.INT64),
    ]


@pytest.mark.parametrize("case", range(17))
def test_values_are_feast_bytes(case):
    name, array, value_type = cases()[case]
    assert m.encode_values(array, value_type) == feast_bytes(array, value_type), name
    assert m.value_texts(array, value_type) == feast_texts(array, value_type), name
    # sliced / chunked input (Arrow offsets) gives the same bytes
    if len(array) > 2:
        sliced = array.slice(1)
        assert m.encode_values(sliced, value_type) == feast_bytes(sliced, value_type), name
        chunked = pa.chunked_array([array.slice(0, 2), array.slice(2)])
        assert m.encode_values(chunked, value_type) == feast_bytes(chunked.combine_chunks(), value_type), name


def test_every_fast_path_is_taken():
    """The cases above exercise the numpy encoders, not the fallback (else the test proves little)."""
    for name, array, value_type in cases():
        if name != "empty":
            assert m.fast_encode(array, value_type) is not None, name


def feast_key(row: dict, types: dict) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values

    keys = list(types)
    values = [python_values_to_proto_values(np.array([row[k]], dtype=object), types[k])[0] for k in keys]
    return serialize_entity_key(EntityKey(join_keys=keys, entity_values=values), entity_key_serialization_version=3)


@pytest.mark.parametrize(
    "columns",
    [
        {"user_id": ("STRING", ["u1", "", "é" * 300, "user_0000012345"])},
        # two keys, declared out of name order: Feast sorts them
        {"warehouse_id": ("STRING", ["w1", "w2", "w10", "w"]), "item_id": ("STRING", ["i1", "i1", "", "日本"])},
        {"order_id": ("INT64", [0, -1, 2**63 - 1, 42])},
        {"shard": ("INT32", [0, -5, 7, 2**31 - 1]), "user_id": ("STRING", ["a", "b", "c", "d"])},
    ],
)
def test_entity_keys_are_feast_bytes(columns):
    from feast.value_type import ValueType

    arrow = {"STRING": pa.string(), "INT64": pa.int64(), "INT32": pa.int32()}
    table = pa.table({k: pa.array(v, arrow[t]) for k, (t, v) in columns.items()})
    types = {k: ValueType[t] for k, (t, _) in columns.items()}
    ours = m.encode_entity_keys(table, types).to_pylist()
    rows = table.to_pylist()
    assert ours == [feast_key(r, types) for r in rows]


def test_timestamps_match_feast_stores():
    import sqlite3

    from feast import utils
    from feast.infra.online_stores import sqlite as feast_sqlite  # registers Feast's sqlite3 adapters
    from google.protobuf.timestamp_pb2 import Timestamp

    times = [t for t in TIMES if t is not None]
    us = m._micros(pa.array(times, pa.timestamp("us", tz="UTC")))
    con = sqlite3.connect(":memory:")
    expected_sqlite = [con.execute("select ?", [feast_sqlite.to_naive_utc(t.replace(tzinfo=None))]).fetchone()[0] for t in times]
    assert m.sqlite_event_ts(us) == expected_sqlite
    blobs, nanos = m.redis_timestamps(us)
    for t, blob, ns in zip(times, blobs.to_pylist(), nanos.tolist()):
        ts = Timestamp()
        ts.FromDatetime(utils.make_tzaware(t.replace(tzinfo=None)))
        assert blob == ts.SerializeToString()
        assert ns == ts.seconds * 1_000_000_000 + ts.nanos


def test_join_and_varint():
    data = np.frombuffer(b"helloworld", np.uint8)
    words = m.binary(data, np.array([0, 5, 10, 10]))
    assert m.join(m.const(b"<"), words, m.const(b">")).to_pylist() == [b"<hello>", b"<world>", b"<>"]
    assert m.ascii_lengths(m.join(words, words)).to_pylist() == [b"10", b"10", b"0"]
    matrix, nbytes = m.varint(np.array([0, 1, 127, 128, 300, -1]))
    assert m.rows_of(matrix, nbytes).to_pylist() == [b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02", b"\xff" * 9 + b"\x01"]
