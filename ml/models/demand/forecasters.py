"""Demand forecasters over the series frame (ml/models/demand/data.py): two baselines, a global
LightGBM quantile model, Prophet per series and a global LSTM.

Every model has the same two calls:
    model.fit(frame, freq=None, horizon=None) -> model        frame: the series frame (prepared)
    model.predict(horizon=None, future=None) -> DataFrame     item_id, warehouse_id, demand_date, yhat, yhat_p10, yhat_p90
``predict`` forecasts the ``horizon`` periods (default and maximum: the fitted horizon, 28 days / 8
weeks) after each series' last training date. ``future``: the forecast periods' regressor values
(keys, demand_date, regressor columns: the promotion calendar, the weather table); whatever it lacks is filled
by ``data.future_frame``'s documented fallback, so build it with that function to get the
fill report. yhat is the point forecast, never negative: the median (P50) for every model but
demand_lgbm with ``point: mean`` (the default there), whose yhat is the expected demand; P10/P90 bound
the 80% interval.

    demand_seasonal_naive   SeasonalNaive: the value one season ago (7 days / 52 weeks)
    demand_moving_average   MovingAverage: the mean of the last ``window`` periods
        Baseline intervals: each series' empirical 10th/90th percentiles of the in-sample errors of
        the same rule (one-season-back / one-window-back), added to the point forecast.
    demand_lgbm             GlobalLightGBM: one model across all series, direct multi-horizon (a row per
        origin and step h, features known at the origin: ``data.make_features``), target
        divided by the series' mean; boosters for P10 / P90 (quantile objective, alpha 0.1 / 0.9) and the
        point forecast: ``point: mean`` a Tweedie booster (the expected demand, unbiased on intermittent
        series where the median is 0; what inventory policy needs) or ``point: median`` the alpha 0.5
        quantile (lower WAPE on intermittent series, biased low). Early stopping on the last
        ``horizon`` periods, then refitted on all rows for the best round count.
    demand_lgbm_plain       PlainLightGBM: the plain-script reference (units unscaled, squared error, the
        last 4 periods, the value a season before the target, calendar, is_holiday, ids); never served.
    demand_prophet          ProphetPerSeries: Prophet on the head of series by volume (``max_series``),
        seasonality additive / multiplicative / ``auto`` (the better on the last horizon of history),
        holidays (the is_holiday regressor when the data has it, else the country's calendar on the
        series' grid: a weekly series' holiday is the week holding it), every regressor with its
        future values; 80% interval = P10/P90. Fits run in ``max_workers``
        processes. A series outside the head or whose fit fails is not forecast here: ``report``
        lists it and the global model serves it (``backtest.combine`` with its fallback).
    demand_lstm             GlobalLSTM (PyTorch, CPU): an encoder LSTM over the last ``input_length``
        periods (scaled demand, regressors, calendar) and a decoder LSTM over the horizon's known
        inputs (regressors, calendar, the step's seasonal-naive value) emitting P10/P50/P90 per step,
        trained on the quantile (pinball) loss; early stopping on each series' last horizon, fixed
        seed, ``num_threads`` threads.

    MODELS                                          name -> class
    build(name, config=None) -> model               config: the model's section (dict) or its dataclass
    model_factories(config) -> {name: factory}      the models config["backtest"]["models"] names
    fit(name, frame, config=None, freq=None, horizon=None) -> model
    predict(model, horizon=None, future=None) -> DataFrame
    load_config(path=None) -> dict                  configs/demand.yaml

torch and lightgbm are imported inside the models (Prophet's worker processes import neither).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ml.models.demand import data as fd
from ml.models.demand.data import KEYS
from ml.models.lifecycle.config import CONFIGS_DIR, as_config

log = logging.getLogger(__name__)

CONFIG_PATH = CONFIGS_DIR / "demand.yaml"
FORECAST_COLUMNS = [*KEYS, "demand_date", "yhat", "yhat_p10", "yhat_p90"]
QUANTILES = (0.1, 0.5, 0.9)


def load_config(path: str | Path | None = None) -> dict:
    import yaml

    return yaml.safe_load(Path(path or CONFIG_PATH).read_text()) or {}


def _positive(config, *names):
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be >= 1, not {value}")


def _forecast_frame(keys: pd.DataFrame, origin_dates, freq: str, q: np.ndarray) -> pd.DataFrame:
    """Long forecast frame from quantiles q [series, h, 3] (P10, P50, P90) after each series' origin date."""
    q = np.sort(np.maximum(q, 0.0), axis=-1)  # no negative demand, no crossing quantiles
    n, horizon = q.shape[:2]
    ds = np.asarray(origin_dates, "datetime64[ns]")[:, None] + np.arange(1, horizon + 1)[None, :] * fd.step(freq)
    out = keys[KEYS].iloc[np.repeat(np.arange(n), horizon)].reset_index(drop=True)
    out["demand_date"] = ds.ravel().astype("datetime64[ns]")
    out["yhat"], out["yhat_p10"], out["yhat_p90"] = q[..., 1].ravel(), q[..., 0].ravel(), q[..., 2].ravel()
    return out


