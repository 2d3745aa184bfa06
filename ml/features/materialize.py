"""Materialization: the latest feature row per entity, from the Parquet marts into the online store, fast.

Feast's own ``materialize`` converts every value into a ``ValueProto`` in Python and writes one SQL
statement (SQLite) or builds one redis-py command (Redis) per row and feature; that is the known
bottleneck (~1 M entities into Redis took ~20 min for users). This module keeps Feast's storage
format byte for byte and changes only how the bytes are produced and shipped:

    materialize(settings_or_store, start, end, views=None)   -> {"views": {view: stats}, ...}
    materialize_incremental(settings_or_store, end, views=None)

1. **Select** (DuckDB, straight from the view's Parquet source): rows with
   ``start <= event_timestamp <= end`` (both ends inclusive, exactly Feast's own window), then the
   latest per entity: ``qualify row_number() over (partition by <join keys> order by
   event_timestamp desc[, <created> desc]) = 1``. ``start=None`` means from the beginning.
2. **Serialize** column-wise (numpy, Arrow's ``binary_join_element_wise``): ``ValueProto`` bytes (tag + varint / fixed64 / length-
   prefixed UTF-8) and entity keys (``serialize_entity_key`` v3 layout) for the common scalar types;
   any other type goes through Feast's own ``python_values_to_proto_values`` /
   ``serialize_entity_key``. tests/unit/test_materialize_encoding.py holds the fast encoders
   byte-equal to Feast's on edge values (nulls, NaN, negatives, unicode, NaT, pre-1970 times).
3. **Write** in large batches, in the layout Feast's stores read:
   SQLite (``SqliteOnlineStore``): table ``<project>_<view>``, one row per (entity_key, feature_name)
   with ``value``, ``value_text``, ``event_ts``, ``created_ts``. One wide row per entity is staged
   (``executemany``) in a TEMP table, then one ``insert ... select ... cross join <features>``
   expands it in primary-key order, all in ONE transaction (an error rolls the whole view back).
   Redis (``RedisOnlineStore``): hash ``serialize_entity_key(...) + project``, field
   ``mmh3("<view>:<feature>")`` per feature and ``_ts:<view>`` (a protobuf Timestamp); commands are
   pre-packed RESP sent over one connection in pipelined chunks. Every command of a view is built
   before the first is sent, so bad input never half-writes a view.
4. **Never older over newer**: a row is written only when its event_timestamp is >= the stored
   one (SQLite: ``ON CONFLICT ... DO UPDATE ... WHERE excluded.event_ts >= event_ts``; Redis: the
   stored ``_ts:<view>`` is read for every key first). Backfilling an old window is therefore safe;
   rewriting the same window replaces its values (corrections land).
5. **Registry**: after a view is written, ``registry.apply_materialization(view, project, start,
   end)`` records the interval (start = 1970-01-01 when None), so ``feast feature-views describe``
   and ``materialize-incremental`` (ours or Feast's) see the same state.

Views this path does not cover (a source that is not a local Parquet FileSource, on-demand views
that write online, a SQLite store with vector search / value_num, Redis Cluster, entity key
serialization other than v3) are handed to Feast's own ``store.materialize`` and reported with
``"engine": "feast"``. Feast is imported inside functions only (Airflow parses modules importing this).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from feast import FeatureStore

    from ml.settings import Settings

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BATCH_ROWS = 50_000  # entities serialized (and, for Redis, sent) per batch
NULL_TIMESTAMP = np.iinfo(np.int64).min  # Feast stores a null UnixTimestamp as NaT.astype(int64)

# ValueProto field tags (field number << 3 | wire type), Value.proto: bytes_val=1, string_val=2,
# int32_val=3, int64_val=4, double_val=5, float_val=6, bool_val=7, unix_timestamp_val=8.
_TAG_STRING = 0x12
_TAG_INT32 = 0x18
_TAG_INT64 = 0x20
_TAG_DOUBLE = 0x29
_TAG_FLOAT = 0x35
_TAG_BOOL = 0x38
_TAG_TIMESTAMP = 0x40


class MaterializationError(RuntimeError):
    """A view could not be materialized; nothing of that view was written."""


# --------------------------------------------------------------------------------------------------
# Byte columns: Arrow large_binary arrays, joined row-wise in C++ (pc.binary_join_element_wise)
# --------------------------------------------------------------------------------------------------


def _combine(array):
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array


def const(value: bytes):
    """A constant piece of every row."""
    import pyarrow as pa

    return pa.scalar(value, pa.large_binary())


def join(*parts):
    """Row-wise concatenation of byte columns / constants (Arrow, C++): row i = parts[0][i] + ..."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*parts, const(b""))


