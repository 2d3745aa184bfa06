"""Purchase propensity (``propensity_lgbm``): P(a user orders in the next ``horizon_days``), LightGBM.

    train(settings)  labels (dbt mart mart_user_purchase_labels) -> time split by cutoff -> point-in-time
                     features through the Feast service -> LightGBM with early stopping -> test
                     metrics against the RFM-score rule and a logistic regression (reference gate)
                     -> fairness audit, PCA, report -> the same booster refit on every labelled
                     cutoff (``refit``) -> MLflow run + registered version -> promoted to the champion
                     alias only if its test ROC AUC is not worse than the champion's on the same test
                     rows (a refit champion: its logged one).
    score(settings)  the champion scores the current population (the mart's last cutoff, labels
                     null) through the same service; per-user top contributions (SHAP,
                     ``pred_contrib``) stored beside the score; one Parquet partition per scoring
                     date (rewritten on re-run) and the Feast source of view ``user_propensity``.

Stages are plain functions (``load_labels``, ``feature_matrix``, ``fit``, ``predict``, ``explain``,
``baseline_fit``/``baseline_predict``) so tests and the sequence model share them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from ml.models.lifecycle.config import CONFIGS_DIR
from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

MODEL_NAME = "propensity_lgbm"
CONFIG_PATH = CONFIGS_DIR / f"{MODEL_NAME}.yaml"
LABELS_MART = "mart_user_purchase_labels"
SCORE_VIEW = "user_propensity"
SCORES_SERVICE = "propensity_scores_v1"  # Feast service of the served scores (feature_repo/score_views.py)
AUDIT_COLUMNS = ("gender", "age_band", "region")
KEYS = ("user_id", "event_timestamp", "cutoff_date")
# RFM segments, best first: the fixed category order of the rfm_segment feature.
RFM_SEGMENTS = (
    "champions",
    "loyal_customers",
    "potential_loyalists",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose_them",
    "hibernating",
    "lost",
)


class PropensityError(RuntimeError):
    """Training or scoring cannot proceed (missing mart, empty population, ...); nothing was written."""


def load_config(path: Path | str | None = None, **overrides) -> dict:
    config = yaml.safe_load(Path(path or CONFIG_PATH).read_text())
    config.update(overrides)
    return config


def resolve_horizon(settings: Settings, config: dict) -> int:
    """The label horizon in days: the config's, or for ``auto`` 7 with events and 30 for orders-only lakes."""
    from ml.contract import lake_status

    horizon = config.get("horizon_days", "auto")
    if horizon != "auto":
        if int(horizon) not in (7, 30):
            raise PropensityError(f"horizon_days must be 7, 30 or auto (mart_user_purchase_labels holds those), got {horizon!r}")
        return int(horizon)
    tables = lake_status(settings.lake_dir).get("tables", {})
    return 7 if tables.get("events", {}).get("present") else 30


def labels_path(settings: Settings) -> Path:
    return Path(settings.exports_dir) / f"{LABELS_MART}.parquet"


def load_labels(settings: Settings, horizon_days: int) -> "pd.DataFrame":
    """Every row of the label mart: user_id, event_timestamp (cutoff), cutoff_date, label (0/1 or
    null where the horizon is not complete yet), audit attributes."""
    import pandas as pd

    path = labels_path(settings)
    if not path.exists():
        raise PropensityError(f"label mart {path} is missing: build the warehouse first (`ecomml warehouse build`)")
    frame = pd.read_parquet(path)
    column = f"is_purchased_{horizon_days}d"
    frame = frame.rename(columns={column: "label"})
    keep = [*KEYS, "label", *[c for c in AUDIT_COLUMNS if c in frame.columns]]
    frame = frame[keep]
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["label"] = frame["label"].astype("Int64")
    return frame.sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)


def feature_matrix(frame: "pd.DataFrame", features: list[str]) -> "pd.DataFrame":
    """The model's input columns: numeric and boolean features as float, ``rfm_segment`` as a fixed
    categorical; timestamps (``*_at``) stay out (their request-time gaps are features instead).
    A feature with no value at all (its view is empty for this dataset) is an all-NaN column."""
    import pandas as pd

    out = {}
    for name in features:
        if name not in frame.columns:
            raise PropensityError(f"feature {name!r} is missing from the training frame")
        values = frame[name]
        if values.isna().all() and name != "rfm_segment":  # a view empty for this dataset (orders-only lake)
            out[name] = pd.Series(float("nan"), index=frame.index)
        elif name == "rfm_segment":
            out[name] = pd.Categorical(values, categories=list(RFM_SEGMENTS))
        elif pd.api.types.is_datetime64_any_dtype(values) or name.endswith("_at"):
            continue
        elif pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[name] = pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            raise PropensityError(f"feature {name!r} has unsupported type {values.dtype}")
    return pd.DataFrame(out, index=frame.index)


