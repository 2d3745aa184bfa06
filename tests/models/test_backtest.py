"""Rolling-origin backtest: no training data at/after an origin, metrics on hand-computed cases, the
choice of model per series on validation origins only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.models.demand import data as fd
from ml.models.demand import forecasters as fm
from ml.models.demand import rolling_origin as bt

DAY = pd.Timedelta(days=1)
FAST_LGBM = {"params": {**fm.LightGBMConfig().params, "num_threads": 1}, "num_boost_round": 60, "max_train_rows": 5000}


def _rows(model, origin, item, ds, y, yhat, p10=None, p90=None) -> pd.DataFrame:
    yhat = np.asarray(yhat, float)
    return pd.DataFrame(
        {
            "model": model,
            "origin": pd.Timestamp(origin),
            "item_id": item,
            "warehouse_id": "W1",
            "demand_date": pd.to_datetime(ds),
            "units": np.asarray(y, float),
            "yhat": yhat,
            "yhat_p10": yhat if p10 is None else p10,
            "yhat_p90": yhat if p90 is None else p90,
        }
    )


# -------------------------------------------------------------------------------------- origins


def test_every_origin_trains_only_on_the_data_before_it():
    frame = fd.synthetic_frame(4, 120, seed=7)
    seen = []

    class Spy(fm.MovingAverage):
        def fit(self, frame, freq=None, horizon=None):
            seen.append(frame["demand_date"].max())
            return super().fit(frame, freq, horizon)

    forecasts = bt.rolling_origin(frame, {"spy": Spy}, horizon=14, n_origins=3, step=7)
    origins = sorted(forecasts["origin"].unique())
    assert seen == [o - DAY for o in origins]  # the day before each origin, never later
    assert origins[-1] + 13 * DAY == frame["demand_date"].max() and origins[1] - origins[0] == 7 * DAY
    window = forecasts.groupby("origin")["demand_date"].agg(["min", "max"])
    assert (window["min"] == window.index).all() and (window["max"] - window.index == 13 * DAY).all()
    assert len(forecasts) == 3 * 4 * 14 and forecasts["units"].notna().all()


def test_a_spike_after_the_origin_never_reaches_its_forecast():
    frame = fd.synthetic_frame(4, 120, seed=8)
    origin = frame["demand_date"].max() - 13 * DAY
    spiked = frame.assign(units=np.where(frame["demand_date"] >= origin, frame["units"] * 1000 + 500, frame["units"]))
    models = {
        "demand_seasonal_naive": fm.SeasonalNaive,
        "demand_moving_average": fm.MovingAverage,
        "demand_lgbm": lambda: fm.GlobalLightGBM(FAST_LGBM),
    }
    clean = bt.rolling_origin(frame, models, horizon=14, n_origins=1)
    dirty = bt.rolling_origin(spiked, models, horizon=14, n_origins=1)
    assert clean["origin"].unique().tolist() == [origin] and set(clean["model"]) == set(models)
    columns = ["model", "item_id", "demand_date", "yhat", "yhat_p10", "yhat_p90"]
    pd.testing.assert_frame_equal(clean[columns], dirty[columns])
    assert (dirty["units"] > clean["units"] + 499).all()  # the truth it is scored on does carry the spike


def test_a_failing_model_is_recorded_and_the_others_go_on():
    frame = fd.synthetic_frame(2, 60, seed=9)

    class Broken(fm.MovingAverage):
        def fit(self, frame, freq=None, horizon=None):
            raise RuntimeError("boom")

    forecasts = bt.rolling_origin(frame, {"broken": Broken, "ok": fm.MovingAverage}, horizon=7, n_origins=2)
    assert set(forecasts["model"]) == {"ok"}
    timings = forecasts.attrs["timings"]
    assert timings.loc[timings["model"] == "broken", "error"].tolist() == ["RuntimeError: boom"] * 2
    assert timings.loc[timings["model"] == "ok", "error"].isna().all()


def test_origins_without_enough_history_are_dropped_not_fitted_on_nothing():
    frame = fd.synthetic_frame(2, 60, seed=9)  # 60 days: 3 origins 28 apart would start before the data
    kept = bt.backtest_origins(frame, horizon=28, n_origins=3, step=28, freq="D", min_train=20)
    assert kept == [frame["demand_date"].max() - 27 * DAY]  # only the last origin has 20+ days before it
    assert len(bt.backtest_origins(frame, horizon=7, n_origins=3, step=7, freq="D", min_train=20)) == 3
    with pytest.raises(ValueError, match="no origin with 40 periods"):
        bt.rolling_origin(frame, {"ok": fm.MovingAverage}, horizon=28, n_origins=3, min_train=40)


# -------------------------------------------------------------------------------------- metrics


def test_metrics_on_a_hand_computed_case():
    days = pd.date_range("2023-01-01", periods=17)
    history = pd.concat(
        [
            # A: in-sample seasonal-naive errors |y_t - y_t-7| are all 2 before the origin -> MASE scale 2
            pd.DataFrame(
                {"item_id": "A", "warehouse_id": "W1", "demand_date": days, "units": [1, 2, 3, 4, 5, 6, 7, 3, 4, 5, 6, 7, 8, 9, 10, 0, 5]}
            ),
            pd.DataFrame({"item_id": "Z", "warehouse_id": "W1", "demand_date": days, "units": 5.0}),  # flat: no MASE scale
        ]
    )
    origin = "2023-01-15"
    forecasts = pd.concat(
        [
            _rows("M", origin, "A", days[14:], [10, 0, 5], [12, 1, 2], p10=[8, 2, 1], p90=[14, 3, 6]),
            _rows("M", origin, "Z", days[14:], [5, 5, 5], [6, 6, 6], p10=[4, 4, 4], p90=[7, 7, 7]),
            _rows("P", origin, "A", days[14:], [10, 0, 5], [10, 0, 5]),
        ]
    )
    overall, per_series = bt.metrics(forecasts, history)
    a = per_series.set_index(["model", "item_id"]).loc[("M", "A")]
    assert a[["wape", "mase", "bias", "coverage"]].tolist() == pytest.approx([6 / 15, (1 + 0.5 + 1.5) / 3, 0.0, 2 / 3])
    z = per_series.set_index(["model", "item_id"]).loc[("M", "Z")]
    assert z["wape"] == pytest.approx(0.2) and z["bias"] == pytest.approx(0.2) and np.isnan(z["mase"])
    m = overall.set_index("model").loc["M"]
    assert m[["wape", "mase", "bias", "coverage"]].tolist() == pytest.approx([9 / 30, 1.0, 3 / 30, 5 / 6])
    assert (m["n_series"], m["n_rows"]) == (2, 6)
    assert overall["model"].tolist() == ["P", "M"]  # best WAPE first
    assert overall.set_index("model").loc["P", ["wape", "mase", "bias", "coverage"]].tolist() == [0, 0, 0, 1]
    common, _ = bt.metrics(forecasts, history, common=True)  # only the rows both models forecast: series A
    assert common.set_index("model").loc["M", "wape"] == pytest.approx(6 / 15)


# ------------------------------------------------------------------------------ choice per series


@pytest.fixture
def three_origins():
    """Origins d1, d2 (validation) and d3 (test), horizon 2, step 1: origin d2's second day is d3."""
    d = pd.date_range("2023-03-01", periods=4)
    y = [10.0, 10.0]
    return d, pd.concat(
        [
            # S1: A errs by 1 and B by 2 on the rows validation may see ...
            _rows("A", d[0], "S1", d[0:2], y, [11, 11]),
            _rows("B", d[0], "S1", d[0:2], y, [12, 12]),
            # ... but at d3 (a test date) A errs by 100 and B by 0: seeing it would flip the choice to B
            _rows("A", d[1], "S1", d[1:3], y, [11, 110]),
            _rows("B", d[1], "S1", d[1:3], y, [12, 10]),
            _rows("A", d[2], "S1", d[2:4], y, [20, 20]),
            _rows("B", d[2], "S1", d[2:4], y, [30, 30]),
            # S2: B is the better one
            _rows("A", d[0], "S2", d[0:2], y, [15, 15]),
            _rows("B", d[0], "S2", d[0:2], y, [10, 10]),
            _rows("A", d[2], "S2", d[2:4], y, [20, 20]),
            _rows("B", d[2], "S2", d[2:4], y, [30, 30]),
            # S3: validation saw only A, the test has only B -> the fallback serves it
            _rows("A", d[0], "S3", d[0:2], y, [10, 10]),
            _rows("B", d[2], "S3", d[2:4], y, [7, 7]),
        ]
    )