def binary(data: np.ndarray, offsets: np.ndarray):
    """A large_binary array over ``data`` (row i = data[offsets[i]:offsets[i + 1]])."""
    import pyarrow as pa

    data = np.ascontiguousarray(data, dtype=np.uint8)
    return pa.Array.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(np.ascontiguousarray(offsets, dtype=np.int64)), pa.py_buffer(data)]
    )


def rows_of(matrix: np.ndarray, lens: np.ndarray | None = None):
    """Row i = the first ``lens[i]`` bytes (all, by default) of row i of an (n, w) uint8 matrix."""
    n, w = matrix.shape
    if lens is None:
        return binary(matrix.reshape(-1), np.arange(n + 1, dtype=np.int64) * w)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return binary(matrix[np.arange(w) < np.asarray(lens)[:, None]], offsets)


def as_binary(array):
    """The UTF-8 / binary values of a string-like array as large_binary, nulls as b''."""
    import pyarrow as pa

    array = _combine(array)
    if pa.types.is_large_binary(array.type):
        out = array
    elif pa.types.is_string(array.type) or pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        out = array.cast(pa.large_string()).view(pa.large_binary())
    else:
        out = array.cast(pa.large_binary())
    return out.fill_null(b"") if out.null_count else out


def lengths(array) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.binary_length(array).to_numpy(zero_copy_only=False).astype(np.int64)


def ascii_lengths(array):
    """Decimal ASCII of each row's byte length (RESP ``$<len>``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_length(array).cast(pa.string()).cast(pa.large_string()).view(pa.large_binary())


def varint(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values (negatives as 10-byte two's complement): an (n, 10) uint8
    matrix and the byte count of each row."""
    x = np.asarray(values).astype(np.int64).view(np.uint64).copy()
    n = len(x)
    matrix = np.zeros((n, 10), dtype=np.uint8)
    nbytes = np.ones(n, dtype=np.int64)
    seven = np.uint64(7)
    low = np.uint64(0x7F)
    for j in range(10):
        matrix[:, j] = (x & low).astype(np.uint8)
        x >>= seven
        more = x != 0
        if not more.any():
            break
        matrix[more, j] |= 0x80
        nbytes += more
    return matrix, nbytes


# --------------------------------------------------------------------------------------------------
# ValueProto and entity key serialization
# --------------------------------------------------------------------------------------------------


def _tagged(tag: int, payload: np.ndarray, valid: np.ndarray, payload_lens: np.ndarray | int | None = None):
    """tag byte + the first ``payload_lens`` bytes of each payload row; rows not ``valid`` -> b''."""
    n, w = payload.shape
    matrix = np.empty((n, w + 1), dtype=np.uint8)
    matrix[:, 0] = tag
    matrix[:, 1:] = payload
    lens = (1 + (w if payload_lens is None else np.asarray(payload_lens))) * valid.astype(np.int64)
    return rows_of(matrix, lens)


def _valid_mask(array) -> np.ndarray:
    import pyarrow.compute as pc

    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return pc.is_valid(array).to_numpy(zero_copy_only=False)


def _is_string(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def fast_encode(array, value_type):
    """Serialized ValueProtos (large_binary), byte-equal to Feast's materialization, which stores
    ``python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)[i]
    .SerializeToString()``; None for a (value type, Arrow type) pair without a fast path.

    Feast's quirks kept: NaN doubles are null (b''), a null UnixTimestamp is NaT.astype(int64)
    (int64 min), timestamps are whole seconds (floor). One deliberate difference: with a null in
    an int64 column Feast goes through float64 (rounding beyond 2**53); we keep the integer.
    """
    import pyarrow as pa
    from feast.value_type import ValueType

    array = _combine(array)
    t = array.type
    n = len(array)
    if value_type in (ValueType.INT64, ValueType.INT32) and pa.types.is_integer(t):
        valid = _valid_mask(array)
        values = (array.fill_null(0) if array.null_count else array).to_numpy(zero_copy_only=False).astype(np.int64)
        if value_type == ValueType.INT32 and n and (values.min() < -(2**31) or values.max() >= 2**31):
            return None  # Feast raises on overflow; let it say so
        matrix, nbytes = varint(values)
        return _tagged(_TAG_INT64 if value_type == ValueType.INT64 else _TAG_INT32, matrix, valid, nbytes)
    if value_type == ValueType.DOUBLE and (pa.types.is_float64(t) or pa.types.is_signed_integer(t)):
        values = array.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN; NaN is null in Feast
        payload = np.ascontiguousarray(values.astype("<f8")).view(np.uint8).reshape(n, 8)
        return _tagged(_TAG_DOUBLE, payload, ~np.isnan(values))
    if value_type == ValueType.FLOAT and pa.types.is_float32(t):
        values = array.to_numpy(zero_copy_only=False).astype(np.float32)
        payload = np.ascontiguousarray(values.astype("<f4")).view(np.uint8).reshape(n, 4)
        return _tagged(_TAG_FLOAT, payload, ~np.isnan(values))
    if value_type == ValueType.BOOL and pa.types.is_boolean(t):
        values = (array.fill_null(False) if array.null_count else array).to_numpy(zero_copy_only=False).astype(np.uint8)
        return _tagged(_TAG_BOOL, values.reshape(n, 1), _valid_mask(array))
    if value_type == ValueType.UNIX_TIMESTAMP and (pa.types.is_timestamp(t) or pa.types.is_date(t)):
        values = array.to_numpy(zero_copy_only=False)
        if values.dtype.kind != "M":
            return None
        matrix, nbytes = varint(values.astype("datetime64[s]").astype(np.int64))  # NaT -> int64 min, as Feast
        return _tagged(_TAG_TIMESTAMP, matrix, np.ones(n, dtype=bool), nbytes)
    if value_type == ValueType.STRING and _is_string(t):
        raw = as_binary(array)
        matrix, nbytes = varint(lengths(raw))
        header = _tagged(_TAG_STRING, matrix, _valid_mask(array), nbytes)
        return join(header, raw)
    return None


def encode_column(array, value_type):
    """Serialized ValueProtos (large_binary) as Feast's materialization stores them."""
    import pyarrow as pa

    array = _combine(array)
    fast = fast_encode(array, value_type)
    if fast is not None:
        return fast
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)
    return pa.array([v.SerializeToString() for v in protos], pa.large_binary())