def fit(train_x: "pd.DataFrame", train_y, valid_x: "pd.DataFrame", valid_y, config: dict):
    """LightGBM with early stopping on the validation log loss; returns the Booster."""
    import lightgbm as lgb

    params = {**_params(config, train_x.columns), "metric": ["binary_logloss", "auc"]}
    train_set = lgb.Dataset(train_x, label=train_y, free_raw_data=False)
    valid_set = lgb.Dataset(valid_x, label=valid_y, reference=train_set, free_raw_data=False)
    return lgb.train(
        params,
        train_set,
        num_boost_round=int(config["num_boost_round"]),
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(int(config["early_stopping_rounds"]), first_metric_only=True, verbose=False)],
    )


def refit_all(x: dict, y: dict, rounds: int, config: dict):
    """The serving booster: the same parameters on every labelled row (train + validation + test), for
    the early-stopped round count. Its held-out metrics are the evaluated model's (it saw its test rows)."""
    import lightgbm as lgb
    import numpy as np
    import pandas as pd

    frame = pd.concat([x[k] for k in ("train", "valid", "test")], ignore_index=True)
    labels = np.concatenate([y[k] for k in ("train", "valid", "test")])
    return lgb.train(_params(config, frame.columns), lgb.Dataset(frame, label=labels), num_boost_round=max(int(rounds), 1))


def refit_logistic(x: dict, y: dict) -> LogisticModel:
    """The served logistic regression refit on every labelled row (train + validation + test)."""
    import numpy as np
    import pandas as pd

    frame = pd.concat([x[k] for k in ("train", "valid", "test")], ignore_index=True)
    return LogisticModel(logistic_fit(frame, np.concatenate([y[k] for k in ("train", "valid", "test")])), list(frame.columns))


def _params(config: dict, columns) -> dict:
    """The booster's parameters: config.lightgbm with the monotone constraints in column order."""
    params = dict(config["lightgbm"])
    monotone = config.get("monotone") or {}
    if monotone:
        params["monotone_constraints"] = [int(monotone.get(c, 0)) for c in columns]
        params["monotone_constraints_method"] = "advanced"
    return params


def model_features(model) -> list[str]:
    return list(model.feature_name())


def _align(model, x: "pd.DataFrame") -> "pd.DataFrame":
    missing = [c for c in model_features(model) if c not in x.columns]
    if missing:
        raise PropensityError(f"scoring frame lacks the model's features {missing}")
    return x[model_features(model)]


def predict(model, x: "pd.DataFrame") -> "np.ndarray":
    return model.predict(_align(model, x), num_iteration=model.best_iteration or None)


def explain(model, x: "pd.DataFrame", top_k: int = 3) -> "pd.DataFrame":
    """Per row, the ``top_k`` features with the largest absolute SHAP contribution (LightGBM
    ``pred_contrib``, log-odds units): columns top_feature_<i>, top_contribution_<i>."""
    import numpy as np
    import pandas as pd

    x = _align(model, x)
    contrib = np.asarray(model.predict(x, pred_contrib=True, num_iteration=model.best_iteration or None))[:, :-1]
    names = np.array(model_features(model))
    k = min(top_k, contrib.shape[1])
    order = np.argsort(-np.abs(contrib), axis=1)[:, :k]
    out = {}
    for i in range(k):
        out[f"top_feature_{i + 1}"] = names[order[:, i]]
        out[f"top_contribution_{i + 1}"] = np.take_along_axis(contrib, order[:, i : i + 1], axis=1)[:, 0].round(5)
    return pd.DataFrame(out, index=x.index)


def baseline_fit(rfm_score: "pd.Series", y) -> dict:
    """The RFM-score rule as a probability: the training positive rate per rfm_score (3..15; 0 = no
    order yet), smoothed towards the overall rate."""
    import pandas as pd

    score = pd.to_numeric(rfm_score, errors="coerce").fillna(0).astype(int)
    y = pd.Series(y, index=score.index).astype(float)
    prior, strength = float(y.mean()), 20.0
    grouped = y.groupby(score).agg(["sum", "count"])
    rates = ((grouped["sum"] + prior * strength) / (grouped["count"] + strength)).to_dict()
    return {"rates": {int(k): float(v) for k, v in rates.items()}, "prior": prior}


def baseline_predict(baseline: dict, rfm_score: "pd.Series") -> "np.ndarray":
    import pandas as pd

    score = pd.to_numeric(rfm_score, errors="coerce").fillna(0).astype(int)
    return score.map(baseline["rates"]).fillna(baseline["prior"]).to_numpy(dtype=float)


