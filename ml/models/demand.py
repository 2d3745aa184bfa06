"""Demand forecasting on the warehouse: the rolling-origin backtest of every configured model.

    backtest(settings)  the dbt export mart_demand_series (fct_daily_demand: item x warehouse x day or
                        week, with regressors) -> forecast_data.prepare (the bad-input rules, each
                        counted) -> the head of series by volume (``data.max_series``) -> rolling-origin
                        backtest of seasonal-naive, moving average, global LightGBM, Prophet (volume
                        head) and the global LSTM -> WAPE / MASE / bias / coverage overall and per
                        series -> the model per series chosen on the validation origins only, scored on
                        the later ones -> report + MLflow run ``demand_backtest``.

Still to come (issue 7): the forecast job and its Feast view, the inventory plan written to the
warehouse, promotion-effect reporting, the Airflow DAG and the scale benchmark.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

SERIES_MART = "mart_demand_series"
RUN_NAME = "demand_backtest"
REGRESSOR_COLUMNS = ("is_promoted", "discount_pct", "temperature_c", "precipitation_mm", "is_holiday")


class DemandError(RuntimeError):
    """The backtest cannot run (missing mart, no usable series); nothing was logged."""


def load_config(path: Path | str | None = None, **overrides) -> dict:
    from ml.models.forecast_models import load_config as load

    config = load(path)
    config.update(overrides)
    return config


def load_series(settings: Settings) -> "pd.DataFrame":
    """The series frame (item_id, warehouse_id, ds, y, regressors, category_l1) from the dbt export."""
    import pandas as pd

    path = Path(settings.exports_dir) / f"{SERIES_MART}.parquet"
    if not path.exists():
        raise DemandError(f"{path} is missing: build the warehouse first (dbt model {SERIES_MART})")
    raw = pd.read_parquet(path)
    frame = raw.rename(columns={"demand_date": "ds", "units": "y"})
    for col in REGRESSOR_COLUMNS:
        if col in frame and frame[col].notna().any():
            frame[col] = frame[col].astype(float)
        else:
            frame = frame.drop(columns=[col], errors="ignore")
    return frame[["item_id", "warehouse_id", "ds", "y", *[c for c in REGRESSOR_COLUMNS if c in frame], "category_l1"]]


def head_by_volume(frame: "pd.DataFrame", max_series: int | None) -> "pd.DataFrame":
    """The ``max_series`` series with the most units (all when None)."""
    if not max_series:
        return frame
    volume = frame.groupby(["item_id", "warehouse_id"])["y"].sum().nlargest(int(max_series))
    keep = volume.index.to_frame(index=False)
    return frame.merge(keep, on=["item_id", "warehouse_id"])


@dataclass
class BacktestResult:
    overall: "pd.DataFrame"
    per_series: "pd.DataFrame"
    test: "pd.DataFrame"
    preparation: "pd.DataFrame"
    freq: str
    n_series: int
    report: Path
    run_id: str

    def summary(self) -> dict:
        cols = [c for c in ("wape", "mase", "bias", "coverage", "n_series") if c in self.overall.columns]
        return {
            "freq": self.freq,
            "series": self.n_series,
            "backtest": self.overall[cols].round(4).to_dict("index"),
            "test_origins": self.test[cols].round(4).to_dict("index"),
            "preparation": self.preparation.groupby("rule")["rows"].sum().to_dict() if len(self.preparation) else {},
            "report": str(self.report),
            "run_id": self.run_id,
        }


def backtest(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> BacktestResult:
    """Backtest every configured model on the warehouse's demand (module doc)."""
    import mlflow
    import pandas as pd

    from ml.models import registry
    from ml.models.backtest import choose, metrics, rolling_origin
    from ml.models.forecast_data import infer_frequency, prepare
    from ml.models.forecast_models import model_factories

    say = echo or (lambda _m: None)
    config = config or load_config()
    data = config.get("data", {})
    frame = load_series(settings)
    if frame.empty:
        raise DemandError(f"{SERIES_MART} is empty: the lake has no demand (order lines or an ERP export)")
    freq = infer_frequency(frame["ds"])
    clean, preparation = prepare(frame, freq, min_history=int(data.get("min_history", 56)))
    clean = head_by_volume(clean, data.get("max_series"))
    if clean.empty:
        raise DemandError(f"no series passed preparation: {preparation.groupby('rule')['rows'].sum().to_dict()}")
    n_series = int(clean.groupby(["item_id", "warehouse_id"]).ngroups)
    bt = config["backtest"]
    say(f"demand backtest: {n_series:,} series ({freq}), models {bt['models']}, {bt['n_origins']} origins")
    forecasts = rolling_origin(clean, model_factories(config), horizon=bt.get("horizon"), n_origins=int(bt["n_origins"]),
                               step=bt.get("step"), freq=freq)
    overall, per_series = metrics(forecasts, clean, freq=freq)
    overall = overall.set_index("model")
    origins = sorted(forecasts["origin"].unique())
    validation = origins[: int(bt["n_validation"])]
    _, chosen_forecasts = choose(forecasts, validation, method=bt.get("selection", "best"), fallback=bt.get("fallback"))
    later = forecasts[forecasts["origin"] > validation[-1]]
    test = pd.concat([metrics(later, clean, freq=freq)[0], metrics(chosen_forecasts, clean, freq=freq)[0]]).set_index("model")
    say("demand backtest (all origins):\n" + overall.round(4).to_string())
    with registry.training_run(settings, RUN_NAME, params={"freq": freq, "series": n_series, **{f"backtest_{k}": v for k, v in bt.items()}},
                               feature_service="", features=list(clean.columns), snapshot={"rows": len(clean)}) as run:
        for model, row in overall.iterrows():
            registry.log_metrics({k: row[k] for k in ("wape", "mase", "bias", "coverage") if k in row}, prefix=f"{model}_")
        for model, row in test.iterrows():
            registry.log_metrics({k: row[k] for k in ("wape", "mase", "bias", "coverage") if k in row}, prefix=f"test_{model}_")
        path = _report(settings, run.info.run_id, overall, test, preparation, forecasts, clean, freq, n_series)
        mlflow.log_artifacts(str(path.parent), artifact_path="report")
        mlflow.set_tag("report", str(path))
        run_id = run.info.run_id
    return BacktestResult(overall, per_series, test, preparation, freq, n_series, path, run_id)


