"""Demand forecasting on the warehouse: backtest, train + register, forecast + inventory plan.

    backtest(settings)  the dbt export mart_demand_series (fct_daily_demand: item x warehouse x day or
                        week, with regressors) -> data.prepare (the bad-input rules, each
                        counted) -> the head of series by volume (``data.max_series``) -> rolling-origin
                        backtest of seasonal-naive, moving average, global LightGBM, Prophet (volume
                        head) and the global LSTM -> WAPE / MASE / bias / coverage overall and per
                        series -> the model per series chosen on the validation origins only, scored on
                        the later ones -> report + MLflow run ``demand_backtest``.
    train(settings)     backtest, then the serving model (``forecast.model``, the global LightGBM)
                        fitted on every prepared series' full history -> MLflow run + registered
                        version, promoted when its test-origin WAPE is not worse than the champion's
                        logged one (``forecast.promotion``).
    forecast(settings)  the champion forecasts ``horizon`` periods after the history (future
                        promotions from the export mart_promotion_calendar; other regressors by
                        data.future_frame's documented fills); series too short for the model
                        get the moving average over what they have, all-zero series 0 ->
                        inventory.policy with stock and lead times from mart_inventory_position
                        (``forecast.default_lead_time_days`` where none is known, counted) ->
                        $SCORES_DIR/demand_forecast/forecast_date=D/ (quantiles per period) and
                        $SCORES_DIR/demand_plan/forecast_date=D/ (the plan; the source of Feast view
                        ``item_warehouse_plan``), both rewritten on a re-run for the same date; report
                        with the plan and the turnover of the policy replayed over the history.

The forecast date D is the last day the demand history covers (the data's as-of date), so a re-run
on the same data rewrites the same partitions.
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
CALENDAR_MART = "mart_promotion_calendar"
POSITION_MART = "mart_inventory_position"
RUN_NAME = "demand_backtest"
FORECAST_OUTPUT = "demand_forecast"  # $SCORES_DIR/demand_forecast/forecast_date=D/: item x warehouse x period quantiles
PLAN_OUTPUT = "demand_plan"  # $SCORES_DIR/demand_plan(.parquet): the inventory plan, Feast view item_warehouse_plan
PLAN_VIEW = "item_warehouse_plan"
# the plan's columns a person reads first (the forecast report's largest orders, the demo's online row)
PLAN_SUMMARY_COLUMNS = (
    "item_id",
    "warehouse_id",
    "forecast_units",
    "lead_time_days",
    "safety_stock",
    "reorder_point",
    "order_up_to",
    "on_hand_units",
    "inventory_position",
    "suggested_order_units",
    "projected_stockout_date",
)
PARTITION_KEY = "forecast_date"
BACKTEST_CSV, TEST_CSV = "backtest_overall.csv", "backtest_test.csv"  # beside the backtest report
FORECASTS_FILE = "backtest_forecasts.parquet"  # ... and every forecast of the backtest
REGRESSOR_COLUMNS = ("is_promoted", "discount_pct", "temperature_c", "precipitation_mm", "is_holiday", "price", "markdown_amount")
REGRESSORS_MART = "mart_demand_regressors"  # the exports' named extra regressors, long: one column each here
ATTRIBUTES_MART = "mart_series_attributes"  # static series attributes, long: one column attr_<name> each here


class DemandError(RuntimeError):
    """The backtest cannot run (missing mart, no usable series); nothing was logged."""


class NoDemandDataError(DemandError):
    """The lake holds no item x warehouse demand (no warehouse on any order, no ERP export): the
    demand family has nothing to learn from, which is a shape the contract allows, not a failure."""


def load_config(path: Path | str | None = None, **overrides) -> dict:
    from ml.models.demand.forecasters import load_config as load

    config = load(path)
    config.update(overrides)
    return config


def load_series(settings: Settings) -> "pd.DataFrame":
    """The series frame (item_id, warehouse_id, demand_date, units, regressors, category_l1) from the dbt export."""
    import pandas as pd

    path = Path(settings.exports_dir) / f"{SERIES_MART}.parquet"
    if not path.exists():
        raise DemandError(f"{path} is missing: build the warehouse first (dbt model {SERIES_MART})")
    frame = pd.read_parquet(path)
    if "markdown_amount" in frame and frame["markdown_amount"].fillna(0).ne(0).any():
        frame["markdown_amount"] = frame["markdown_amount"].fillna(0.0)  # no markdown reported = none run
    for col in REGRESSOR_COLUMNS:
        if col in frame and frame[col].notna().any() and not (col == "markdown_amount" and frame[col].eq(0).all()):
            frame[col] = frame[col].astype(float)
        else:
            frame = frame.drop(columns=[col], errors="ignore")
    frame = frame[["item_id", "warehouse_id", "demand_date", "units", *[c for c in REGRESSOR_COLUMNS if c in frame], "category_l1"]]
    return _with_extras(settings, frame)


def _with_extras(settings: Settings, frame: "pd.DataFrame") -> "pd.DataFrame":
    """The series frame with the exports' named regressors (one float column per name, NaN where a
    period has no value: prepare's regressor_filled rule carries it) and static attributes (attr_<name>:
    float where every value parses as a number, else text, a category to the global models)."""
    import pandas as pd

    from ml.models.demand.data import ATTRIBUTE_PREFIX

    keys = ["item_id", "warehouse_id"]
    path = Path(settings.exports_dir) / f"{REGRESSORS_MART}.parquet"
    regs = pd.read_parquet(path) if path.exists() else None
    if regs is not None and len(regs):
        wide = regs.pivot_table(index=[*keys, "demand_date"], columns="name", values="value", aggfunc="first")
        wide = wide.reset_index()
        wide.columns.name = None
        wide["demand_date"] = pd.to_datetime(wide["demand_date"])
        frame = frame.assign(demand_date=pd.to_datetime(frame["demand_date"]))
        clash = [c for c in wide.columns if c not in (*keys, "demand_date") and c in frame.columns]
        frame = frame.merge(wide.drop(columns=clash), on=[*keys, "demand_date"], how="left")
    path = Path(settings.exports_dir) / f"{ATTRIBUTES_MART}.parquet"
    attrs = pd.read_parquet(path) if path.exists() else None
    if attrs is not None and len(attrs):
        wide = attrs.pivot_table(index=keys, columns="name", values="value", aggfunc="first")
        wide.columns = [f"{ATTRIBUTE_PREFIX}{c}" for c in wide.columns]
        for col in wide.columns:
            numbers = pd.to_numeric(wide[col], errors="coerce")
            if numbers.notna().sum() == wide[col].notna().sum():
                wide[col] = numbers
        frame = frame.merge(wide.reset_index(), on=keys, how="left")
    return frame


def head_by_volume(frame: "pd.DataFrame", max_series: int | None, before=None) -> "pd.DataFrame":
    """The ``max_series`` series with the most units (all when None or 0), counted on the rows before
    ``before`` only (a backtest's first origin: the head is chosen without seeing its test windows)."""
    if not max_series:
        return frame
    seen = frame if before is None else frame[frame["demand_date"] < before]
    volume = seen.groupby(["item_id", "warehouse_id"])["units"].sum().nlargest(int(max_series))
    keep = volume.index.to_frame(index=False)
    return frame.merge(keep, on=["item_id", "warehouse_id"])


@dataclass
class BacktestResult:
    overall: "pd.DataFrame"
    per_series: "pd.DataFrame"
    test: "pd.DataFrame"
    preparation: "pd.DataFrame"
    timings: "pd.DataFrame"
    freq: str
    n_series: int
    report: Path
    run_id: str
    by_origin: "pd.DataFrame | None" = None  # WAPE, model x origin
    forecasts_path: Path | None = None  # every forecast: model, origin, item, warehouse, period, units, yhat, P10, P90

    def seconds(self) -> dict:
        """Fit + predict seconds per model, summed over the origins."""
        if self.timings.empty or "fit_s" not in self.timings:
            return {}
        t = self.timings.assign(s=self.timings["fit_s"].fillna(0) + self.timings["predict_s"].fillna(0))
        return t.groupby("model")["s"].sum().round(1).to_dict()

    def summary(self) -> dict:
        cols = [c for c in ("wape", "mase", "bias", "coverage", "n_series") if c in self.overall.columns]
        return {
            "freq": self.freq,
            "series": self.n_series,
            "backtest": self.overall[cols].round(4).to_dict("index"),
            "test_origins": self.test[cols].round(4).to_dict("index"),
            "wape_per_origin": None if self.by_origin is None else self.by_origin.round(4).to_dict("index"),
            "served_model": next((m for m, v in self.overall.get("served", {}).items() if v), None),
            "forecasts": None if self.forecasts_path is None else str(self.forecasts_path),
            "preparation": self.preparation.groupby("rule")["rows"].sum().to_dict() if len(self.preparation) else {},
            "seconds": self.seconds(),
            "report": str(self.report),
            "run_id": self.run_id,
        }


def prepared_series(settings: Settings, config: dict) -> tuple["pd.DataFrame", "pd.DataFrame", str]:
    """(clean frame of the modellable series, preparation report, frequency) from the export."""
    from ml.models.demand.data import infer_frequency, prepare

    frame = load_series(settings)
    if frame.empty:
        raise NoDemandDataError(
            f"{SERIES_MART} is empty: the lake has no item x warehouse demand (orders without a warehouse and no "
            f"ERP demand export). A one-site shop can map a constant location: `constants: {{warehouse_id: main}}` "
            f"plus `warehouses` in the mapping's produces"
        )
    freq = infer_frequency(frame["demand_date"])
    data = config.get("data", {})
    clean, preparation = prepare(frame, freq, min_history=int(data.get("min_history", 56)), country=_country(config))
    return clean, preparation, freq


def _country(config: dict):
    return config.get("forecast", {}).get("country")


def backtest(
    settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print, prepared: tuple | None = None
) -> BacktestResult:
    """Backtest every configured model on the warehouse's demand (module doc). ``prepared``: the
    output of ``prepared_series`` when the caller has it already."""
    import pandas as pd

    from ml.models.demand.forecasters import model_factories
    from ml.models.demand.rolling_origin import choose, metrics, rolling_origin
    from ml.models.lifecycle import registry

    say = echo or (lambda _m: None)
    config = config or load_config()
    from ml.models.demand.data import default_horizon
    from ml.models.demand.rolling_origin import backtest_origins

    clean, preparation, freq = prepared_series(settings, config) if prepared is None else prepared
    if clean.empty:
        raise DemandError(f"no series passed preparation: {preparation.groupby('rule')['rows'].sum().to_dict()}")
    bt = config["backtest"]
    min_train = int(config.get("data", {}).get("min_history", 56))
    horizon = int(bt.get("horizon") or default_horizon(freq))
    step = int(bt.get("step") or horizon)
    first = backtest_origins(clean, horizon, int(bt["n_origins"]), step, freq, min_train)[0]
    clean = head_by_volume(clean, config.get("data", {}).get("max_series"), before=first)
    n_series = int(clean.groupby(["item_id", "warehouse_id"]).ngroups)
    say(
        f"demand backtest: {n_series:,} series ({freq}), models {bt['models']}, {bt['n_origins']} origins {step} periods apart, "
        f"horizon {horizon}"
    )
    forecasts = rolling_origin(
        clean, model_factories(config), horizon=horizon, n_origins=int(bt["n_origins"]), step=step, freq=freq, min_train=min_train
    )
    if forecasts.empty:
        raise DemandError(f"every model failed at every origin: {forecasts.attrs['timings'].to_dict('records')}")
    overall, per_series = metrics(forecasts, clean, freq=freq)
    overall = overall.set_index("model")
    origins = sorted(forecasts["origin"].unique())
    # a short history keeps fewer origins: at least one stays for the test
    validation = origins[: max(min(int(bt["n_validation"]), len(origins) - 1), 0)]
    if validation:
        _, chosen_forecasts = choose(
            forecasts,
            validation,
            method=bt.get("selection", "best"),
            fallback=bt.get("fallback"),
            margin=float(bt.get("choice_margin", 0.0)),
            min_wins=int(bt.get("choice_min_wins", 1)),
        )
        later = forecasts[forecasts["origin"] > validation[-1]]
    else:
        say(
            f"demand backtest: one origin only (history {clean['demand_date'].min():%Y-%m-%d}.."
            f"{clean['demand_date'].max():%Y-%m-%d}): no per-series choice"
        )
        chosen_forecasts, later = forecasts.iloc[0:0], forecasts
    test = pd.concat([metrics(f, clean, freq=freq)[0] for f in (later, chosen_forecasts) if len(f)])
    test = test.sort_values(["biased", "wape"], kind="stable").set_index("model")
    by_origin = per_origin(forecasts, clean, freq)
    served = config.get("forecast", {}).get("model")
    overall, test = (t.assign(served=t.index == served) for t in (overall, test))
    say("demand backtest (all origins):\n" + overall.round(4).to_string())
    say("WAPE per origin:\n" + by_origin.round(4).to_string())
    with registry.training_run(
        settings,
        RUN_NAME,
        params={"freq": freq, "series": n_series, **{f"backtest_{k}": v for k, v in bt.items()}},
        feature_service="",
        features=list(clean.columns),
        snapshot={"rows": len(clean)},
    ) as run:
        for model, row in overall.iterrows():
            registry.log_metrics({k: row[k] for k in ("wape", "mase", "bias", "coverage") if k in row}, prefix=f"{model}_")
        for model, row in test.iterrows():
            registry.log_metrics({k: row[k] for k in ("wape", "mase", "bias", "coverage") if k in row}, prefix=f"test_{model}_")
        path = _report(settings, run.info.run_id, overall, test, preparation, forecasts, clean, freq, n_series, by_origin, served)
        registry.log_report(settings, path)
        run_id = run.info.run_id
    return BacktestResult(
        overall,
        per_series,
        test,
        preparation,
        forecasts.attrs["timings"],
        freq,
        n_series,
        path,
        run_id,
        by_origin,
        path.parent / FORECASTS_FILE,
    )


def per_origin(forecasts: "pd.DataFrame", history: "pd.DataFrame", freq: str) -> "pd.DataFrame":
    """WAPE of every model at every origin (model x origin): the spread the pooled figures hide."""
    import pandas as pd

    from ml.models.demand.rolling_origin import metrics

    rows = {origin: metrics(part, history, freq=freq)[0].set_index("model")["wape"] for origin, part in forecasts.groupby("origin")}
    table = pd.DataFrame(rows)
    table.columns = [f"{pd.Timestamp(c):%Y-%m-%d}" for c in table.columns]
    return table


def _report(settings, run_id, overall, test, preparation, forecasts, history, freq, n_series, by_origin=None, served=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ml.models.demand.rolling_origin import BIAS_LIMIT
    from ml.models.lifecycle.report import Report, report_dir

    report = Report("demand — rolling-origin backtest", subtitle=f"MLflow run {run_id}")
    report.text(
        f"{n_series:,} series ({freq}); every model trains on the rows before each origin only. WAPE = "
        "sum|y - yhat| / sum y; MASE scaled by the in-sample seasonal-naive error; bias = sum(yhat - y) / sum y; "
        "coverage of the P10-P90 interval (nominal 0.8). Prophet covers the volume head only. A model with |bias| "
        f"above {BIAS_LIMIT} (column biased: it forecasts less than half, or more than 1.5 times, the volume) ranks after "
        "the others whatever its WAPE and is never chosen per series: a forecast of about 0 scores a low WAPE on "
        "intermittent series and plans no stock."
    )
    report.text(
        f"Served: `ecomml demand forecast` serves {served or 'the configured model'} (column served). The head of "
        f"series was ranked on the periods before the first origin only. Every forecast is in {FORECASTS_FILE} beside "
        "this report (model, origin, item, warehouse, period, actual, yhat, P10, P90)."
    )
    report.table("Backtest, all origins", overall.round(4))
    report.table("Test origins (after the validation origins), with the model chosen per series on the validation origins", test.round(4))
    if by_origin is not None and len(by_origin):
        report.table("WAPE per origin", by_origin.round(4))
    if len(preparation):
        report.table("Input preparation (rule, rows)", preparation.groupby(["rule", "reason"])["rows"].sum().reset_index())
    timings = forecasts.attrs.get("timings")
    if timings is not None and len(timings):
        report.table("Fit and predict seconds per model and origin (error: the model failed there)", timings.round(2))
    sample = forecasts[["item_id", "warehouse_id"]].drop_duplicates().head(4)
    fig, axes = plt.subplots(len(sample), 1, figsize=(9, 2.4 * max(len(sample), 1)), squeeze=False)
    last = forecasts["origin"].max()
    for ax, (_, key) in zip(axes[:, 0], sample.iterrows()):
        hist = history[(history["item_id"] == key["item_id"]) & (history["warehouse_id"] == key["warehouse_id"])]
        ax.plot(hist["demand_date"].tail(120), hist["units"].tail(120), color="black", lw=1, label="actual")
        for model, rows in forecasts[
            (forecasts["origin"] == last) & (forecasts["item_id"] == key["item_id"]) & (forecasts["warehouse_id"] == key["warehouse_id"])
        ].groupby("model"):
            ax.plot(rows["demand_date"], rows["yhat"], lw=1, label=model)
            if model == "demand_lgbm":
                ax.fill_between(rows["demand_date"], rows["yhat_p10"], rows["yhat_p90"], alpha=0.2)
        ax.set_title(f"{key['item_id']} @ {key['warehouse_id']}", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=3)
    fig.tight_layout()
    report.figure("forecast_vs_actual", fig)
    errors = forecasts.assign(err=(forecasts["yhat"] - forecasts["units"]))
    fig2, ax2 = plt.subplots(figsize=(7, 3))
    for model, rows in errors.groupby("model"):
        ax2.hist(rows["err"].clip(-20, 20), bins=40, histtype="step", label=model)
    ax2.set_xlabel("forecast - actual (units, clipped at +-20)")
    ax2.legend(fontsize=7)
    report.figure("error_distribution", fig2)
    index = report.write(report_dir(settings, RUN_NAME, run_id), model=RUN_NAME, run_id=run_id)
    overall.round(4).to_csv(index.parent / BACKTEST_CSV)
    test.round(4).to_csv(index.parent / TEST_CSV)
    written = forecasts.copy()
    written.attrs = {}  # the timings frame in attrs is not Parquet metadata
    written.to_parquet(index.parent / FORECASTS_FILE, index=False)
    return index


def latest_backtest(settings: Settings) -> tuple["pd.DataFrame", "pd.DataFrame", Path] | None:
    """(all origins, test origins, report) of the newest backtest report, None before the first."""
    import pandas as pd

    from ml.models.lifecycle.report import list_reports

    for r in list_reports(settings):
        folder = Path(r["path"]).parent
        if r["model"] == RUN_NAME and (folder / BACKTEST_CSV).exists():
            return (
                pd.read_csv(folder / BACKTEST_CSV, index_col="model"),
                pd.read_csv(folder / TEST_CSV, index_col="model"),
                Path(r["path"]),
            )
    return None


def plan_online(settings: Settings, keys: list[tuple[str, str]], store=None) -> "pd.DataFrame":
    """The current plan of (item_id, warehouse_id) pairs from the online store (one read)."""
    import pandas as pd

    from ml.features.repo import get_store
    from ml.features.serving import get_online_features

    store = store or get_store(settings)
    rows = [{"item_id": i, "warehouse_id": w} for i, w in keys]
    return pd.DataFrame(get_online_features(store, "demand_plan_v1", rows))


# --- train: backtest + the serving model, registered ----------------------------------------------


@dataclass
class TrainResult:
    backtest: BacktestResult
    model: str
    version: str
    decision: object
    n_series: int
    fit_seconds: float

    def summary(self) -> dict:
        test = self.backtest.test
        return {
            "model": self.model,
            "version": self.version,
            "promoted": bool(getattr(self.decision, "promoted", False)),
            "decision": getattr(self.decision, "reason", ""),
            "series": self.n_series,
            "fit_seconds": round(self.fit_seconds, 1),
            "test_wape": round(float(test.loc[self.model, "wape"]), 4) if self.model in test.index else None,
            "backtest": self.backtest.summary(),
        }


def train(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> TrainResult:
    """Backtest, fit the serving model on all history, register it, promote if not worse (module doc)."""
    import time

    from ml.models.demand.forecasters import SECTIONS, build
    from ml.models.lifecycle import registry

    say = echo or (lambda _m: None)
    config = config or load_config()
    fc = config["forecast"]
    name = fc["model"]
    prepared = prepared_series(settings, config)
    result = backtest(settings, config, echo=echo, prepared=prepared)
    if name not in result.test.index:
        raise DemandError(f"{name} has no backtest result (is it in backtest.models? did it fail? see the report {result.report})")
    clean, _, freq = prepared
    horizon = config["backtest"].get("horizon")
    started = time.perf_counter()
    model = build(name, config.get(SECTIONS.get(name))).fit(clean, freq, horizon)
    fit_seconds = time.perf_counter() - started
    n_series = int(clean.groupby(["item_id", "warehouse_id"]).ngroups)
    test = {k: float(result.test.loc[name, k]) for k in ("wape", "mase", "bias", "coverage") if k in result.test.columns}
    promotion = fc.get("promotion", {})
    metric = promotion.get("metric", "test_wape")
    with registry.training_run(
        settings,
        name,
        params={
            "freq": freq,
            "series": n_series,
            "horizon": model.horizon,
            **{f"{SECTIONS.get(name)}_{k}": v for k, v in (config.get(SECTIONS.get(name)) or {}).items()},
        },
        feature_service="",
        features=list(getattr(model, "features", [])),
        snapshot={"rows": len(clean), "last_date": str(clean["demand_date"].max().date()), "backtest_run_id": result.run_id},
        tags={"backtest_run_id": result.run_id, "report": str(result.report)},
    ):
        registry.log_metrics(test, prefix="test_")
        registry.log_metrics({"fit_seconds": fit_seconds})
        version = registry.log_model(model, name, flavor="sklearn", serialization_format="cloudpickle")
        value = test.get(metric.removeprefix("test_"))
        losses = reference_losses(
            result.test,
            name,
            promotion.get("references", ["demand_seasonal_naive"]),
            metric.removeprefix("test_"),
            float(promotion.get("reference_margin", 0.0)),
        )
        decision = registry.promote_if_not_worse(
            settings,
            name,
            version.version,
            metric=metric,
            value=value,
            higher_is_better=False,
            tolerance=float(promotion.get("tolerance", 0.0)),
            losses=losses,
        )
    say(
        f"demand: {name} version {version.version} fitted on {n_series:,} series in {fit_seconds:.0f} s, test WAPE "
        f"{test.get('wape', float('nan')):.3f}; {'promoted' if decision.promoted else 'not promoted'} ({decision.reason})"
    )
    return TrainResult(result, name, str(version.version), decision, n_series, fit_seconds)


def reference_losses(test: "pd.DataFrame", name: str, references, metric: str = "wape", margin: float = 0.0) -> list[str]:
    """The gate: one line per plain reference (a model of the same backtest, e.g. seasonal naive)
    whose test-origin ``metric`` (lower is better) the served model does not beat by ``margin``
    (relative: 0.2 = 20 % lower). References the backtest did not run are skipped."""
    losses = []
    if name not in test.index or metric not in test.columns:
        return losses
    ours = float(test.loc[name, metric])
    for ref in references:
        if ref == name or ref not in test.index:
            continue
        theirs = float(test.loc[ref, metric])
        if not ours <= theirs * (1.0 - margin) + 1e-12:
            losses.append(f"test {metric} {ours:.4f} vs {ref} {theirs:.4f}" + (f" (needs {margin:.0%} lower)" if margin else ""))
    return losses


# --- forecast + inventory plan --------------------------------------------------------------------


def _export(settings: Settings, mart: str) -> "pd.DataFrame | None":
    import pandas as pd

    path = Path(settings.exports_dir) / f"{mart}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def known_future(settings: Settings, history: "pd.DataFrame", horizon: int, freq: str) -> "pd.DataFrame | None":
    """The promotion regressors over the forecast window from mart_promotion_calendar: every future
    period of every series, is_promoted 1 / discount_pct the period's largest discount where a promotion
    covers it and 0 where none does (a known "no promotion", not a fill). None without the export."""
    import pandas as pd

    from ml.models.demand.data import KEYS, future_periods, snap

    calendar = _export(settings, CALENDAR_MART)
    if calendar is None:
        return None
    grid = future_periods(history.groupby(KEYS, sort=True)["demand_date"].max().reset_index(), horizon, freq)
    days = calendar.assign(demand_date=snap(pd.to_datetime(calendar["promotion_date"]), freq))
    promoted = days.groupby([*KEYS, "demand_date"], as_index=False)["discount_pct"].max().assign(is_promoted=1.0)
    grid = grid.merge(promoted, on=[*KEYS, "demand_date"], how="left")
    grid["is_promoted"] = grid["is_promoted"].fillna(0.0)
    grid["discount_pct"] = grid["discount_pct"].fillna(0.0).astype(float)
    return grid


def stock_inputs(settings: Settings) -> tuple["pd.DataFrame", "pd.DataFrame | None"]:
    """(lead_times, on_hand) for inventory.policy from mart_inventory_position: item rows where the
    latest snapshot has a lead time, warehouse rows (item_id null) with the warehouse's median; stock
    from current snapshots only (a stale snapshot's stock is unknown). Empty / None without snapshots."""
    import pandas as pd

    position = _export(settings, POSITION_MART)
    if position is None or position.empty:
        return pd.DataFrame(columns=["item_id", "warehouse_id", "lead_time_days"]), None
    items = position.dropna(subset=["item_lead_time_days"])[["item_id", "warehouse_id", "item_lead_time_days"]]
    items = items.rename(columns={"item_lead_time_days": "lead_time_days"})
    warehouses = (
        position.dropna(subset=["warehouse_lead_time_days"])
        .drop_duplicates("warehouse_id")[["warehouse_id", "warehouse_lead_time_days"]]
        .rename(columns={"warehouse_lead_time_days": "lead_time_days"})
        .assign(item_id=None)
    )
    lead_times = pd.concat([items, warehouses], ignore_index=True)
    lead_times["lead_time_days"] = lead_times["lead_time_days"].astype(float)
    current = position[position["is_current"].fillna(False).astype(bool)]
    on_hand = current[["item_id", "warehouse_id", "on_hand_units", "on_order_units"]].dropna(subset=["on_hand_units"])
    return lead_times, on_hand


def _zero_forecast(rows: "pd.DataFrame", horizon: int, freq: str) -> "pd.DataFrame":
    """0 for the ``horizon`` periods after the rows' last date (every series from the same date)."""
    from ml.models.demand.data import KEYS, future_periods

    last = rows.groupby(KEYS, sort=True)["demand_date"].max().reset_index().assign(demand_date=rows["demand_date"].max())
    return future_periods(last, horizon, freq).assign(yhat=0.0, yhat_p10=0.0, yhat_p90=0.0)


def forecast_frame(
    model,
    clean: "pd.DataFrame",
    raw: "pd.DataFrame",
    preparation: "pd.DataFrame",
    freq: str,
    horizon: int,
    known: "pd.DataFrame | None",
    country=None,
) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """Forecasts of every series in ``raw``: the fitted global ``model`` for the prepared series, the
    moving average over what a too-short series has, 0 for all-zero series (``method`` says which);
    and the report of the future regressor values that had to be filled (data.future_frame)."""
    import pandas as pd

    from ml.models.demand.data import KEYS, REPORT_COLUMNS, future_frame, prepare
    from ml.models.demand.forecasters import MovingAverage

    parts, fills = [], pd.DataFrame(columns=REPORT_COLUMNS)
    if len(clean):
        future, fills = future_frame(clean, horizon, freq, known=known, regressors=model.regressors, country=country)
        parts.append(model.update(clean).predict(horizon, future).assign(method=model.name))
    skipped = preparation[preparation["rule"].isin(["too_short", "all_zero"])] if len(preparation) else preparation
    for rule, method in (("too_short", "moving_average"), ("all_zero", "zero")):
        keys = skipped.loc[skipped["rule"] == rule, KEYS].drop_duplicates() if len(skipped) else pd.DataFrame(columns=KEYS)
        if keys.empty:
            continue
        rows, _ = prepare(raw.merge(keys, on=KEYS), freq, min_history=1)
        if method == "zero" or rows.empty:
            rows = raw.merge(keys, on=KEYS).assign(demand_date=lambda f: pd.to_datetime(f["demand_date"]))
            parts.append(_zero_forecast(rows, horizon, freq).assign(method="zero"))
        else:
            parts.append(MovingAverage().fit(rows, freq, horizon).predict(horizon).assign(method=method))
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), fills


@dataclass
class ForecastResult:
    forecast_date: "pd.Timestamp"
    forecast: "pd.DataFrame"
    plan: "pd.DataFrame"
    turnover: dict
    model: str
    version: str
    forecast_path: Path
    plan_path: Path
    report: Path

    def summary(self) -> dict:
        plan = self.plan
        return {
            "forecast_date": f"{self.forecast_date:%Y-%m-%d}",
            "model": self.model,
            "model_version": self.version,
            "series": int(len(plan)),
            "methods": plan["method"].value_counts().to_dict(),
            "orders_needed": int(plan["order_needed"].fillna(False).astype(bool).sum()),
            "projected_stockouts": int(plan["projected_stockout_date"].notna().sum()),
            "lead_time_sources": plan["lead_time_source"].value_counts().to_dict(),
            "turnover": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.turnover.items()},
            "forecast_path": str(self.forecast_path),
            "plan_path": str(self.plan_path),
            "report": str(self.report),
        }


def forecast(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> ForecastResult:
    """Forecast with the champion and write the inventory plan (module doc). Raises, writing nothing,
    when there is no champion or no demand."""
    import numpy as np
    import pandas as pd

    from ml.models.demand import inventory
    from ml.models.lifecycle import outputs, registry

    say = echo or (lambda _m: None)
    config = config or load_config()
    fc = config["forecast"]
    name = fc["model"]
    model, version = registry.load_champion(settings, name)
    raw = load_series(settings)
    if raw.empty:
        raise DemandError(f"{SERIES_MART} is empty: nothing to forecast")
    clean, preparation, freq = prepared_series(settings, config)
    if freq != model.freq:
        raise DemandError(f"the champion {name} v{version.version} forecasts {model.freq} series, the data is {freq}: retrain")
    horizon = int(fc.get("horizon") or model.horizon)
    as_of = pd.Timestamp(raw["demand_date"].max()).normalize()
    if freq != "D":
        as_of += pd.Timedelta(days=6)  # a week's row covers its 7 days
    known = known_future(settings, clean, horizon, freq) if len(clean) else None
    frame, fills = forecast_frame(model, clean, raw, preparation, freq, horizon, known, country=_country(config))
    if frame.empty:
        raise DemandError("no series to forecast")
    frame = frame.assign(model_version=str(version.version))
    lead_times, on_hand = stock_inputs(settings)
    plan = inventory.policy(
        frame,
        lead_times,
        service_level=float(fc["service_level"]),
        review_period_days=float(fc["review_period_days"]),
        on_hand=on_hand,
        default_lead_time_days=float(fc["default_lead_time_days"]),
    )
    horizon_units = frame.groupby(["item_id", "warehouse_id"]).agg(
        forecast_units=("yhat", "sum"), forecast_units_p90=("yhat_p90", "sum"), method=("method", "first")
    )
    plan = plan.merge(horizon_units.reset_index(), on=["item_id", "warehouse_id"], how="left")
    turnover_summary = _turnover(settings, plan, freq)
    stamp = as_of.tz_localize("UTC")
    frame["event_timestamp"] = stamp
    plan = plan.assign(
        event_timestamp=stamp,
        model_name=name,
        model_version=str(version.version),
        projected_stockout_date=plan["projected_stockout_date"].dt.strftime("%Y-%m-%d"),
        forecast_start=plan["forecast_start"].dt.strftime("%Y-%m-%d"),
        order_needed=plan["order_needed"].astype("boolean"),
        days_of_cover=plan["days_of_cover"].replace(np.inf, np.nan),
    )
    forecast_path = outputs.write_partition(settings, FORECAST_OUTPUT, frame, as_of.date(), key=PARTITION_KEY, source=False)
    plan_path = outputs.write_partition(settings, PLAN_OUTPUT, plan, as_of.date(), key=PARTITION_KEY)
    report = _forecast_report(settings, name, version.version, as_of, frame, plan, turnover_summary, preparation, fills, config)
    result = ForecastResult(as_of, frame, plan, turnover_summary, name, str(version.version), forecast_path, plan_path, report)
    s = result.summary()
    say(
        f"demand: {s['series']:,} series forecast for {horizon} periods after {as_of:%Y-%m-%d} with {name} v{version.version} "
        f"({s['methods']}); {s['orders_needed']:,} orders needed, {s['projected_stockouts']:,} projected stock-outs -> {plan_path}"
    )
    return result


def _turnover(settings: Settings, plan: "pd.DataFrame", freq: str) -> dict:
    """inventory.turnover over the daily history that has end-of-day stock (a note when none has)."""
    import pandas as pd

    from ml.models.demand import inventory

    path = Path(settings.exports_dir) / f"{SERIES_MART}.parquet"
    history = pd.read_parquet(path, columns=["item_id", "warehouse_id", "demand_date", "units", "on_hand_units"])
    history = history.dropna(subset=["on_hand_units"])
    if freq != "D" or history.empty:
        return {"note": "no daily stock history (inventory snapshots): turnover not replayed"}
    history["demand_date"] = pd.to_datetime(history["demand_date"])
    _, summary = inventory.turnover(history, plan)
    return summary


def _forecast_report(settings, name, version, as_of, frame, plan, turnover_summary, preparation, fills, config) -> Path:
    import pandas as pd

    from ml.models.lifecycle.report import Report, report_dir

    fc = config["forecast"]
    report = Report("demand — forecast and inventory plan", subtitle=f"{name} v{version}, forecast date {as_of:%Y-%m-%d}")
    report.text(
        f"Service level {fc['service_level']}, review period {fc['review_period_days']} days; lead times from "
        f"{POSITION_MART} (item, else warehouse median, else {fc['default_lead_time_days']} days). Safety stock and "
        "order-up-to from the forecast's mean and P10-P90 spread (ml/models/demand/inventory.py)."
    )
    report.table("Series per forecasting method", plan["method"].value_counts().rename("series").reset_index())
    report.table("Lead time source", plan["lead_time_source"].value_counts().rename("series").reset_index())
    largest = plan.sort_values("suggested_order_units", ascending=False).head(20)
    report.table("Largest suggested orders", largest[list(PLAN_SUMMARY_COLUMNS)].round(2))
    report.table("Turnover: history vs the policy replayed over it", pd.DataFrame([turnover_summary]))
    if len(preparation):
        report.table("Input preparation (rule, rows)", preparation.groupby(["rule", "reason"])["rows"].sum().reset_index())
    if len(fills):
        report.table(
            "Future regressor values not known ahead, filled (rule, rows)", fills.groupby(["rule", "reason"])["rows"].sum().reset_index()
        )
    return report.write(report_dir(settings, PLAN_OUTPUT, f"{as_of:%Y-%m-%d}"), model=name, run_id=f"forecast-{as_of:%Y-%m-%d}")


# --- promotion effect -----------------------------------------------------------------------------

EFFECT_RUN = "demand_promotion_effect"


def promotion_effect(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> dict:
    """The promotions' uplift on the prepared series (the backtest's head by volume): double ML
    (cross-fitted LightGBM nuisances on calendar, weather, price and the item's category; a
    multiplicative lift, CI clustered by item) and the difference-in-differences cross-check
    (ml/models/demand/causal.py) -> report with both estimates and their intervals + MLflow run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from ml.models.demand.causal import did_uplift, dml_uplift
    from ml.models.lifecycle import registry
    from ml.models.lifecycle.report import Report, report_dir

    say = echo or (lambda _m: None)
    config = config or load_config()
    clean, _, freq = prepared_series(settings, config)
    clean = head_by_volume(clean, config.get("data", {}).get("max_series"))
    if "is_promoted" not in clean or clean["is_promoted"].nunique() < 2:
        raise DemandError("the demand has no promotion variation (is_promoted): no promotion effect to estimate")
    estimates = {"double ML": dml_uplift(clean, cluster="item_id")}
    if freq == "D":  # episodes of days before / after a promotion start
        try:
            estimates["difference in differences"] = did_uplift(clean)
        except ValueError as exc:  # too few clean episodes: reported, the DML estimate stands
            say(f"demand: difference-in-differences not estimated: {exc}")
    cols = ["relative_lift", "relative_ci_low", "relative_ci_high", "effect", "ci_low", "ci_high", "n"]
    table = pd.DataFrame({name: {c: est.get(c) for c in cols} for name, est in estimates.items()}).T
    with registry.training_run(
        settings,
        EFFECT_RUN,
        params={"freq": freq, "series": int(clean.groupby(["item_id", "warehouse_id"]).ngroups)},
        feature_service="",
        features=list(clean.columns),
        snapshot={"rows": len(clean)},
    ) as run:
        for name, est in estimates.items():
            registry.log_metrics(
                {k: float(est[k]) for k in ("relative_lift", "relative_ci_low", "relative_ci_high")},
                prefix="dml_" if name == "double ML" else "did_",
            )
        report = Report("demand — promotion effect", subtitle=f"MLflow run {run.info.run_id}")
        report.text(
            "Relative lift = promoted demand / the same days' demand without the promotion - 1, controlling for "
            "calendar, weather, price and category (double ML, cross-fitted LightGBM nuisances, CI clustered by "
            "item); the difference in differences compares promoted series' days before and after a promotion "
            "start with comparable unpromoted series (ml/models/demand/causal.py)."
        )
        report.table("Estimates", table.round(4).reset_index(names="estimator"))
        fig, ax = plt.subplots(figsize=(6, 2.4))
        for i, (_name, row) in enumerate(table.iterrows()):
            ax.errorbar(
                row["relative_lift"],
                i,
                xerr=[[row["relative_lift"] - row["relative_ci_low"]], [row["relative_ci_high"] - row["relative_lift"]]],
                fmt="o",
                capsize=4,
            )
        ax.set_yticks(range(len(table)), table.index)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("relative lift of demand on promoted days (95% CI)")
        report.figure("promotion_effect", fig)
        path = report.write(report_dir(settings, EFFECT_RUN, run.info.run_id), model=EFFECT_RUN, run_id=run.info.run_id)
    lift = estimates["double ML"]
    say(
        f"demand: promotions lift demand by {lift['relative_lift']:.2f} [{lift['relative_ci_low']:.2f}, "
        f"{lift['relative_ci_high']:.2f}] (double ML); report {path}"
    )
    return {"estimates": {n: {c: e.get(c) for c in cols} for n, e in estimates.items()}, "report": str(path), "run_id": run.info.run_id}
