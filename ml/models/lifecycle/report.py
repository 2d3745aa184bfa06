"""Self-contained HTML model reports: one ``index.html`` with PNG plots beside it (relative links).

    report = Report("propensity_lgbm", subtitle="run 1234")
    report.text("Trained on **52k** user-weeks ...")          # Markdown, or HTML when it starts with "<"
    report.metrics("Test metrics", {"model": metrics, "baseline": baseline_metrics})
    report.table("Fairness by group", frame)
    report.figure("roc_pr", plot_roc_pr(y, {"model": p, "baseline": b}))
    path = report.write(report_dir(settings, "propensity_lgbm", run_id))   # .../index.html
    list_reports(settings)   # [{model, run_id, created_at, title, path}, ...] newest first

Reports live at ``settings.reports_dir/<model>/<run_id>/`` with a small ``report.json`` (model,
run_id, created_at, title) that ``list_reports`` reads. Plots use matplotlib's Agg backend (set in
the functions, never on import); a figure is rendered to PNG and closed when it is added.
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

INDEX = "index.html"
META = "report.json"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}.subtitle{color:#666;margin-top:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-size:.85rem}footer{color:#888;font-size:.8rem;margin-top:3rem}
"""


def _agg():
    """matplotlib with the non-interactive Agg backend (headless workers, tests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name.strip()).strip("_").lower()
    return slug or "figure"


def _fmt(value: Any) -> str:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "–"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    return html.escape(str(value))


def _frame_html(frame: "pd.DataFrame", max_rows: int, index: bool) -> str:
    shown = frame.head(max_rows)
    columns = ([html.escape(str(shown.index.name or ""))] if index else []) + [html.escape(str(c)) for c in shown.columns]
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = []
    for label, row in shown.iterrows():
        cells = ([f"<td>{_fmt(label)}</td>"] if index else []) + [f"<td>{_fmt(v)}</td>" for v in row.tolist()]
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">first {max_rows:,} of {len(frame):,} rows</p>' if len(frame) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


class Report:
    """An HTML report assembled section by section; ``write(directory)`` renders it."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self._sections: list[str] = []
        self._images: dict[str, bytes] = {}

    def text(self, md_or_html: str) -> "Report":
        """A paragraph: Markdown (rendered, raw HTML escaped), or HTML when it starts with ``<``."""
        content = md_or_html.strip()
        if content.startswith("<"):
            self._sections.append(content)
        else:
            from markdown_it import MarkdownIt

            self._sections.append(MarkdownIt("commonmark", {"html": False}).enable("table").render(content))
        return self

    def metrics(self, name: str, values: "dict | pd.DataFrame") -> "Report":
        """A metrics table: a flat dict (metric -> value), a dict of dicts (column -> metrics) or a frame."""
        import pandas as pd

        if isinstance(values, pd.DataFrame):
            return self.table(name, values, max_rows=200)  # a frame indexed by model shows the model names
        if values and all(isinstance(v, dict) for v in values.values()):
            frame, index = pd.DataFrame(values), True
            frame.index.name = "metric"
        else:
            frame, index = pd.DataFrame({"value": pd.Series(values, dtype=object)}), True
            frame.index.name = "metric"
        self._sections.append(f"<h2>{html.escape(name)}</h2>{_frame_html(frame, 200, index)}")
        return self

    def table(self, name: str, frame: "pd.DataFrame", max_rows: int = 100) -> "Report":
        """A frame as a table; its index is the first column unless it is unnamed row numbers (a table
        indexed by model shows the model names; the row numbers left by a sort or a filter do not show)."""
        import pandas as pd

        default = frame.index.name is None and pd.api.types.is_integer_dtype(frame.index)
        self._sections.append(f"<h2>{html.escape(name)}</h2>{_frame_html(frame, max_rows, not default)}")
        return self

    def figure(self, name: str, fig: "Figure", caption: str = "") -> "Report":
        """Render ``fig`` to ``<name>.png`` (written beside index.html) and close it."""
        import io

        stem, n = _slug(name), 1
        filename = f"{stem}.png"
        while filename in self._images:
            n += 1
            filename = f"{stem}_{n}.png"
        buffer = io.BytesIO()
        try:
            fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        finally:
            _agg().close(fig)
        self._images[filename] = buffer.getvalue()
        cap = f"<p class='note'>{html.escape(caption)}</p>" if caption else ""
        self._sections.append(f'<figure><img src="{filename}" alt="{html.escape(name)}">{cap}</figure>')
        return self

    def render(self) -> str:
        created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        subtitle = f'<p class="subtitle">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{subtitle}\n"
            + "\n".join(self._sections)
            + f"\n<footer>Generated {created} by ecomml</footer></body></html>\n"
        )

    def write(self, directory: Path | str, model: str | None = None, run_id: str | None = None) -> Path:
        """Write index.html, the PNGs and report.json into ``directory``; returns the index.html path.

        ``model`` / ``run_id`` default to the folder layout ``<reports_dir>/<model>/<run_id>/``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for filename, data in self._images.items():
            (directory / filename).write_bytes(data)
        index = directory / INDEX
        index.write_text(self.render(), encoding="utf-8")
        meta = {
            "model": model or directory.parent.name,
            "run_id": run_id or directory.name,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "title": self.title,
            "figures": sorted(self._images),
        }
        (directory / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return index


def report_dir(settings: Settings, model_name: str, run_id: str) -> Path:
    """Where the report of one training run lives: ``settings.reports_dir/<model>/<run_id>/``."""
    return Path(settings.reports_dir) / model_name / run_id


def list_reports(settings: Settings) -> list[dict]:
    """Every report under ``settings.reports_dir``, newest first: model, run_id, created_at, title, path."""
    root = Path(settings.reports_dir)
    found = []
    for index in root.glob(f"*/*/{INDEX}"):
        meta: dict = {}
        try:
            meta = json.loads((index.parent / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        created = meta.get("created_at") or datetime.fromtimestamp(index.stat().st_mtime, tz=timezone.utc).isoformat(timespec="seconds")
        found.append(
            {
                "model": meta.get("model") or index.parent.parent.name,
                "run_id": meta.get("run_id") or index.parent.name,
                "created_at": created,
                "title": meta.get("title", ""),
                "path": index,
            }
        )
    return sorted(found, key=lambda r: r["created_at"], reverse=True)


# --- plots -----------------------------------------------------------------------------------------


def _scores(scores) -> dict:
    import numpy as np

    return {name: np.asarray(values, dtype=float) for name, values in scores.items()}


def plot_roc_pr(y, scores: dict) -> "Figure":
    """ROC and precision-recall curves of each named score, AUCs in the legend."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    plt = _agg()
    y = np.asarray(y, dtype=int)
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, p in _scores(scores).items():
        if 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, p)
            roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
            precision, recall, _ = precision_recall_curve(y, p)
            pr.plot(recall, precision, label=f"{name} (AP {average_precision_score(y, p):.3f})")
    roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr.axhline(y.mean() if y.size else 0, color="grey", lw=0.8, ls="--")
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for ax in (roc, pr):
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_calibration(y, scores: dict, bins: int = 10) -> "Figure":
    """Reliability diagram: mean predicted probability vs observed rate per quantile bin."""
    from ml.models.lifecycle.evaluate import calibration_table

    plt = _agg()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    top = 0.0
    for name, p in _scores(scores).items():
        table = calibration_table(y, p, bins=bins)
        ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=name)
        top = max(top, float(table["mean_predicted"].max()), float(table["observed_rate"].max()))
    top = min(1.0, top * 1.05 or 1.0)
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration", xlim=(0, top), ylim=(0, top))
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_lift_gain(y, scores: dict, bins: int = 10) -> "Figure":
    """Lift per score decile (bars) and the cumulative gain curve of each named score."""
    import numpy as np

    from ml.models.lifecycle.evaluate import lift_table

    plt = _agg()
    fig, (lift, gain) = plt.subplots(1, 2, figsize=(11, 4.5))
    named = _scores(scores)
    width = 0.8 / max(len(named), 1)
    for i, (name, p) in enumerate(named.items()):
        table = lift_table(y, p, bins=bins)
        lift.bar(table["decile"] + (i - (len(named) - 1) / 2) * width, table["lift"], width=width, label=name)
        gain.plot(np.r_[0, table["cumulative_population"]], np.r_[0, table["cumulative_gain"]], marker=".", label=name)
    lift.axhline(1, color="grey", lw=0.8, ls="--")
    lift.set(xlabel="score decile (1 = highest)", ylabel="lift", title="Lift by decile", xticks=range(1, bins + 1))
    gain.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="random")
    gain.set(xlabel="share of population (highest scores first)", ylabel="share of positives", title="Cumulative gain")
    for ax in (lift, gain):
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_importance(series: "pd.Series", top: int = 20, title: str = "Feature importance") -> "Figure":
    """Horizontal bars of the ``top`` largest values of ``series`` (index = feature names)."""
    plt = _agg()
    values = series.sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(values) + 1.2))
    ax.barh([str(i) for i in values.index], values.to_numpy())
    ax.set(title=title, xlabel=str(series.name or "importance"))
    fig.tight_layout()
    return fig
