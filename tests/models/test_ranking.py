"""Rankers (ml/models/recs/ranking.py) with real torch / LightGBM on a small synthetic pair frame whose
label depends on a cross (user_cat == item_cat): each must learn it, tolerate unknown values, and
give the same scores for the same seed."""

from __future__ import annotations

import pickle
import time

import lightgbm  # noqa: F401 - pinned dependencies: a broken install fails here, not as a skip
import numpy as np
import pandas as pd
import pytest

from ml.models.recs import ranking as R  # noqa: E402
from ml.models.recs.metrics import group_ndcg  # noqa: E402

CATS = np.array(["a", "b", "c", "d"])
SPEC = R.FeatureSpec(
    numeric=["price", "noise"],
    categorical=["user_cat", "item_cat"],
    crosses=[("user_cat", "item_cat")],
    embedding="embedding",
    item_columns=["item_cat", "price"],
    user_columns=["user_cat"],
)
FM_SPEC = R.FeatureSpec(
    numeric=["price"], categorical=["user_cat", "item_cat"], item_columns=["item_cat", "price"], user_columns=["user_cat"]
)
WD = {"batch_size": 64, "epochs": 12, "patience": 3}
LGB = {
    "params": {
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "verbosity": -1,
        "num_threads": 1,
        "seed": 1,
        "deterministic": True,
    }
}
FM = {"batch_size": 64, "epochs": 20}


def pairs(seed: int, n_users: int = 60, n_items: int = 80, per_group: int = 20) -> pd.DataFrame:
    """One group per user: 20 random items; a row is relevant (label 1-3) with p 0.7 when the item's
    category is the user's, else 0.05. The item embedding clusters by category."""
    items = np.random.default_rng(99)  # the same catalogue in every frame
    item_cat = CATS[items.integers(4, size=n_items)]
    emb = np.eye(8)[np.searchsorted(CATS, item_cat)] + 0.3 * items.normal(size=(n_items, 8))
    price = items.lognormal(3, 1, size=n_items)
    rng = np.random.default_rng(seed)
    user_cat = CATS[rng.integers(4, size=n_users)]
    u = np.repeat(np.arange(n_users), per_group)
    i = np.concatenate([rng.choice(n_items, per_group, replace=False) for _ in range(n_users)])
    relevant = rng.random(len(u)) < np.where(user_cat[u] == item_cat[i], 0.7, 0.05)
    return pd.DataFrame(
        {
            "user_id": [f"u{seed}_{k}" for k in u],
            "item_id": [f"i{k}" for k in i],
            "group_id": u,
            "label": np.where(relevant, rng.integers(1, 4, size=len(u)), 0),
            "user_cat": user_cat[u],
            "item_cat": item_cat[i],
            "price": price[i],
            "noise": rng.normal(size=len(u)),
            "embedding": list(emb[i].astype(np.float32)),
        }
    )


TRAIN, VALID, TEST = pairs(0), pairs(1), pairs(2)
RANDOM_NDCG = group_ndcg(TEST["group_id"], TEST["label"], np.random.default_rng(0).random(len(TEST)))


@pytest.fixture(scope="module")
def models():
    return {
        "widedeep": R.fit_widedeep(TRAIN, VALID, SPEC, WD),
        "lambdarank": R.fit_lambdarank(TRAIN, VALID, SPEC, LGB),
        "fm": R.fit_fm(TRAIN, VALID, FM_SPEC, FM),
        "fm_pointwise": R.fit_fm(TRAIN, VALID, FM_SPEC, {**FM, "loss": "pointwise"}),
    }


@pytest.mark.parametrize("name", ["widedeep", "lambdarank", "fm", "fm_pointwise"])
def test_rankers_learn_the_planted_cross(models, name):
    ndcg = group_ndcg(TEST["group_id"], TEST["label"], models[name].predict(TEST))
    assert ndcg > RANDOM_NDCG + 0.15, (name, ndcg, RANDOM_NDCG)


@pytest.mark.parametrize("name", ["widedeep", "fm"])
def test_early_stopping_restores_the_best_epoch(models, name):
    model = models[name]
    best = max(h["valid_ndcg@10"] for h in model.history)
    assert not model.history[-1]["is_best"]  # stopped by patience, so the restore matters
    assert group_ndcg(VALID["group_id"], VALID["label"], model.predict(VALID)) == pytest.approx(best)


def test_lambdarank_scores_do_not_depend_on_row_order(models):
    shuffled = TEST.sample(frac=1.0, random_state=3)
    model = models["lambdarank"]
    np.testing.assert_allclose(model.predict(shuffled), pd.Series(model.predict(TEST), index=TEST.index)[shuffled.index])
    assert len(model.history) >= model.booster.best_iteration >= 1