def logistic_fit(x: "pd.DataFrame", y):
    """The plain reference a data scientist would fit first, as strong as a textbook makes it: a
    logistic regression over every model feature, numerics sign-log1p-transformed, median-imputed
    (with missing indicators) and standardised, ``rfm_segment`` one-hot; C=1, lbfgs."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    categorical = [c for c in x.columns if str(x[c].dtype) == "category"]
    numeric = [c for c in x.columns if c not in categorical and x[c].notna().any()]
    signed_log = FunctionTransformer(_signed_log1p, feature_names_out="one-to-one")
    columns = ColumnTransformer(
        [
            ("num", make_pipeline(signed_log, SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numeric),
            *(
                [
                    (
                        "cat",
                        make_pipeline(SimpleImputer(strategy="constant", fill_value="none"), OneHotEncoder(handle_unknown="ignore")),
                        categorical,
                    )
                ]
                if categorical
                else []
            ),
        ]
    )
    model = make_pipeline(columns, LogisticRegression(C=1.0, max_iter=2000))
    return model.fit(_plain_categories(x), np.asarray(y, dtype=int))


def _signed_log1p(v):
    import numpy as np

    return np.sign(v) * np.log1p(np.abs(v))


def logistic_predict(model, x: "pd.DataFrame") -> "np.ndarray":
    return model.predict_proba(_plain_categories(x))[:, 1]


class LogisticModel:
    """The logistic-regression reference as the family's served model, for when it beats the LightGBM
    on the test rows beyond the noise (small shops: a few thousand user-weeks). Answers what scoring
    asks of a LightGBM Booster: ``feature_name()``, ``predict(x)`` (probabilities) and
    ``predict(x, pred_contrib=True)`` (per-feature log-odds contributions, exact for a linear model:
    coefficient x transformed value, summed over a feature's columns, then the intercept), and
    ``feature_importance()`` (|coefficient| summed per feature)."""

    best_iteration = None

    def __init__(self, pipeline, features: list[str]):
        self.pipeline = pipeline
        self.features = list(features)

    def feature_name(self) -> list[str]:
        return list(self.features)

    def _owners(self) -> "np.ndarray":
        """For each transformed column, the index of the input feature it comes from."""
        import numpy as np

        longest_first = sorted(enumerate(self.features), key=lambda t: -len(t[1]))  # `a_now` before its prefix `a`
        owners = []
        for name in self.pipeline[0].get_feature_names_out():
            body = name.split("__", 1)[1].removeprefix("missingindicator_")
            owners.append(next(i for i, f in longest_first if body == f or body.startswith(f + "_")))
        return np.asarray(owners)

    def predict(self, x: "pd.DataFrame", num_iteration=None, pred_contrib: bool = False) -> "np.ndarray":
        import numpy as np

        x = x[self.features]
        if not pred_contrib:
            return logistic_predict(self.pipeline, x)
        z = self.pipeline[0].transform(_plain_categories(x))
        z = z.toarray() if hasattr(z, "toarray") else np.asarray(z)
        per_column = z * self.pipeline[-1].coef_[0]
        out = np.zeros((len(x), len(self.features) + 1))
        np.add.at(out.T, self._owners(), per_column.T)
        out[:, -1] = self.pipeline[-1].intercept_[0]
        return out

    def feature_importance(self, importance_type: str = "gain") -> "np.ndarray":
        import numpy as np

        out = np.zeros(len(self.features))
        np.add.at(out, self._owners(), np.abs(self.pipeline[-1].coef_[0]))
        return out


def _plain_categories(x: "pd.DataFrame") -> "pd.DataFrame":
    """Categorical columns as plain objects (the imputer and one-hot encoder take those)."""
    return x.assign(**{c: x[c].astype(object) for c in x.columns if str(x[c].dtype) == "category"})


def reference_losses(
    y,
    p,
    references: dict,
    metric: str = "roc_auc",
    margin: float = 0.0,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
) -> list[str]:
    """The gate: one line per plain reference (name -> its predictions on the same rows) the model
    falls behind. The paired difference model - reference on ``metric`` (roc_auc, pr_auc or log_loss)
    must not be below ``margin`` beyond the noise of the test rows: a loss is a difference below
    margin - z x its bootstrap standard error (``n_boot`` paired resamples, one-sided ``confidence``),
    so a tie on a few hundred rows is not a loss and a real deficit on thousands is."""
    import numpy as np
    from scipy.stats import norm
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    fn = {"roc_auc": roc_auc_score, "pr_auc": average_precision_score, "log_loss": log_loss}[metric]
    sign = 1.0 if higher_is_better else -1.0
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return []
    rng = np.random.default_rng(seed)
    boots = {name: [] for name in references}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) < 2:
            continue
        ours = fn(y[idx], p[idx])
        for name, ref in references.items():
            boots[name].append(sign * (ours - fn(y[idx], np.asarray(ref, dtype=float)[idx])))
    z = float(norm.ppf(confidence))
    losses = []
    for name, ref in references.items():
        diff = sign * (fn(y, p) - fn(y, np.asarray(ref, dtype=float)))
        se = float(np.std(boots[name])) if boots[name] else 0.0
        if diff < margin - z * se:
            losses.append(f"{metric} {'+' if diff >= 0 else ''}{diff:.4f} vs {name} (paired bootstrap s.e. {se:.4f}, margin {margin:g})")
    return losses


@dataclass
class TrainResult:
    run_id: str
    version: str
    metrics: dict
    baseline_metrics: dict
    decision: Any
    report: Path
    horizon_days: int
    rows: dict
    sequence: dict | None = None
    logistic_metrics: dict | None = None
    lightgbm_metrics: dict | None = None  # the LightGBM's, also when the logistic regression is served
    model_type: str = "lightgbm"  # what this version is: lightgbm | logistic_regression

    def summary(self) -> dict:
        return {
            "model": MODEL_NAME,
            "run_id": self.run_id,
            "version": self.version,
            "model_type": self.model_type,
            "horizon_days": self.horizon_days,
            "rows": self.rows,
            "test": {k: self.metrics.get(k) for k in ("roc_auc", "pr_auc", "log_loss", "lift_top_decile")},
            "baseline_test": {k: self.baseline_metrics.get(k) for k in ("roc_auc", "pr_auc", "log_loss", "lift_top_decile")},
            "logistic_test": {k: (self.logistic_metrics or {}).get(k) for k in ("roc_auc", "pr_auc", "log_loss", "lift_top_decile")},
            "sequence_model": self.sequence,
            "promoted": bool(getattr(self.decision, "promoted", False)),
            "decision": getattr(self.decision, "reason", None),
            "report": str(self.report),
        }


def training_frames(settings: Settings, config: dict, horizon: int) -> tuple[Any, list[str]]:
    """The time split of the labelled rows, with point-in-time features from the service."""
    from ml.features.repo import get_store
    from ml.features.training import build_training_set, service_requirements
    from ml.models.lifecycle.evaluate import check_labels
    from ml.models.lifecycle.splits import time_split

    labels = load_labels(settings, horizon)
    labelled = labels[labels["label"].notna()].copy()
    if labelled.empty:
        raise PropensityError(f"no labelled rows in {LABELS_MART} for a {horizon}-day horizon (the lake span is too short)")
    labelled["label"] = labelled["label"].astype(int)
    split_cfg = config.get("split", {})
    cutoffs = sorted(labelled["event_timestamp"].unique())
    keep = int(split_cfg.get("max_train_cutoffs", 26)) + int(split_cfg.get("n_valid", 1)) + int(split_cfg.get("n_test", 1))
    # the horizon gap removes the cutoffs right before each boundary: keep enough history for it
    keep += -(-horizon // 7) * 2
    labelled = labelled[labelled["event_timestamp"].isin(cutoffs[-keep:])]
    split = time_split(
        labelled,
        time_col="event_timestamp",
        n_valid=int(split_cfg.get("n_valid", 1)),
        n_test=int(split_cfg.get("n_test", 1)),
        gap_days=horizon,
    )
    check_labels(
        split.train["label"], min_positives=int(config.get("min_positives", 20)), min_negatives=int(config.get("min_positives", 20))
    )
    store = get_store(settings)
    service = config["feature_service"]
    features = service_requirements(store, service)["features"]
    parts = {}
    for name in ("train", "valid", "test"):
        part = getattr(split, name)
        parts[name] = build_training_set(settings, part, service, store=store)
    split.train, split.valid, split.test = parts["train"], parts["valid"], parts["test"]
    return split, features


def _snapshot(settings: Settings) -> dict:
    from ml.contract import lake_status

    status = lake_status(settings.lake_dir).get("tables", {})
    path = labels_path(settings)
    return {
        "lake_rows": {name: s.get("rows") for name, s in status.items()},
        "labels_file": str(path),
        "labels_mtime": datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).isoformat(),
    }


def train(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> TrainResult:
    """Train, evaluate, report, register; promote if not worse than the champion (see module doc)."""
    from ml.models.lifecycle import registry
    from ml.models.lifecycle.evaluate import binary_metrics, group_metrics
    from ml.models.lifecycle.report import Report, plot_calibration, plot_importance, plot_lift_gain, plot_roc_pr, report_dir

    say = echo or (lambda _m: None)
    config = config or load_config()
    horizon = resolve_horizon(settings, config)
    split, features = training_frames(settings, config, horizon)
    x = {name: feature_matrix(getattr(split, name), features) for name in ("train", "valid", "test")}
    y = {name: getattr(split, name)["label"].to_numpy() for name in ("train", "valid", "test")}
    rows = {name: int(len(y[name])) for name in y}
    say(f"{MODEL_NAME}: {horizon}-day horizon, rows {rows}, positives {{{', '.join(f'{k}: {int(v.sum())}' for k, v in y.items())}}}")

    model = fit(x["train"], y["train"], x["valid"], y["valid"], config)
    p_test = predict(model, x["test"])
    baseline = baseline_fit(split.train.get("rfm_score"), y["train"])
    b_test = baseline_predict(baseline, split.test.get("rfm_score"))
    metrics = binary_metrics(y["test"], p_test)
    baseline_metrics = binary_metrics(y["test"], b_test)
    logistic = logistic_fit(x["train"], y["train"])
    l_test = logistic_predict(logistic, x["test"])
    logistic_metrics = binary_metrics(y["test"], l_test)
    promotion = config["promotion"]
    gate = (
        promotion["metric"],
        float(promotion.get("reference_margin", 0.0)),
        bool(promotion.get("higher_is_better", True)),
        float(promotion.get("reference_confidence", 0.95)),
    )
    losses = reference_losses(y["test"], p_test, {"rfm_baseline": b_test, "logistic": l_test}, *gate)
    say(
        f"{MODEL_NAME}: test ROC AUC {metrics['roc_auc']:.4f} vs RFM baseline {baseline_metrics['roc_auc']:.4f}, "
        f"logistic regression {logistic_metrics['roc_auc']:.4f}"
    )
    lightgbm_metrics, served_type = metrics, "lightgbm"
    if config.get("serve_logistic_when_better", True) and reference_losses(
        y["test"], p_test, {"logistic": l_test}, gate[0], 0.0, *gate[2:]
    ):
        # the reference is the better model on these rows: the family serves it (still gated by the RFM rule)
        served_type, model, p_test, metrics = (
            "logistic_regression",
            LogisticModel(logistic, list(x["train"].columns)),
            l_test,
            logistic_metrics,
        )
        losses = reference_losses(y["test"], p_test, {"rfm_baseline": b_test}, *gate)
        say(f"{MODEL_NAME}: the logistic regression beats LightGBM on the test rows beyond the noise: it is this version's model")

    sequence = train_sequence_model(settings, split, config, horizon, say)
    importance = _importance(model)
    fairness = _fairness(split.test, p_test, config, group_metrics)
    pca = _pca(x["test"], split.test.get("rfm_segment"), config)

    params = {
        **{f"lgb_{k}": v for k, v in config["lightgbm"].items()},
        "horizon_days": horizon,
        "best_iteration": model.best_iteration,
        "model_type": served_type,
        **{f"rows_{k}": v for k, v in rows.items()},
        **{f"split_{k}": v for k, v in split.boundaries.items()},
    }
    with registry.training_run(
        settings, MODEL_NAME, params=params, feature_service=config["feature_service"], features=features, snapshot=_snapshot(settings)
    ) as run:
        import mlflow

        registry.log_metrics(metrics, prefix="test_")
        registry.log_metrics(baseline_metrics, prefix="baseline_test_")
        registry.log_metrics(logistic_metrics, prefix="logistic_test_")
        if sequence is not None:
            registry.log_metrics(sequence["metrics"], prefix="gru_test_")
        serving, refit_tags = model, {}
        if config.get("refit", True):
            serving = refit_all(x, y, model.best_iteration, config) if served_type == "lightgbm" else refit_logistic(x, y)
            refit_tags = {"refit": "train+valid+test", "labelled_through": split.boundaries.get("test_end", "")}
        if served_type == "lightgbm":
            version = registry.log_model(serving, MODEL_NAME, flavor="lightgbm", tags={**refit_tags, "model_type": served_type})
        else:
            version = registry.log_model(
                serving, MODEL_NAME, flavor="sklearn", serialization_format="cloudpickle", tags={**refit_tags, "model_type": served_type}
            )
        champion_value = _champion_on(settings, split.test, features, y["test"], config)
        decision = registry.promote_if_not_worse(
            settings,
            MODEL_NAME,
            version.version,
            metric=config["promotion"]["metric"],
            value=metrics[config["promotion"]["metric"]],
            higher_is_better=bool(config["promotion"].get("higher_is_better", True)),
            tolerance=float(config["promotion"].get("tolerance", 0.0)),
            champion_value=champion_value,
            losses=losses,
        )
        run_id = run.info.run_id
        report = Report(f"{MODEL_NAME} — purchase in the next {horizon} days", subtitle=f"MLflow run {run_id}, version {version.version}")
        report.text(
            f"Trained on {rows['train']:,} user-weeks, early-stopped on {rows['valid']:,}, tested on {rows['test']:,} "
            f"(time split: {json.dumps(split.boundaries)}). Features: service `{config['feature_service']}`. "
            + (
                "The logistic regression beat LightGBM on the test rows beyond the noise "
                f"(ROC AUC {logistic_metrics['roc_auc']:.4f} vs {lightgbm_metrics['roc_auc']:.4f}), so this version is the logistic "
                "regression (explanations: coefficient x standardised value). "
                if served_type != "lightgbm"
                else ""
            )
            + (
                "The registered version is refit with the same parameters"
                + (f" and {model.best_iteration} rounds" if served_type == "lightgbm" else "")
                + " on all "
                f"{sum(rows.values()):,} labelled user-weeks (cutoffs through {refit_tags['labelled_through']}), so it "
                f"scores with the newest labels; the test metrics are those of the model fitted before the test cutoffs. "
                if refit_tags
                else ""
            )
            + f"Promotion: {decision.reason}"
        )
        report.metrics(
            f"Test metrics (the served model: {served_type}; LightGBM and its plain references: the RFM-score rule, a logistic regression)",
            {"propensity_lgbm (LightGBM)": lightgbm_metrics, "rfm_baseline": baseline_metrics, "logistic": logistic_metrics},
        )
        report.text(
            f"Reference gate ({promotion['metric']}, paired bootstrap on the test rows): "
            + (
                "passed, the model is not behind the RFM rule or the logistic regression beyond the noise."
                if not losses
                else "failed, not promoted: " + "; ".join(losses) + "."
            )
        )
        scores = {"propensity_lgbm": p_test, "rfm_baseline": b_test} | ({"logistic": l_test} if served_type == "lightgbm" else {})
        if sequence is not None:
            scores = {**scores, "propensity_gru": sequence["p_test"]}
            report.metrics(
                "Sequence model on the same split (propensity_gru)",
                {"propensity_gru": sequence["metrics"], "propensity_lgbm": metrics},
            )
            report.text(
                f"propensity_gru: GRU over each user's last {sequence['n_last']} events, trained on the "
                f"{sequence['rows_train']:,} most recent training rows, {sequence['epochs']} epochs "
                f"({sequence['seconds']:.0f} s CPU); registered version {sequence['version']}, "
                f"{'promoted' if sequence['promoted'] else 'not promoted'} ({sequence['decision']})."
            )
        report.figure("roc_pr", plot_roc_pr(y["test"], scores))
        report.figure("calibration", plot_calibration(y["test"], scores))
        report.figure("lift_gain", plot_lift_gain(y["test"], scores))
        report.figure("importance", plot_importance(importance))
        if fairness is not None:
            report.text(
                f"Fairness audit on the test rows (positive = top decile of scores); disparity ratio < "
                f"{config['fairness']['disparity_threshold']} is flagged. Audit attributes are not model features."
            )
            report.table("Fairness by group", fairness)
            mlflow.log_metric("fairness_flagged_groups", int(fairness["flagged"].sum()))
        if pca is not None:
            report.table("PCA of the standardised user feature space: variance explained", pca["variance"])
            report.figure("pca_segments", pca["figure"])
        path = report.write(report_dir(settings, MODEL_NAME, run_id), model=MODEL_NAME, run_id=run_id)
        registry.log_report(settings, path)
    say(f"{MODEL_NAME}: version {version.version} {'promoted' if decision.promoted else 'not promoted'} ({decision.reason}); report {path}")
    return TrainResult(
        run_id,
        str(version.version),
        metrics,
        baseline_metrics,
        decision,
        path,
        horizon,
        rows,
        sequence={k: v for k, v in (sequence or {}).items() if k not in ("model", "p_test")} or None,
        logistic_metrics=logistic_metrics,
        lightgbm_metrics=lightgbm_metrics,
        model_type=served_type,
    )


def train_sequence_model(settings: Settings, split, config: dict, horizon: int, say: Callable[[str], None]) -> dict | None:
    """propensity_gru on the same split and labels: fit, test metrics, own MLflow run and registered
    version, promoted if not worse than its champion on these test rows. None when disabled."""
    import time

    from ml.models.lifecycle import registry
    from ml.models.lifecycle.evaluate import binary_metrics
    from ml.models.user import sequence as seq

    options = config.get("sequence_model") or {}
    if not options.get("enabled", False):
        return None
    gru_config = seq.load_config()
    events = seq.load_events(settings)
    train_rows = split.train
    limit = options.get("max_train_rows")
    if limit and len(train_rows) > int(limit):  # the most recent rows: the GRU costs CPU per row
        train_rows = train_rows.sort_values("event_timestamp", kind="stable").iloc[-int(limit) :]
    cols = ["user_id", "event_timestamp", "label"]
    started = time.perf_counter()
    train = seq.build_sequences(events, train_rows[cols], gru_config.n_last, label_col="label")
    valid = seq.build_sequences(events, split.valid[cols], gru_config.n_last, vocab=train["vocab"], label_col="label")
    test = seq.build_sequences(events, split.test[cols], gru_config.n_last, vocab=train["vocab"], label_col="label")
    model, history = seq.fit(train, valid, gru_config)
    p_test = seq.predict(model, test)
    seconds = time.perf_counter() - started
    metrics = binary_metrics(split.test["label"].to_numpy(), p_test)
    say(f"{seq.MODEL_NAME}: test ROC AUC {metrics['roc_auc']:.4f} ({len(history)} epochs, {seconds:.0f} s)")
    champion_value = None
    try:
        champion, _ = registry.load_champion(settings, seq.MODEL_NAME)
        champion_p = seq.predict(champion, seq.sequences_for(champion, events, split.test[cols]))
        champion_value = float(binary_metrics(split.test["label"].to_numpy(), champion_p)["roc_auc"])
    except (registry.ModelLoadError, ValueError) as exc:
        log.info("no comparable %s champion: %s", seq.MODEL_NAME, exc)
    params = {
        **{f"gru_{k}": v for k, v in gru_config.to_dict().items()},
        "horizon_days": horizon,
        "rows_train": len(train_rows),
        "rows_valid": len(split.valid),
        "rows_test": len(split.test),
        "epochs_run": len(history),
        **{f"split_{k}": v for k, v in split.boundaries.items()},
    }
    features = ["event_type", "category_l1", "price_band", "gap_to_cutoff", "gap_prev", "n_events"]
    with registry.training_run(
        settings,
        seq.MODEL_NAME,
        params=params,
        feature_service="export:mart_user_event_sequences",
        features=features,
        snapshot=_snapshot(settings),
    ):
        registry.log_metrics(metrics, prefix="test_")
        version = registry.log_model(model, seq.MODEL_NAME, flavor="pytorch")
        decision = registry.promote_if_not_worse(
            settings,
            seq.MODEL_NAME,
            version.version,
            metric="roc_auc",
            value=metrics["roc_auc"],
            tolerance=float(config["promotion"].get("tolerance", 0.0)),
            champion_value=champion_value,
        )
    return {
        "model": model,
        "p_test": p_test,
        "metrics": metrics,
        "version": str(version.version),
        "promoted": bool(decision.promoted),
        "decision": decision.reason,
        "epochs": len(history),
        "seconds": round(seconds, 1),
        "rows_train": len(train_rows),
        "n_last": gru_config.n_last,
    }


def _importance(model) -> "pd.Series":
    import pandas as pd

    gain = model.feature_importance(importance_type="gain")
    return pd.Series(gain, index=model_features(model)).sort_values(ascending=False)


def _fairness(test: "pd.DataFrame", p: "np.ndarray", config: dict, group_metrics) -> "pd.DataFrame | None":
    import numpy as np
    import pandas as pd

    cfg = config.get("fairness") or {}
    threshold = float(np.quantile(p, 0.9)) if len(p) else 0.5
    frames = []
    for attribute in cfg.get("attributes", AUDIT_COLUMNS):
        if attribute not in test.columns or test[attribute].isna().all():
            continue
        table = group_metrics(
            test["label"].to_numpy(),
            p,
            test[attribute].fillna("unknown").astype(str),
            threshold=threshold,
            min_group=int(cfg.get("min_group", 30)),
            disparity_threshold=float(cfg.get("disparity_threshold", 0.8)),
        )
        table.insert(0, "attribute", attribute)
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else None


def _pca(x: "pd.DataFrame", segments, config: dict) -> dict | None:
    """PCA of the standardised numeric features: variance explained and a 2-D plot by RFM segment."""
    import numpy as np
    import pandas as pd
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    numeric = x.select_dtypes("number")
    numeric = numeric.loc[:, numeric.notna().any() & (numeric.std() > 0)]
    if numeric.shape[1] < 2 or len(numeric) < 10:
        return None
    limit = int((config.get("pca") or {}).get("max_rows", 20000))
    sample = numeric.sample(n=min(limit, len(numeric)), random_state=0)
    z = StandardScaler().fit_transform(sample.fillna(sample.median()))
    pca = PCA(n_components=min(5, z.shape[1]), random_state=0).fit(z)
    coords = pca.transform(z)[:, :2]
    variance = pd.DataFrame(
        {
            "component": [f"PC{i + 1}" for i in range(len(pca.explained_variance_ratio_))],
            "variance_explained": pca.explained_variance_ratio_.round(4),
            "cumulative": np.cumsum(pca.explained_variance_ratio_).round(4),
        }
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    labels = pd.Series(segments, index=x.index).reindex(sample.index).fillna("no_order_yet") if segments is not None else None
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=4, alpha=0.4)
    else:
        for name in sorted(labels.unique()):
            mask = (labels == name).to_numpy()
            ax.scatter(coords[mask, 0], coords[mask, 1], s=4, alpha=0.5, label=name)
        ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_xlabel(f"PC1 ({pca.explained_variance_ratio_[0]:.0%})")
    ax.set_ylabel(f"PC2 ({pca.explained_variance_ratio_[1]:.0%})")
    ax.set_title("Users in the first two principal components, by RFM segment")
    return {"variance": variance, "figure": fig}


def _champion_on(settings: Settings, test: "pd.DataFrame", features: list[str], y, config: dict) -> float | None:
    """The champion's test metric on the challenger's test rows (None: no champion, or it cannot
    score these features; the registry then compares with the champion's logged metric)."""
    from ml.models.lifecycle import registry
    from ml.models.lifecycle.evaluate import binary_metrics

    try:
        champion, version = registry.load_champion(settings, MODEL_NAME)
    except registry.ModelLoadError as exc:
        log.info("no comparable champion: %s", exc)
        return None
    if version.tags.get("refit"):  # it was refit on labelled rows that may include these test rows: its logged metric
        log.info("champion v%s was refit on its test rows: compared by its logged metric", version.version)
        return None
    try:
        p = predict(champion, feature_matrix(test, features))
    except PropensityError as exc:  # the champion used another feature list
        log.info("champion cannot score the challenger's test rows: %s", exc)
        return None
    return float(binary_metrics(y, p)[config["promotion"]["metric"]])


# --- scoring -------------------------------------------------------------------------------------


def load_population(settings: Settings) -> "pd.DataFrame":
    """The users to score: the label mart's last cutoff (lake_last_date + 1, labels not known yet)."""
    labels = load_labels(settings, 7)
    if labels.empty:
        raise PropensityError(f"{LABELS_MART} is empty: nothing to score")
    last = labels["event_timestamp"].max()
    return labels.loc[labels["event_timestamp"] == last, ["user_id", "event_timestamp", "cutoff_date"]].reset_index(drop=True)


def score(settings: Settings, config: dict | None = None, echo: Callable[[str], None] | None = print) -> dict:
    """Score the current population with the champion; write the partition and the Feast source.

    Raises (writing nothing, so the previous scores stay served) when the champion is missing or
    fails to load, the population is empty or the features cannot be read.
    """
    import pandas as pd

    from ml.features.training import build_training_set
    from ml.models.lifecycle import outputs, registry

    say = echo or (lambda _m: None)
    config = config or load_config()
    model, version = registry.load_champion(settings, MODEL_NAME)
    population = load_population(settings)
    if population.empty:
        raise PropensityError("empty scoring population: no user is known at the last cutoff")
    frame = build_training_set(settings, population, config["feature_service"])
    x = feature_matrix(frame, [c for c in model_features(model)])
    p = predict(model, x)
    scoring_date = pd.Timestamp(population["cutoff_date"].iloc[0]).date()
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str),
            "event_timestamp": frame["event_timestamp"],
            "scoring_date": scoring_date,
            "propensity_score": p.round(6),
            "propensity_decile": (10 - pd.qcut(pd.Series(p).rank(method="first"), 10, labels=False)).astype("int64")
            if len(p) >= 10
            else pd.Series([1] * len(p), dtype="int64"),
            "model_version": str(version.version),
        }
    )
    out = pd.concat([out, explain(model, x, int(config["explanations"]["top_k"])).reset_index(drop=True)], axis=1)
    path = outputs.write_partition(settings, MODEL_NAME, out, scoring_date)
    say(f"{MODEL_NAME}: scored {len(out):,} users for {scoring_date} with version {version.version} -> {path}")
    return {"rows": len(out), "scoring_date": str(scoring_date), "model_version": str(version.version), "path": str(path)}