def encode_values(array, value_type) -> list[bytes]:
    """``encode_column`` as Python bytes."""
    return encode_column(array, value_type).to_pylist()


def value_texts(array, value_type) -> list[str | None]:
    """SQLite's ``value_text`` column (Feast's ``extract_text_and_num``): the string of a string,
    int, float or bool value, else None."""
    import pyarrow as pa
    from feast.value_type import ValueType

    array = _combine(array)
    t = array.type
    if value_type == ValueType.STRING and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return array.to_pylist()
    if value_type in (ValueType.INT64, ValueType.INT32) and pa.types.is_integer(t):
        return array.cast(pa.string()).to_pylist()
    if (value_type == ValueType.DOUBLE and (pa.types.is_float64(t) or pa.types.is_signed_integer(t))) or (
        value_type == ValueType.FLOAT and pa.types.is_float32(t)
    ):
        values = array.to_numpy(zero_copy_only=False)
        if value_type == ValueType.FLOAT:
            values = values.astype(np.float32)
        return [None if v != v else repr(v) for v in values.astype(np.float64).tolist()]
    if value_type == ValueType.BOOL and pa.types.is_boolean(t):
        return [None if v is None else str(v) for v in array.to_pylist()]
    if value_type == ValueType.UNIX_TIMESTAMP and (pa.types.is_timestamp(t) or pa.types.is_date(t)):
        return [None] * len(array)
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values

    return [extract_text_and_num(v, False)[0] for v in python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)]


def encode_entity_keys(table, join_keys: dict[str, Any], version: int = 3):
    """``serialize_entity_key(EntityKey(join_keys, values), version)`` of every row (large_binary).

    Fast path for version 3 with STRING / INT64 / INT32 keys; anything else goes through Feast.
    """
    import struct

    import pyarrow as pa
    from feast.value_type import ValueType

    n = table.num_rows
    names = sorted(join_keys)  # Feast sorts join keys by name

    def fast_ok(name: str) -> bool:
        t, vt = table.schema.field(name).type, join_keys[name]
        return (vt == ValueType.STRING and _is_string(t)) or (vt in (ValueType.INT64, ValueType.INT32) and pa.types.is_integer(t))

    if version == 3 and all(fast_ok(k) for k in names):
        header = struct.pack("<I", len(names))
        for name in names:
            encoded = name.encode("utf8")
            header += struct.pack("<II", ValueType.STRING.value, len(encoded)) + encoded
        parts: list = [const(header)]
        for name in names:
            column = _combine(table.column(name))
            vt = join_keys[name]
            if vt == ValueType.STRING:
                raw = as_binary(column)
                type_and_len = np.empty((n, 2), dtype="<u4")
                type_and_len[:, 0] = ValueType.STRING.value
                type_and_len[:, 1] = lengths(raw)
                parts += [rows_of(type_and_len.view(np.uint8).reshape(n, 8)), raw]
            else:
                values = column.to_numpy(zero_copy_only=False)
                fmt, width = ("<i8", 8) if vt == ValueType.INT64 else ("<i4", 4)
                if vt == ValueType.INT32 and n and (values.min() < -(2**31) or values.max() >= 2**31):
                    raise MaterializationError(f"join key {name!r} has values outside int32")
                record = np.empty(n, dtype=[("type", "<u4"), ("len", "<u4"), ("value", fmt)])
                record["type"] = vt.value
                record["len"] = width
                record["value"] = values
                parts.append(rows_of(record.view(np.uint8).reshape(n, 8 + width)))
        return join(*parts) if n else pa.array([], pa.large_binary())

    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.type_map import python_values_to_proto_values

    protos = {k: python_values_to_proto_values(_combine(table.column(k)).to_numpy(zero_copy_only=False), vt) for k, vt in join_keys.items()}
    keys = list(join_keys)
    return pa.array(
        [
            serialize_entity_key(
                EntityKeyProto(join_keys=keys, entity_values=[protos[k][i] for k in keys]), entity_key_serialization_version=version
            )
            for i in range(n)
        ],
        pa.large_binary(),
    )