def test_unknown_users_items_categories_and_nulls_never_crash(models):
    odd = TEST.head(4).copy()
    odd["user_id"] = "never-seen"
    odd["item_id"] = ["new1", "new2", "i1", "new3"]
    odd["user_cat"] = ["zzz", None, "a", np.nan]
    odd["item_cat"] = ["yyy", "a", None, "b"]
    odd["price"] = [np.nan, 1.0, 1e9, -5.0]
    odd["embedding"] = pd.Series([None, np.zeros(8, np.float32), TEST["embedding"].iloc[0], None], dtype=object).to_numpy()
    for name, model in models.items():
        scores = model.predict(odd.drop(columns=["label", "group_id"]))
        assert scores.shape == (4,) and np.isfinite(scores).all(), name
    for name, model in models.items():
        assert model.predict(TEST.iloc[:0]).shape == (0,), name
    heads = models["widedeep"].predict_heads(odd)
    assert heads.shape == (4, 3) and ((heads >= 0) & (heads <= 1)).all()
    fm = models["fm"]
    assert np.isfinite(fm.score({"user_cat": "zzz"}, ["new1", "i1"])).all()


def test_missing_feature_columns_and_bad_labels_are_named():
    with pytest.raises(ValueError, match="item_cat"):
        R.fit_lambdarank(TRAIN.drop(columns="item_cat"), VALID, SPEC, LGB)
    with pytest.raises(ValueError, match="labels"):
        R.fit_fm(TRAIN.assign(label=TRAIN["label"] * 2), VALID, FM_SPEC, FM)
    with pytest.raises(ValueError, match="no positive"):
        R.fit_widedeep(TRAIN, VALID.assign(label=0), SPEC, WD)
    with pytest.raises(ValueError, match="unknown WideDeepConfig keys"):
        R.fit_widedeep(TRAIN, VALID, SPEC, {"epoch": 1})


def test_same_seed_same_scores(models):
    again = {
        "widedeep": R.fit_widedeep(TRAIN, VALID, SPEC, WD),
        "lambdarank": R.fit_lambdarank(TRAIN, VALID, SPEC, LGB),
        "fm": R.fit_fm(TRAIN, VALID, FM_SPEC, FM),
    }
    for name, model in again.items():
        np.testing.assert_array_equal(model.predict(TEST), models[name].predict(TEST), err_msg=name)
    other = R.fit_fm(TRAIN, VALID, FM_SPEC, {**FM, "seed": 7})
    assert not np.allclose(other.predict(TEST), models["fm"].predict(TEST))


def test_models_survive_pickling(models):
    for name, model in models.items():
        restored = pickle.loads(pickle.dumps(model))
        np.testing.assert_array_equal(restored.predict(TEST), model.predict(TEST), err_msg=name)


def test_fm_score_equals_predict_and_is_fast(models):
    fm = models["fm"]
    assert fm.user_fields == ["user_cat"]
    group = TEST[TEST["group_id"] == 5]
    expected = fm.predict(group)
    user_row = {"user_cat": group["user_cat"].iloc[0]}
    np.testing.assert_allclose(fm.score(user_row, group[["item_id", "item_cat", "price"]]), expected, rtol=1e-12)
    # bare item ids: item fields from the training item table (every TEST item appears in TRAIN)
    np.testing.assert_allclose(fm.score(user_row, group["item_id"].tolist()), expected, rtol=1e-12)
    with pytest.raises(KeyError, match="user_cat"):
        fm.score({}, group[["item_id", "item_cat", "price"]])
    candidates = TEST.head(100)[["item_id", "item_cat", "price"]]
    timings = []
    for _ in range(50):
        started = time.perf_counter()
        fm.score(user_row, candidates)
        timings.append(time.perf_counter() - started)
    assert np.median(timings) < 0.005


def test_sample_negatives_copy_user_and_item_columns_only():
    frame = TRAIN[TRAIN["group_id"] < 5]
    neg = R.sample_negatives(frame, SPEC, 3, seed=1)
    n_pos = int((frame["label"] > 0).sum())
    assert 0 < len(neg) <= 3 * n_pos and (neg["label"] == 0).all()
    assert list(neg.columns) == list(frame.columns)
    items = frame.drop_duplicates("item_id").set_index("item_id")
    assert (neg["item_cat"].to_numpy() == items.loc[neg["item_id"], "item_cat"].to_numpy()).all()
    users = frame.drop_duplicates("group_id").set_index("group_id")
    assert (neg["user_cat"].to_numpy() == users.loc[neg["group_id"], "user_cat"].to_numpy()).all()
    assert neg["noise"].isna().all()  # a pair feature: unknown for a random item
    seen = set(zip(frame["group_id"], frame["item_id"]))
    assert not any(pair in seen for pair in zip(neg["group_id"], neg["item_id"]))
    pd.testing.assert_frame_equal(neg, R.sample_negatives(frame, SPEC, 3, seed=1))