class Forecaster:
    """Shared plumbing: frequency and horizon at fit, the history tail kept for the forecast's features."""

    name = ""
    config_class: type = object

    def __init__(self, config=None):
        self.config = as_config(self.config_class, config)

    def _setup(self, frame: pd.DataFrame, freq: str | None, horizon: int | None) -> None:
        if frame.empty:
            raise ValueError(f"{self.name}: the training frame is empty")
        self.freq = freq or fd.infer_frequency(frame)
        self.horizon = int(horizon or fd.default_horizon(self.freq))
        self.regressors = fd.detect_regressors(frame)

    def _horizon(self, horizon: int | None) -> int:
        horizon = int(horizon or self.horizon)
        if not 1 <= horizon <= self.horizon:
            raise ValueError(f"{self.name} was fitted for horizons 1..{self.horizon}, not {horizon}")
        return horizon

    def _future(self, tail: pd.DataFrame, horizon: int, future: pd.DataFrame | None) -> pd.DataFrame:
        filled, report = fd.future_frame(tail, horizon, self.freq, known=future, regressors=self.regressors)
        if len(report):
            log.info("%s: future regressors filled %s", self.name, report.groupby("reason")["rows"].sum().to_dict())
        return filled


# ------------------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class SeasonalNaiveConfig:
    season: int | None = None  # periods; None = 7 (daily) / 52 (weekly)

    def __post_init__(self):
        _positive(self, "season")


@dataclass(frozen=True)
class MovingAverageConfig:
    window: int | None = None  # periods; None = 28 (daily) / 8 (weekly)

    def __post_init__(self):
        _positive(self, "window")


class _Baseline(Forecaster):
    """A per-series rule on the panel; P10/P90 = point + the series' in-sample error percentiles."""

    def fit(self, frame: pd.DataFrame, freq: str | None = None, horizon: int | None = None):
        self._setup(frame, freq, horizon)
        panel = fd.to_panel(frame, self.freq)
        self.keys = panel.keys
        self.origin_dates = panel.dates.to_numpy()[panel.last]
        errors = self._fit(panel)
        if errors.shape[1] == 0:  # history shorter than the rule's lag: no in-sample error, a zero-width interval
            self.error_q = np.zeros((len(errors), 2))
            return self
        with warnings.catch_warnings():  # a series without in-sample errors: an all-NaN row
            warnings.simplefilter("ignore", RuntimeWarning)
            self.error_q = np.nan_to_num(np.nanquantile(errors, [QUANTILES[0], QUANTILES[-1]], axis=1).T)
        return self

    def predict(self, horizon: int | None = None, future: pd.DataFrame | None = None) -> pd.DataFrame:
        point = self._point(self._horizon(horizon))
        q = np.stack([point + self.error_q[:, :1], point, point + self.error_q[:, 1:]], axis=-1)
        q[..., 0], q[..., 2] = np.minimum(q[..., 0], point), np.maximum(q[..., 2], point)
        return _forecast_frame(self.keys, self.origin_dates, self.freq, q)