# --------------------------------------------------------------------------------------------------
# Timestamps exactly as Feast's stores keep them
# --------------------------------------------------------------------------------------------------


def _micros(array) -> np.ndarray:
    """UTC microseconds since the epoch of a timestamp column (Feast's path: to_numpy -> pandas
    -> python datetime, which keeps microseconds)."""
    array = _combine(array)
    values = array.to_numpy(zero_copy_only=False)
    if values.dtype.kind != "M":
        raise MaterializationError(f"timestamp column has type {array.type}, expected a timestamp")
    return values.astype("datetime64[us]").astype(np.int64)


def _naive(us: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=int(us))


def sqlite_event_ts(us: np.ndarray) -> list[int]:
    """SQLite ``event_ts`` / ``created_ts``: Feast stores ``int(to_naive_utc(ts).timestamp())``
    (its sqlite3 datetime adapter), computed once per distinct timestamp."""
    uniques, inverse = np.unique(us, return_inverse=True)
    mapped = np.array([int(_naive(u).timestamp()) for u in uniques.tolist()], dtype=np.int64)
    return mapped[inverse].tolist()


def redis_timestamps(us: np.ndarray):
    """Redis ``_ts:<view>`` values (serialized protobuf Timestamp, as Feast writes them; large_binary)
    and the same instants in nanoseconds, computed once per distinct timestamp."""
    import pyarrow as pa
    from feast import utils
    from google.protobuf.timestamp_pb2 import Timestamp

    uniques, inverse = np.unique(us, return_inverse=True)
    blobs, nanos = [], []
    for u in uniques.tolist():
        ts = Timestamp()
        ts.FromDatetime(utils.make_tzaware(_naive(u)))
        blobs.append(ts.SerializeToString())
        nanos.append(ts.seconds * 1_000_000_000 + ts.nanos)
    return pa.array(blobs, pa.large_binary()).take(pa.array(inverse.reshape(-1))), np.array(nanos, dtype=np.int64)[inverse.reshape(-1)]


def _stored_nanos(blob: bytes | None, cache: dict) -> int | None:
    if not blob:
        return None
    value = cache.get(blob)
    if value is None:
        from google.protobuf.timestamp_pb2 import Timestamp

        ts = Timestamp()
        ts.ParseFromString(blob)
        value = cache[blob] = ts.seconds * 1_000_000_000 + ts.nanos
    return value


# --------------------------------------------------------------------------------------------------
# Reading: latest row per entity in the window (DuckDB over the Parquet source)
# --------------------------------------------------------------------------------------------------


@dataclass
class ViewPlan:
    """What materializing one view needs: its columns, source file and types."""

    view: Any  # feast FeatureView
    path: str
    join_keys: dict[str, Any]  # column -> ValueType (the view's entity columns)
    features: dict[str, Any]  # column -> ValueType
    timestamp_field: str
    created_field: str | None
    column_map: dict[str, str] = field(default_factory=dict)  # source column -> view name

    @property
    def name(self) -> str:
        return self.view.name


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(tzinfo=None)


def _source_glob(path: str) -> str:
    p = Path(path)
    return str(p / "**" / "*.parquet") if p.is_dir() else str(p)


def check_source(con, plan: ViewPlan) -> None:
    """The Parquet source exists and has every column the view reads; else MaterializationError."""
    import duckdb

    where = f"feature view {plan.name!r} (source {plan.path})"
    if not Path(plan.path).exists():
        raise MaterializationError(f"{where}: file is missing")
    try:
        described = con.execute("describe select * from read_parquet(?, union_by_name = true)", [_source_glob(plan.path)]).fetchall()
    except duckdb.Error as exc:
        raise MaterializationError(f"{where}: not a readable Parquet source ({str(exc).splitlines()[0]})") from exc
    have = {row[0] for row in described}
    missing = [c for c in plan.column_map if c not in have]
    if missing:
        raise MaterializationError(f"{where}: column(s) {missing} missing from the file")


