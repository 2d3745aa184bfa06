"""propensity_gru (ml/models/user/sequence.py): sequence building on tiny frames, and the real torch model
on small synthetic tasks (no files except tmp_path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ml.models.user import sequence as S  # noqa: E402

T0 = pd.Timestamp("2026-03-01 00:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)


def frame(rows):
    """events from (user_id, hours after T0, event_type, category_l1, price_band) tuples."""
    df = pd.DataFrame(rows, columns=["user_id", "hours", "event_type", "category_l1", "price_band"])
    df["event_timestamp"] = T0 + df.pop("hours") * HOUR
    return df


def entities(rows, label=None):
    df = pd.DataFrame(rows, columns=["user_id", "hours"])
    df["event_timestamp"] = T0 + df.pop("hours") * HOUR
    if label is not None:
        df["label"] = label
    return df


def tokens(seq, field, row):
    vocab = seq["vocab"][field]
    return [vocab[i] for i in seq[field][row, : seq["lengths"][row]]]


EVENTS = frame(
    [
        ("a", 0, "view", "home", "low"),
        ("a", 1, "add_to_cart", "home", "low"),
        ("a", 5, "purchase", "home", "low"),  # exactly at the second entity's cutoff
        ("a", 9, "search", None, None),  # after every cutoff
        ("b", 2, "view", "garden", "high"),
        ("b", 3, "view", "garden", "premium"),
    ]
)


def test_only_events_strictly_before_the_cutoff():
    ents = entities([("a", 5), ("a", 1), ("b", 2), ("a", 100), ("c", 50)])
    seq = S.build_sequences(EVENTS, ents, n_last=4)
    # a @ 5h: the purchase AT the cutoff and the later search are left out
    assert tokens(seq, "event_type", 0) == ["view", "add_to_cart"]
    # a @ 1h: the cart add at exactly 1h is not "before"
    assert tokens(seq, "event_type", 1) == ["view"]
    # b @ 2h: its first event is at the cutoff -> empty history; users never mix
    assert seq["lengths"][2] == 0 and seq["n_events"][2] == 0
    assert tokens(seq, "event_type", 3) == ["view", "add_to_cart", "purchase", "search"]
    assert seq["lengths"][4] == 0  # a user without events
    # gaps to the cutoff: log1p(hours), most recent last
    np.testing.assert_allclose(seq["gap_to_cutoff"][0, :2], np.log1p([5.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(seq["gap_prev"][0, :2], [0.0, np.log1p(1.0)], rtol=1e-6)


def test_a_leak_would_be_seen():
    """The same frame with every event shifted 1 µs earlier: the at-cutoff purchase now counts."""
    shifted = EVENTS.assign(event_timestamp=EVENTS["event_timestamp"] - pd.Timedelta(microseconds=1))
    seq = S.build_sequences(shifted, entities([("a", 5)]), n_last=4)
    assert tokens(seq, "event_type", 0) == ["view", "add_to_cart", "purchase"]


def test_padding_lengths_and_truncation_to_the_last_n():
    events = frame([("u", h, t, "home", "mid") for h, t in zip(range(6), ["view", "search", "view", "add_to_cart", "purchase", "view"])])
    ents = entities([("u", 10), ("u", 2.5)])
    seq = S.build_sequences(events, ents, n_last=3)
    assert seq["event_type"].shape == (2, 3) and seq["event_type"].dtype == np.int32
    assert list(seq["lengths"]) == [3, 3] and list(seq["n_events"]) == [6, 3]
    assert tokens(seq, "event_type", 0) == ["add_to_cart", "purchase", "view"]  # the last three, in time order
    np.testing.assert_allclose(seq["gap_prev"][0], np.log1p([1.0, 1.0, 1.0]), rtol=1e-6)  # gap to a dropped event too
    np.testing.assert_allclose(seq["gap_to_cutoff"][0], np.log1p([7.0, 6.0, 5.0]), rtol=1e-6)

    short = S.build_sequences(events, entities([("u", 1.5)]), n_last=4)
    assert short["lengths"][0] == 2
    assert list(short["event_type"][0, 2:]) == [S.PAD_ID, S.PAD_ID]
    assert list(short["gap_to_cutoff"][0, 2:]) == [0.0, 0.0]


def test_row_order_follows_entities_whatever_the_event_order():
    ents = entities([("b", 10), ("a", 10), ("b", 2.5)], label=[1, 0, 1])
    shuffled = EVENTS.sample(frac=1.0, random_state=3)
    a = S.build_sequences(EVENTS, ents, n_last=4, label_col="label")
    b = S.build_sequences(shuffled, ents, n_last=4, label_col="label")
    for key in S.ARRAYS:
        np.testing.assert_array_equal(a[key], b[key])
    assert list(a["lengths"]) == [2, 4, 1]
    assert list(a["label"]) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="nulls"):
        S.build_sequences(EVENTS, ents.assign(label=[1, None, 0]), label_col="label")


def test_vocab_fitted_before_the_cutoff_and_unknown_values_map_to_unk():
    events = pd.concat([EVENTS, frame([("a", 200, "view", "toys", "low")])], ignore_index=True)
    train = S.build_sequences(events, entities([("a", 100), ("b", 100)]), n_last=5)
    vocab = train["vocab"]
    assert vocab["category_l1"][:2] == [S.PAD, S.UNK]
    assert "toys" not in vocab["category_l1"]  # seen only after the latest training cutoff
    assert S.NONE in vocab["category_l1"]  # a search has no category: its own token, not <unk>
    later = S.build_sequences(events, entities([("a", 300)]), n_last=5, vocab=vocab)
    assert later["category_l1"][0, 4] == S.UNK_ID
    assert tokens(later, "category_l1", 0)[3] == S.NONE
    assert later["vocab"] == vocab


# ----------------------------------------------------------------------------------------- model


def synthetic(n_users: int, seed: int, n_events: int = 6):
    """Each user: n_events events (one add_to_cart, the rest views/searches) at random times.
    label = 1 iff the add_to_cart is the LAST event: only the order carries the signal (counts,
    categories and the gap distribution are the same for both classes)."""
    rng = np.random.default_rng(seed)
    users = np.repeat([f"u{i:05d}" for i in range(n_users)], n_events)
    types = rng.choice(["view", "search"], size=(n_users, n_events))
    cart_at = rng.integers(0, n_events, n_users)
    types[np.arange(n_users), cart_at] = "add_to_cart"
    hours = np.cumsum(rng.exponential(5.0, size=(n_users, n_events)), axis=1)
    events = pd.DataFrame(
        {
            "user_id": users,
            "event_timestamp": T0 + pd.to_timedelta(hours.ravel(), unit="h"),
            "event_type": types.ravel(),
            "category_l1": rng.choice(["home", "garden", "sports"], size=n_users * n_events),
            "price_band": rng.choice(["low", "mid", "high"], size=n_users * n_events),
        }
    )
    cutoff = T0 + pd.to_timedelta(hours[:, -1] + rng.exponential(5.0, n_users) + 0.01, unit="h")
    ents = pd.DataFrame({"user_id": users[::n_events], "event_timestamp": cutoff, "label": (cart_at == n_events - 1).astype(int)})
    return events, ents


FAST = dict(n_last=8, epochs=4, patience=2, batch_size=64, lr=0.01, hidden_size=16, dropout=0.0, num_threads=1)


def config(**overrides):
    return S.load_config(**{**FAST, **overrides})


@pytest.fixture(scope="module")
def order_task():
    events, ents = synthetic(1500, seed=0)
    train = S.build_sequences(events, ents.iloc[:1000], n_last=8, label_col="label")
    valid = S.build_sequences(events, ents.iloc[1000:1250], n_last=8, vocab=train["vocab"], label_col="label")
    test = S.build_sequences(events, ents.iloc[1250:], n_last=8, vocab=train["vocab"], label_col="label")
    return train, valid, test


def test_learns_a_label_that_depends_on_event_order(order_task):
    from sklearn.metrics import roc_auc_score

    train, valid, test = order_task
    model, history = S.fit(train, valid, config())
    auc = roc_auc_score(test["label"], S.predict(model, test))
    assert auc > 0.9, (auc, history)
    assert 1 <= len(history) <= FAST["epochs"]
    assert sum(h["is_best"] for h in history) >= 1
    assert torch.get_num_threads() >= 1  # restored after fit


def test_same_seed_same_predictions(order_task):
    train, valid, test = order_task
    train = S.subset(train, slice(0, 300))
    first = S.predict(S.fit(train, valid, config(epochs=2))[0], test)
    again = S.predict(S.fit(train, valid, config(epochs=2))[0], test)
    other = S.predict(S.fit(train, valid, config(epochs=2, seed=7))[0], test)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_early_stopping_restores_the_best_epoch(order_task):
    train, valid, _ = order_task
    # a learning rate this high makes the validation loss wander: stop after `patience` bad epochs
    model, history = S.fit(train, valid, config(lr=0.5, epochs=8, patience=1))
    best = min(history, key=lambda h: h["valid_log_loss"])
    assert best["is_best"]
    from sklearn.metrics import log_loss

    restored = log_loss(valid["label"], np.clip(S.predict(model, valid), 1e-7, 1 - 1e-7), labels=[0, 1])
    assert restored == pytest.approx(best["valid_log_loss"], rel=1e-5)
    if len(history) < 8:
        assert not history[-1]["is_best"]


def test_model_round_trips_with_its_vocab(order_task, tmp_path):
    import mlflow.pytorch

    train, valid, test = order_task
    model, _ = S.fit(train, valid, config(epochs=1))
    expected = S.predict(model, test)

    # state_dict carries the vocabularies and hyperparameters (extra state)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    blank = S.PropensityGRU({f: [S.PAD, S.UNK] for f in S.FIELDS}, **{**model.hparams, "n_last": 1})
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    fresh = S.PropensityGRU(model.vocab, **model.hparams)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(S.predict(fresh, test), expected)
    blank.set_extra_state(state["_extra_state"])
    assert blank.vocab == model.vocab and blank.n_last == 8

    # MLflow's pytorch flavor pickles the whole module (its default "pt2" export needs a traced example)
    mlflow.pytorch.save_model(model, tmp_path / "mlflow_model", pip_requirements=["torch"], serialization_format="pickle")
    loaded = mlflow.pytorch.load_model(str(tmp_path / "mlflow_model"))
    assert loaded.vocab == model.vocab
    np.testing.assert_array_equal(S.predict(loaded, test), expected)


def test_clear_errors(order_task):
    train, valid, test = order_task
    model, _ = S.fit(train, valid, config(epochs=1))
    other_vocab = S.build_sequences(*synthetic(10, seed=1)[:1], entities([("u00000", 10)]), n_last=8)
    other_vocab["vocab"]["event_type"].append("zzz")
    with pytest.raises(ValueError, match="vocabulary"):
        S.predict(model, other_vocab)
    no_label = {k: v for k, v in train.items() if k != "label"}
    with pytest.raises(ValueError, match="no label"):
        S.fit(no_label, valid, config())
    one_class = {**train, "label": np.zeros_like(train["label"])}
    with pytest.raises(ValueError, match="single class"):
        S.fit(one_class, valid, config())
    with pytest.raises(ValueError, match="train vocabulary"):
        S.fit(train, {**valid, "vocab": other_vocab["vocab"]}, config())


def test_config_file_and_overrides():
    config = S.load_config()
    assert config.n_last >= 1 and config.seed == S.load_config().seed
    assert S.load_config(hidden_size=8).hidden_size == 8
    with pytest.raises(ValueError, match="unknown"):
        S.load_config(hidden=8)
    with pytest.raises(ValueError, match="early_stopping"):
        S.load_config(early_stopping="accuracy")
