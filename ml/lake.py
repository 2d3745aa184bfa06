"""Committed writes to the lake: staged files, one commit manifest, one writer at a time.

Every writer (ingestion, the generator) writes a batch of files through a :class:`LakeCommit`:

1. it takes the lake's writer lock (``<lake>/.lake.lock``, ``flock`` exclusive; a warehouse build
   holds it shared for as long as dbt runs, so a build never sees a lake change under it);
2. writes each table's files as ``<stem>.parquet.tmp`` beside their final place, under a stem no
   earlier write used (``ing-<sha12>-<seq>``, ``gen-<seq>-<chunk>``);
3. renames them to ``<stem>.parquet``;
4. replaces ``<lake>/_commits.json`` in one atomic ``os.replace``: the list of committed stems,
   each with its sequence number (the order exports arrived in), source and row counts; stems it
   supersedes (a file re-ingested with ``force``, an earlier generation) leave the list in the same
   step;
5. deletes superseded files and anything left by a writer that died before its step 4.

A build reads only files whose stem is in the manifest (dbt: ``stg_lake__commits`` joined in every
staging model), so a writer killed at any point leaves the lake exactly as before (its files are
invisible, then removed by the next writer) or exactly as after (the manifest was replaced).
The sequence number is what the warehouse's merge rules order exports by ("the latest export wins",
docs/warehouse.md).

A lake written before the manifest existed is adopted once: every file it holds becomes one commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

COMMITS = "_commits.json"
LOCK = ".lake.lock"
TMP_SUFFIX = ".parquet.tmp"
EMPTY_FILE = "_empty.parquet"


class LakeBusyError(RuntimeError):
    """The lake's writer lock could not be taken in time."""