def latest_rows(con, plan: ViewPlan, start: datetime | None, end: datetime) -> "pa.Table":
    """The latest row per entity with ``start <= event_timestamp <= end`` (Feast's window; start
    None = unbounded), columns renamed to the view's names."""
    import duckdb

    keys = [src for src, dst in plan.column_map.items() if dst in plan.join_keys]
    ts = _q(plan.timestamp_field)
    order = f"{ts} desc" + (f", {_q(plan.created_field)} desc" if plan.created_field else "")
    select = ", ".join(f"{_q(src)} as {_q(dst)}" for src, dst in plan.column_map.items())
    where = [f"{ts}::timestamp <= ?"]
    params: list[Any] = [_source_glob(plan.path), _naive_utc(end)]
    if start is not None:
        where.append(f"{ts}::timestamp >= ?")
        params.append(_naive_utc(start))
    sql = (
        f"select {select} from read_parquet(?, union_by_name = true) where {' and '.join(where)} "
        f"qualify row_number() over (partition by {', '.join(_q(k) for k in keys)} order by {order}) = 1"
    )
    try:
        return con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        raise MaterializationError(f"feature view {plan.name!r} (source {plan.path}): {str(exc).splitlines()[0]}") from exc


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def _check_keys(plan: ViewPlan, table: "pa.Table") -> None:
    for key in plan.join_keys:
        nulls = table.column(key).null_count
        if nulls:
            raise MaterializationError(f"feature view {plan.name!r} (source {plan.path}): {nulls} row(s) with a null join key {key!r}")


class SqliteWriter:
    """Feast's SqliteOnlineStore layout; one transaction per view; never older over newer.

    Rows go through a connection-local TEMP staging table holding one row per entity (every value
    and value_text side by side: 7x fewer, wider executemany rows), then ONE ``insert ... select
    ... from stage cross join features ... on conflict do update ... where newer`` expands them to
    Feast's one row per (entity_key, feature_name) in primary-key order, inside SQLite.
    """

    def __init__(self, store: "FeatureStore"):
        import sqlite3

        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        self.config = store.config
        self.path = SqliteOnlineStore._get_db_path(store.config)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        self.con.execute("pragma cache_size = -131072")  # 128 MiB page cache, this connection only
        self.con.execute("pragma temp_store = memory")  # the staging table

    def close(self) -> None:
        self.con.close()

    def table_name(self, plan: ViewPlan) -> str:
        from feast.infra.online_stores.helpers import compute_table_id

        return compute_table_id(self.config.project, plan.view, self.config.registry.enable_online_feature_view_versioning)

    def write(self, plan: ViewPlan, table: "pa.Table", batch_rows: int) -> int:
        import pyarrow.compute as pc

        n = table.num_rows
        name = self.table_name(plan)
        if not self.con.execute("select 1 from sqlite_master where type = 'table' and name = ?", [name]).fetchone():
            raise MaterializationError(f"online table {name!r} is missing from {self.path}: run `feast apply` first")
        if n == 0:
            return 0
        _check_keys(plan, table)
        keys = encode_entity_keys(table, plan.join_keys, self.config.entity_key_serialization_version)
        order = pc.sort_indices(keys)  # primary-key order: B-tree appends
        keys = keys.take(order)
        table = table.take(order)
        event_ts = sqlite_event_ts(_micros(table.column(plan.timestamp_field)))
        created_ts = sqlite_event_ts(_micros(table.column(plan.created_field))) if plan.created_field else None
        features = sorted(plan.features.items())
        k = len(features)
        target = _q(name)
        value_cols = ", ".join(f"v{i}, x{i}" for i in range(k))
        pick = lambda prefix: "case f.i " + " ".join(f"when {i} then s.{prefix}{i}" for i in range(k)) + " end"  # noqa: E731
        expand = (
            f"insert into {target} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            f"select s.entity_key, f.name, {pick('v')}, {pick('x')}, s.event_ts, s.created_ts "
            "from temp.ecomml_stage as s cross join temp.ecomml_features as f where true "
            "on conflict(entity_key, feature_name) do update set value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts "
            f"where {target}.event_ts is null or excluded.event_ts >= {target}.event_ts"
        )
        con = self.con
        con.execute("begin immediate")
        try:
            con.execute("drop table if exists temp.ecomml_stage")
            con.execute("drop table if exists temp.ecomml_features")
            con.execute(f"create temp table ecomml_stage (entity_key blob, event_ts, created_ts, {value_cols})")
            con.execute("create temp table ecomml_features (i integer primary key, name text)")
            con.executemany("insert into temp.ecomml_features values (?, ?)", [(i, f) for i, (f, _) in enumerate(features)])
            stage = f"insert into temp.ecomml_stage values ({', '.join('?' * (3 + 2 * k))})"
            for lo in range(0, n, batch_rows):
                m = min(n, lo + batch_rows) - lo
                part = table.slice(lo, m)
                columns = []
                for fname, vt in features:
                    columns += [encode_values(part.column(fname), vt), value_texts(part.column(fname), vt)]
                created = created_ts[lo : lo + m] if created_ts is not None else repeat(None)
                con.executemany(stage, zip(keys.slice(lo, m).to_pylist(), event_ts[lo : lo + m], created, *columns))
            written = con.execute(expand).rowcount
            con.execute("drop table temp.ecomml_stage")
            con.execute("drop table temp.ecomml_features")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        return written // max(1, k)


