"""Entity-frame checks of ml.features.training (pure pandas; retrieval itself is an integration test)."""

from __future__ import annotations

import pandas as pd
import pytest

from ml.features.training import TrainingSetError, prepare_entity_df


def _frame(**overrides):
    base = {"user_id": ["u1", "u2"], "event_timestamp": ["2024-01-03", "2024-01-04 12:00"], "label": [1, 0]}
    return pd.DataFrame({**base, **overrides})


def test_timestamps_become_utc_and_request_time_defaults_to_label_time():
    df = prepare_entity_df(_frame(), ["user_id"], ["request_timestamp"])
    assert str(df["event_timestamp"].dt.tz) == "UTC"
    assert df["request_timestamp"].equals(df["event_timestamp"])
    assert list(df.columns) == ["user_id", "event_timestamp", "label", "request_timestamp"]


def test_given_request_time_is_kept():
    df = prepare_entity_df(_frame(request_timestamp=["2024-02-01", "2024-02-02"]), ["user_id"], ["request_timestamp"])
    assert df["request_timestamp"].iloc[0] == pd.Timestamp("2024-02-01", tz="UTC")


def test_input_frame_is_not_modified():
    frame = _frame()
    prepare_entity_df(frame, ["user_id"], ["request_timestamp"])
    assert list(frame.columns) == ["user_id", "event_timestamp", "label"]


@pytest.mark.parametrize(
    "frame, message",
    [
        (_frame().drop(columns="user_id"), "lacks column"),
        (_frame().drop(columns="event_timestamp"), "lacks column"),
        (_frame(user_id=["u1", None]), "null keys"),
        (_frame(event_timestamp=["2024-01-01", None]), "null keys"),
        (_frame(user_id=[1, 2]), "must hold strings"),
    ],
)
def test_bad_entity_frames_are_rejected(frame, message):
    with pytest.raises(TrainingSetError, match=message):
        prepare_entity_df(frame, ["user_id"], [])