def test_choose_best_on_validation_only_and_fall_back(three_origins):
    d, forecasts = three_origins
    selection, chosen = bt.choose(forecasts, validation_origins=2, method="best", fallback="B")
    assert selection.set_index("item_id")["model"].to_dict() == {"S1": "A", "S2": "B", "S3": "A"}
    assert set(chosen["origin"]) == {d[2]} and set(chosen["model"]) == {"demand_best"}
    got = chosen.groupby("item_id")["yhat"].first().to_dict()
    assert got == {"S1": 20.0, "S2": 30.0, "S3": 7.0}
    assert list(chosen.columns) == bt.FORECAST_COLUMNS and len(chosen) == 6
    with pytest.raises(ValueError, match="later test origins"):
        bt.choose(forecasts, validation_origins=3)


def test_choose_leaves_the_fallback_only_for_a_clear_winner_on_enough_origins(three_origins):
    d, forecasts = three_origins
    # S1: A beats the fallback B on both validation origins by half (MAE 1 vs 2): a clear winner
    # S2: B is the fallback and the best; S3: the fallback has no validation forecast, A stays chosen
    selection, _ = bt.choose(forecasts, validation_origins=2, fallback="B", margin=0.05, min_wins=2)
    assert selection.set_index("item_id")["model"].to_dict() == {"S1": "A", "S2": "B", "S3": "A"}
    # a 60 % margin: A's 50 % lead is not enough, S1 goes back to the fallback with B's validation MAE
    selection, chosen = bt.choose(forecasts, validation_origins=2, fallback="B", margin=0.6, min_wins=1)
    got = selection.set_index("item_id")
    assert got["model"].to_dict() == {"S1": "B", "S2": "B", "S3": "A"} and got.loc["S1", "validation_mae"] == pytest.approx(2.0)
    assert chosen.groupby("item_id")["yhat"].first().to_dict() == {"S1": 30.0, "S2": 30.0, "S3": 7.0}
    # three wins asked of two validation origins: nobody leaves the fallback where it has forecasts
    selection, _ = bt.choose(forecasts, validation_origins=2, fallback="B", margin=0.0, min_wins=3)
    assert selection.set_index("item_id")["model"].to_dict() == {"S1": "B", "S2": "B", "S3": "A"}


