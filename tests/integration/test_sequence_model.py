"""propensity_gru on a real dbt build (tiny generated lake): the mart_user_event_sequences export against
fct_events / fct_order_lines, then the GRU trained on sequences for the rows of the label mart
mart_user_purchase_labels with a time split (earlier cutoffs train, the last labelled cutoff tests). The
generator plants per-user purchase intent and activity, so the sequences carry signal: test ROC AUC
must beat 0.6 (measured: ~0.65-0.67 at tiny, ~0.74 at small; n_events alone ~0.65 / ~0.70).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from ml import warehouse

pytestmark = pytest.mark.integration


LABEL = "is_purchased_7d"
HORIZON_DAYS = 7


def test_mart_user_event_sequences_is_every_event_in_time_order(built_warehouse):
    from ml.models.user import sequence

    events = sequence.load_events(built_warehouse)
    assert list(events.columns) == ["user_id", "event_timestamp", *sequence.FIELDS]
    assert str(events["event_timestamp"].dt.tz) == "UTC"
    keys = events[["user_id", "event_timestamp"]]
    assert keys.equals(keys.sort_values(["user_id", "event_timestamp"], kind="stable")), "not sorted by user_id, event_timestamp"

    con = warehouse.connect(built_warehouse)
    try:
        counts = dict(con.execute("select event_type, count(*) from fct_events group by 1").fetchall())
        uncovered = con.execute(
            "select count(*) from fct_order_lines where order_id not in "
            "(select order_id from fct_events where event_type = 'purchase' and order_id is not null)"
        ).fetchone()[0]
        searches = con.execute("select count(*) from fct_events where item_id is null").fetchone()[0]
    finally:
        con.close()
    assert counts, "the generated lake has a clickstream"
    got = events["event_type"].value_counts().to_dict()
    expected = {**counts, "purchase": counts.get("purchase", 0) + uncovered}
    assert got == expected
    assert int(events["category_l1"].isna().sum()) >= searches  # searches carry no item
    assert set(events["price_band"].dropna()) <= {"low", "mid", "high", "premium", "unknown"}


def test_gru_learns_purchase_propensity_from_sequences(built_warehouse):
    from sklearn.metrics import roc_auc_score

    from ml.models.lifecycle.splits import time_split
    from ml.models.user import sequence

    labels = pd.read_parquet(built_warehouse.exports_dir / "mart_user_purchase_labels.parquet")
    labelled = labels[labels[LABEL].notna()]
    split = time_split(labelled, time_col="event_timestamp", n_valid=1, n_test=1, gap_days=HORIZON_DAYS)

    # The YAML is sized for `small`; tiny has ~3.5k training rows, so smaller batches and more epochs.
    config = sequence.load_config(batch_size=64, lr=0.01, epochs=15, patience=3, num_threads=1)
    events = sequence.load_events(built_warehouse)
    train = sequence.build_sequences(events, split.train, n_last=config.n_last, label_col=LABEL)
    valid = sequence.build_sequences(events, split.valid, n_last=config.n_last, vocab=train["vocab"], label_col=LABEL)
    test = sequence.build_sequences(events, split.test, n_last=config.n_last, vocab=train["vocab"], label_col=LABEL)
    assert train["vocab"]["event_type"][2:] == sorted(events["event_type"].unique())

    started = time.perf_counter()
    model, history = sequence.fit(train, valid, config)
    seconds = time.perf_counter() - started
    p = sequence.predict(model, test)
    auc = roc_auc_score(test["label"], p)
    activity_auc = roc_auc_score(test["label"], test["n_events"])
    print(
        f"\npropensity_gru tiny: train {len(split.train)} rows, test {len(split.test)} rows "
        f"(positives {int(test['label'].sum())}), {len(history)} epochs in {seconds:.1f}s CPU; "
        f"test ROC AUC {auc:.3f} (event count alone {activity_auc:.3f})"
    )
    assert auc > 0.6, (auc, history)
    assert np.all((p > 0) & (p < 1))

    # Scoring: the last cutoff's population (labels unknown) with the model's own vocabulary.
    scoring = labels[labels["event_timestamp"] == labels["event_timestamp"].max()]
    assert scoring[LABEL].isna().all()
    scores = sequence.predict(model, sequence.sequences_for(model, events, scoring))
    assert len(scores) == len(scoring) and np.isfinite(scores).all()
