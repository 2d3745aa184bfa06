"""Benchmark demand forecasting on real public data, entered as a user's own export would be: the
Online Retail II invoice lines through the ingestion adapter (``ml.ingest``, preset
``online_retail_ii``) into a fresh lake, ``dbt build`` (fct_daily_demand -> export
mart_demand_series), then ``ml.models.demand.backtest`` on that warehouse with the head of
``--max-series`` series by volume. Nothing below knows which dataset it reads.

    python bench/bench_demand_real.py [--max-series 200] [--models a,b] [--file PATH --preset NAME] [--period week]

``--period week``: the daily series summed to whole weeks (Monday-Sunday, the partial first and last
weeks left out) before preparation, backtested with horizon 4 weeks, 4 origins, min_history 26 weeks
(a year of history holds no second season: seasonal naive and the lag-52 features see only the first).

The backtest is configs/demand.yaml as shipped (rolling origin, its origins / horizon / validation
split, every model it lists: seasonal naive, moving average, global LightGBM, Prophet on its volume
head, the global LSTM), with ``data.max_series`` set from ``--max-series``. Recorded: the backtest
table over all origins and over the test origins (after the validation origins, with the model
chosen per series on the validation origins: demand_best), WAPE / MASE / bias / P10-P90 coverage /
n_series per model, WAPE relative to seasonal naive (the baseline in the same run), and, since
Prophet covers only the series of its head and the origins where its fit succeeded, each model's
WAPE over seasonal naive's on the same rows and every model's WAPE on Prophet's rows (from the
backtest's forecasts, kept by wrapping ``backtest.rolling_origin`` for the call: ml/ is unchanged). Also: the ingestion report,
how the warehouse keys the series (warehouse_id,
countries in the head), the fit/predict seconds per model, and the load average (2 shared cores).

Results: bench/results/demand_real.json (scale retail/all_origins and retail/test_origins: one
result per model, value = WAPE, baseline = seasonal naive's WAPE; all metrics in ``extra``; plus
seconds_total with the stages, notes and the head's composition).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PeakRSS, Result, write_results  # noqa: E402

RETAIL = ("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet")
BASELINE = "demand_seasonal_naive"
SCALE = "retail"


def shared_data() -> Path:
    from ml.settings import PROJECT_ROOT

    return Path(os.environ.get("SHARED_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))


def load() -> dict:
    one = [round(x, 2) for x in os.getloadavg()]
    return {"cpus": os.cpu_count(), "1_5_15": one}


def prepare_warehouse(path: Path, preset: str, root: Path, seconds: dict):
    from bench.common import ingested_warehouse

    settings, report = ingested_warehouse(path, preset, root, seconds)
    print(
        f"{path.name} via preset {preset}: read {report['read']:,}, accepted {report['accepted']:,}, quarantined "
        f"{report['quarantined']:,} {report['by_reason']}; tables {report['tables']} "
        f"({seconds['ingest']:.0f} s ingest, {seconds['dbt_build']:.0f} s dbt build)",
        flush=True,
    )
    keep = {k: report[k] for k in ("read", "accepted", "quarantined", "by_reason", "tables") if k in report}
    return settings, {"preset": preset, "file": path.name, **keep}


def series_shape(settings, config, prepared=None) -> dict:
    """How the warehouse keys the demand series, and what the backtest head holds."""
    import pandas as pd

    from ml.models import demand

    raw = demand.load_series(settings)
    clean, preparation, freq = prepared or demand.prepared_series(settings, config)
    head = demand.head_by_volume(clean, config["data"].get("max_series"))
    lake = Path(settings.lake_dir) / "warehouses"
    warehouses = pd.read_parquet(lake) if lake.exists() else pd.DataFrame()
    by_wh = head.groupby("warehouse_id")[["item_id"]].nunique()["item_id"].sort_values(ascending=False)
    days = pd.to_datetime(raw["demand_date"])
    weekday_units = raw.assign(wd=days.dt.day_name()).groupby("wd")["units"].sum().round(0).to_dict()
    mean_daily = head.groupby(["item_id", "warehouse_id"])["units"].mean()
    zero_share = head.assign(z=head["units"].eq(0)).groupby(["item_id", "warehouse_id"])["z"].mean()
    return {
        "freq": freq,
        "series_in_mart": int(raw.groupby(["item_id", "warehouse_id"]).ngroups),
        "warehouses_in_mart": int(raw["warehouse_id"].nunique()),
        "warehouse_examples": sorted(raw["warehouse_id"].unique().tolist())[:8],
        "warehouses_table_columns": list(warehouses.columns),
        "series_prepared": int(clean.groupby(["item_id", "warehouse_id"]).ngroups),
        "head_series": int(head.groupby(["item_id", "warehouse_id"]).ngroups),
        "head_series_per_warehouse": {k: int(v) for k, v in by_wh.items()},
        "head_mean_daily_units": {
            "min": round(float(mean_daily.min()), 2),
            "median": round(float(mean_daily.median()), 2),
            "max": round(float(mean_daily.max()), 2),
        },
        "head_zero_day_share_median": round(float(zero_share.median()), 3),
        "head_series_mean_ge_1_per_day": int((mean_daily >= 1).sum()),
        "dates": [str(days.min().date()), str(days.max().date())],
        "regressor_columns": [c for c in clean.columns if c not in ("item_id", "warehouse_id", "demand_date", "units", "category_l1")],
        "regressor_nonzero_share_in_head": {
            c: round(float(head[c].fillna(0).ne(0).mean()), 4)
            for c in head.columns
            if c not in ("item_id", "warehouse_id", "demand_date", "units", "category_l1")
        },
        "units_by_weekday": weekday_units,
        "preparation": preparation.groupby("rule")["rows"].sum().to_dict() if len(preparation) else {},
    }, head


def weekly(settings, config):
    """(clean, preparation, freq) of the daily series summed to whole weeks ending Sunday."""
    import pandas as pd

    from ml.models import demand
    from ml.models.demand import data as fd

    raw = demand.load_series(settings)
    raw["demand_date"] = pd.to_datetime(raw["demand_date"])
    first, last = raw["demand_date"].min(), raw["demand_date"].max()
    week = fd.snap(raw["demand_date"], "W-SUN")
    whole = (week - pd.Timedelta(days=6) >= first) & (week <= last)
    flags = [c for c in raw.columns if c.startswith("is_")]
    values = [c for c in raw.columns if c not in ("item_id", "warehouse_id", "demand_date", "units", "category_l1", *flags)]
    how = {"units": "sum", "category_l1": "first", **{c: "max" for c in flags}, **{c: "mean" for c in values}}
    frame = raw[whole].assign(demand_date=week[whole]).groupby(["item_id", "warehouse_id", "demand_date"], as_index=False).agg(how)
    clean, preparation = fd.prepare(frame, "W-SUN", min_history=int(config["data"]["min_history"]))
    return clean, preparation, "W-SUN"


def capture_forecasts(box: dict) -> None:
    """Keep the forecasts of the next ``backtest.rolling_origin`` call in ``box`` (demand.backtest imports
    it from the module when it runs; the module's function itself is unchanged)."""
    from ml.models.demand import rolling_origin as bt

    original = bt.rolling_origin

    def keep(*args, **kwargs):
        forecasts = original(*args, **kwargs)
        box["forecasts"] = forecasts
        return forecasts

    bt.rolling_origin = keep


def same_rows(forecasts, test_after=None) -> dict:
    """Per model: its WAPE and seasonal naive's on the rows the model forecast (Prophet: its head, the
    origins where its fit succeeded), and every model's WAPE on Prophet's rows. ``test_after``: only
    origins after this date (the test origins)."""
    import pandas as pd

    key = ["origin", "item_id", "warehouse_id", "demand_date"]
    f = forecasts.dropna(subset=["units", "yhat"])
    f.attrs = {}  # rolling_origin's timings frame there breaks pandas' merge
    if test_after is not None:
        f = f[pd.to_datetime(f["origin"]) > pd.Timestamp(test_after)]
    naive = f.loc[f["model"] == BASELINE, [*key, "yhat"]].rename(columns={"yhat": "naive"})
    prophet = f.loc[f["model"] == "demand_prophet", key]
    out = {}
    for model, rows in f.groupby("model"):
        both = rows.merge(naive, on=key)
        y = both["units"].sum()
        entry = {
            "wape": round(float((both["yhat"] - both["units"]).abs().sum() / y), 4),
            "naive_wape_same_rows": round(float((both["naive"] - both["units"]).abs().sum() / y), 4),
            "series_x_origins": int(rows[key[:3]].drop_duplicates().shape[0]),
        }
        entry["ratio_same_rows"] = round(entry["wape"] / entry["naive_wape_same_rows"], 3)
        if len(prophet):
            on = rows.merge(prophet, on=key)
            entry["wape_on_prophet_rows"] = round(float((on["yhat"] - on["units"]).abs().sum() / on["units"].sum()), 4)
        out[model] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-series", type=int, default=200, help="the head of series by volume (data.max_series)")
    parser.add_argument("--models", default="", help="comma-separated subset of backtest.models (default: the yaml's)")
    parser.add_argument("--file", default="", help="another export (default: shared/data Online Retail II)")
    parser.add_argument("--preset", default="online_retail_ii", help="its mapping preset")
    parser.add_argument("--period", choices=("day", "week"), default="day", help="week: the series summed to whole weeks")
    args = parser.parse_args()
    scale = SCALE if args.period == "day" else f"{SCALE}_weekly"
    for category in (FutureWarning, DeprecationWarning):
        warnings.simplefilter("ignore", category)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from ml.models import demand

    torch.set_num_threads(1)
    path = Path(args.file) if args.file else shared_data().joinpath(*RETAIL)
    if not path.exists():
        sys.exit(f"{path} not found: set SHARED_DATA_DIR to the shared/data folder")
    seconds, loads = {}, {"start": load()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-demand-real-") as tmp:
        settings, ingest = prepare_warehouse(path, args.preset, Path(tmp), seconds)
        loads["after_build"] = load()
        config = demand.load_config()
        config["data"] = {**config["data"], "max_series": args.max_series}
        if args.models:
            config["backtest"] = {**config["backtest"], "models": args.models.split(",")}
        prepared = None
        if args.period == "week":
            config["data"]["min_history"] = 26
            config["backtest"] = {**config["backtest"], "horizon": 4, "n_origins": 4}
            prepared = weekly(settings, config)
        shape, head = series_shape(settings, config, prepared)
        print(f"series: {shape}", flush=True)
        t = time.perf_counter()
        box: dict = {}
        capture_forecasts(box)
        with PeakRSS(interval=0.2) as peak:
            result = demand.backtest(settings, config, echo=print, prepared=prepared)
        seconds["backtest"] = time.perf_counter() - t
        loads["end"] = load()
        summary = result.summary()
    seconds["total"] = time.perf_counter() - started
    timings = result.timings
    origins = sorted(str(o)[:10] for o in timings["origin"].unique())
    n_valid = min(int(config["backtest"]["n_validation"]), len(origins) - 1)
    test_origins = origins[n_valid:] if n_valid > 0 else origins
    rows = {
        "all_origins": same_rows(box["forecasts"]),
        "test_origins": same_rows(box["forecasts"], origins[n_valid - 1] if n_valid > 0 else None),
    }
    print("\nall origins:\n" + result.overall.round(4).to_string())
    print("\ntest origins:\n" + result.test.round(4).to_string())
    for table, entries in rows.items():
        print(f"\n{table}, same rows as seasonal naive / on Prophet's rows:")
        for model, entry in entries.items():
            print(f"  {model:<24} {entry}")
    print("seconds per model (fit + predict, all origins):", result.seconds())

    notes = (
        "warehouse_id = the customer's country (preset online_retail_ii: warehouse_from: country; one warehouse per "
        "country), so a series is stock code x country; units = units ordered on non-cancelled orders per day (gross "
        "demand), dense from the pair's first sale to the lake's last date. Invoice lines without a Customer ID are "
        "quarantined by the ingestion (missing_key:user_id), so their units are not in the demand. No promotion, "
        "weather or stock data in this dataset; regressor columns after preparation (share of non-zero rows in the "
        f"head): {shape['regressor_nonzero_share_in_head'] or 'none'}."
    )
    common = {"load_avg": loads}
    results = []
    for table, frame in (("all_origins", result.overall), ("test_origins", result.test)):
        base = float(frame.loc[BASELINE, "wape"]) if BASELINE in frame.index else None
        for model, row in frame.iterrows():
            extra = {
                k: (round(float(row[k]), 4) if k in ("wape", "mase", "bias", "coverage") else int(row[k]))
                for k in ("wape", "mase", "bias", "coverage", "n_series", "n_rows")
                if k in row and row[k] == row[k]
            }
            if model in result.seconds():
                extra["fit_predict_seconds_all_origins"] = result.seconds()[model]
            extra.update(rows[table].get(model, {}) and {f"same_rows_{k}": v for k, v in rows[table][model].items() if k != "wape"})
            results.append(
                Result(
                    f"{model} wape",
                    round(float(row["wape"]), 4),
                    "wape",
                    f"{scale}/{table}",
                    baseline=round(base, 4) if base else None,
                    baseline_name="seasonal naive (same run)",
                    extra={**extra, "origins": origins if table == "all_origins" else test_origins, **common},
                )
            )
    results.append(
        Result(
            "seconds_total",
            round(seconds["total"], 1),
            "s",
            scale,
            extra={
                "stages": {k: round(v, 1) for k, v in seconds.items()},
                "backtest_peak_rss_mib": peak.peak_mib,
                "model_seconds": result.seconds(),
                "ingest": ingest,
                "series": shape,
                "notes": notes,
                "same_rows": rows,
                "origins": origins,
                "test_origins": test_origins,
                "config": {
                    "max_series": args.max_series,
                    "backtest": config["backtest"],
                    "prophet": {k: config["prophet"].get(k) for k in ("max_series", "min_mean_demand", "max_workers")},
                },
                "summary_preparation": summary.get("preparation"),
                **common,
            },
        )
    )
    write_results("demand_real", results)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