def test_choose_ensemble_weights_by_inverse_validation_error(three_origins):
    d, forecasts = three_origins
    selection, chosen = bt.choose(forecasts, validation_origins=[d[0], d[1]], method="ensemble")
    weights = selection.loc[selection["item_id"] == "S1"].set_index("model")["weight"]
    assert weights.to_dict() == pytest.approx({"A": 2 / 3, "B": 1 / 3}, rel=1e-4)  # validation MAE 1 vs 2
    s1 = chosen.loc[chosen["item_id"] == "S1", "yhat"]
    assert s1.tolist() == pytest.approx([20 * 2 / 3 + 30 / 3] * 2, rel=1e-4)
    assert "S3" not in set(chosen["item_id"])  # no fallback given: its only validated model has no test forecast


def test_demand_reference_gate():
    from ml.models.demand import reference_losses

    test = pd.DataFrame({"wape": [0.80, 1.00, 0.70]}, index=["demand_lgbm", "demand_seasonal_naive", "demand_best"])
    assert reference_losses(test, "demand_lgbm", ["demand_seasonal_naive"]) == []
    assert reference_losses(test, "demand_lgbm", ["demand_seasonal_naive"], margin=0.25) == [
        "test wape 0.8000 vs demand_seasonal_naive 1.0000 (needs 25% lower)"
    ]
    worse = test.assign(wape=[1.10, 1.00, 0.70])
    assert reference_losses(worse, "demand_lgbm", ["demand_seasonal_naive", "demand_moving_average"]) == [
        "test wape 1.1000 vs demand_seasonal_naive 1.0000"
    ]  # a reference the backtest did not run is skipped
    assert reference_losses(test, "demand_prophet", ["demand_seasonal_naive"]) == []  # no result: train raises before


def test_a_model_that_forecasts_about_zero_never_wins():
    """Intermittent demand: a forecast of 0 has the lower WAPE (sum |0 - y| = sum y) than an unbiased
    forecast that is often off, yet plans no stock: it ranks last and is never chosen per series."""
    d = pd.date_range("2023-03-01", periods=6)
    y = [0.0, 0.0, 6.0, 0.0, 0.0, 6.0]
    unbiased = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]  # |error| sum 16 over 12 units: WAPE 1.33, bias 0
    zero = [0.0] * 6  # |error| sum 12: WAPE 1.0, bias -1
    history = pd.DataFrame({"item_id": "S1", "warehouse_id": "W1", "demand_date": pd.date_range("2023-02-01", periods=34), "units": 2.0})
    forecasts = pd.concat(
        [
            _rows("zero", d[0], "S1", d[0:3], y[0:3], zero[0:3]),
            _rows("unbiased", d[0], "S1", d[0:3], y[0:3], unbiased[0:3]),
            _rows("zero", d[3], "S1", d[3:6], y[3:6], zero[3:6]),
            _rows("unbiased", d[3], "S1", d[3:6], y[3:6], unbiased[3:6]),
        ]
    )
    overall, _ = bt.metrics(forecasts, history, freq="D")
    ranked = overall.set_index("model")
    assert ranked.loc["zero", "wape"] < ranked.loc["unbiased", "wape"]  # WAPE alone would rank it first
    assert overall["model"].tolist() == ["unbiased", "zero"] and ranked["biased"].to_dict() == {"unbiased": False, "zero": True}
    forecasts.attrs["timings"] = pd.DataFrame({"model": ["zero"], "fit_s": [0.1]})  # as rolling_origin leaves it
    selection, _ = bt.choose(forecasts, validation_origins=1)
    assert selection["model"].tolist() == ["unbiased"]
    selection, _ = bt.choose(forecasts, validation_origins=1, fallback="unbiased", margin=0.1, min_wins=1)
    assert selection["model"].tolist() == ["unbiased"]
    selection, _ = bt.choose(forecasts, validation_origins=1, bias_limit=None)  # the rule off: MAE picks the zero
    assert selection["model"].tolist() == ["zero"]