class RedisWriter:
    """Feast's RedisOnlineStore layout over pre-packed, pipelined RESP; never older over newer."""

    SEND_CHUNK = 10_000  # commands per send; up to three sends in flight

    def __init__(self, store: "FeatureStore"):
        from feast.infra.online_stores.redis import RedisOnlineStore

        self.config = store.config
        self.client = RedisOnlineStore()._get_client(store.config.online_store)

    def close(self) -> None:
        self.client.close()

    def write(self, plan: ViewPlan, table: "pa.Table", batch_rows: int) -> int:
        import pyarrow as pa
        from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

        n = table.num_rows
        if n == 0:
            return 0
        _check_keys(plan, table)
        cfg = self.config
        view_name = compute_versioned_name(plan.view, cfg.registry.enable_online_feature_view_versioning)
        ts_field = f"_ts:{view_name}".encode()
        ttl = int(cfg.online_store.key_ttl_seconds or 0)
        features = list(plan.features.items())
        ts_all, new_nanos = redis_timestamps(_micros(table.column(plan.timestamp_field)))
        crlf = const(b"\r\n")

        def bulk(value: bytes):  # a constant RESP bulk string, then the "$" of the next one
            return const(b"$%d\r\n%s\r\n$" % (len(value), value))

        pipe = _Pipe(self.client)
        written = 0
        try:
            # 1. Serialize every write of the view before any is sent. The reads of the stored
            #    timestamps go out as soon as a batch is ready: Redis answers them meanwhile.
            batches = []
            for lo in range(0, n, batch_rows):
                m = min(n, lo + batch_rows) - lo
                part = table.slice(lo, m)
                key = join(
                    encode_entity_keys(part, plan.join_keys, cfg.entity_key_serialization_version), const(cfg.project.encode("utf-8"))
                )
                key_arg = [ascii_lengths(key), crlf, key, crlf]  # "<len>\r\n<key>\r\n"
                ts = ts_all.slice(lo, m)
                parts = [
                    const(b"*%d\r\n$4\r\nHSET\r\n$" % (2 + 2 * (len(features) + 1))),
                    *key_arg,
                    bulk(ts_field),
                    ascii_lengths(ts),
                    crlf,
                    ts,
                    crlf,
                ]
                for fname, vt in features:
                    value = encode_column(part.column(fname), vt)
                    parts += [bulk(_mmh3(f"{view_name}:{fname}")), ascii_lengths(value), crlf, value, crlf]
                if ttl:
                    parts += [const(b"*3\r\n$6\r\nEXPIRE\r\n$"), *key_arg, const(b"$%d\r\n%d\r\n" % (len(str(ttl)), ttl))]
                hset = join(*parts)
                pipe.send(join(const(b"*3\r\n$4\r\nHGET\r\n$"), *key_arg, const(b"$%d\r\n%s\r\n" % (len(ts_field), ts_field))))
                batches.append((lo, m, hset))

            # 2. Keep the rows whose event time is >= the stored one.
            writes = []
            cache: dict = {}
            for lo, m, hset in batches:
                stored = [_stored_nanos(b, cache) for b in pipe.read(m)]
                keep = np.fromiter((s is None or new >= s for s, new in zip(stored, new_nanos[lo : lo + m].tolist())), dtype=bool, count=m)
                writes.append(hset if keep.all() else hset.filter(pa.array(keep)))
                written += int(keep.sum())
            pipe.check()

            # 3. Send the writes, a few chunks in flight so Redis never waits for us.
            per_command = 2 if ttl else 1
            in_flight: list[int] = []
            for hset in writes:
                for lo in range(0, len(hset), self.SEND_CHUNK):
                    chunk = hset.slice(lo, self.SEND_CHUNK)
                    pipe.send(chunk)
                    in_flight.append(len(chunk) * per_command)
                    if len(in_flight) > 2:
                        pipe.read(in_flight.pop(0))
            for count in in_flight:
                pipe.read(count)
            pipe.check()
        except BaseException:
            pipe.abort()
            raise
        finally:
            pipe.release()
        return written


