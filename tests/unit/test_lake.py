"""ml/lake.py: commits, supersession, sweeping, adoption of an old lake; the generator's refusal."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ml import lake
from ml.contract import finalize_lake
from ml.lake import begin, committed_files, data_files, read_commits


def _events(n, day="2024-05-06"):
    ts = pd.Timestamp(f"{day} 10:00", tz="UTC")
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": "u",
            "session_id": "s",
            "event_type": "view",
            "event_timestamp": [ts] * n,
            "event_date": [ts.date()] * n,
        }
    )


def test_a_commit_is_visible_only_when_it_lands_and_an_exception_leaves_nothing(tmp_path):
    with begin(tmp_path, kind="ingest", source="a") as commit:
        commit.write("events", _events(3), commit.stem("ing-a"))
        assert committed_files(tmp_path, "events") == []  # staged, not committed
    assert [c["stem"] for c in read_commits(tmp_path)] == ["ing-a-000001"]
    with pytest.raises(RuntimeError):
        with begin(tmp_path, kind="ingest", source="b") as commit:
            commit.write("events", _events(2, "2024-05-07"), commit.stem("ing-b"))
            raise RuntimeError("killed")
    assert [c["stem"] for c in read_commits(tmp_path)] == ["ing-a-000001"]
    assert data_files(tmp_path, "events") == committed_files(tmp_path, "events")  # nothing of b left


def test_supersede_replaces_in_the_same_commit_and_the_sequence_grows(tmp_path):
    for source in ("first", "again"):
        with begin(tmp_path, kind="ingest", source=source) as commit:
            commit.supersede(lambda c: c["stem"].startswith("ing-x-"))
            commit.write("events", _events(2), commit.stem("ing-x"))
    commits = read_commits(tmp_path)
    assert [(c["seq"], c["stem"], c["source"]) for c in commits] == [(2, "ing-x-000002", "again")]
    assert [p.stem for p in data_files(tmp_path, "events")] == ["ing-x-000002"]


def test_a_dead_writers_files_are_swept_by_the_next_writer(tmp_path):
    with begin(tmp_path, kind="ingest", source="a") as commit:
        commit.write("events", _events(1), commit.stem("ing-a"))
    orphan = tmp_path / "events" / "event_date=2024-05-09" / "ing-dead-000009.parquet"
    orphan.parent.mkdir()
    _events(1).to_parquet(orphan)
    (tmp_path / "events" / "x.parquet.tmp").write_bytes(b"half")
    assert orphan not in committed_files(tmp_path, "events")
    with begin(tmp_path, kind="ingest", source="b"):
        pass
    assert not orphan.exists() and not orphan.parent.exists() and not (tmp_path / "events" / "x.parquet.tmp").exists()


def test_a_lake_from_before_the_commit_log_is_adopted_whole(tmp_path):
    (tmp_path / "events" / "event_date=2024-05-06").mkdir(parents=True)
    _events(2).to_parquet(tmp_path / "events" / "event_date=2024-05-06" / "gen-00000.parquet")
    status = finalize_lake(tmp_path)
    assert status["tables"]["events"]["rows"] == 2
    assert [(c["stem"], c["kind"]) for c in json.loads((tmp_path / lake.COMMITS).read_text())] == [("gen-00000", "adopted")]


def test_generate_refuses_a_lake_holding_ingested_exports(tmp_path):
    from ml.generate import generate

    with begin(tmp_path, kind="ingest", source="/exports/shop.csv") as commit:
        commit.write("events", _events(1), commit.stem("ing-a"))
    with pytest.raises(ValueError, match="holds 1 ingested export.*shop.csv.*another DATA_DIR"):
        generate(scale="tiny", lake_dir=tmp_path, pseudonymize_key=None)
    assert len(committed_files(tmp_path, "events")) == 1


def test_a_writer_waits_while_a_build_reads_the_lake(tmp_path, capsys):
    """dbt holds the lake lock shared for a build (ml/dbt_locked.py): an ingest's commit waits, says so."""
    import threading
    import time

    done = []

    def ingest():
        with begin(tmp_path, kind="ingest", source="late") as commit:
            commit.write("events", _events(1), commit.stem("ing-late"))
        done.append(time.monotonic())

    with lake.lake_lock(tmp_path, shared=True):  # a build is reading
        worker = threading.Thread(target=ingest)
        worker.start()
        time.sleep(1.0)
        assert not done and read_commits(tmp_path) == []
        released = time.monotonic()
    worker.join(10)
    assert done and done[0] >= released
    assert "waiting for the lake" in capsys.readouterr().err
