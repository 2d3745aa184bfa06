"""Real-data ingestion: any CSV / Parquet / XLSX export into the lake, through a declarative mapping.

    from ml.ingest import ingest_file
    report = ingest_file(path, "online_retail_ii", lake_dir=..., quarantine_dir=...)

Every source row is either accepted into the contract tables (ml.contract) or quarantined with a
reason. A file becomes one commit of the lake (ml/lake.py): nothing of it is visible to a build until
all of its tables are written, and a writer killed midway leaves the lake as it was. A file already
committed is skipped (``force=True`` re-ingests it, replacing its ``ing-<sha12>-*`` files in the same
commit). Exports of one shop may overlap and repeat: the warehouse merges them (docs/warehouse.md).
See docs/ingestion.md.

With PSEUDONYMIZE_KEY set (or ``pseudonymize_key=`` given), user ids are replaced by keyed
pseudonyms before anything is written, and a lake never mixes raw ids with pseudonyms or two keys'
pseudonyms (``IdSpaceError``): ml/ingest/pseudonymize.py, docs/security.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from ml.contract import finalize_lake
from ml.ingest.lake_lines import earlier_lines
from ml.ingest.mapping import PRESETS, IngestError, Mapping, load_mapping
from ml.ingest.pseudonymize import (
    FROM_SETTINGS,
    USER_TABLES,
    IdSpaceError,
    Pseudonymizer,
    check_id_space,
    pseudonymizer_for,
    record_id_space,
)
from ml.ingest.quarantine import IngestReport, append_ledger, read_ledger, write_quarantine
from ml.ingest.readers import READABLE_SUFFIXES, read_source, sha256_of
from ml.ingest.transform import check_columns, transform
from ml.lake import begin, committed_files, read_commits

__all__ = [
    "ingest_file",
    "ingest_landing",
    "landing_files",
    "load_mapping",
    "PRESETS",
    "IngestError",
    "IdSpaceError",
    "IngestReport",
    "LandingError",
    "Mapping",
    "Pseudonymizer",
    "QuarantineShareError",
]


class QuarantineShareError(IngestError):
    """A file quarantined more of its rows than allowed; nothing of it was committed."""


def ingest_file(
    path: Path,
    mapping: "str | Path | Mapping",
    *,
    lake_dir: Path,
    quarantine_dir: Path,
    force: bool = False,
    pseudonymize_key=FROM_SETTINGS,
    max_quarantine_share: float | None = None,
    accept_quarantine: bool = False,
) -> IngestReport:
    """Ingest one export file into the lake as one commit (ml/lake.py); returns its report
    (``skipped=True`` if already ingested).

    ``pseudonymize_key``: a key (str / SecretStr), a Pseudonymizer, None (raw ids) or, by default,
    PSEUDONYMIZE_KEY from the environment. Raises IdSpaceError before reading the file when the lake
    holds user ids of another id space. Raises QuarantineShareError (nothing committed) when more
    than ``max_quarantine_share`` of the rows were quarantined for bad data (the mapping's
    ``max_quarantine_share`` wins; None: no limit; the CLI and the ingest DAG pass
    INGEST_MAX_QUARANTINE_SHARE), unless ``accept_quarantine``.
    """
    started = time.perf_counter()
    path = Path(path)
    spec = load_mapping(mapping)
    pz = pseudonymizer_for(pseudonymize_key)
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    sha = sha256_of(path)
    prefix = f"ing-{sha[:12]}"
    mine = lambda c: c["stem"] == prefix or c["stem"].startswith(prefix + "-")  # noqa: E731
    writes_user_ids = bool(set(spec.produces) & set(USER_TABLES))

    def already(commits) -> dict | None:
        return None if force or not any(mine(c) for c in commits) else read_ledger(lake_dir).get(sha)

    def check_ids(previous) -> None:
        if writes_user_ids:  # a skipped file rewrites nothing, so all of the lake's user rows count then
            stems = {c["stem"] for c in read_commits(lake_dir) if mine(c)}
            check_id_space(lake_dir, pz, replacing=None if previous else (lambda p: p.stem in stems))

    previous = already(read_commits(lake_dir))
    check_ids(previous)
    if previous:
        return _skipped(previous, path)
    raw = read_source(path, spec)  # a file that cannot be read or lacks a column leaves the lake untouched
    check_columns(raw, spec, path)
    with begin(
        lake_dir,
        kind="ingest",
        source=str(path),
        sha256=sha,
        mapping=spec.name,
        wait_message=f"{path.name}: waiting for the lake (another ingest or a warehouse build holds it)",
    ) as commit:
        previous = already(read_commits(lake_dir))  # again, under the lock
        check_ids(previous)
        if previous:
            return _skipped(previous, path)
        result = transform(raw, spec, path=path, pseudonymizer=pz, earlier_lines=earlier_lines(lake_dir))
        if "demand_history" in result.tables:
            _drop_known_dimension_rows(result, lake_dir, own=mine)
        report = IngestReport(
            file=str(path),
            sha256=sha,
            mapping=spec.name,
            read=result.read,
            accepted=result.accepted,
            quarantined=result.quarantined,
            by_reason=result.by_reason,
            tables={name: int(len(frame)) for name, frame in sorted(result.tables.items())},
            notes=result.notes,
            pseudonymized=pz.fingerprint if pz else None,
            expected_reasons=list(spec.expected_reasons),
        )
        limit = spec.max_quarantine_share if spec.max_quarantine_share is not None else max_quarantine_share
        share = report.bad_share
        if limit is not None and share > limit and not accept_quarantine:
            write_quarantine(quarantine_dir, sha, result.quarantine, report)
            raise QuarantineShareError(
                f"{path}: {share:.1%} of {report.read:,} rows quarantined for bad data (limit {limit:.0%}); "
                f"top reasons: {report.top_reasons()}. Nothing was written to the lake; the rows are in "
                f"{Path(quarantine_dir) / sha[:12]}. Fix the mapping, or pass --accept-quarantine "
                f"(or set max_quarantine_share in the mapping)"
            )
        # everything is computed; now write (id space, quarantine, lake files, then the commit)
        from ml.contract import conform

        conformed = {name: conform(name, frame) for name, frame in result.tables.items()}  # fails before writing
        if writes_user_ids:
            record_id_space(lake_dir, pz, writer=f"ingest {spec.name} {prefix}")
        write_quarantine(quarantine_dir, sha, result.quarantine, report)
        commit.supersede(mine)  # force: the new copy replaces the old one in the same commit
        stem = commit.stem(prefix)
        for name, table in conformed.items():
            commit.write(name, table, stem)
    finalize_lake(lake_dir)
    append_ledger(lake_dir, report)
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _skipped(previous: dict, path: Path) -> IngestReport:
    report = IngestReport.from_dict(previous["report"])
    report.skipped = True
    report.file = str(path)
    return report


def _drop_known_dimension_rows(result, lake_dir: Path, own) -> None:
    """A demand export only adds the items and warehouses the lake does not list yet: rows derived
    from it (a location's region defaults to its own name, an item's price to the exported median)
    would otherwise conflict with the lake's own rows for the same key (dbt staging refuses two
    different rows per key). Keys already listed are dropped and counted in the notes."""
    import pyarrow.parquet as pq

    own_stems = {c["stem"] for c in read_commits(lake_dir) if own(c)}
    for name, key in (("items", "item_id"), ("warehouses", "warehouse_id")):
        frame = result.tables.get(name)
        if frame is None or frame.empty:
            continue
        files = [p for p in committed_files(lake_dir, name) if p.stem not in own_stems]
        known = {k for p in files for k in pq.read_table(p, columns=[key]).column(key).to_pylist()}
        listed = frame[key].isin(known)
        if listed.any():
            result.notes[f"{name}_already_in_lake"] = int(listed.sum())
            result.tables[name] = frame[~listed].reset_index(drop=True)


FAILED_DIR = "_failed"


class LandingError(IngestError):
    """Some files of a landing folder failed; ``reports`` holds the ones ingested, ``failed`` the
    others as (file in the failed folder, reason)."""

    def __init__(self, message: str, reports: list[IngestReport], failed: list[tuple[str, str]]):
        super().__init__(message)
        self.reports, self.failed = reports, failed


def landing_files(landing_dir: Path, spec: Mapping) -> list[Path]:
    """The exports waiting in ``landing_dir`` (recursively), in name order. Hidden files, names and
    folders starting with '_' (the failed folder among them) and a mapping's sibling files (RecBole
    ``.item``/``.user``, read with their main file) are not exports."""
    side = {s.suffix for s in (spec.items_file, spec.users_file) if s is not None}
    root = Path(landing_dir)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        and p.suffix.lower() in READABLE_SUFFIXES
        and p.suffix not in side
    )


def ingest_landing(
    landing_dir: Path,
    mapping: "str | Path | Mapping",
    *,
    lake_dir: Path,
    quarantine_dir: Path,
    pseudonymize_key=FROM_SETTINGS,
    max_quarantine_share: float | None = None,
    accept_quarantine: bool = False,
    progress=None,
) -> list[IngestReport]:
    """Ingest every export in ``landing_dir`` not ingested before, one commit each, in name order
    (the order exports arrived in, for a folder named by date); returns their reports.

    A file that fails for any reason moves to ``<landing_dir>/_failed/`` with ``<name>.error.txt``
    beside it and the others go on; then one LandingError lists every failure. An IdSpaceError (the
    key does not fit the lake) stops at once. ``progress(path, report | None, error | None)`` is
    called after each file. ``pseudonymize_key``, ``max_quarantine_share``: as ingest_file.
    """
    spec = load_mapping(mapping)
    pz = pseudonymizer_for(pseudonymize_key)
    landing_dir = Path(landing_dir)
    reports, failed = [], []
    for path in landing_files(landing_dir, spec):
        try:
            report = ingest_file(
                path,
                spec,
                lake_dir=lake_dir,
                quarantine_dir=quarantine_dir,
                pseudonymize_key=pz,
                max_quarantine_share=max_quarantine_share,
                accept_quarantine=accept_quarantine,
            )
        except IdSpaceError:
            raise  # the same for every file: one clear error, not one per file
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            reason = str(exc) if isinstance(exc, IngestError) else f"{type(exc).__name__}: {exc}"
            reason = reason.removeprefix(f"{path}: ")  # the summary names the file already
            failed.append((str(_move_failed(path, landing_dir, reason)), reason))
            if progress:
                progress(path, None, reason)
            continue
        if progress:
            progress(path, report, None)
        if not report.skipped:
            reports.append(report)
            stale = landing_dir / FAILED_DIR / path.relative_to(landing_dir)
            stale.with_name(stale.name + ".error.txt").unlink(missing_ok=True)  # a fixed file moved back
    if failed:
        lines = "\n".join(f"  {f}: {why}" for f, why in failed)
        raise LandingError(
            f"{len(failed)} of {len(failed) + len(reports)} new file(s) in {landing_dir} failed and moved to "
            f"{landing_dir / FAILED_DIR} (fix and move them back to retry); {len(reports)} ingested:\n{lines}",
            reports,
            failed,
        )
    return reports


def _move_failed(path: Path, landing_dir: Path, reason: str) -> Path:
    target = landing_dir / FAILED_DIR / path.relative_to(landing_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)
    target.with_name(target.name + ".error.txt").write_text(reason + "\n")
    return target
