"""Read a CSV, Parquet or XLSX export into a pandas frame, with clear errors for bad files."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import pandas as pd

from ml.ingest.mapping import IngestError, Mapping

CSV_SUFFIXES = {".csv", ".tsv", ".txt", ".inter", ".item", ".user", ".gz"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
XLSX_SUFFIXES = {".xlsx", ".xlsm"}
READABLE_SUFFIXES = CSV_SUFFIXES | PARQUET_SUFFIXES | XLSX_SUFFIXES
_TYPE_SUFFIX = re.compile(r":(token|token_seq|float|float_seq|int)$")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_bad_byte(path: Path, encoding: str) -> tuple[int | None, int | None]:
    """The file offset and 1-based line of the first byte that is not valid ``encoding`` (the
    decoder's own error counts from the start of the chunk it was given, not of the file)."""
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines = 0, 1
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            try:
                lines += decoder.decode(block).count("\n")
            except UnicodeDecodeError as exc:
                pending = len(decoder.getstate()[0]) if hasattr(decoder, "getstate") else 0
                good = block[: exc.start]
                return offset + exc.start - pending, lines + good.count(b"\n")
            offset += len(block)
    return None, None


def _has_nul(path: Path) -> bool:
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        return any(b"\x00" in block for block in iter(lambda: fh.read(1 << 20), b""))


def file_format(path: Path, mapping: Mapping) -> str:
    if mapping.format != "auto":
        return mapping.format
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in XLSX_SUFFIXES:
        return "xlsx"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise IngestError(f"{path}: cannot tell the format from the extension {suffix!r}; set format: in the mapping")


def read_source(path: Path, mapping: Mapping, *, typed_header: bool | None = None) -> pd.DataFrame:
    """The file's rows. CSV and XLSX cells are read as strings (parsing happens later, row by row
    reasons); Parquet keeps its types. Raises IngestError for empty, undecodable or unreadable files."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: the file is empty (0 bytes)")
    fmt = file_format(path, mapping)
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        elif fmt == "xlsx":
            frame = pd.read_excel(path, sheet_name=mapping.sheet, dtype=str, engine="openpyxl")
        else:
            opts = mapping.csv
            frame = pd.read_csv(
                path,
                engine="python" if _has_nul(path) else "c",  # the C parser cuts a cell at a NUL byte
                sep=opts.delimiter,
                encoding=opts.encoding,
                quotechar=opts.quotechar,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                quoting=csv.QUOTE_MINIMAL,
                encoding_errors="strict",
            )
    except UnicodeDecodeError as exc:
        offset, line = _first_bad_byte(path, mapping.csv.encoding)
        where = f"byte {offset:,} (line {line:,})" if offset is not None else f"{exc.reason}"
        raise IngestError(
            f"{path}: not valid {mapping.csv.encoding} text at {where}: {exc.reason}; "
            f"set csv.encoding in the mapping (e.g. latin-1 or cp1252)"
        ) from None
    except pd.errors.EmptyDataError:
        raise IngestError(f"{path}: the file is empty (no header row)") from None
    except pd.errors.ParserError as exc:
        raise IngestError(f"{path}: cannot parse as {fmt} (delimiter {mapping.csv.delimiter!r}): {exc}") from None
    except Exception as exc:  # noqa: BLE001 - corrupt XLSX/Parquet raise many kinds
        raise IngestError(f"{path}: cannot read as {fmt}: {type(exc).__name__}: {exc}") from None
    if typed_header if typed_header is not None else mapping.csv.typed_header:
        frame.columns = [_TYPE_SUFFIX.sub("", str(c)) for c in frame.columns]
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise IngestError(f"{path}: the file has a header but no rows")
    return frame.reset_index(drop=True)
