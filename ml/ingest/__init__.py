"""Real-data ingestion: any CSV / Parquet / XLSX export into the lake, through a declarative mapping.

    from ml.ingest import ingest_file
    report = ingest_file(path, "online_retail_ii", lake_dir=..., quarantine_dir=...)

Every source row is either accepted into the contract tables (ml.contract) or quarantined with a
reason; nothing is written until the whole file has been processed, and a file already in the
ledger is skipped (``force=True`` re-ingests it, replacing its ``ing-<sha12>`` files). See
docs/ingestion.md.

With PSEUDONYMIZE_KEY set (or ``pseudonymize_key=`` given), user ids are replaced by keyed
pseudonyms before anything is written, and a lake never mixes raw ids with pseudonyms or two keys'
pseudonyms (``IdSpaceError``): ml/ingest/pseudonymize.py, docs/security.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from ml.contract import finalize_lake, write_table
from ml.ingest.mapping import PRESETS, IngestError, Mapping, load_mapping
from ml.ingest.pseudonymize import (FROM_SETTINGS, USER_TABLES, IdSpaceError, Pseudonymizer, check_id_space,
                                    pseudonymizer_for, record_id_space)
from ml.ingest.quarantine import IngestReport, append_ledger, read_ledger, write_quarantine
from ml.ingest.readers import READABLE_SUFFIXES, read_source, sha256_of
from ml.ingest.transform import transform

__all__ = ["ingest_file", "ingest_landing", "load_mapping", "PRESETS", "IngestError", "IdSpaceError", "IngestReport",
           "Mapping", "Pseudonymizer"]


def ingest_file(path: Path, mapping: "str | Path | Mapping", *, lake_dir: Path, quarantine_dir: Path,
                force: bool = False, pseudonymize_key=FROM_SETTINGS) -> IngestReport:
    """Ingest one export file into the lake; returns its report (``skipped=True`` if already ingested).

    ``pseudonymize_key``: a key (str / SecretStr), a Pseudonymizer, None (raw ids) or, by default,
    PSEUDONYMIZE_KEY from the environment. Raises IdSpaceError before reading the file when the lake
    holds user ids of another id space (raw, or another key's pseudonyms).
    """
    started = time.perf_counter()
    path = Path(path)
    spec = load_mapping(mapping)
    pz = pseudonymizer_for(pseudonymize_key)
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    sha = sha256_of(path)
    own_stem = f"ing-{sha[:12]}"
    previous = None if force else read_ledger(lake_dir).get(sha)
    writes_user_ids = bool(set(spec.produces) & set(USER_TABLES))
    if writes_user_ids:  # a skipped file rewrites nothing, so all of the lake's user rows count then
        check_id_space(lake_dir, pz, replacing=None if previous else (lambda p: p.stem == own_stem))
    if previous:
        report = IngestReport.from_dict(previous["report"])
        report.skipped = True
        report.file = str(path)
        return report

    raw = read_source(path, spec)
    result = transform(raw, spec, path=path, pseudonymizer=pz)
    if "demand_history" in result.tables:
        _drop_known_dimension_rows(result, lake_dir, own_stem=own_stem)
    report = IngestReport(
        file=str(path), sha256=sha, mapping=spec.name, read=result.read, accepted=result.accepted,
        quarantined=result.quarantined, by_reason=result.by_reason,
        tables={name: int(len(frame)) for name, frame in sorted(result.tables.items())}, notes=result.notes,
        pseudonymized=pz.fingerprint if pz else None,
    )
    # everything is computed; now write (id space, quarantine, lake, manifest, ledger)
    from ml.contract import conform

    conformed = {name: conform(name, frame) for name, frame in result.tables.items()}  # fails before writing
    if writes_user_ids:
        record_id_space(lake_dir, pz, writer=f"ingest {spec.name} {own_stem}")
    write_quarantine(quarantine_dir, sha, result.quarantine, report)
    for name, table in conformed.items():
        write_table(lake_dir, name, table, file_stem=f"ing-{sha[:12]}")
    finalize_lake(lake_dir)
    append_ledger(lake_dir, report)
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _drop_known_dimension_rows(result, lake_dir: Path, own_stem: str) -> None:
    """A demand export only adds the items and warehouses the lake does not list yet: rows derived
    from it (a location's region defaults to its own name, an item's price to the exported median)
    would otherwise conflict with the lake's own rows for the same key (dbt staging refuses two
    different rows per key). Keys already listed are dropped and counted in the notes."""
    import pyarrow.parquet as pq

    from ml.contract import EMPTY_FILE, table_dir

    for name, key in (("items", "item_id"), ("warehouses", "warehouse_id")):
        frame = result.tables.get(name)
        root = table_dir(lake_dir, name)
        if frame is None or frame.empty or not root.exists():
            continue
        files = [p for p in root.glob("**/*.parquet") if p.name != EMPTY_FILE and p.stem != own_stem]
        known = {k for p in files for k in pq.read_table(p, columns=[key]).column(key).to_pylist()}
        listed = frame[key].isin(known)
        if listed.any():
            result.notes[f"{name}_already_in_lake"] = int(listed.sum())
            result.tables[name] = frame[~listed].reset_index(drop=True)


def ingest_landing(landing_dir: Path, mapping: "str | Path | Mapping", *, lake_dir: Path,
                   quarantine_dir: Path, pseudonymize_key=FROM_SETTINGS) -> list[IngestReport]:
    """Ingest every export in ``landing_dir`` (recursively) not ingested before; returns their reports.

    Sibling files a mapping reads alongside its main file (e.g. RecBole ``.item``/``.user``) are not
    ingested on their own. A file that fails is reported in one IngestError after the others ran;
    an IdSpaceError (the key does not fit the lake) stops at once. ``pseudonymize_key``: as ingest_file.
    """
    spec = load_mapping(mapping)
    pz = pseudonymizer_for(pseudonymize_key)
    side = {s.suffix for s in (spec.items_file, spec.users_file) if s is not None}
    files = sorted(
        p for p in Path(landing_dir).rglob("*")
        if p.is_file() and not p.name.startswith((".", "_")) and p.suffix.lower() in READABLE_SUFFIXES
        and p.suffix not in side
    )
    reports, errors = [], []
    for path in files:
        try:
            report = ingest_file(path, spec, lake_dir=lake_dir, quarantine_dir=quarantine_dir, pseudonymize_key=pz)
        except IdSpaceError:
            raise  # the same for every file: one clear error, not one per file
        except IngestError as exc:
            errors.append(str(exc))
            continue
        if not report.skipped:
            reports.append(report)
    if errors:
        raise IngestError(f"{len(errors)} file(s) in {landing_dir} failed: " + " | ".join(errors))
    return reports
