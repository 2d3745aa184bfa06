"""Promotion effect on demand: double machine learning with LightGBM nuisance models, and a
difference-in-differences cross-check.

    dml_uplift(frame, treatment="is_promoted", outcome="units", controls=None, ...) -> dict
    did_uplift(frame, treatment="is_promoted", outcome="units", group="category_l1", ...) -> dict
    after_first_sale(frame) -> DataFrame        each series' rows after its first sale (see there)
    default_controls(frame) -> list[str]        the controls dml_uplift uses when none are given

Both return ``effect`` (units per series-day, on the treated rows), ``se``, ``ci_low``, ``ci_high``,
``relative_lift`` (effect / what the treated rows would have sold untreated) with
``relative_ci_low`` / ``relative_ci_high``, ``n`` and diagnostics. Both raise
``NoTreatmentVariationError`` when the treatment never varies (all rows promoted or none).

Double ML (Chernozhukov et al. 2018, "Double/debiased machine learning"): the controls X
(calendar from ``demand_date``, item, warehouse, category, weather, holiday, price: whatever is present) enter
only through flexible LightGBM fits, cross-fitted over ``n_folds`` random folds (every row's
nuisance prediction comes from models that never saw it), and the effect solves a Neyman-orthogonal
moment, so first-order errors of the nuisance fits do not bias it. Three models:

* ``"multiplicative"`` (default): E[y | T, X] = G(X) * exp(theta * T), a constant relative lift
  exp(theta) - 1 on top of any baseline G. Moment (g-estimation of a multiplicative structural mean
  model, Robins 1994): E[(y * exp(-theta T) - G(X)) (T - m(X))] = 0 with m(X) = E[T | X] and
  G(X) = E[y | T = 0, X], both cross-fitted. For binary T it has the closed form
  exp(theta) = sum_{T=1} y (1 - m) / (sum_{T=1} G (1 - m) + sum_{T=0} (y - G) m).
  Demand lifts are multiplicative (a promotion on a best-seller adds more units than on a slow
  mover), and unlike a log-outcome model this one is exact with zeros, which dominate daily
  item x warehouse demand. ``effect`` in units is the implied mean uplift on the treated rows,
  mean_{T=1}(y) * (1 - exp(-theta)). Binary treatment only.
* ``"linear"``: the partialling-out estimator of the partially linear model y = theta T + g(X) + e
  (Robinson 1988): regress y - E[y|X] on T - E[T|X] (both cross-fitted). ``theta`` is in units/day
  per unit of treatment (binary or continuous, e.g. discount_pct); ``effect`` = theta * the mean
  treated dose (units/day on the treated rows); ``relative_lift`` = effect / the mean untreated
  prediction E[y|X] - theta E[T|X] over the treated rows. With effects that vary across rows theta
  is a Var(T|X)-weighted average of them.
* ``"log1p"``: the linear model on log1p(y), relative lift exp(theta) - 1. That is the lift of
  (1 + y), which equals the lift of y only when y is large: with mostly-zero daily demand it is far
  smaller than the unit lift (kept for high-volume series and comparison, not the default). On the
  tiny generated warehouse: 0.06, where the multiplicative model gives 2.65 [2.06, 3.35] and the
  simulated truth is 3.39 (tests/integration/test_promotion_effect.py).

Nuisance design (``_design``): ``demand_date`` becomes calendar features; a high-cardinality control that is
constant within a series (item_id, category_l3, price) may not interact with the time-varying ones
in the outcome fits, and is left out of the treatment fit altogether. Promotions run for days, so a
tree that may split on item and date (or an item-level promotion share) learns each held-out
promotion from its neighbouring days in the other folds. Outcome fits on non-negative data use a
Poisson (log-link) objective, so the baseline is item level x seasonality, multiplicative. If
promotions are targeted at particular items, the multiplicative model stays consistent through G
(the moment is doubly robust); the linear one needs m right, so prefer the default.

Frames spined from each series' first sale (fct_daily_demand) are trimmed to the days after it
(``after_first_sale``; ``trim_first_sale="auto"``): see there for why.

Standard errors are heteroskedasticity-robust (sandwich, HC1) or, with ``cluster`` (e.g.
"item_id"), cluster-robust over those groups: rows of one item share promotion episodes and item
levels, so for panel data clustering is the honest choice. The relative-lift interval maps the
effect interval's ends through the (monotone) relative-lift formula, taking the baseline as known.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

MODELS = ("multiplicative", "linear", "log1p")
CANDIDATE_CONTROLS = (
    "demand_date",
    "item_id",
    "warehouse_id",
    "category_l1",
    "category_l2",
    "category_l3",
    "temperature_c",
    "precipitation_mm",
    "is_holiday",
    "price",
)
# Nuisance LightGBM; early stopping on a 10 % split of each training fold. One thread: the fits are
# small (10^4-10^5 rows), and on the shared 2-core box two OpenMP threads next to another busy
# process ran 30x slower (37 s vs 1.4 s for 5 folds of 12 k rows), one thread never did.
NUISANCE_PARAMS = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 10.0,
    "verbosity": -1,
    "num_threads": 1,
    "deterministic": True,
}
NUM_BOOST_ROUND = 1000
EARLY_STOPPING_ROUNDS = 30


class NoTreatmentVariationError(ValueError):
    """The treatment takes one value only (or no episode has a clean comparison): no effect is identified."""


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def default_controls(frame: "pd.DataFrame", treatment: str = "is_promoted") -> list[str]:
    """The controls present in ``frame`` among demand_date (calendar), item/warehouse/category keys, weather,
    holiday and price. ``discount_pct`` is never a default: it is the promotion itself."""
    return [c for c in CANDIDATE_CONTROLS if c in frame.columns and c != treatment]


def after_first_sale(frame: "pd.DataFrame", outcome: str = "units") -> "pd.DataFrame":
    """The rows of each series (item_id x warehouse_id) strictly after its first positive outcome.

    fct_daily_demand starts every series on its first sale: a day kept *because* it sold, more often
    a promotion day, and the series' zero days before it are not there at all. For slow movers that
    selection inflates the untreated level and pulls the lift down. Given the controls, a day's
    demand does not depend on when the first sale happened, so the days after it are not selected
    on their own outcome; this holds whether the frame starts at the first sale or at launch.

    Measured on six tiny generated worlds (double ML, mean lift): 2.64 on the first-sale spine, 2.99
    after trimming, 3.26 on a spine from each item's launch (true lift over all promoted days 3.35).
    What trimming leaves is a different population rather than a bias: the slow movers' days before
    their first sale are gone, and slow movers gain more from a promotion (against the true lift of
    the trimmed rows themselves, 3.21, it is 7 % low). A launch-dated spine is the better input.
    """
    import numpy as np

    missing = [c for c in ("item_id", "warehouse_id", "demand_date", outcome) if c not in frame.columns]
    if missing:
        raise ValueError(f"after_first_sale needs {', '.join(missing)}")
    f = frame.sort_values(["item_id", "warehouse_id", "demand_date"])
    sold = (f[outcome].to_numpy(float) > 0).astype(int)
    seen = f.assign(_sold=sold).groupby(["item_id", "warehouse_id"], sort=False)["_sold"].cumsum().to_numpy()
    keep = seen - sold > 0  # a sale happened on an earlier day of the series
    return f[np.asarray(keep)].sort_index()


def _maybe_trim(frame: "pd.DataFrame", outcome: str, trim: bool | str) -> "pd.DataFrame":
    if trim not in (True, False, "auto"):
        raise ValueError(f"trim_first_sale must be True, False or 'auto', got {trim!r}")
    if trim is False:
        return frame
    keys = ["item_id", "warehouse_id", "demand_date"]
    if trim == "auto":
        if not all(c in frame.columns for c in keys) or frame.empty:
            return frame
        first = frame.sort_values(keys).groupby(keys[:2], sort=False)[outcome].first()
        if not (first > 0).all() or not (frame[outcome] == 0).any():  # no zero days: nothing was selected
            return frame
    return after_first_sale(frame, outcome)


def _treatment(frame: "pd.DataFrame", treatment: str) -> "np.ndarray":
    import numpy as np
    import pandas as pd

    if treatment not in frame.columns:
        raise ValueError(f"treatment column {treatment!r} is missing; columns: {', '.join(map(str, frame.columns))}")
    t = pd.to_numeric(frame[treatment].astype("float64") if frame[treatment].dtype == bool else frame[treatment], errors="coerce")
    if t.isna().any():
        raise ValueError(f"treatment {treatment!r} has {int(t.isna().sum())} null rows: fill or drop them first")
    t = t.to_numpy(float)
    values = np.unique(t)
    if len(values) < 2:
        raise NoTreatmentVariationError(
            f"treatment {treatment!r} has no variation: all {len(t)} rows are {values[0] if len(values) else 'absent'}; "
            "an effect needs both treated and untreated rows"
        )
    return t


def _design(
    frame: "pd.DataFrame", controls: list[str], treatment: str, max_time_levels: int = 20
) -> tuple["pd.DataFrame", list | None, list[str]]:
    """LightGBM matrix from the controls, its interaction constraints and its identifying columns.

    ``demand_date`` becomes day of week, day of year and a trend (days since the first date); booleans and
    numbers stay numeric; text becomes categorical. With the series keys (item_id, warehouse_id)
    present, a control constant within every series and with more than ``max_time_levels`` distinct
    values (item_id, category_l3, price) may not interact with the time-varying controls (calendar,
    weather): a tree that splits on item and date learns each item's promotion windows from the
    neighbouring days of other folds (promotions run for days), so E[T|X] approaches 0/1 and the
    baselines absorb the lift. Coarse static controls (warehouse_id, category_l1) may interact with
    both sides. Returns (matrix, constraints or None, the identifying columns, which the treatment
    model leaves out).
    """
    import pandas as pd

    if treatment in controls:
        raise ValueError(f"treatment {treatment!r} cannot also be a control")
    missing = [c for c in controls if c not in frame.columns]
    if missing:
        raise ValueError(f"control(s) {', '.join(missing)} missing from the frame")
    out, source = {}, {}
    for name in controls:
        values = frame[name]
        if pd.api.types.is_datetime64_any_dtype(values) or name == "demand_date":
            ds = pd.to_datetime(values)
            for part, col in (("dayofweek", ds.dt.dayofweek), ("dayofyear", ds.dt.dayofyear), ("trend", (ds - ds.min()).dt.days)):
                out[f"{name}_{part}"] = col.astype(float)
                source[f"{name}_{part}"] = name
        elif pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[name] = pd.to_numeric(values.astype("float64") if values.dtype == bool else values, errors="coerce").astype(float)
            source[name] = name
        else:
            out[name] = values.astype(str).where(values.notna(), None).astype("category")
            source[name] = name
    if not out:
        raise ValueError("no controls: pass controls=[...] (e.g. ds, item_id, temperature_c)")
    x = pd.DataFrame(out, index=frame.index).reset_index(drop=True)
    keys = [k for k in ("item_id", "warehouse_id") if k in frame.columns]
    if not keys:
        return x, None, []
    series = frame[keys].astype(str).agg("|".join, axis=1).to_numpy() if len(keys) > 1 else frame[keys[0]].astype(str).to_numpy()
    static, identifying = set(), set()
    for col in x.columns:
        name = source[col]
        if name == "demand_date":
            continue
        per_series = pd.Series(frame[name].to_numpy()).groupby(series).nunique(dropna=False)
        if (per_series <= 1).all():
            static.add(col)
            if frame[name].nunique(dropna=True) > max_time_levels:
                identifying.add(col)
    if not identifying:
        return x, None, []
    cols = list(x.columns)
    series_side = [cols.index(c) for c in cols if c in static]
    time_side = [cols.index(c) for c in cols if c not in identifying]
    return x, [series_side, time_side], [c for c in cols if c in identifying]


def _fit_predict(x_train, y_train, x_test, objective: str, params: dict, seed: int, constraints=None) -> "np.ndarray":
    import lightgbm as lgb
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(y_train)
    valid = rng.random(n) < 0.1
    if valid.sum() < 10 or (~valid).sum() < 10:
        valid = np.zeros(n, dtype=bool)
    p = {**NUISANCE_PARAMS, **params, "objective": objective, "seed": seed}
    if constraints:
        p["interaction_constraints"] = constraints
    train_set = lgb.Dataset(x_train[~valid], label=y_train[~valid], free_raw_data=False)
    if valid.any():
        valid_set = lgb.Dataset(x_train[valid], label=y_train[valid], reference=train_set, free_raw_data=False)
        booster = lgb.train(
            p,
            train_set,
            num_boost_round=NUM_BOOST_ROUND,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
        )
    else:  # tiny training fold: a fixed, short fit
        booster = lgb.train(p, train_set, num_boost_round=100)
    return booster.predict(x_test, num_iteration=booster.best_iteration or None)


def _crossfit(x, target, folds, objective: str, params: dict, seed: int, train_rows=None, constraints=None) -> "np.ndarray":
    """Out-of-fold predictions of ``target`` (models fit on ``train_rows`` of the other folds)."""
    import numpy as np

    pred = np.empty(len(target))
    for k in np.unique(folds):
        test = folds == k
        train = ~test if train_rows is None else (~test & train_rows)
        pred[test] = _fit_predict(x[train], target[train], x[test], objective, params, seed + int(k), constraints)
    return pred


def _variance(psi: "np.ndarray", jacobian: float, clusters) -> tuple[float, int]:
    """Sandwich variance of an M-estimator with score ``psi`` (HC1, or cluster-robust CR1)."""
    import pandas as pd

    n = len(psi)
    if clusters is None:
        meat = float((psi**2).sum()) * n / max(n - 1, 1)
        groups = n
    else:
        sums = pd.Series(psi).groupby(pd.factorize(clusters)[0]).sum().to_numpy()
        groups = len(sums)
        if groups < 2:
            raise ValueError("cluster-robust standard errors need at least 2 clusters")
        meat = float((sums**2).sum()) * groups / (groups - 1)
    return meat / (n * jacobian) ** 2, groups


def dml_uplift(
    frame: "pd.DataFrame",
    treatment: str = "is_promoted",
    outcome: str = "units",
    controls: list[str] | None = None,
    n_folds: int = 5,
    seed: int = 0,
    model: str = "multiplicative",
    cluster: str | list[str] | None = None,
    confidence: float = 0.95,
    params: dict | None = None,
    max_time_levels: int = 20,
    trim_first_sale: bool | str = "auto",
) -> dict[str, Any]:
    """The treatment's effect on the outcome by cross-fitted double ML (see the module docstring).

    ``controls``: column names (default ``default_controls(frame)``); ``demand_date`` expands to calendar
    features, text columns become LightGBM categoricals. ``cluster``: column(s) whose rows share
    errors (None: heteroskedasticity-robust only). ``params`` override the nuisance LightGBM
    parameters. ``max_time_levels``: see ``_design`` (static controls with more distinct values do
    not interact with calendar and weather in the nuisance fits). ``trim_first_sale``: keep only
    each series' rows after its first sale (``after_first_sale``); "auto" does so when every series
    of the frame starts on a sale while other days have none (fct_daily_demand's spine). Returns effect (units/day on the
    treated rows), se, ci_low, ci_high, relative_lift, relative_ci_low, relative_ci_high, theta (the
    model's parameter), theta_se, n, n_treated, rows_trimmed, naive_difference and
    naive_relative_lift (treated vs untreated means, for comparison), treatment_residual_var,
    propensity_range, model, controls, clusters, confidence.
    """
    import numpy as np
    import pandas as pd

    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if outcome not in frame.columns:
        raise ValueError(f"outcome column {outcome!r} is missing")
    _treatment(frame, treatment)  # variation before trimming: name the treatment, not the trim
    n_before = len(frame)
    frame = _maybe_trim(frame, outcome, trim_first_sale).reset_index(drop=True)
    t = _treatment(frame, treatment)
    y = pd.to_numeric(frame[outcome], errors="coerce").to_numpy(float)
    if np.isnan(y).any():
        raise ValueError(f"outcome {outcome!r} has {int(np.isnan(y).sum())} null rows")
    binary = bool(np.isin(t, (0.0, 1.0)).all())
    if model == "multiplicative" and not binary:
        raise ValueError(f"model 'multiplicative' needs a 0/1 treatment; {treatment!r} is continuous: use model='linear'")
    if model == "log1p" and (y <= -1).any():
        raise ValueError("model 'log1p' needs outcome > -1")
    controls = list(controls) if controls is not None else default_controls(frame, treatment)
    x, constraints, identifying = _design(frame, controls, treatment, max_time_levels)
    clusters = None
    if cluster is not None:
        cols = [cluster] if isinstance(cluster, str) else list(cluster)
        clusters = frame[cols].astype(str).agg("|".join, axis=1).to_numpy()
    n = len(y)
    treated = t != 0
    if treated.sum() < n_folds or (~treated).sum() < n_folds:
        raise NoTreatmentVariationError(
            f"treatment {treatment!r}: {int(treated.sum())} treated and {int((~treated).sum())} untreated rows; "
            f"need at least {n_folds} of each"
        )
    folds = np.random.default_rng(seed).permutation(np.arange(n) % n_folds)
    params = dict(params or {})

    # The treatment model leaves the identifying controls (item_id, price, ...) out: within a short
    # panel an item's share of promoted days is mostly the held-out episode itself, seen through its
    # neighbouring days in the other folds (measured on the generator: propensities up to 0.9 for a
    # promotion drawn at random, 0.3-0.45 without them).
    x_t = x.drop(columns=identifying) if identifying else x
    m = _crossfit(x_t, t, folds, "binary" if binary else "regression", params, seed)
    if binary:
        m = np.clip(m, 1e-3, 1 - 1e-3)
    v = t - m
    resid_var = float(np.mean(v**2))
    if resid_var < 1e-3 * max(float(np.var(t)), 1e-12):
        raise NoTreatmentVariationError(
            f"treatment {treatment!r} is determined by the controls ({', '.join(controls)}): no variation is left "
            "once they are accounted for (is a control a copy of the treatment, e.g. discount_pct?)"
        )
    # Non-negative outcomes (units) get a Poisson (log-link) fit: with the constraints above that
    # makes the baseline multiplicative, item level x seasonality, as demand is.
    count_objective = "poisson" if (y >= 0).all() else "regression"
    z = _z(confidence)
    naive = float(y[treated].mean() - y[~treated].mean())
    if model == "multiplicative":
        g0 = _crossfit(x, y, folds, count_objective, params, seed + 100, train_rows=~treated, constraints=constraints)
        num = float((y[treated] * (1 - m[treated])).sum())
        den = float((g0[treated] * (1 - m[treated])).sum() + ((y[~treated] - g0[~treated]) * m[~treated]).sum())
        if num <= 0 or den <= 0:
            raise ValueError(f"multiplicative model undefined: weighted treated outcome {num:.3g}, baseline {den:.3g} (need both > 0)")
        theta = math.log(num / den)
        psi = (y * np.exp(-theta * t) - g0) * v
        jac = float(np.mean(-t * y * np.exp(-theta * t) * v))
        var, groups = _variance(psi, jac, clusters)
        se = math.sqrt(var)
        ybar1 = float(y[treated].mean())

        def effect_of(th: float) -> float:
            return ybar1 * (1.0 - math.exp(-th))

        def rel_of(th: float) -> float:
            return math.expm1(th)
    else:
        target = np.log1p(y) if model == "log1p" else y
        ell = _crossfit(
            x, target, folds, count_objective if model == "linear" else "regression", params, seed + 100, constraints=constraints
        )
        u = target - ell
        theta = float((v * u).sum() / (v * v).sum())
        psi = (u - theta * v) * v
        var, groups = _variance(psi, -resid_var, clusters)
        se = math.sqrt(var)
        dose = float(t[treated].mean())
        a, b = float(ell[treated].mean()), float(m[treated].mean())
        if model == "log1p":
            ybar1 = float(y[treated].mean())

            def rel_of(th: float) -> float:
                return math.expm1(th * dose)

            def effect_of(th: float) -> float:
                return ybar1 * (1.0 - math.exp(-th * dose))
        else:

            def effect_of(th: float) -> float:
                return th * dose

            def rel_of(th: float) -> float:
                base = a - th * b
                return th * dose / base if base > 0 else float("nan")

    lo, hi = theta - z * se, theta + z * se
    return {
        "effect": effect_of(theta),
        "se": (effect_of(hi) - effect_of(lo)) / (2 * z),
        "ci_low": effect_of(lo),
        "ci_high": effect_of(hi),
        "relative_lift": rel_of(theta),
        "relative_ci_low": rel_of(lo),
        "relative_ci_high": rel_of(hi),
        "theta": theta,
        "theta_se": se,
        "n": int(n),
        "n_treated": int(treated.sum()),
        "rows_trimmed": int(n_before - n),
        "naive_difference": naive,
        "naive_relative_lift": naive / float(y[~treated].mean()) if y[~treated].mean() > 0 else float("nan"),
        "treatment_residual_var": resid_var,
        "propensity_range": (float(m.min()), float(m.max())),
        "model": model,
        "controls": controls,
        "clusters": int(groups),
        "confidence": confidence,
    }


# ----------------------------------------------------------------------------- difference in differences


def did_uplift(
    frame: "pd.DataFrame",
    treatment: str = "is_promoted",
    outcome: str = "units",
    group: str | None = "category_l1",
    pre_days: int = 14,
    max_post_days: int = 14,
    cluster: str = "item_id",
    n_boot: int = 500,
    seed: int = 0,
    confidence: float = 0.95,
    trim_first_sale: bool | str = "auto",
) -> dict[str, Any]:
    """Difference-in-differences around promotion starts, against comparable unpromoted series.

    ``frame``: item_id, warehouse_id, demand_date (daily), outcome, treatment (0/1) and ``group`` (e.g.
    category_l1; None or absent: every series is comparable). A series-day missing from the frame
    is unobserved (not zero).

    An *episode* is a run of treated days of one series (capped at ``max_post_days``) whose
    ``pre_days`` days before are all observed and untreated. Its controls are the other series of
    the same group and warehouse observed and untreated on all the episode's pre and post days.
    Per episode the counterfactual post level of the series is its pre mean moved by its controls'
    change, pre_s + (post_c - pre_c) (means over the window, averaged over the controls); did =
    post_s - counterfactual. (A multiplicative version, pre_s * post_c / pre_c, was tried: with
    mostly-zero controls the ratio is unstable and it did worse on the generator.) Episodes without
    a control are dropped and counted in ``episodes_without_control``. Overall: ``effect`` = the post-day-weighted mean did (units/day);
    ``relative_lift`` = sum(w * did) / sum(w * counterfactual). The interval is a cluster bootstrap
    (percentile, ``n_boot`` resamples of ``cluster`` groups, e.g. items: one promotion covers several
    warehouses, so their episodes are not independent); ``se`` is the bootstrap sd. With few
    clusters it undercovers (measured: 90 % / 85 % coverage of a nominal 95 % with 20 / 10 promoted
    items on a planted effect; unbiased).
    """
    import numpy as np
    import pandas as pd

    need = ["item_id", "warehouse_id", "demand_date", outcome, treatment]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ValueError(f"did_uplift: frame lacks {', '.join(missing)}")
    if pre_days < 1 or max_post_days < 1:
        raise ValueError("pre_days and max_post_days must be >= 1")
    _treatment(frame, treatment)
    n_before = len(frame)
    frame = _maybe_trim(frame, outcome, trim_first_sale)
    t_all = _treatment(frame, treatment)
    f = frame[need + ([group] if group and group in frame.columns else []) + ([cluster] if cluster not in need else [])].copy()
    f[treatment] = (t_all != 0).astype(float)
    f["demand_date"] = pd.to_datetime(f["demand_date"]).dt.normalize()
    if f.duplicated(["item_id", "warehouse_id", "demand_date"]).any():
        raise ValueError("did_uplift: duplicate item_id x warehouse_id x ds rows")
    series = f[["item_id", "warehouse_id"]].drop_duplicates().reset_index(drop=True)
    series["s"] = np.arange(len(series))
    f = f.merge(series, on=["item_id", "warehouse_id"])
    day0 = f["demand_date"].min()
    f["d"] = (f["demand_date"] - day0).dt.days
    S, D = len(series), int(f["d"].max()) + 1
    Y = np.full((S, D), np.nan)
    T = np.full((S, D), np.nan)
    Y[f["s"], f["d"]] = f[outcome].astype(float).to_numpy()
    T[f["s"], f["d"]] = f[treatment].to_numpy()
    meta = f.drop_duplicates("s").set_index("s").sort_index()
    grp = meta[group].astype(str).to_numpy() if group and group in f.columns else np.full(S, "all")
    pool_key = pd.Series(list(zip(grp, meta["warehouse_id"].astype(str)))).to_numpy()
    pool_of = pd.factorize(pool_key)[0]
    pools = {k: np.flatnonzero(pool_of == k) for k in np.unique(pool_of)}
    clus = meta[cluster].astype(str).to_numpy()

    did, cf, weight, cl, n_ctrl = [], [], [], [], []
    no_control = 0
    for s in range(S):
        row = T[s]
        starts = np.flatnonzero((row == 1) & np.r_[True, row[:-1] != 1])
        for d0 in starts:
            if d0 < pre_days:
                continue
            pre = slice(d0 - pre_days, d0)
            if np.isnan(T[s, pre]).any() or (T[s, pre] != 0).any():
                continue
            end = d0
            while end < D and T[s, end] == 1 and end - d0 < max_post_days:
                end += 1
            post = slice(d0, end)
            ctrl = pools[pool_of[s]]
            ctrl = ctrl[ctrl != s]
            clean = (T[ctrl, pre] == 0).all(1) & (T[ctrl, post] == 0).all(1)
            ctrl = ctrl[clean]
            if len(ctrl) == 0:
                no_control += 1
                continue
            pre_s, post_s = Y[s, pre].mean(), Y[s, post].mean()
            pre_c, post_c = float(Y[ctrl, pre].mean(1).mean()), float(Y[ctrl, post].mean(1).mean())
            counterfactual = pre_s + post_c - pre_c
            did.append(post_s - counterfactual)
            cf.append(counterfactual)
            weight.append(end - d0)
            cl.append(clus[s])
            n_ctrl.append(len(ctrl))
    if not did:
        raise NoTreatmentVariationError(
            f"did_uplift: no usable episode of {treatment!r} (a treated run after {pre_days} observed untreated days "
            f"with at least one clean control in its {group or 'pool'} and warehouse); {no_control} episodes lacked a control"
        )
    did, cf, w = np.array(did), np.array(cf), np.array(weight, dtype=float)
    codes, names = pd.factorize(np.array(cl))
    G = len(names)
    num_g = np.bincount(codes, weights=w * did, minlength=G)
    den_g = np.bincount(codes, weights=w * cf, minlength=G)
    w_g = np.bincount(codes, weights=w, minlength=G)
    effect = float(num_g.sum() / w_g.sum())
    rel = float(num_g.sum() / den_g.sum()) if den_g.sum() > 0 else float("nan")
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, G, G), minlength=G) for _ in range(n_boot)])
    eff_b = counts @ num_g / np.maximum(counts @ w_g, 1e-12)
    den_b = counts @ den_g
    rel_b = np.where(den_b > 0, counts @ num_g / np.where(den_b > 0, den_b, 1.0), np.nan)
    alpha = (1.0 - confidence) / 2.0
    _z(confidence)
    return {
        "effect": effect,
        "se": float(eff_b.std(ddof=1)),
        "ci_low": float(np.quantile(eff_b, alpha)),
        "ci_high": float(np.quantile(eff_b, 1 - alpha)),
        "relative_lift": rel,
        "relative_ci_low": float(np.nanquantile(rel_b, alpha)),
        "relative_ci_high": float(np.nanquantile(rel_b, 1 - alpha)),
        "n": int(len(did)),
        "n_episodes": int(len(did)),
        "episodes_without_control": int(no_control),
        "clusters": int(G),
        "mean_controls": float(np.mean(n_ctrl)),
        "treated_days": int(w.sum()),
        "rows_trimmed": int(n_before - len(frame)),
        "n_boot": int(n_boot),
        "confidence": confidence,
        "model": "did",
    }