def _report(settings, run_id, overall, test, preparation, forecasts, history, freq, n_series) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ml.models.report import Report, report_dir

    report = Report("demand — rolling-origin backtest", subtitle=f"MLflow run {run_id}")
    report.text(f"{n_series:,} series ({freq}); every model trains on the rows before each origin only. WAPE = "
                "sum|y - yhat| / sum y; MASE scaled by the in-sample seasonal-naive error; bias = sum(yhat - y) / sum y; "
                "coverage of the P10-P90 interval (nominal 0.8). Prophet covers the volume head only.")
    report.table("Backtest, all origins", overall.round(4))
    report.table("Test origins (after the validation origins), with the model chosen per series on the validation origins", test.round(4))
    if len(preparation):
        report.table("Input preparation (rule, rows)", preparation.groupby(["rule", "reason"])["rows"].sum().reset_index())
    sample = forecasts[["item_id", "warehouse_id"]].drop_duplicates().head(4)
    fig, axes = plt.subplots(len(sample), 1, figsize=(9, 2.4 * max(len(sample), 1)), squeeze=False)
    last = forecasts["origin"].max()
    for ax, (_, key) in zip(axes[:, 0], sample.iterrows()):
        hist = history[(history["item_id"] == key["item_id"]) & (history["warehouse_id"] == key["warehouse_id"])]
        ax.plot(hist["ds"].tail(120), hist["y"].tail(120), color="black", lw=1, label="actual")
        for model, rows in forecasts[(forecasts["origin"] == last) & (forecasts["item_id"] == key["item_id"])
                                     & (forecasts["warehouse_id"] == key["warehouse_id"])].groupby("model"):
            ax.plot(rows["ds"], rows["yhat"], lw=1, label=model)
            if model == "demand_lgbm":
                ax.fill_between(rows["ds"], rows["yhat_p10"], rows["yhat_p90"], alpha=0.2)
        ax.set_title(f"{key['item_id']} @ {key['warehouse_id']}", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=3)
    fig.tight_layout()
    report.figure("forecast_vs_actual", fig)
    errors = forecasts.assign(err=(forecasts["yhat"] - forecasts["y"]))
    fig2, ax2 = plt.subplots(figsize=(7, 3))
    for model, rows in errors.groupby("model"):
        ax2.hist(rows["err"].clip(-20, 20), bins=40, histtype="step", label=model)
    ax2.set_xlabel("forecast - actual (units, clipped at +-20)")
    ax2.legend(fontsize=7)
    report.figure("error_distribution", fig2)
    return report.write(report_dir(settings, RUN_NAME, run_id), model=RUN_NAME, run_id=run_id)