class _Pipe:
    """Pre-packed RESP over one pooled redis-py connection: ``send`` any time, ``read(n)`` the next
    n replies in order. Parses with hiredis' Reader straight off the socket (~10x less Python per
    reply than ``read_response``); error replies are collected and raised by ``check``."""

    def __init__(self, client):
        self.pool = client.connection_pool
        self.conn = self.pool.get_connection()
        self.conn.connect()
        self.errors: list = []
        self.ready: list = []
        self.sock = getattr(self.conn, "_sock", None)
        self.reader = None
        if self.sock is not None and str(getattr(self.conn, "protocol", 2) or 2) == "2":
            try:
                import hiredis

                self.reader = hiredis.Reader()
            except ImportError:  # pragma: no cover - redis-py's own parser, slower
                pass

    def send(self, commands) -> None:
        """Send a large_binary array of packed commands."""
        if not len(commands):
            return
        offsets = np.frombuffer(commands.buffers()[1], dtype=np.int64)[commands.offset : commands.offset + len(commands) + 1]
        payload = memoryview(commands.buffers()[2])[offsets[0] : offsets[-1]]
        if self.reader is None:
            self.conn.send_packed_command([payload], check_health=False)
        else:
            self.sock.sendall(payload)

    def read(self, n: int) -> list:
        if self.reader is None:
            import redis

            out: list = []
            for _ in range(n):
                try:
                    out.append(self.conn.read_response())
                except redis.ResponseError as exc:
                    out.append(exc)
        else:
            out, gets = self.ready, self.reader.gets
            while len(out) < n:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("redis closed the connection")
                self.reader.feed(data)
                while (reply := gets()) is not False:
                    out.append(reply)
            out, self.ready = out[:n], out[n:]
        self.errors += [r for r in out if isinstance(r, Exception)]
        return out

    def check(self) -> None:
        if self.errors:
            raise MaterializationError(f"redis rejected {len(self.errors)} command(s), e.g. {self.errors[0]}")

    def abort(self) -> None:
        self.conn.disconnect()  # unread replies must not reach the next user of this connection

    def release(self) -> None:
        self.pool.release(self.conn)


# --------------------------------------------------------------------------------------------------
# Planning and the public API
# --------------------------------------------------------------------------------------------------


def _store(settings_or_store) -> "FeatureStore":
    from feast import FeatureStore

    if isinstance(settings_or_store, FeatureStore):
        return settings_or_store
    from ml.features import repo

    return repo.get_store(settings_or_store)


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _fast_path_reason(store: "FeatureStore") -> str | None:
    """Why this store's online configuration needs Feast's own materialization (None: it doesn't)."""
    cfg = store.config
    online = cfg.online_store
    kind = getattr(online, "type", "")
    if cfg.entity_key_serialization_version != 3:
        return f"entity_key_serialization_version {cfg.entity_key_serialization_version}"
    if kind == "sqlite" or str(kind).endswith("SqliteOnlineStore"):
        if getattr(online, "vector_enabled", False) or getattr(online, "enable_openai_compatible_store", False):
            return "sqlite vector / value_num columns"
        return None
    if kind == "redis" or str(kind).endswith("RedisOnlineStore"):
        if str(getattr(online.redis_type, "value", online.redis_type)) == "redis_cluster":
            return "redis cluster"
        return None
    return f"online store {kind!r}"


def plan_view(store: "FeatureStore", view) -> ViewPlan | str:
    """The ViewPlan of a feature view, or why it needs Feast's own materialization."""
    from feast import FeatureView
    from feast.data_format import ParquetFormat
    from feast.infra.offline_stores.file_source import FileSource
    from feast.utils import _get_column_names

    if type(view) is not FeatureView:
        return f"{type(view).__name__} (not a plain FeatureView)"
    source = view.batch_source
    if not isinstance(source, FileSource):
        return f"source {type(source).__name__}"
    if not (isinstance(source.file_format, ParquetFormat) or (source.file_format is None and source.path.endswith(".parquet"))):
        return "source is not Parquet"
    path = FileSource.get_uri_for_file_path(store.repo_path, source.path)
    if "://" in path:
        return "remote source"
    if getattr(view, "aggregations", None):
        return "view with aggregations"
    entities = [store.registry.get_entity(e, store.project) for e in view.entities]
    join_cols, feature_cols, ts_col, created_col = _get_column_names(view, entities)
    mapping = source.field_mapping or {}
    join_keys = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
    features = {f.name: f.dtype.to_value_type() for f in view.features}
    column_map = {c: mapping.get(c, c) for c in [*join_cols, *feature_cols]}
    if set(column_map.values()) != set(join_keys) | set(features):
        return "columns do not map one-to-one"
    column_map[ts_col] = ts_col
    if created_col:
        column_map[created_col] = created_col
    return ViewPlan(view, path, join_keys, features, ts_col, created_col, column_map)