def _gather(y: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """y[series, positions[series, j]], NaN where a position is before the grid."""
    rows = np.arange(len(y))[:, None]
    return np.where(positions >= 0, y[rows, np.maximum(positions, 0)], np.nan)


class SeasonalNaive(_Baseline):
    name = "demand_seasonal_naive"
    config_class = SeasonalNaiveConfig

    def _fit(self, panel: fd.Panel) -> np.ndarray:
        m = self.season = self.config.season or fd.season_length(self.freq)
        last_season = _gather(panel.y, panel.last[:, None] - m + 1 + np.arange(m))
        with warnings.catch_warnings():  # shorter than a season: its mean stands in for the missing phases
            warnings.simplefilter("ignore", RuntimeWarning)
            self.last_season = np.where(np.isnan(last_season), np.nanmean(last_season, axis=1, keepdims=True), last_season)
        return panel.y[:, m:] - panel.y[:, :-m]

    def _point(self, horizon: int) -> np.ndarray:
        return np.nan_to_num(self.last_season[:, np.arange(horizon) % self.season])


class MovingAverage(_Baseline):
    name = "demand_moving_average"
    config_class = MovingAverageConfig

    def _fit(self, panel: fd.Panel) -> np.ndarray:
        w = self.config.window or fd.default_horizon(self.freq)
        observed = ~np.isnan(panel.y)
        csum = np.concatenate([np.zeros((len(panel.y), 1)), np.where(observed, panel.y, 0).cumsum(axis=1)], axis=1)
        cnt = np.concatenate([np.zeros((len(panel.y), 1)), observed.cumsum(axis=1)], axis=1)
        end = panel.last + 1
        start = np.maximum(end - w, 0)
        rows = np.arange(len(panel.y))
        self.mean = np.nan_to_num((csum[rows, end] - csum[rows, start]) / np.maximum(cnt[rows, end] - cnt[rows, start], 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            before = (csum[:, w:-1] - csum[:, : -w - 1]) / (cnt[:, w:-1] - cnt[:, : -w - 1])  # mean of the w periods before t
        return panel.y[:, w:] - before

    def _point(self, horizon: int) -> np.ndarray:
        return np.repeat(self.mean[:, None], horizon, axis=1)


# --------------------------------------------------------------------------------- global LightGBM


@dataclass(frozen=True)
class LightGBMConfig:
    params: dict = field(
        default_factory=lambda: {
            "learning_rate": 0.1,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "max_bin": 127,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "verbosity": -1,
            "num_threads": 1,
            "seed": 42,
            "deterministic": True,
        }
    )
    num_boost_round: int = 500
    early_stopping_rounds: int = 30
    lags: tuple | None = None  # None = data.default_lags
    windows: tuple | None = None  # None = data.default_windows
    max_train_rows: int | None = 300_000
    refit: bool = True  # refit on all rows (validation included) for the early-stopped round count
    seed: int = 42
    point: str = "mean"  # mean (Tweedie booster) | median (the alpha 0.5 quantile booster)
    tweedie_variance_power: float = 1.5  # 1 = Poisson, 2 = Gamma; between: a point mass at 0 plus a skewed positive part
    weight: str = "none"  # none | scale: rows weigh their series scale (the loss counts units) | sqrt: its root

    def __post_init__(self):
        _positive(self, "num_boost_round", "early_stopping_rounds", "max_train_rows")
        if self.point not in ("mean", "median"):
            raise ValueError(f"lgbm.point must be 'mean' or 'median', got {self.point!r}")
        if self.weight not in ("scale", "sqrt", "none"):
            raise ValueError(f"lgbm.weight must be 'scale', 'sqrt' or 'none', got {self.weight!r}")
        if not 1.0 <= self.tweedie_variance_power < 2.0:
            raise ValueError(f"lgbm.tweedie_variance_power must be in [1, 2), got {self.tweedie_variance_power}")

    def objectives(self) -> list[dict]:
        """The boosters' objectives, in the order P10, point, P90."""
        point = (
            {"objective": "tweedie", "tweedie_variance_power": self.tweedie_variance_power, "metric": "tweedie"}
            if self.point == "mean"
            else {"objective": "quantile", "alpha": QUANTILES[1], "metric": "quantile"}
        )
        return [
            {"objective": "quantile", "alpha": QUANTILES[0], "metric": "quantile"},
            point,
            {"objective": "quantile", "alpha": QUANTILES[-1], "metric": "quantile"},
        ]


class GlobalLightGBM(Forecaster):
    name = "demand_lgbm"
    config_class = LightGBMConfig

    def fit(self, frame: pd.DataFrame, freq: str | None = None, horizon: int | None = None):
        import lightgbm as lgb

        self._setup(frame, freq, horizon)
        cfg = self.config
        self.scale = self._series_scale(frame)
        rows = fd.make_features(
            frame,
            self.horizon,
            self.freq,
            regressors=self.regressors,
            lags=cfg.lags,
            windows=cfg.windows,
            scale=self.scale,
            max_rows=cfg.max_train_rows,
            seed=cfg.seed,
        )
        if rows.empty:
            shortest = min(cfg.windows or fd.default_windows(self.freq)) + 1
            raise ValueError(f"{self.name}: no training rows (series shorter than {shortest} periods)")
        self.features = self._select([c for c in rows.columns if c not in fd.FEATURE_META])
        cutoff = frame["demand_date"].max() - self.horizon * fd.step(self.freq)
        valid = (rows["demand_date"] > cutoff).to_numpy()
        X, y = rows[self.features], rows["units"]
        w = {"scale": rows["scale"].to_numpy(float), "sqrt": np.sqrt(rows["scale"].to_numpy(float))}.get(
            getattr(cfg, "weight", "none"), np.ones(len(rows))
        )
        w = w / w.mean()
        everything = lgb.Dataset(X, y, weight=w, params=cfg.params, free_raw_data=False)
        train = lgb.Dataset(X[~valid], y[~valid], weight=w[~valid], params=cfg.params) if valid.any() and (~valid).any() else None
        checks = [lgb.Dataset(X[valid], y[valid], weight=w[valid], reference=train)] if train is not None else []
        self.boosters, self.best_iterations = [], []
        for objective in cfg.objectives():
            params = {**cfg.params, **objective}
            rounds = cfg.num_boost_round
            if train is not None:
                booster = lgb.train(
                    params,
                    train,
                    num_boost_round=rounds,
                    valid_sets=checks,
                    callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
                )
                rounds = booster.best_iteration or rounds
            if train is None or cfg.refit:
                booster = lgb.train(params, everything, num_boost_round=rounds)
            self.boosters.append(booster)
            self.best_iterations.append(rounds)
        self.tail = (
            frame.sort_values([*KEYS, "demand_date"]).groupby(KEYS).tail(fd.lookback(self.horizon, self.freq, cfg.lags, cfg.windows))
        )
        return self

    def _series_scale(self, frame: pd.DataFrame) -> pd.Series:
        return fd.series_scale(frame)

    def _select(self, features: list[str]) -> list[str]:
        return features

    def update(self, frame: pd.DataFrame) -> "GlobalLightGBM":
        """Point the fitted model at newer history (the same series, or new ones): ``predict`` then
        forecasts after each series' last date in ``frame``. The boosters are unchanged: a global
        model's features are relative to the origin, so a forecast job needs no refit between trainings."""
        if frame.empty:
            raise ValueError(f"{self.name}: the history frame is empty")
        freq = fd.infer_frequency(frame["demand_date"])
        if freq != self.freq:
            raise ValueError(f"{self.name} was fitted on {self.freq} series, the history is {freq}: retrain")
        missing = [r for r in self.regressors if r not in frame.columns]
        if missing:
            raise ValueError(f"{self.name} was fitted with regressors {missing} that the history lacks: retrain")
        self.scale = self._series_scale(frame)
        self.tail = (
            frame.sort_values([*KEYS, "demand_date"])
            .groupby(KEYS)
            .tail(fd.lookback(self.horizon, self.freq, self.config.lags, self.config.windows))
        )
        return self

    def predict(self, horizon: int | None = None, future: pd.DataFrame | None = None) -> pd.DataFrame:
        horizon = self._horizon(horizon)
        rows = fd.make_features(
            self.tail,
            horizon,
            self.freq,
            future=self._future(self.tail, horizon, future),
            regressors=self.regressors,
            lags=self.config.lags,
            windows=self.config.windows,
            scale=self.scale,
        )
        X = rows[self.features]
        q = np.column_stack([b.predict(X, num_iteration=n) for b, n in zip(self.boosters, self.best_iterations)])
        if q.shape[1] == 1:  # a point booster only: a zero-width interval
            q = np.repeat(q, 3, axis=1)
        q = np.maximum(q * rows["scale"].to_numpy()[:, None], 0.0)
        q[:, [0, 2]] = np.sort(q[:, [0, 2]], axis=1)  # quantile crossing; a mean may lie outside P10..P90
        if getattr(self.config, "point", "mean") == "median":
            q = np.sort(q, axis=1)
        out = rows[KEYS].astype(str).assign(demand_date=rows["demand_date"].to_numpy())
        out["yhat"], out["yhat_p10"], out["yhat_p90"] = q[:, 1], q[:, 0], q[:, 2]
        return out.reset_index(drop=True)


@dataclass(frozen=True)
class PlainLightGBMConfig:
    """A plain global LightGBM as a data scientist's first script would write it: the reference the
    served model must beat (``forecast.promotion.references``), not a model to serve."""

    params: dict = field(
        default_factory=lambda: {
            "objective": "regression",
            "metric": "l2",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 20,
            "feature_fraction": 0.9,
            "verbosity": -1,
            "num_threads": 1,
            "seed": 42,
            "deterministic": True,
        }
    )
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    lags: tuple = (0, 1, 2, 3)  # the last 4 periods before the origin; + the same period a season earlier
    windows: tuple = (4,)  # (make_features needs one; its rolling features are not used)
    max_train_rows: int | None = 300_000
    refit: bool = True
    seed: int = 42

    def __post_init__(self):
        _positive(self, "num_boost_round", "early_stopping_rounds", "max_train_rows")

    def objectives(self) -> list[dict]:
        return [{}]  # the point booster only, on params' objective


class PlainLightGBM(GlobalLightGBM):
    """``demand_lgbm_plain``: units as they are (no series scaling), squared error, and only what a plain
    script feeds a global model: the last 4 periods, the value one season before the target (lag 7 /
    52 from it: ``seasonal_naive``), the step h, the target's calendar (day of week, week of year,
    month), is_holiday when the data has it, and the series' item_id / warehouse_id as categories.
    No interval: P10 = P90 = yhat."""

    name = "demand_lgbm_plain"
    config_class = PlainLightGBMConfig
    PLAIN = ("h", "seasonal_naive", "day_of_week", "week_of_year", "month", "is_holiday", "item_id", "warehouse_id")

    def _series_scale(self, frame: pd.DataFrame) -> pd.Series:
        return fd.series_scale(frame) * 0.0 + 1.0

    def _select(self, features: list[str]) -> list[str]:
        return [c for c in features if c in self.PLAIN or c in {f"lag_{k}" for k in self.config.lags}]


# ------------------------------------------------------------------------------ Prophet per series


@dataclass(frozen=True)
class ProphetConfig:
    max_series: int | None = 200  # the head by total volume; None = every series
    min_mean_demand: float = 0.0  # and only series selling at least this much per period on average (sparse
    # series, mostly zeros, get a smooth curve from Prophet that overshoots them: the global model serves them)
    seasonality_mode: str = "auto"  # auto | additive | multiplicative
    growth: str = "linear"  # linear (Prophet's default: a piecewise trend, extrapolated) | flat (no trend)
    country: str | dict | None = None  # holidays when the data has no is_holiday (a code, or warehouse_id -> code)
    changepoint_prior_scale: float = 0.05
    uncertainty_samples: int = 200  # draws behind the 80% interval (P10/P90)
    max_workers: int = 2  # processes; 1 = in this process
    start_method: str = "fork"  # fork | spawn | forkserver (multiprocessing start methods; see ProphetPerSeries)

    def __post_init__(self):
        if self.seasonality_mode not in ("auto", "additive", "multiplicative"):
            raise ValueError(f"seasonality_mode must be auto, additive or multiplicative, not {self.seasonality_mode!r}")
        if self.growth not in ("linear", "flat"):
            raise ValueError(f"growth must be linear or flat, not {self.growth!r}")
        if self.start_method not in ("fork", "spawn", "forkserver"):
            raise ValueError(f"start_method must be fork, spawn or forkserver, not {self.start_method!r}")
        _positive(self, "max_series", "uncertainty_samples", "max_workers")


def _quiet_prophet() -> None:
    logging.getLogger("cmdstanpy").disabled = True
    logging.getLogger("prophet").setLevel(logging.WARNING)
    logging.getLogger("prophet.plot").disabled = True  # "Importing plotly failed": plots are not used


def _prophet_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Our series columns as Prophet names them (demand_date -> demand_date, units -> y): the only place demand_date / y exist."""
    return rows.rename(columns={"demand_date": "ds", "units": "y"})


def _prophet(rows: pd.DataFrame, spec: dict, mode: str):
    _quiet_prophet()
    from prophet import Prophet

    model = Prophet(
        growth=spec["growth"],
        seasonality_mode=mode,
        holidays=spec["holidays"],
        interval_width=0.8,
        uncertainty_samples=spec["uncertainty_samples"],
        changepoint_prior_scale=spec["changepoint_prior_scale"],
    )
    for r in spec["regressors"]:
        model.add_regressor(r)
    return model.fit(rows[["ds", "y", *spec["regressors"]]])


def _fit_prophet(task):
    """Worker: (key, fitted model or None, seasonality mode, error message or None)."""
    key, rows, spec = task
    try:
        mode = spec["mode"]
        if mode == "auto":  # the mode with the lower MAE on the last horizon of history
            head, tail = rows.iloc[: -spec["horizon"]], rows.iloc[-spec["horizon"] :]
            if len(head) >= 2 * spec["horizon"]:
                actual = tail["y"].to_numpy()
                mae = {
                    m: np.abs(_prophet(head, spec, m).predict(tail)["yhat"].clip(lower=0).to_numpy() - actual).mean()
                    for m in ("additive", "multiplicative")
                }
                mode = min(mae, key=mae.get)
            else:
                mode = "additive"
        return key, _prophet(rows, spec, mode), mode, None
    except Exception as exc:  # noqa: BLE001 - any failure of one series is reported, never raised
        return key, None, None, f"{type(exc).__name__}: {exc}"


def _predict_prophet(task):
    """Worker: (key, [h, 3] array of P10/P50/P90 or None, error message or None)."""
    key, model, future = task
    try:
        _quiet_prophet()
        return key, model.predict(future)[["yhat_lower", "yhat", "yhat_upper"]].to_numpy(float), None
    except Exception as exc:  # noqa: BLE001
        return key, None, f"{type(exc).__name__}: {exc}"


def _pool_map(fn, tasks: list, workers: int, start_method: str) -> list:
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    workers = min(workers, len(tasks))
    context = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return list(pool.map(fn, tasks, chunksize=max(1, len(tasks) // (workers * 8))))


class ProphetPerSeries(Forecaster):
    """Worker processes start by ``fork`` by default: they inherit the loaded prophet and never re-run
    the caller's script (spawn re-imports an unguarded ``__main__``, and took 8 s against fork's 0.8 s
    for a 2-series fit + predict, measured). The workers run only Prophet (numpy, cmdstan
    subprocesses), no OpenMP, so LightGBM/torch threads in the parent do not hang them."""

    name = "demand_prophet"
    config_class = ProphetConfig

    def fit(self, frame: pd.DataFrame, freq: str | None = None, horizon: int | None = None):
        self._setup(frame, freq, horizon)
        cfg = self.config
        frame = frame.sort_values([*KEYS, "demand_date"])
        volume = frame.groupby(KEYS)["units"].sum().sort_values(ascending=False, kind="stable")
        dense = frame.groupby(KEYS)["units"].mean().reindex(volume.index) >= cfg.min_mean_demand
        head = volume.index[dense.to_numpy()]
        head = head[: cfg.max_series] if cfg.max_series else head
        spec = dict(
            mode=cfg.seasonality_mode,
            growth=cfg.growth,
            regressors=self.regressors,
            horizon=self.horizon,
            uncertainty_samples=cfg.uncertainty_samples,
            changepoint_prior_scale=cfg.changepoint_prior_scale,
        )
        _quiet_prophet()
        import prophet  # noqa: F401 - loaded once here, inherited by forked workers

        holidays = functools.cache(functools.partial(self._holidays, frame))
        selected = frame.loc[pd.MultiIndex.from_frame(frame[KEYS]).isin(head)]
        tasks = [(key, _prophet_frame(rows), {**spec, "holidays": holidays(key[1])}) for key, rows in selected.groupby(KEYS)]
        try:
            results = _pool_map(_fit_prophet, tasks, cfg.max_workers, cfg.start_method)
        except BrokenProcessPool as exc:
            results = [(key, None, None, f"worker crashed: {exc}") for key, _, _ in tasks]
        self.models = {key: model for key, model, _, _ in results if model is not None}
        self.modes = {key: mode for key, _, mode, _ in results if mode is not None}
        sizes = frame.groupby(KEYS).size()
        served = "served by the global model"
        failed = [(*key, "prophet_failed", sizes[key], f"{error}: {served}") for key, _, _, error in results if error]
        why = f"outside the head of {cfg.max_series} by volume" + (
            f" among series selling >= {cfg.min_mean_demand} per period" if cfg.min_mean_demand > 0 else ""
        )
        outside = [(*key, "prophet_not_selected", sizes[key], f"{why}: {served}") for key in volume.index.difference(head)]
        self.report = pd.DataFrame(failed + outside, columns=fd.REPORT_COLUMNS)
        if failed:
            log.warning(
                "%s: %d of %d fits failed (served by the global model); the first, %s / %s: %s",
                self.name,
                len(failed),
                len(tasks),
                failed[0][0],
                failed[0][1],
                failed[0][4],
            )
        self.tail = frame[frame.set_index(KEYS).index.isin(list(self.models))].groupby(KEYS).tail(self.horizon)
        return self

    def _holidays(self, frame: pd.DataFrame, warehouse_id: str) -> pd.DataFrame | None:
        country = self.config.country
        if "is_holiday" in self.regressors or not country:
            return None
        country = country.get(warehouse_id) if isinstance(country, dict) else country
        if not country:
            return None
        years = range(frame["demand_date"].dt.year.min(), frame["demand_date"].dt.year.max() + 2)
        calendar = fd.holidays_frame(country, years)
        # on the series' grid: Prophet fits a holiday only on a demand_date it holds (a week's row, not the holiday's day)
        days = fd.snap(calendar["holiday_date"], self.freq)
        return pd.DataFrame({"ds": days, "holiday": calendar["holiday_name"]}).drop_duplicates(["ds", "holiday"])

    def predict(self, horizon: int | None = None, future: pd.DataFrame | None = None) -> pd.DataFrame:
        horizon = self._horizon(horizon)
        if not self.models:
            return pd.DataFrame(columns=FORECAST_COLUMNS)
        future = self._future(self.tail, horizon, future)
        tasks = [
            (key, self.models[key], _prophet_frame(rows[["demand_date", *self.regressors]]))
            for key, rows in future.groupby(KEYS)
            if key in self.models
        ]
        try:
            results = _pool_map(_predict_prophet, tasks, self.config.max_workers, self.config.start_method)
        except BrokenProcessPool as exc:
            results = [(key, None, f"worker crashed: {exc}") for key, _, _ in tasks]
        done = [(key, q) for key, q, _ in results if q is not None]
        failed = [(*key, "prophet_failed", horizon, f"predict {error}: served by the global model") for key, _, error in results if error]
        if failed:
            self.report = pd.concat([self.report, pd.DataFrame(failed, columns=fd.REPORT_COLUMNS)], ignore_index=True)
        if not done:
            return pd.DataFrame(columns=FORECAST_COLUMNS)
        keys = pd.DataFrame([key for key, _ in done], columns=KEYS)
        origins = self.tail.groupby(KEYS)["demand_date"].max().reindex(pd.MultiIndex.from_frame(keys)).to_numpy()
        return _forecast_frame(keys, origins, self.freq, np.stack([q for _, q in done]))


# ------------------------------------------------------------------------------------ global LSTM


@dataclass(frozen=True)
class LSTMConfig:
    input_length: int | None = None  # periods the encoder reads; None = 2 x horizon
    hidden_size: int = 32
    epochs: int = 30  # at most; early stopping usually ends sooner
    patience: int = 3
    batch_size: int = 256
    lr: float = 0.003
    max_windows: int | None = 20_000  # training windows (series x origin), sampled uniformly
    seed: int = 42
    num_threads: int = 1  # torch threads while training/predicting (CPU)

    def __post_init__(self):
        _positive(self, "input_length", "hidden_size", "epochs", "patience", "batch_size", "max_windows", "num_threads")


def _seq2seq(n_past: int, n_future: int, hidden: int):
    """Encoder LSTM over the past steps, its final state starts a decoder LSTM over the horizon's
    known inputs; a linear head gives P10/P50/P90 per step. Built on demand (torch imported lazily)."""
    from torch import nn

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.LSTM(n_past, hidden, batch_first=True)
            self.decoder = nn.LSTM(n_future, hidden, batch_first=True)
            self.head = nn.Linear(hidden, len(QUANTILES))

        def forward(self, past, future):
            _, state = self.encoder(past)
            out, _ = self.decoder(future, state)
            return self.head(out)

    return Seq2Seq()


def _pinball(pred, target):
    """Mean quantile loss over P10/P50/P90 (pred [B, H, 3], target [B, H]); NaN targets are ignored."""
    import torch

    mask = ~torch.isnan(target)
    error = torch.nan_to_num(target).unsqueeze(-1) - pred
    q = torch.tensor(QUANTILES, dtype=pred.dtype)
    loss = torch.maximum(q * error, (q - 1) * error).mean(-1)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


class GlobalLSTM(Forecaster):
    name = "demand_lstm"
    config_class = LSTMConfig

    def _arrays(self, frame: pd.DataFrame, future: pd.DataFrame | None = None):
        """(panel, scaled demand, observed flag, per-step inputs [series, periods, F]) with ``pad`` leading periods."""
        panel = fd.to_panel(frame, self.freq, self.regressors, future)
        scale = self.scale.reindex(pd.MultiIndex.from_frame(panel.keys[KEYS])).fillna(fd.series_scale(frame)).to_numpy()
        pad = self.input_length
        width = pad + panel.y.shape[1]
        ys = np.zeros((len(scale), width), np.float32)
        observed = np.zeros_like(ys)
        ys[:, pad:] = np.nan_to_num(panel.y / scale[:, None])
        observed[:, pad:] = ~np.isnan(panel.y)
        positions = np.arange(-pad, panel.y.shape[1])
        dates = pd.DatetimeIndex(fd.period_dates(panel.dates[0], positions, self.freq))
        if self.freq == "D":
            angles = [2 * np.pi * dates.dayofweek.to_numpy() / 7, 2 * np.pi * dates.dayofyear.to_numpy() / 365.25]
        else:
            angles = [2 * np.pi * dates.isocalendar().week.to_numpy(float) / 52.18]
        cal = np.column_stack([f(a) for a in angles for f in (np.sin, np.cos)])
        regs = [np.nan_to_num((panel.x[r] - self.reg_mean[r]) / self.reg_std[r]) for r in self.regressors]
        inputs = np.zeros((len(scale), width, len(regs) + cal.shape[1] + 1), np.float32)
        for j, values in enumerate(regs):
            inputs[:, pad:, j] = values
        inputs[:, :, len(regs) : -1] = cal[None]
        inputs[:, :, -1] = np.log1p(scale)[:, None]
        return panel, ys, observed, inputs

    def _windows(self, ys, observed, inputs, s, origin, horizon):
        """Encoder inputs [B, L, 2 + F], decoder inputs [B, H, F + 1], targets [B, H] for origins (padded
        positions). The decoder's extra input is the step's seasonal-naive value (the last same-phase
        demand at or before the origin), as DeepAR-style models feed lags: the network learns corrections."""
        import torch

        h = np.arange(1, horizon + 1)
        m = fd.season_length(self.freq)
        past = origin[:, None] + np.arange(-self.input_length + 1, 1)
        ahead = origin[:, None] + h
        back = ahead - m * -(-h // m)
        rows = s[:, None]
        enc = np.concatenate([ys[rows, past][..., None], observed[rows, past][..., None], inputs[rows, past]], axis=-1)
        seasonal = np.where(back >= 0, ys[rows, np.maximum(back, 0)], 0.0)[..., None]
        dec = np.concatenate([inputs[rows, ahead], seasonal], axis=-1)
        target = np.where(observed[rows, ahead] > 0, ys[rows, ahead], np.nan)
        return torch.from_numpy(enc), torch.from_numpy(dec), torch.from_numpy(target.astype(np.float32))

    def fit(self, frame: pd.DataFrame, freq: str | None = None, horizon: int | None = None):
        import torch

        self._setup(frame, freq, horizon)
        cfg = self.config
        self.input_length = cfg.input_length or 2 * self.horizon
        self.scale = fd.series_scale(frame)
        self.reg_mean = {r: float(frame[r].mean()) for r in self.regressors}
        self.reg_std = {r: float(frame[r].std()) or 1.0 for r in self.regressors}
        panel, ys, observed, inputs = self._arrays(frame)
        pad, h = self.input_length, self.horizon
        context = min(fd.default_windows(self.freq))
        s_train, o_train = fd.sample_positions(panel.first + context, panel.last - 2 * h, cfg.max_windows, cfg.seed)
        s_valid = np.flatnonzero(panel.last - h >= panel.first + context)
        if not len(s_train):
            raise ValueError(f"{self.name}: no training window (series need {2 * h + context + 1} periods)")
        train = self._windows(ys, observed, inputs, s_train, o_train + pad, h)
        valid = self._windows(ys, observed, inputs, s_valid, panel.last[s_valid] - h + pad, h) if len(s_valid) else None

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.num_threads)
        try:
            torch.manual_seed(cfg.seed)
            net = _seq2seq(train[0].shape[-1], train[1].shape[-1], cfg.hidden_size)
            optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
            shuffle = torch.Generator().manual_seed(cfg.seed)
            best, best_state, stale, self.history = None, None, 0, []
            for epoch in range(1, cfg.epochs + 1):
                net.train()
                total = 0.0
                for rows in torch.randperm(len(train[0]), generator=shuffle).split(cfg.batch_size):
                    optimizer.zero_grad()
                    loss = _pinball(net(train[0][rows], train[1][rows]), train[2][rows])
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(rows)
                net.eval()
                with torch.no_grad():
                    score = _pinball(net(valid[0], valid[1]), valid[2]).item() if valid else total / len(train[0])
                self.history.append({"epoch": epoch, "train_loss": total / len(train[0]), "valid_loss": score})
                if best is None or score < best:
                    best, best_state, stale = score, {k: v.detach().clone() for k, v in net.state_dict().items()}, 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
        finally:
            torch.set_num_threads(previous_threads)
        self.dims = (train[0].shape[-1], train[1].shape[-1])
        self.state = {k: v.numpy() for k, v in best_state.items()}  # plain arrays: the fitted model pickles
        keep = max(self.input_length, self.horizon, fd.season_length(self.freq))  # what a forecast window reads
        self.tail = frame.sort_values([*KEYS, "demand_date"]).groupby(KEYS).tail(keep)
        return self

    def predict(self, horizon: int | None = None, future: pd.DataFrame | None = None) -> pd.DataFrame:
        import torch

        horizon = self._horizon(horizon)
        panel, ys, observed, inputs = self._arrays(self.tail, self._future(self.tail, self.horizon, future))
        s = np.flatnonzero(panel.last >= 0)
        enc, dec, _ = self._windows(ys, observed, inputs, s, panel.last[s] + self.input_length, self.horizon)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.config.num_threads)
        try:
            net = _seq2seq(*self.dims, self.config.hidden_size)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()})
            net.eval()
            with torch.no_grad():
                q = net(enc, dec).numpy()[:, :horizon].astype(float)
        finally:
            torch.set_num_threads(previous_threads)
        scale = self.scale.reindex(pd.MultiIndex.from_frame(panel.keys[KEYS])).to_numpy()[s]
        origins = panel.dates.to_numpy()[panel.last[s]]
        return _forecast_frame(panel.keys.iloc[s], origins, self.freq, q * scale[:, None, None])


# ----------------------------------------------------------------------------------- registry


MODELS: dict[str, type[Forecaster]] = {
    cls.name: cls for cls in (SeasonalNaive, MovingAverage, GlobalLightGBM, PlainLightGBM, ProphetPerSeries, GlobalLSTM)
}
SECTIONS = {  # config section of each model in configs/demand.yaml
    "demand_seasonal_naive": "seasonal_naive",
    "demand_moving_average": "moving_average",
    "demand_lgbm": "lgbm",
    "demand_lgbm_plain": "lgbm_plain",
    "demand_prophet": "prophet",
    "demand_lstm": "lstm",
}


def build(name: str, config=None) -> Forecaster:
    """An unfitted model; ``config``: its config section (dict) or dataclass, None = defaults."""
    if name not in MODELS:
        raise ValueError(f"unknown demand model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name](config)


def model_factories(config: dict) -> dict:
    """name -> zero-argument factory of an unfitted model, for the models ``config["backtest"]["models"]`` lists."""
    names = config.get("backtest", {}).get("models") or list(MODELS)
    factories = {name: functools.partial(build, name, config.get(SECTIONS.get(name))) for name in names}
    for factory in factories.values():
        factory()  # fail fast on an unknown name or config key
    return factories


def fit(name: str, frame: pd.DataFrame, config=None, freq: str | None = None, horizon: int | None = None) -> Forecaster:
    return build(name, config).fit(frame, freq, horizon)


def predict(model: Forecaster, horizon: int | None = None, future: pd.DataFrame | None = None) -> pd.DataFrame:
    return model.predict(horizon, future)
