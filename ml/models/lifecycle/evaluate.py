"""Binary-classifier evaluation: ranking and probability metrics, lift/gain, calibration, fairness.

    binary_metrics(y, p)        roc_auc, pr_auc, log_loss, brier, lift_top_decile, positive_rate, n
    lift_table(y, p)            per score decile (1 = highest scores): n, positives, rate, lift, cumulative_gain
    calibration_table(y, p)     per probability bin: mean predicted vs observed rate
    group_metrics(y, p, groups) per group: rates, tpr/fpr, AUC, disparity ratios vs the best group, flagged
    check_labels(y)             InsufficientLabelsError when too few positives or negatives to train/evaluate

``y`` holds 0/1 labels (no nulls: filter unlabelled rows first), ``p`` scores (probabilities for the
probability metrics). "Top decile" is the highest-scoring 10% of rows; rows tied with the last one
selected are included, so a constant score selects everyone (lift 1) rather than an arbitrary subset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

TOP_FRACTION = 0.1
EPS = 1e-15


class InsufficientLabelsError(ValueError):
    """Too few positive or negative labels; ``positives``, ``negatives`` hold the counts."""

    def __init__(self, message: str, positives: int, negatives: int):
        super().__init__(message)
        self.positives = positives
        self.negatives = negatives


def _arrays(y, p) -> tuple["np.ndarray", "np.ndarray"]:
    import numpy as np

    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {p.size}")
    if np.isnan(y).any():
        raise ValueError(f"{int(np.isnan(y).sum())} labels are null: keep only labelled rows")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(p).any():
        raise ValueError(f"{int(np.isnan(p).sum())} scores are NaN")
    return y.astype(int), p


def top_mask(p, fraction: float = TOP_FRACTION) -> "np.ndarray":
    """Rows in the top ``fraction`` by score (ties with the cut-off score included)."""
    import numpy as np

    p = np.asarray(p, dtype=float)
    if p.size == 0:
        return np.zeros(0, dtype=bool)
    k = max(1, int(np.ceil(fraction * p.size)))
    cutoff = np.sort(p)[::-1][k - 1]
    return p >= cutoff


def check_labels(y, min_positives: int = 20, min_negatives: int = 20) -> dict[str, int]:
    """Counts of positives / negatives; raises InsufficientLabelsError below the minimums."""
    import numpy as np

    values = np.asarray(y, dtype=float).ravel()
    labelled = values[~np.isnan(values)]
    positives = int((labelled == 1).sum())
    negatives = int((labelled == 0).sum())
    if positives < min_positives or negatives < min_negatives:
        raise InsufficientLabelsError(
            f"insufficient labels: {positives} positives (need >= {min_positives}) and {negatives} negatives "
            f"(need >= {min_negatives}) among {labelled.size} labelled rows",
            positives,
            negatives,
        )
    return {"positives": positives, "negatives": negatives, "n": int(labelled.size)}


def binary_metrics(y, p) -> dict[str, Any]:
    """ROC AUC, average precision (PR AUC), log loss, Brier score, top-decile lift, expected
    calibration error (``ece``), positive rate, n.

    With a single class present the ranking metrics are NaN (undefined), the rest still computed.
    """
    import numpy as np
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y, p = _arrays(y, p)
    n = int(y.size)
    if n == 0:
        raise ValueError("binary_metrics: no rows")
    rate = float(y.mean())
    both = 0 < y.sum() < n
    clipped = np.clip(p, EPS, 1 - EPS)
    top = top_mask(p)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, clipped, pos_label=1)),
        "lift_top_decile": float(y[top].mean() / rate) if rate > 0 else float("nan"),
        "ece": expected_calibration_error(y, p),
        "positive_rate": rate,
        "n": n,
    }


def expected_calibration_error(y, p, bins: int = 10) -> float:
    """Calibration: rows ranked by score cut into ``bins`` equal-count bins; the row-weighted mean of
    |observed rate - mean predicted probability| per bin (0 = calibrated). A base rate that moved
    between training and test (a season) shows here even when the ranking holds."""
    import numpy as np

    y, p = _arrays(y, p)
    if y.size == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    return float(sum(abs(y[part].mean() - p[part].mean()) * part.size for part in np.array_split(order, min(bins, y.size))) / y.size)


def lift_table(y, p, bins: int = 10) -> "pd.DataFrame":
    """Rows ranked by score (highest first) cut into ``bins`` equal-count bins (decile 1 = top).

    Columns: decile, n, positives, rate, lift (rate / overall rate), cumulative_gain (share of all
    positives captured down to this bin), cumulative_population, score_min, score_max.
    """
    import numpy as np
    import pandas as pd

    y, p = _arrays(y, p)
    n = y.size
    order = np.argsort(-p, kind="stable")
    decile = np.empty(n, dtype=int)
    decile[order] = np.arange(n) * bins // max(n, 1) + 1
    frame = pd.DataFrame({"decile": decile, "y": y, "p": p})
    table = (
        frame.groupby("decile").agg(n=("y", "size"), positives=("y", "sum"), score_min=("p", "min"), score_max=("p", "max")).reset_index()
    )
    overall = y.mean() if n else float("nan")
    table["rate"] = table["positives"] / table["n"]
    table["lift"] = table["rate"] / overall if overall > 0 else float("nan")
    total = y.sum()
    table["cumulative_gain"] = table["positives"].cumsum() / total if total > 0 else float("nan")
    table["cumulative_population"] = table["n"].cumsum() / n
    return table[["decile", "n", "positives", "rate", "lift", "cumulative_gain", "cumulative_population", "score_min", "score_max"]]


def calibration_table(y, p, bins: int = 10, strategy: str = "quantile") -> "pd.DataFrame":
    """Reliability table: per probability bin, n, mean_predicted, observed_rate, p_min, p_max.

    ``strategy="quantile"`` (equal-count bins; suits skewed propensities) or ``"uniform"`` (equal
    width on [0, 1]). Empty bins are dropped.
    """
    import numpy as np
    import pandas as pd

    y, p = _arrays(y, p)
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1))) if p.size else np.array([0.0, 1.0])
    elif strategy == "uniform":
        edges = np.linspace(0, 1, bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    frame = pd.DataFrame({"bin": index + 1, "y": y, "p": p})
    table = (
        frame.groupby("bin")
        .agg(n=("y", "size"), mean_predicted=("p", "mean"), observed_rate=("y", "mean"), p_min=("p", "min"), p_max=("p", "max"))
        .reset_index()
    )
    return table


def group_metrics(y, p, groups, threshold: float | None = None, min_group: int = 30, disparity_threshold: float = 0.8) -> "pd.DataFrame":
    """Per-group rates and disparity ratios (a fairness audit of a scoring policy).

    A row is predicted positive when ``p >= threshold``, or, without a threshold, when it lies in
    the overall top decile of scores. Per group: n, positives, positive_rate,
    predicted_positive_rate, tpr, fpr, roc_auc (NaN with one class), too_small (n < min_group),
    ppr_ratio / tpr_ratio (the group's rate divided by the highest rate among the groups that are
    not too small) and ``flagged``: a ratio below ``disparity_threshold`` in a group that is not too
    small. Null group values are reported as the group "missing".
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    y, p = _arrays(y, p)
    g = pd.Series(groups).reset_index(drop=True)
    if len(g) != y.size:
        raise ValueError(f"groups differ in length from labels: {len(g)} vs {y.size}")
    g = g.astype(object).where(g.notna(), "missing").astype(str)
    predicted = p >= threshold if threshold is not None else top_mask(p)
    rows = []
    for name, idx in g.groupby(g, sort=True).groups.items():
        idx = np.asarray(idx)
        yy, pp, pred = y[idx], p[idx], predicted[idx]
        pos, neg = yy == 1, yy == 0
        rows.append(
            {
                "group": name,
                "n": int(idx.size),
                "positives": int(pos.sum()),
                "positive_rate": float(pos.mean()),
                "predicted_positive_rate": float(pred.mean()),
                "tpr": float(pred[pos].mean()) if pos.any() else float("nan"),
                "fpr": float(pred[neg].mean()) if neg.any() else float("nan"),
                "roc_auc": float(roc_auc_score(yy, pp)) if pos.any() and neg.any() else float("nan"),
                "too_small": bool(idx.size < min_group),
            }
        )
    table = pd.DataFrame(
        rows, columns=["group", "n", "positives", "positive_rate", "predicted_positive_rate", "tpr", "fpr", "roc_auc", "too_small"]
    )
    eligible = table[~table["too_small"]]
    for rate, ratio in (("predicted_positive_rate", "ppr_ratio"), ("tpr", "tpr_ratio")):
        best = eligible[rate].max() if len(eligible) else float("nan")
        table[ratio] = table[rate] / best if best and best > 0 else float("nan")
    low = (table["ppr_ratio"] < disparity_threshold) | (table["tpr_ratio"] < disparity_threshold)
    table["flagged"] = low & ~table["too_small"]
    return table
