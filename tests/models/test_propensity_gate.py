"""The propensity reference gate (ml.models.user.propensity.reference_losses): a real deficit on many rows
is a loss, a tie on a few rows is not, a lead passes; margins and lower-is-better metrics."""

from __future__ import annotations

import numpy as np

from ml.models.user.propensity import reference_losses


def rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (signal + rng.normal(size=n) > 1.0).astype(int)
    good = signal + 0.5 * rng.normal(size=n)  # sees the signal well
    weak = signal + 2.0 * rng.normal(size=n)  # sees it through more noise
    return y, good, weak


def test_a_clear_deficit_on_many_rows_is_a_loss_and_a_lead_passes():
    y, good, weak = rows(20_000)
    assert reference_losses(y, good, {"logistic": weak}) == []
    losses = reference_losses(y, weak, {"logistic": good, "rfm": weak})
    assert len(losses) == 1 and losses[0].startswith("roc_auc -0.") and "vs logistic" in losses[0]


def test_a_tie_within_the_noise_is_not_a_loss():
    y, good, _ = rows(300, seed=1)
    rng = np.random.default_rng(5)
    twin = good + 0.05 * rng.normal(size=len(good))  # the same model up to noise: AUCs differ by a hair
    assert reference_losses(y, good, {"a": twin}) == [] and reference_losses(y, twin, {"a": good}) == []


def test_a_positive_margin_demands_a_lead_and_log_loss_is_lower_is_better():
    y, good, _ = rows(5_000, seed=2)
    assert reference_losses(y, good, {"same": good}) == []
    assert len(reference_losses(y, good, {"same": good}, margin=0.01)) == 1  # no lead at all
    p_good = 1 / (1 + np.exp(-(good - 1.0) * 1.5))
    p_flat = np.full(len(y), y.mean())
    assert reference_losses(y, p_good, {"flat": p_flat}, metric="log_loss", higher_is_better=False) == []
    assert len(reference_losses(y, p_flat, {"good": p_good}, metric="log_loss", higher_is_better=False)) == 1


def test_the_logistic_model_scores_explains_and_pickles_like_the_booster():
    """When the logistic regression is served (LogisticModel), scoring gets probabilities and exact
    per-feature log-odds contributions: they sum with the intercept to the logit, a feature's one-hot
    and missing-indicator columns count as that feature, and the object survives pickling."""
    import pickle

    import pandas as pd

    from ml.models.user.propensity import RFM_SEGMENTS, LogisticModel, logistic_fit

    rng = np.random.default_rng(3)
    n = 2_000
    x = pd.DataFrame(
        {
            "days_since_last_order": rng.exponential(30, n),
            "days_since_last_order_now": rng.exponential(30, n),
            "order_count_lifetime": rng.poisson(3, n).astype(float),
            "rfm_segment": pd.Categorical(rng.choice(RFM_SEGMENTS[:4], n), categories=list(RFM_SEGMENTS)),
        }
    )
    x.loc[::7, "order_count_lifetime"] = np.nan  # a missing-indicator column
    y = (rng.random(n) < 1 / (1 + np.exp(x["days_since_last_order_now"] / 20 - 1))).astype(int)
    model = pickle.loads(pickle.dumps(LogisticModel(logistic_fit(x, y), list(x.columns))))
    p = model.predict(x[::-1].iloc[::-1])  # column order and row order as given
    contrib = model.predict(x, pred_contrib=True)
    assert contrib.shape == (n, len(x.columns) + 1) and model.feature_name() == list(x.columns)
    np.testing.assert_allclose(contrib.sum(axis=1), np.log(p / (1 - p)), rtol=1e-6, atol=1e-8)
    importance = pd.Series(model.feature_importance(), index=model.feature_name())
    assert importance.idxmax() == "days_since_last_order_now" and (importance > 0).all()
    assert np.abs(contrib[:, 0]).max() < np.abs(contrib[:, 1]).max()  # the planted feature drives the score
