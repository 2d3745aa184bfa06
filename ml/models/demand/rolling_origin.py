"""Rolling-origin backtest of demand models, its metrics, and the model chosen per series.

    backtest_origins(frame, horizon, n_origins, step, freq) -> list of origin dates
    rolling_origin(frame, models, horizon=None, n_origins=3, step=None, freq=None) -> forecasts
        forecasts: model, origin, item_id, warehouse_id, demand_date, units, yhat, yhat_p10, yhat_p90; one row per model,
        origin, series and forecast period. ``.attrs["timings"]``: model, origin, n_series, fit_s, predict_s,
        error (one row per model and origin).
    metrics(forecasts, history, freq=None, common=False) -> (overall, per_series)
    choose(forecasts, validation_origins, method="best", fallback=None) -> (selection, test forecasts)
    combine(forecasts, selection, fallback=None, name="demand_best") -> forecasts of the selection

An origin is the first forecast period: each model is fitted on the rows strictly before it and
forecasts ``horizon`` periods from it; the regressors of those periods are the realised ones (the
promotion calendar is known ahead; weather is treated as a perfect forecast). The last origin's
window ends at the frame's last date; earlier origins are ``step`` periods apart (default: the
horizon, so test windows do not overlap). A model that raises at an origin is logged and recorded in
the timings (error), and has no forecasts there; the other models go on.

Metrics, per model (overall) and per model and series:
    wape      sum|yhat - units| / sum units
    mase      |yhat - units| / the in-sample MAE of the seasonal-naive rule (lag 7 days / 52 weeks) on the
              training part before the row's origin; averaged over a series' rows, then over series
              (a series with a flat training part has no scale and no MASE)
    bias      sum(yhat - units) / sum units  (> 0: over-forecast)
    coverage  share of actuals inside [yhat_p10, yhat_p90] (nominal 0.8)

A model whose overall |bias| exceeds ``BIAS_LIMIT`` (it forecasts less than half, or more than 1.5
times, the volume) is flagged ``biased``, ranks after every unbiased model whatever its WAPE, and is
never chosen per series (``choose``): on intermittent series a forecast of about 0 has a low WAPE
and a low MAE while it plans no stock at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from ml.models.demand import data as fd
from ml.models.demand.data import KEYS

log = logging.getLogger(__name__)

FORECAST_COLUMNS = ["model", "origin", *KEYS, "demand_date", "units", "yhat", "yhat_p10", "yhat_p90"]
METRICS = ["wape", "mase", "bias", "coverage"]
BIAS_LIMIT = 0.5


def backtest_origins(frame: pd.DataFrame, horizon: int, n_origins: int, step: int, freq: str, min_train: int = 1) -> list[pd.Timestamp]:
    """The origins, oldest first: the last one's window ends on the frame's last date. An origin
    with fewer than ``min_train`` periods of history before it is dropped (logged): a short history
    gets fewer origins rather than models fitted on almost nothing. None left: ValueError."""
    if n_origins < 1 or step < 1 or horizon < 1:
        raise ValueError("horizon, n_origins and step must be >= 1")
    last = frame["demand_date"].max() - (horizon - 1) * fd.step(freq)
    origins = [last - k * step * fd.step(freq) for k in reversed(range(n_origins))]
    earliest = frame["demand_date"].min() + max(int(min_train), 1) * fd.step(freq)
    kept = [pd.Timestamp(o) for o in origins if o >= earliest]
    if not kept:
        raise ValueError(
            f"no origin with {min_train} periods of history before it and a {horizon}-period window in "
            f"{frame['demand_date'].min().date()}..{frame['demand_date'].max().date()}"
        )
    if len(kept) < n_origins:
        log.warning(
            "backtest: %d of %d origins kept (the others have fewer than %d periods of history before them)",
            len(kept),
            n_origins,
            min_train,
        )
    return kept


def rolling_origin(
    frame: pd.DataFrame,
    models: dict[str, Callable],
    horizon: int | None = None,
    n_origins: int = 3,
    step: int | None = None,
    freq: str | None = None,
    min_train: int = 1,
) -> pd.DataFrame:
    """Forecasts of every model at every origin, trained on the data before that origin only.

    ``models``: name -> factory returning an unfitted model (``forecasters.model_factories``).
    ``min_train``: periods of history an origin needs (``backtest_origins``).
    """
    freq = freq or fd.infer_frequency(frame)
    horizon = horizon or fd.default_horizon(freq)
    origins = backtest_origins(frame, horizon, n_origins, step or horizon, freq, min_train)
    parts, timings = [], []
    for origin in origins:
        train = frame.loc[frame["demand_date"] < origin]
        window = frame.loc[(frame["demand_date"] >= origin) & (frame["demand_date"] < origin + horizon * fd.step(freq))]
        window = window.merge(train[KEYS].drop_duplicates(), on=KEYS)  # series known at the origin
        for name, factory in models.items():
            started = time.perf_counter()
            timing = {"model": name, "origin": origin, "n_series": train.groupby(KEYS).ngroups, "error": None}
            try:
                model = factory().fit(train, freq, horizon)
                fitted = time.perf_counter()
                pred = model.predict(horizon, window.drop(columns="units"))
                timing.update(fit_s=fitted - started, predict_s=time.perf_counter() - fitted)
            except Exception as exc:  # noqa: BLE001 - one model failing at one origin never ends the backtest
                log.exception("backtest: %s failed at origin %s", name, origin.date())
                timings.append({**timing, "error": f"{type(exc).__name__}: {exc}"})
                continue
            timings.append(timing)
            pred = pred.merge(window[[*KEYS, "demand_date", "units"]], on=[*KEYS, "demand_date"], how="inner")
            parts.append(pred.assign(model=name, origin=origin))
    forecasts = pd.concat(parts, ignore_index=True)[FORECAST_COLUMNS] if parts else pd.DataFrame(columns=FORECAST_COLUMNS)
    forecasts.attrs["timings"] = pd.DataFrame(timings)
    return forecasts


def _mase_scale(forecasts: pd.DataFrame, history: pd.DataFrame, freq: str) -> np.ndarray:
    """Per forecast row: the in-sample seasonal-naive MAE of its series over the history before its origin."""
    panel = fd.to_panel(history, freq)
    m = fd.season_length(freq)
    errors = np.full(panel.y.shape, np.nan)
    errors[:, m:] = np.abs(panel.y[:, m:] - panel.y[:, :-m])
    seen = ~np.isnan(errors)
    zero = np.zeros((len(errors), 1))
    csum = np.concatenate([zero, np.where(seen, errors, 0).cumsum(axis=1)], axis=1)
    cnt = np.concatenate([zero, seen.cumsum(axis=1)], axis=1)
    pairs = forecasts[[*KEYS, "origin"]].drop_duplicates()
    s = pd.MultiIndex.from_frame(panel.keys[KEYS]).get_indexer(pd.MultiIndex.from_frame(pairs[KEYS]))
    pos = np.clip((pd.to_datetime(pairs["origin"]) - panel.dates[0]) // fd.step(freq), 0, panel.y.shape[1]).to_numpy(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(s >= 0, csum[s, pos] / cnt[s, pos], np.nan)
    pairs = pairs.assign(_scale=np.where(scale > 0, scale, np.nan))
    return forecasts[[*KEYS, "origin"]].merge(pairs, on=[*KEYS, "origin"], how="left")["_scale"].to_numpy()


def metrics(
    forecasts: pd.DataFrame, history: pd.DataFrame, freq: str | None = None, common: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(overall, per_series) WAPE, MASE, bias and interval coverage (module docstring).

    ``history``: the series frame the backtest ran on (MASE scales come from its rows before each
    origin). ``common``: score only the (origin, series, period) rows every model forecast, so that
    models covering different series (Prophet's head) compare on the same rows.
    overall: model, wape, mase, bias, coverage, n_series, n_rows, biased (|bias| > ``BIAS_LIMIT``),
    unbiased models first, each group by WAPE. per_series: model, item_id, warehouse_id, wape, mase,
    bias, coverage, n_rows.
    """
    freq = freq or fd.infer_frequency(history)
    rows = forecasts.dropna(subset=["units", "yhat"])
    if common:
        n_models = rows["model"].nunique()
        shared = rows.groupby(["origin", *KEYS, "demand_date"])["model"].transform("nunique") == n_models
        rows = rows.loc[shared]
    error = rows["yhat"].to_numpy(float) - rows["units"].to_numpy(float)
    rows = rows.assign(
        abs_error=np.abs(error),
        error=error,
        scaled=np.abs(error) / _mase_scale(rows, history, freq),
        covered=((rows["units"] >= rows["yhat_p10"]) & (rows["units"] <= rows["yhat_p90"])).astype(float),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = rows.groupby(["model", *KEYS], sort=True).agg(
            abs_error=("abs_error", "sum"),
            error=("error", "sum"),
            units=("units", "sum"),
            mase=("scaled", "mean"),
            coverage=("covered", "mean"),
            n_rows=("units", "size"),
        )
        per_series = sums.assign(wape=sums["abs_error"] / sums["units"], bias=sums["error"] / sums["units"])
        totals = sums.groupby("model").agg(
            abs_error=("abs_error", "sum"),
            error=("error", "sum"),
            units=("units", "sum"),
            mase=("mase", "mean"),
            n_series=("n_rows", "size"),
            n_rows=("n_rows", "sum"),
        )
        overall = totals.assign(
            wape=totals["abs_error"] / totals["units"],
            bias=totals["error"] / totals["units"],
            coverage=rows.groupby("model")["covered"].mean(),
        )
    overall = overall.reset_index()[["model", *METRICS, "n_series", "n_rows"]]
    overall = overall.assign(biased=overall["bias"].abs() > BIAS_LIMIT).sort_values(["biased", "wape"], kind="stable")
    per_series = per_series.reset_index()[["model", *KEYS, *METRICS, "n_rows"]]
    return overall.reset_index(drop=True), per_series


def _keep_fallback_unless_clearly_beaten(
    seen: pd.DataFrame, selection: pd.DataFrame, mae: pd.DataFrame, fallback: str, margin: float, min_wins: int
) -> pd.DataFrame:
    """``selection`` with the fallback restored for every series whose chosen model does not beat it
    by ``margin`` on ``min_wins`` validation origins (series the fallback never forecast keep theirs)."""
    per = (seen["yhat"] - seen["units"]).abs().groupby([seen[k] for k in (*KEYS, "model", "origin")]).mean().rename("mae").reset_index()
    base = per[per["model"] == fallback].drop(columns="model").rename(columns={"mae": "fallback_mae"})
    wins = selection[[*KEYS, "model"]].merge(per, on=[*KEYS, "model"]).merge(base, on=[*KEYS, "origin"])
    wins = (wins["mae"] < (1.0 - margin) * wins["fallback_mae"]).groupby([wins[k] for k in KEYS]).sum().rename("wins").reset_index()
    has_fallback = base[KEYS].drop_duplicates().assign(_fb=True)
    marked = selection.merge(wins, on=KEYS, how="left").merge(has_fallback, on=KEYS, how="left")
    back = marked["_fb"].eq(True) & marked["model"].ne(fallback) & marked["wins"].fillna(0).lt(min_wins)
    keep = marked.loc[~back, selection.columns]
    restored = mae[mae["model"].eq(fallback)].merge(marked.loc[back, KEYS], on=KEYS).assign(weight=1.0)
    return pd.concat([keep, restored[selection.columns]], ignore_index=True).sort_values(KEYS, kind="stable").reset_index(drop=True)


def combine(forecasts: pd.DataFrame, selection: pd.DataFrame, fallback: str | None = None, name: str = "demand_best") -> pd.DataFrame:
    """Forecasts of the selected model(s) per series: the weight-averaged yhat / p10 / p90 of the
    selection's models (weights renormalised over those present on a row); a series or row without any
    selected model takes the ``fallback`` model's forecast. ``selection``: item_id, warehouse_id, model, weight.
    """
    values = ["yhat", "yhat_p10", "yhat_p90"]
    group = [c for c in ("origin", *KEYS, "demand_date") if c in forecasts.columns]
    rows = forecasts.merge(selection[[*KEYS, "model", "weight"]], on=[*KEYS, "model"])
    rows[values] = rows[values].mul(rows["weight"], axis=0)
    by_row = rows.groupby(group, sort=False)
    out = by_row[values].sum().div(by_row["weight"].sum(), axis=0)
    if "units" in rows.columns:
        out["units"] = by_row["units"].first()
    out = out.reset_index()
    if fallback is not None:
        backup = forecasts.loc[forecasts["model"] == fallback, [*group, *values, *(["units"] if "units" in forecasts else [])]]
        backup = backup.merge(out[group], on=group, how="left", indicator=True)
        out = pd.concat([out, backup.loc[backup["_merge"] == "left_only"].drop(columns="_merge")], ignore_index=True)
    columns = [c for c in FORECAST_COLUMNS if c in out.columns or c == "model"]
    return out.assign(model=name)[columns].sort_values(group, kind="stable").reset_index(drop=True)


def choose(
    forecasts: pd.DataFrame,
    validation_origins: int | Iterable,
    method: str = "best",
    fallback: str | None = None,
    margin: float = 0.0,
    min_wins: int = 1,
    bias_limit: float | None = BIAS_LIMIT,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The model per series chosen on the validation origins only, applied to the later (test) origins.

    ``validation_origins``: how many of the earliest origins, or the origin dates themselves. Only
    validation rows dated before the first test origin count, so no actual the test scores is seen.
    ``method``: best (the lowest validation MAE per series, i.e. the lowest WAPE) or ensemble (every
    model weighted by 1 / its validation MAE, i.e. inverse WAPE). A series the validation origins never
    saw, or whose chosen model lacks a test forecast, takes ``fallback``. With ``method`` best and a
    ``fallback`` (the global model), a series leaves the fallback only for a model whose MAE is below
    (1 - ``margin``) x the fallback's on at least ``min_wins`` validation origins: a choice that won
    once, or by a hair, is noise (per-series choice overfits its validation origins otherwise). A model
    whose bias over the validation rows exceeds ``bias_limit`` in size is no candidate (module doc).
    Returns (selection: item_id, warehouse_id, model, weight, validation_mae; test forecasts of the
    choice, model = demand_<method>, same columns as ``rolling_origin``'s).
    """
    if method not in ("best", "ensemble"):
        raise ValueError(f"method must be best or ensemble, not {method!r}")
    # rolling_origin's frame carries its timings in .attrs: pandas compares attrs when it merges frames
    # derived from it, which fails for a DataFrame value once a filter has copied it
    forecasts = forecasts.copy(deep=False)
    forecasts.attrs = {}
    origins = sorted(forecasts["origin"].unique())
    if isinstance(validation_origins, int):
        valid = origins[:validation_origins]
    else:
        valid = sorted(pd.to_datetime(list(validation_origins)))
    test = [o for o in origins if valid and o > max(valid)]
    if not valid or not test:
        have = [str(pd.Timestamp(o).date()) for o in origins]
        raise ValueError(f"need validation origins and later test origins; have {have}")
    seen = forecasts.loc[forecasts["origin"].isin(valid) & (forecasts["demand_date"] < test[0])]
    if bias_limit is not None:  # a model far off the volume on the validation rows is no candidate
        sums = (
            seen.dropna(subset=["units", "yhat"]).assign(error=lambda f: f["yhat"] - f["units"]).groupby("model")[["error", "units"]].sum()
        )
        biased = set(sums.index[(sums["error"] / sums["units"]).abs() > bias_limit])
        if biased and biased != set(seen["model"]):
            seen = seen.loc[~seen["model"].isin(biased)]
    mae = (seen["yhat"] - seen["units"]).abs().groupby([seen[k] for k in (*KEYS, "model")]).mean().rename("validation_mae")
    mae = mae.reset_index()
    if method == "best":
        selection = mae.loc[mae.groupby(KEYS)["validation_mae"].idxmin()].assign(weight=1.0)
        if fallback is not None and (margin > 0 or min_wins > 1):
            selection = _keep_fallback_unless_clearly_beaten(seen, selection, mae, fallback, margin, min_wins)
    else:
        inverse = 1.0 / (mae["validation_mae"] + 1e-6)
        selection = mae.assign(weight=inverse / inverse.groupby([mae[k] for k in KEYS]).transform("sum"))
    selection = selection[[*KEYS, "model", "weight", "validation_mae"]].reset_index(drop=True)
    chosen = combine(forecasts.loc[forecasts["origin"].isin(test)], selection, fallback, name=f"demand_{method}")
    return selection, chosen
