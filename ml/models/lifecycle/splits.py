"""Time-based train / validation / test splits.

    split = time_split(labels, time_col="event_timestamp", n_valid=1, n_test=1, gap_days=30)
    split.train, split.valid, split.test, split.boundaries

The distinct times of ``time_col`` are sorted; the test part holds the last ``n_test`` of them, the
validation part the ``n_valid`` before it. ``gap_days`` keeps label windows from crossing a boundary:
a row with a ``gap_days`` label window starting at time t only sees outcomes up to t + gap_days, so
validation times must satisfy t <= test_start - gap_days and training times t <= valid_start - gap_days.
Times inside a gap belong to no part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass
class Split:
    train: "pd.DataFrame"
    valid: "pd.DataFrame"
    test: "pd.DataFrame"
    boundaries: dict[str, str] = field(default_factory=dict)


def _iso(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def time_split(frame: "pd.DataFrame", time_col: str = "event_timestamp", n_valid: int = 1, n_test: int = 1, gap_days: float = 0) -> Split:
    """Split ``frame`` by time (see module doc). Raises ValueError when a part would be empty."""
    import pandas as pd

    if time_col not in frame.columns:
        raise ValueError(f"time_split: column {time_col!r} not in frame (columns: {list(frame.columns)})")
    if n_test < 1 or n_valid < 0 or gap_days < 0:
        raise ValueError(f"time_split: need n_test >= 1, n_valid >= 0, gap_days >= 0 (got {n_test}, {n_valid}, {gap_days})")
    times = pd.to_datetime(frame[time_col])
    if times.isna().any():
        raise ValueError(f"time_split: {int(times.isna().sum())} rows have a null {time_col}")
    distinct = list(pd.DatetimeIndex(times.unique()).sort_values())
    gap = pd.Timedelta(days=gap_days)
    if len(distinct) < n_test:
        raise ValueError(f"time_split: {len(distinct)} distinct {time_col} values, cannot hold out {n_test} for test")
    test_times = distinct[-n_test:]
    test_start = test_times[0]
    valid_pool = [t for t in distinct if t < test_start and t <= test_start - gap]
    valid_times = valid_pool[-n_valid:] if n_valid else []
    if n_valid and len(valid_times) < n_valid:
        raise ValueError(
            f"time_split: validation would be empty or short: {len(valid_pool)} {time_col} values lie at least "
            f"{gap_days} days before the test start {_iso(test_start)}, {n_valid} needed"
        )
    train_end_bound = valid_times[0] if valid_times else test_start
    train_times = [t for t in distinct if t < train_end_bound and t <= train_end_bound - gap]
    if not train_times:
        raise ValueError(
            f"time_split: training part would be empty: no {time_col} value lies at least {gap_days} days before "
            f"{_iso(train_end_bound)} ({len(distinct)} distinct values from {_iso(distinct[0])} to {_iso(distinct[-1])})"
        )

    def part(selected) -> "pd.DataFrame":
        return frame.loc[times.isin(selected).to_numpy()]

    boundaries = {
        "time_col": time_col,
        "gap_days": str(gap_days),
        "train_start": _iso(train_times[0]),
        "train_end": _iso(train_times[-1]),
        "test_start": _iso(test_times[0]),
        "test_end": _iso(test_times[-1]),
    }
    if valid_times:
        boundaries.update(valid_start=_iso(valid_times[0]), valid_end=_iso(valid_times[-1]))
    return Split(part(train_times), part(valid_times), part(test_times), boundaries)