def materialize(
    settings_or_store: "Settings | FeatureStore",
    start: datetime | None,
    end: datetime,
    views: list[str] | None = None,
    *,
    batch_rows: int = BATCH_ROWS,
    echo: Callable[[str], None] | None = None,
    _starts: dict[str, datetime | None] | None = None,
) -> dict:
    """Write the latest row per entity with ``start <= event_timestamp <= end`` of each online
    feature view (default: every view but model outputs, see ``default_views``) into the online
    store, and record the interval in the registry.

    ``start=None`` reads from the beginning (the interval is recorded from 1970-01-01). Every
    source is checked (file, columns) before anything is written; a failing view raises
    MaterializationError (or the store's error) with nothing of that view written and the views
    before it complete. Returns::

        {"online_store": "sqlite", "start": ..., "end": ..., "rows": N, "written": W,
         "seconds": s, "rows_per_s": r,
         "views": {view: {"rows", "written", "seconds", "rows_per_s", "start", "end", "engine"}}}

    ``rows`` counts entities whose latest row falls in the window; ``written`` those actually
    stored (a stored row with a newer event_timestamp is kept).
    """
    import duckdb

    t0 = time.perf_counter()
    store = _store(settings_or_store)
    end = _utc(end)
    start = _utc(start)
    if end is None:
        raise ValueError("end is required")
    if start is not None and start > end:
        raise ValueError(f"start {start} is after end {end}")
    say = echo or (lambda msg: log.info(msg))

    selected = store._get_feature_views_to_materialize(views if views is not None else default_views(store))
    reason_store = _fast_path_reason(store)
    plans: list[ViewPlan] = []
    delegated: dict[str, str] = {}
    for view in selected:
        plan = plan_view(store, view) if reason_store is None else reason_store
        if isinstance(plan, str):
            delegated[view.name] = plan
        else:
            plans.append(plan)

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    memory_limit = getattr(settings_or_store, "duckdb_memory_limit", None)
    if memory_limit:
        con.execute(f"set memory_limit = '{memory_limit}'")
    for plan in plans:  # check every source before writing anything
        check_source(con, plan)

    kind = getattr(store.config.online_store, "type", "?")
    writer = (SqliteWriter if "sqlite" in str(kind).lower() else RedisWriter)(store) if plans else None
    stats: dict[str, dict] = {}
    try:
        for plan in plans:
            v_start = _starts.get(plan.name, start) if _starts is not None else start
            t = time.perf_counter()
            table = latest_rows(con, plan, v_start, end)
            written = writer.write(plan, table, batch_rows)
            recorded_start = v_start or EPOCH
            store.registry.apply_materialization(plan.view, store.project, recorded_start, end)
            seconds = time.perf_counter() - t
            stats[plan.name] = _stat(table.num_rows, written, seconds, recorded_start, end, "fast")
            say(f"{plan.name}: {table.num_rows:,} rows ({written:,} written) in {seconds:.2f} s")
    finally:
        con.close()
        if writer is not None:
            writer.close()

    for name, reason in delegated.items():
        v_start = (_starts.get(name, start) if _starts is not None else start) or EPOCH
        say(f"{name}: handed to feast materialize ({reason})")
        t = time.perf_counter()
        store.materialize(start_date=v_start, end_date=end, feature_views=[name])
        stats[name] = _stat(None, None, time.perf_counter() - t, v_start, end, "feast")

    if stats and hasattr(store, "_precompute_affected_services"):
        store._precompute_affected_services(list(stats))
    seconds = time.perf_counter() - t0
    rows = sum(s["rows"] or 0 for s in stats.values())
    return {
        "online_store": kind,
        "start": start.isoformat() if start else None,
        "end": end.isoformat(),
        "rows": rows,
        "written": sum(s["written"] or 0 for s in stats.values()),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None,
        "views": stats,
    }


def _stat(rows, written, seconds, start, end, engine) -> dict:
    return {
        "rows": rows,
        "written": written,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1) if rows is not None and seconds > 0 else None,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "engine": engine,
    }


def default_views(store: "FeatureStore") -> list[str]:
    """What "all views" means: every feature view except model outputs (tag ``produced_by``, e.g.
    ``user_propensity``), which the scoring job that writes them materializes."""
    return [v.name for v in store.list_feature_views() if "produced_by" not in (v.tags or {})]


def materialize_incremental(
    settings_or_store: "Settings | FeatureStore",
    end: datetime,
    views: list[str] | None = None,
    **kwargs,
) -> dict:
    """Like ``feast materialize-incremental``: each view from the end of its last recorded
    materialization (registry) to ``end``; a view never materialized starts from the beginning
    (Feast would start at now - ttl, or a year ago for ttl 0)."""
    store = _store(settings_or_store)
    views = views if views is not None else default_views(store)
    starts = {v.name: _utc(v.most_recent_end_time) for v in store._get_feature_views_to_materialize(views)}
    return materialize(store, None, end, views, _starts=starts, **kwargs)
