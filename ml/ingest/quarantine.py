"""The ingestion report, the quarantine folder and the ingest ledger.

Quarantine layout: ``<quarantine_dir>/<sha12>/rows.parquet`` (every rejected row: ``source_row``,
``reason`` and the original columns) and ``<quarantine_dir>/<sha12>/report.json``.
Ledger: ``<lake_dir>/_ingest_log.jsonl``, one JSON line per ingested file (sha256 -> report).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

LEDGER = "_ingest_log.jsonl"
QUARANTINE_FILE = "rows.parquet"


@dataclass
class IngestReport:
    file: str
    sha256: str
    mapping: str
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)  # accepted rows worth a remark, e.g. negative_units
    skipped: bool = False
    seconds: float = 0.0  # wall time (not part of to_dict, which is stable across runs)
    pseudonymized: str | None = None  # key fingerprint when user ids were pseudonymised; else not in to_dict
    expected_reasons: list[str] = field(default_factory=list)  # the mapping's; not counted as bad data

    # reasons the mapping asked for or that lose nothing: not counted as bad data
    EXPECTED = ("filtered:", "non_product_code", "cancellation_matched", "duplicate")

    def _bad(self, reason: str) -> bool:
        return not reason.startswith(self.EXPECTED) and reason not in self.expected_reasons

    @property
    def bad_rows(self) -> int:
        return sum(n for reason, n in self.by_reason.items() if self._bad(reason))

    @property
    def bad_share(self) -> float:
        return self.bad_rows / self.read if self.read else 0.0

    def top_reasons(self, k: int = 3) -> str:
        bad = sorted(((n, r) for r, n in self.by_reason.items() if self._bad(r)), reverse=True)
        return ", ".join(f"{r} {n:,}" for n, r in bad[:k]) or "none"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("seconds")
        d.pop("expected_reasons")
        if d["pseudonymized"] is None:
            d.pop("pseudonymized")  # a report without a key reads exactly as before
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "IngestReport":
        keys = {"file", "sha256", "mapping", "read", "accepted", "quarantined", "by_reason", "tables", "notes", "skipped", "pseudonymized"}
        return cls(**{k: v for k, v in data.items() if k in keys})


def write_quarantine(quarantine_dir: Path, sha: str, rows: pd.DataFrame, report: IngestReport) -> Path:
    folder = Path(quarantine_dir) / sha[:12]
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(folder / QUARANTINE_FILE, index=False)
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return folder


def read_ledger(lake_dir: Path) -> dict[str, dict]:
    """sha256 -> the latest ledger entry for that file."""
    path = Path(lake_dir) / LEDGER
    entries: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                entries[entry["sha256"]] = entry
    return entries


def append_ledger(lake_dir: Path, report: IngestReport) -> None:
    path = Path(lake_dir) / LEDGER
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"sha256": report.sha256, "ingested_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "report": report.to_dict()}
    with open(path, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
