"""Benchmark demand forecasting at scale: the issue's target is 10k daily series backtested and
forecast within 10 minutes on 2 cores with the global model, Prophet on a configurable head, peak
memory within 8 GiB.

    python bench/bench_demand.py [--series 1000,10000] [--prophet-head 200] [--origins 3] [--lstm]
                                 [--max-train-rows N] [--set section.key=value ...] [--periods 365]
                                 [--horizon 28] [--label SUFFIX] [--no-write]

Per scale, in its own subprocess (so each peak memory is its own):

- data (setup, not measured): ``demand.data.synthetic_frame(n, periods + horizon, "D", seed 42)``
  (planted promotion and temperature effects); the first ``periods`` days are the history, the
  last ``horizon`` days' regressors (promotions, temperature) stand for the known future
  (promotion calendar, weather forecast) and their demand is dropped.
- ``prepare``: ``demand.data.prepare`` (the bad-input rules) with ``data.min_history``.
- ``backtest``: ``backtest.rolling_origin`` (``--origins`` origins, horizon 28, step = horizon) of
  demand_seasonal_naive, demand_moving_average, demand_lgbm (configs/demand.yaml ``lgbm``),
  demand_prophet (the yaml ``prophet`` section with max_series = ``--prophet-head``, 2 forked
  workers) and, with ``--lstm``, demand_lstm (the yaml ``lstm`` section); then ``backtest.metrics``
  and ``backtest.choose`` (the model per series on the earlier origins, scored on the last).
- ``forecast``: demand_lgbm fitted on all history, then the horizon predicted with the future
  regressors from ``demand.data.future_frame`` (known = the held-out promotion/temperature days).
- ``plan``: ``inventory.policy`` on those forecasts (warehouse-level lead times of 7 days, the yaml
  ``forecast`` service level and review period).

Measured: seconds per stage and per model (fit/predict, summed over origins), series/s per model
(series forecast x origins / (fit + predict seconds)), WAPE / MASE / bias / coverage per model and
the WAPE of seasonal naive on the same rows (Prophet covers its head only; ratio = model / naive),
the wall time of prepare + backtest + forecast + plan against 600 s, and the peak memory of the
process tree (this process + Prophet's forked workers + their cmdstan processes, sampled
by a thread every 0.2 s (about 1 % of a core): the PSS sum, i.e. the physical memory the tree holds, against 8 GiB; beside it the RSS
sum, which counts the parent's copy-on-write pages again in every forked worker, and getrusage's
self / largest-child maxima). The machine's load average
(os.getloadavg, sampled every 2 s) is recorded with every result: the 2 cores are shared with
other jobs, so the seconds are upper bounds of what an idle 2-core machine takes.

Results: bench/results/demand.json (scale = "1k", "10k", or with the knobs that differ from the
defaults, e.g. "10k/head100/o2"); rendered in docs/benchmarks.md as "Demand forecasting scale".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, write_results  # noqa: E402

TARGET_SECONDS = 600
TARGET_GIB = 8
LEAD_TIME_DAYS = 7.0  # warehouse-level default lead time for the plan
BASELINE = "demand_seasonal_naive"


class Monitor:
    """Samples the memory of the process tree (overall and per stage) and the load average in a thread.

    Two sums over this process and every descendant (Prophet's forked workers, their cmdstan runs):
    PSS (proportional set size: a page shared by k processes counts 1/k in each, so the sum is the
    physical memory the tree holds; forked workers share the parent's pages copy-on-write) and RSS
    (each process's resident pages in full: counts the shared pages once per process, an upper bound).
    """

    def __init__(self, interval: float = 0.2, load_every: float = 2.0):
        self.interval, self.load_every = interval, load_every
        self.peak = {"pss": 0, "rss": 0}
        self.stage, self.stage_peak, self.loads, self.max_procs = "setup", {}, [], 1
        self._stop = threading.Event()

    def _run(self):
        import psutil

        proc, last_load = psutil.Process(), 0.0
        while not self._stop.is_set():
            pss = rss = 0
            procs = [proc]
            try:
                procs += proc.children(recursive=True)
            except psutil.Error:
                pass
            for p in procs:
                try:
                    m = p.memory_full_info()
                    pss, rss = pss + m.pss, rss + m.rss
                except psutil.Error:
                    pass
            self.max_procs = max(self.max_procs, len(procs))
            for kind, value in (("pss", pss), ("rss", rss)):
                self.peak[kind] = max(self.peak[kind], value)
                stage = self.stage_peak.setdefault(self.stage, {"pss": 0, "rss": 0})
                stage[kind] = max(stage[kind], value)
            now = time.monotonic()
            if now - last_load >= self.load_every:
                self.loads.append(os.getloadavg()[0])
                last_load = now
            self._stop.wait(self.interval)

    def __enter__(self):
        self.start_load = [round(x, 2) for x in os.getloadavg()]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end_load = [round(x, 2) for x in os.getloadavg()]

    def load(self) -> dict:
        loads = self.loads or [os.getloadavg()[0]]
        return {
            "cpus": os.cpu_count(),
            "start_1_5_15": self.start_load,
            "end_1_5_15": self.end_load,
            "during_1min_mean": round(sum(loads) / len(loads), 2),
            "during_1min_max": round(max(loads), 2),
        }


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of every reaped descendant (Prophet's workers,
    their cmdstan runs: a pool's workers are reaped when its map ends)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_metered(factories: dict, cpu: dict) -> dict:
    """The factories, their models' fit/predict adding their CPU seconds to cpu[name]."""

    def wrap(name, factory):
        def build():
            model = factory()
            for method in ("fit", "predict"):

                def metered(*a, _call=getattr(model, method), **k):
                    start = cpu_seconds()
                    try:
                        return _call(*a, **k)
                    finally:
                        cpu[name] = cpu.get(name, 0.0) + cpu_seconds() - start

                setattr(model, method, metered)
            return model

        return build

    return {name: wrap(name, f) for name, f in factories.items()}


def mib(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)


def bench_config(args) -> dict:
    from ml.models.demand.forecasters import load_config

    config = load_config()
    models = ["demand_seasonal_naive", "demand_moving_average", "demand_lgbm", "demand_prophet"]
    if args.lstm:
        models.append("demand_lstm")
    config["backtest"] = {
        **config["backtest"],
        "models": models,
        "n_origins": args.origins,
        "horizon": args.horizon,
        "step": None,
        "n_validation": max(args.origins - 1, 1),
    }
    config["prophet"] = {**config["prophet"], "max_series": args.prophet_head, "max_workers": 2}
    if args.max_train_rows:
        config["lgbm"] = {**config["lgbm"], "max_train_rows": args.max_train_rows}
    for key, value in overrides(args):
        section, name = key.split(".", 1)
        config[section] = {**config.get(section, {}), name: value}
    return config


def overrides(args) -> list[tuple[str, object]]:
    """--set section.key=value (value parsed as YAML) -> [(section.key, value)]."""
    import yaml

    out = []
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            sys.exit(f"--set wants section.key=value, got {item!r}")
        out.append((key, yaml.safe_load(value)))
    return out


def same_row_wape(forecasts, model: str) -> tuple[float, float, int]:
    """(model WAPE, seasonal-naive WAPE) on the rows the model forecast, and its series x origins."""
    from ml.models.demand.data import KEYS

    key = ["origin", *KEYS, "demand_date"]
    mine = forecasts.loc[forecasts["model"] == model, [*key, "units", "yhat"]].dropna()
    base = forecasts.loc[forecasts["model"] == BASELINE, [*key, "yhat"]].rename(columns={"yhat": "naive"})
    both = mine.merge(base, on=key)
    total = both["units"].sum()
    pairs = int(mine[["origin", *KEYS]].drop_duplicates().shape[0])
    return float((both["yhat"] - both["units"]).abs().sum() / total), float((both["naive"] - both["units"]).abs().sum() / total), pairs


def measure(n_series: int, args) -> dict:
    import numpy as np
    import pandas as pd

    from ml.models.demand import data as fd
    from ml.models.demand import inventory
    from ml.models.demand.forecasters import SECTIONS, build, model_factories
    from ml.models.demand.rolling_origin import choose, metrics, rolling_origin

    logging.basicConfig(level=logging.WARNING)
    for category in (FutureWarning, DeprecationWarning):
        warnings.simplefilter("ignore", category)
    config = bench_config(args)
    horizon, freq = args.horizon, "D"
    seconds, info = {}, {}

    t = time.perf_counter()
    raw = fd.synthetic_frame(n_series, args.periods + horizon, freq, seed=42)
    cut = raw["demand_date"].min() + pd.Timedelta(days=args.periods)
    history, known = (
        raw[raw["demand_date"] < cut].reset_index(drop=True),
        raw[raw["demand_date"] >= cut].drop(columns="units").reset_index(drop=True),
    )
    del raw
    seconds["generate (setup, not in the total)"] = time.perf_counter() - t

    cpu, model_cpu = {}, {}
    with Monitor() as mon:
        started, cpu_start = time.perf_counter(), cpu_seconds()
        mon.stage = "prepare"
        t, c = time.perf_counter(), cpu_seconds()
        clean, report = fd.prepare(history, freq, min_history=int(config["data"]["min_history"]))
        seconds["prepare"], cpu["prepare"] = time.perf_counter() - t, cpu_seconds() - c
        info["prepared_series"] = int(clean.groupby(fd.KEYS).ngroups)
        info["history_rows"] = len(clean)

        mon.stage = "backtest"
        t, c = time.perf_counter(), cpu_seconds()
        bt = config["backtest"]
        forecasts = rolling_origin(
            clean,
            cpu_metered(model_factories(config), model_cpu),
            horizon=horizon,
            n_origins=bt["n_origins"],
            freq=freq,
            min_train=int(config["data"]["min_history"]),
        )
        seconds["backtest_models"] = time.perf_counter() - t
        timings = forecasts.attrs.pop("timings")  # a frame in attrs breaks pandas' merge/concat
        t2 = time.perf_counter()
        overall, _ = metrics(forecasts, clean, freq=freq)
        overall = overall.set_index("model")
        origins = sorted(forecasts["origin"].unique())
        chosen_wape = None
        if len(origins) > 1:
            validation = origins[: min(int(bt["n_validation"]), len(origins) - 1)]
            _, chosen = choose(
                forecasts, validation, method=config["backtest"].get("selection", "best"), fallback=config["backtest"].get("fallback")
            )
            later = forecasts[forecasts["origin"] > validation[-1]]
            test = pd.concat([metrics(later, clean, freq=freq)[0], metrics(chosen, clean, freq=freq)[0]]).set_index("model")
            chosen_wape = test.round(4)[["wape", "bias", "n_series"]].to_dict("index")
        seconds["backtest_metrics_choose"] = time.perf_counter() - t2
        seconds["backtest"], cpu["backtest"] = time.perf_counter() - t, cpu_seconds() - c

        mon.stage = "forecast"
        t, c = time.perf_counter(), cpu_seconds()
        model = build(config["forecast"]["model"], config.get(SECTIONS[config["forecast"]["model"]])).fit(clean, freq, horizon)
        seconds["forecast_fit"] = time.perf_counter() - t
        t2 = time.perf_counter()
        future, fills = fd.future_frame(clean, horizon, freq, known=known, regressors=model.regressors)
        fc = model.predict(horizon, future)
        seconds["forecast_predict"] = time.perf_counter() - t2
        seconds["forecast"], cpu["forecast"] = time.perf_counter() - t, cpu_seconds() - c
        info["forecast_rows"] = len(fc)
        info["future_regressor_filled_rows"] = int(fills["rows"].sum()) if len(fills) else 0

        mon.stage = "plan"
        t, c = time.perf_counter(), cpu_seconds()
        fcfg = config["forecast"]
        lead_times = pd.DataFrame({"warehouse_id": sorted(clean["warehouse_id"].unique())}).assign(
            item_id=None, lead_time_days=LEAD_TIME_DAYS
        )
        plan = inventory.policy(
            fc, lead_times, service_level=float(fcfg["service_level"]), review_period_days=float(fcfg["review_period_days"])
        )
        seconds["plan"], cpu["plan"] = time.perf_counter() - t, cpu_seconds() - c
        info["plan_series"] = len(plan)
        total, cpu["total"] = time.perf_counter() - started, cpu_seconds() - cpu_start
    self_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    per_model = {}
    for name, rows in timings.groupby("model", sort=False):
        fit_s, predict_s = float(rows["fit_s"].sum()), float(rows["predict_s"].sum())
        wape, naive, pairs = same_row_wape(forecasts, name)
        o = overall.loc[name] if name in overall.index else None
        per_model[name] = {
            "fit_s": round(fit_s, 2),
            "predict_s": round(predict_s, 2),
            "series_per_s": round(pairs / (fit_s + predict_s), 1) if fit_s + predict_s > 0 else None,
            "series_x_origins": pairs,
            "series_per_origin": round(pairs / max(len(origins), 1)),
            "errors": int(rows["error"].notna().sum()),
            "cpu_s": round(model_cpu.get(name, 0.0), 1),
            "wape": round(wape, 4),
            "naive_wape_same_rows": round(naive, 4),
            "wape_ratio": round(wape / naive, 3),
            **({k: round(float(o[k]), 4) for k in ("mase", "bias", "coverage")} if o is not None else {}),
        }
    fit_rows = {"best_iterations": getattr(model, "best_iterations", None)}
    return {
        "n_series": n_series,
        "periods": args.periods,
        "horizon": horizon,
        "origins": [str(pd.Timestamp(o).date()) for o in origins],
        "models": per_model,
        "chosen": chosen_wape,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "total_seconds": round(total, 1),
        "peak_pss_mib": mib(mon.peak["pss"]),
        "peak_rss_sum_mib": mib(mon.peak["rss"]),
        "stage_peak_mib": {k: {kind: mib(v) for kind, v in p.items()} for k, p in mon.stage_peak.items()},
        "max_processes": mon.max_procs,
        "rusage_maxrss_mib": {
            "self": mib(self_max),
            "largest_child": mib(child_max),
            "bound_self_plus_2_children": mib(self_max + 2 * child_max),
        },
        "load_avg": mon.load(),
        "info": {**info, **fit_rows},
        "config_sections": {k: config.get(k) for k in ("data", "backtest", "lgbm", "prophet", "lstm")},
        "config": {
            "lgbm_max_train_rows": config["lgbm"]["max_train_rows"],
            "prophet_head": config["prophet"]["max_series"],
            "prophet_workers": config["prophet"]["max_workers"],
            "prophet_min_mean_demand": config["prophet"].get("min_mean_demand"),
            "lstm": args.lstm,
            "lead_time_days": LEAD_TIME_DAYS,
        },
        "preparation": report.groupby("rule")["rows"].sum().to_dict() if len(report) else {},
        "lstm_note": None if args.lstm else "demand_lstm not run (pass --lstm)",
        "forecast_total_yhat": round(float(np.nansum(fc["yhat"])), 1),
    }


def scale_label(n: int, args) -> str:
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    if args.prophet_head != 200:
        label += f"/head{args.prophet_head}"
    if args.origins != 3:
        label += f"/o{args.origins}"
    if args.max_train_rows:
        label += f"/rows{args.max_train_rows // 1000}k"
    if args.lstm:
        label += "/lstm"
    if args.periods != 365:
        label += f"/{args.periods}d"
    for key, value in overrides(args):
        label += f"/{key.split('.', 1)[1]}={value}"
    return label + (f"/{args.label}" if args.label else "")


def results_for(label: str, m: dict) -> list[Result]:
    load = m["load_avg"]
    common = {"load_avg": load}
    out = []
    for name, s in m["models"].items():
        detail = {**s, "n_series": m["n_series"], **common}
        out.append(Result(f"{name} backtest series/s", s["series_per_s"], "series/s", label, extra=detail))
        if name != BASELINE:
            out.append(
                Result(
                    f"{name} wape",
                    s["wape"],
                    "wape",
                    label,
                    baseline=s["naive_wape_same_rows"],
                    baseline_name="seasonal naive, same rows",
                    extra={"bias": s.get("bias"), "mase": s.get("mase"), "coverage": s.get("coverage"), **common},
                )
            )
    sec = m["seconds"]
    out.append(
        Result(
            "forecast demand_lgbm series/s",
            round(m["n_series"] / max(sec["forecast"], 1e-3), 1),
            "series/s",
            label,
            extra={"fit_s": sec["forecast_fit"], "predict_s": sec["forecast_predict"], **common},
        )
    )
    out.append(
        Result(
            "inventory policy series/s",
            round(m["info"]["plan_series"] / max(sec["plan"], 1e-3), 1),
            "series/s",
            label,
            extra={"seconds": sec["plan"], **common},
        )
    )
    out.append(
        Result(
            "total_seconds (prepare+backtest+forecast+plan)",
            m["total_seconds"],
            "s",
            label,
            target=f"<= {TARGET_SECONDS} s at 10k on 2 cores",
            extra=m,
        )
    )
    out.append(
        Result(
            "peak memory (PSS, process tree)",
            m["peak_pss_mib"],
            "MiB",
            label,
            target=f"<= {TARGET_GIB} GiB",
            extra={
                "peak_rss_sum_mib (shared pages counted per process)": m["peak_rss_sum_mib"],
                "stage_peak_mib": m["stage_peak_mib"],
                "rusage_maxrss_mib": m["rusage_maxrss_mib"],
                **common,
            },
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default="1000,10000", help="comma-separated series counts")
    parser.add_argument("--periods", type=int, default=365, help="days of history")
    parser.add_argument("--horizon", type=int, default=28)
    parser.add_argument("--origins", type=int, default=3)
    parser.add_argument("--prophet-head", type=int, default=200)
    parser.add_argument("--max-train-rows", type=int, default=0, help="override lgbm.max_train_rows (0: the yaml's)")
    parser.add_argument("--lstm", action="store_true", help="add demand_lstm to the backtest")
    parser.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a configs/demand.yaml key for this run (repeatable), e.g. prophet.growth=linear",
    )
    parser.add_argument("--label", default="", help="suffix of the scale label")
    parser.add_argument("--no-write", action="store_true", help="print, do not write bench/results/demand.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULTS" + json.dumps(measure(args.child, args)), flush=True)
        sys.stdout.flush()
        os._exit(0)
    results = []
    for n in (int(s) for s in args.series.split(",")):
        label = scale_label(n, args)
        forwarded, skip = [], False
        for a in sys.argv[1:]:  # every option but --series goes to the child
            if skip or a == "--series" or a.startswith("--series="):
                skip = a == "--series"
                continue
            forwarded.append(a)
        print(f"demand scale {label}: {n:,} series ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, *forwarded, "--child", str(n)], capture_output=True, text=True)
        line = next((row for row in proc.stdout.splitlines() if row.startswith("RESULTS")), None)
        if proc.returncode or not line:
            sys.exit(f"bench_demand {label} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        m = json.loads(line[len("RESULTS") :])
        print(
            json.dumps(
                {
                    k: m[k]
                    for k in (
                        "models",
                        "seconds",
                        "cpu_seconds",
                        "total_seconds",
                        "peak_pss_mib",
                        "peak_rss_sum_mib",
                        "stage_peak_mib",
                        "rusage_maxrss_mib",
                        "load_avg",
                    )
                },
                indent=1,
            ),
            flush=True,
        )
        results += results_for(label, m)
    if args.no_write:
        for r in results:
            print(f"  {r.metric:<50} {r.scale:<10} {r.value} {r.unit} ratio={r.ratio}")
    else:
        write_results("demand", results)


if __name__ == "__main__":
    main()
