"""Where batch model outputs live and how they are written: one Parquet partition per scoring date,
plus the file behind the model's Feast view (score_views.py).

    $SCORES_DIR/<model>/scoring_date=YYYY-MM-DD/part.parquet   one run's output, rewritten on re-run
    $SCORES_DIR/<model>.parquet                                every date's rows: the Feast source

Hive layout: the scoring date lives in the folder name only, so ``pd.read_parquet(scores_root)``
reads every date with its ``scoring_date`` (another key name, e.g. ``forecast_date``, via ``key``). Files are replaced atomically
(write, then rename).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def scores_root(settings: Settings, model_name: str) -> Path:
    return Path(settings.scores_dir) / model_name


def source_path(settings: Settings, model_name: str) -> Path:
    """The Parquet file behind the model's Feast view (the rows of every scoring date)."""
    return Path(settings.scores_dir) / f"{model_name}.parquet"


def atomic_parquet(frame: "pd.DataFrame", path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def write_partition(
    settings: Settings, model_name: str, frame: "pd.DataFrame", scoring_date: date, key: str = "scoring_date", source: bool = True
) -> Path:
    """Overwrite the date's partition, then (``source``) rebuild the Feast source from all partitions."""
    import pandas as pd

    root = scores_root(settings, model_name)
    partition = root / f"{key}={scoring_date.isoformat()}" / "part.parquet"
    frame = frame.drop(columns=[key], errors="ignore")
    # microseconds, as every other Feast source (DuckDB cannot cast TIMESTAMPTZ_NS when materializing)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    atomic_parquet(frame, partition)
    if not source:
        return partition
    combined = pd.concat([pd.read_parquet(p) for p in sorted(root.glob(f"{key}=*/part.parquet"))], ignore_index=True)
    combined["event_timestamp"] = pd.to_datetime(combined["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    atomic_parquet(combined, source_path(settings, model_name))
    return partition