# ------------------------------------------------------------------------------------------- lock
@contextlib.contextmanager
def held(path: Path, *, shared: bool = False, timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold ``flock`` on the file ``path`` (created if missing): shared or exclusive. ``on_wait()`` is
    called once when another holder makes it wait; after ``timeout`` seconds (None: for ever)
    LakeBusyError. Released when the block ends (or the process dies)."""
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, mode | (fcntl.LOCK_NB if deadline is not None or not waited else 0))
                break
            except BlockingIOError:
                if not waited and on_wait:
                    on_wait()
                waited = True
                if deadline is not None:
                    if time.monotonic() > deadline:
                        raise LakeBusyError(f"{path} is still held by another process after {timeout:.0f} s") from None
                    time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def lake_lock(lake_dir: Path, *, shared: bool = False, wait_message: str | None = None, timeout: float | None = None):
    """The lake's lock: exclusive for a writer, ``shared`` for a reader that needs a stable lake (a
    warehouse build: ml/dbt_locked.py takes it the same way). Says ``wait_message`` on stderr once
    when it has to wait."""
    say = (lambda: print(wait_message, file=sys.stderr, flush=True)) if wait_message else None
    return held(Path(lake_dir) / LOCK, shared=shared, timeout=timeout, on_wait=say)


# --------------------------------------------------------------------------------------- manifest
def read_commits(lake_dir: Path) -> list[dict]:
    """The committed writes, oldest first (empty for a new lake)."""
    path = Path(lake_dir) / COMMITS
    if not path.exists():
        return []
    return json.loads(path.read_text())


def committed_stems(lake_dir: Path) -> set[str]:
    return {c["stem"] for c in read_commits(lake_dir)}


def _write_commits(lake_dir: Path, commits: list[dict]) -> None:
    path = Path(lake_dir) / COMMITS
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as fh:
        json.dump(commits, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # the commit point


def data_files(lake_dir: Path, table: str) -> list[Path]:
    """Every data file of ``table`` on disk, committed or not (no schema placeholder, no temp file)."""
    root = Path(lake_dir) / table
    if not root.exists():
        return []
    return sorted(p for p in root.glob("**/*.parquet") if p.name != EMPTY_FILE)


def committed_files(lake_dir: Path, table: str) -> list[Path]:
    """The files of ``table`` a build reads: those whose stem is committed."""
    stems = committed_stems(lake_dir)
    return [p for p in data_files(lake_dir, table) if p.stem in stems]


def _table_names() -> list[str]:
    from ml.contract import TABLES

    return list(TABLES)


def ensure_manifest(lake_dir: Path) -> None:
    """Give a lake its manifest: ``[]`` for a new one; a lake written before manifests existed has
    every file it holds adopted as one commit (its files were all final)."""
    lake_dir = Path(lake_dir)
    if (lake_dir / COMMITS).exists() or not lake_dir.exists():
        return
    with lake_lock(lake_dir):
        _adopt(lake_dir)


def _adopt(lake_dir: Path) -> None:
    """(Under the exclusive lock.) Write the manifest of a lake that has none."""
    if (lake_dir / COMMITS).exists():
        return
    stems = sorted({p.stem for t in _table_names() for p in data_files(lake_dir, t)})
    commits = [
        {"seq": i + 1, "stem": s, "kind": "adopted", "source": "files present before the commit log", "committed_at": _now()}
        for i, s in enumerate(stems)
    ]
    _write_commits(lake_dir, commits)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------- commit
@dataclass
class LakeCommit:
    """One atomic write of several tables' files (see the module doc). Use inside ``begin()``::

    with begin(lake_dir, kind="ingest", source=str(path)) as commit:
        stem = commit.stem(f"ing-{sha[:12]}")
        commit.write("orders", frame, stem)
        commit.supersede(lambda c: c["stem"].startswith(f"ing-{sha[:12]}-"))
    # committed here; an exception before this point leaves the lake as it was
    """

    lake_dir: Path
    kind: str
    source: str
    seq: int
    meta: dict = field(default_factory=dict)
    _staged: list[tuple[Path, Path]] = field(default_factory=list)
    _stems: dict[str, dict[str, int]] = field(default_factory=dict)
    _supersede: list = field(default_factory=list)

    def stem(self, prefix: str) -> str:
        """A file stem no earlier write used: ``<prefix>-<seq>``."""
        return f"{prefix}-{self.seq:06d}"

    def write(self, name: str, data, stem: str) -> int:
        """Stage ``data`` (conformed to the contract) as ``stem`` files of table ``name``; returns rows."""
        from ml.contract import stage_table

        rows, staged = stage_table(self.lake_dir, name, data, stem, suffix=".tmp")
        self._staged += staged
        self._stems.setdefault(stem, {})
        if rows:
            self._stems[stem][name] = self._stems[stem].get(name, 0) + rows
        return rows

    def supersede(self, predicate) -> None:
        """Earlier commits matching ``predicate(commit_dict)`` leave the lake when this one lands."""
        self._supersede.append(predicate)

    def _commit(self) -> None:
        finals = {final for _, final in self._staged}
        for name in _table_names():  # a reused stem (write_table) replaces all of its earlier files
            for p in data_files(self.lake_dir, name):
                if p.stem in self._stems and p not in finals:
                    p.unlink()
        for tmp, final in self._staged:
            os.replace(tmp, final)
        commits = read_commits(self.lake_dir)
        kept = [c for c in commits if c["stem"] not in self._stems and not any(p(c) for p in self._supersede)]
        now = _now()
        for stem, tables in self._stems.items():  # a stem without rows is recorded too: its export was taken
            kept.append(
                {
                    "seq": self.seq,
                    "stem": stem,
                    "kind": self.kind,
                    "source": self.source,
                    "committed_at": now,
                    "tables": tables,
                    **self.meta,
                }
            )
        _write_commits(self.lake_dir, kept)
        sweep(self.lake_dir)

    def _abort(self) -> None:
        for tmp, final in self._staged:
            for p in (tmp, final):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


@contextlib.contextmanager
def begin(lake_dir: Path, *, kind: str, source: str, wait_message: str | None = None, **meta) -> Iterator[LakeCommit]:
    """A LakeCommit under the exclusive lock; committed when the block ends without an exception."""
    lake_dir = Path(lake_dir)
    msg = wait_message or f"waiting for the lake {lake_dir}: another ingest or a warehouse build holds it"
    with lake_lock(lake_dir, wait_message=msg):
        _adopt(lake_dir)
        sweep(lake_dir)  # what a writer killed before its commit left
        seq = max((c["seq"] for c in read_commits(lake_dir)), default=0) + 1
        commit = LakeCommit(lake_dir, kind=kind, source=source, seq=seq, meta=meta)
        try:
            yield commit
        except BaseException:
            commit._abort()
            raise
        commit._commit()


def sweep(lake_dir: Path) -> list[Path]:
    """Delete temp files and data files whose stem is not committed (call under the exclusive lock).
    Returns what was deleted."""
    lake_dir = Path(lake_dir)
    if not (lake_dir / COMMITS).exists():
        return []
    stems = committed_stems(lake_dir)
    removed = []
    for name in _table_names():
        root = lake_dir / name
        if not root.exists():
            continue
        stale = [p for p in root.glob(f"**/*{TMP_SUFFIX}")]
        stale += [p for p in data_files(lake_dir, name) if p.stem not in stems]
        for p in stale:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            removed.append(p)
        for folder in sorted((d for d in root.iterdir() if d.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only empty partition folders go
    return removed
