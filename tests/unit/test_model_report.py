"""HTML reports: index.html beside its PNGs (relative links), report.json, list_reports, plots."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from ml.models.lifecycle.report import (
    Report,
    list_reports,
    plot_calibration,
    plot_importance,
    plot_lift_gain,
    plot_roc_pr,
    report_dir,
)
from ml.settings import settings_for

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = rng.binomial(1, 0.3, size=400)
    model = np.clip(0.2 + 0.4 * y + rng.normal(0, 0.15, size=400), 0.01, 0.99)
    return y, {"model": model, "baseline": rng.random(400)}


def test_report_writes_index_referencing_existing_pngs(tmp_path, scored):
    y, scores = scored
    report = Report("propensity_lgbm <test>", subtitle="run abc")
    report.text("Trained on **1,000** rows.\n\n- one\n- two")
    report.metrics("Test metrics", {"model": {"roc_auc": 0.91, "n": 400}, "baseline": {"roc_auc": 0.5, "n": 400}})
    report.metrics("Flat", {"roc_auc": 0.9, "lift_top_decile": float("nan")})
    report.table("Groups", pd.DataFrame({"group": ["a", "b"], "n": [10, 20], "flagged": [False, True]}))
    report.figure("ROC / PR", plot_roc_pr(y, scores))
    report.figure("calibration", plot_calibration(y, scores))
    report.figure("lift_gain", plot_lift_gain(y, scores))
    report.figure("importance", plot_importance(pd.Series({"f1": 3.0, "f2": 1.0, "f3": 2.0}, name="gain")))

    index = report.write(tmp_path / "propensity_lgbm" / "run1")
    assert index == tmp_path / "propensity_lgbm" / "run1" / "index.html"
    html = index.read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 4
    for src in sources:
        assert "/" not in src and src.endswith(".png")  # relative, beside index.html
        assert (index.parent / src).read_bytes().startswith(PNG_MAGIC)
    assert "&lt;test&gt;" in html and "<test>" not in html  # titles are escaped
    assert "<strong>1,000</strong>" in html and "<li>one</li>" in html  # markdown rendered
    assert "0.91" in html and "roc_auc" in html and "flagged" in html
    meta = json.loads((index.parent / "report.json").read_text())
    assert meta["model"] == "propensity_lgbm" and meta["run_id"] == "run1" and meta["title"] == "propensity_lgbm <test>"
    assert meta["created_at"]


def test_figures_are_closed_after_being_added(tmp_path, scored):
    import matplotlib.pyplot as plt

    y, scores = scored
    before = len(plt.get_fignums())
    report = Report("t")
    report.figure("roc", plot_roc_pr(y, scores)).figure("roc", plot_calibration(y, scores))
    assert len(plt.get_fignums()) == before
    report.write(tmp_path / "r")
    assert (tmp_path / "r" / "roc.png").exists() and (tmp_path / "r" / "roc_2.png").exists()  # same name: no overwrite


def test_text_accepts_html_and_escapes_markdown_html(tmp_path):
    report = Report("t").text("<p class='x'>raw <b>html</b></p>").text("a <script>alert(1)</script> b")
    html = report.write(tmp_path / "r").read_text()
    assert "<p class='x'>raw <b>html</b></p>" in html
    assert "<script>" not in html


def test_list_reports_and_report_dir(tmp_path):
    settings = settings_for(data_dir=tmp_path / "data")
    assert list_reports(settings) == []
    first = report_dir(settings, "propensity_lgbm", "run1")
    assert first == settings.reports_dir / "propensity_lgbm" / "run1"
    Report("first").write(first)
    Report("second").write(report_dir(settings, "cart_decay", "run2"))
    (settings.reports_dir / "stray").mkdir()  # not a report
    reports = list_reports(settings)
    assert {(r["model"], r["run_id"], r["title"]) for r in reports} == {
        ("propensity_lgbm", "run1", "first"),
        ("cart_decay", "run2", "second"),
    }
    assert all(r["path"].name == "index.html" and r["path"].exists() for r in reports)
    assert reports[0]["created_at"] >= reports[1]["created_at"]


def test_a_table_indexed_by_model_shows_the_model_names(tmp_path):
    report = Report("r")
    report.table("Indexed", pd.DataFrame({"ndcg@10": [0.38, 0.13]}, index=pd.Index(["recs_lgbm", "popularity"], name="model")))
    report.table("Plain", pd.DataFrame({"group": ["a", "b"], "n": [1, 2]}).sort_values("n", ascending=False))
    html = report.write(tmp_path / "m" / "run").read_text()
    indexed = html[html.index("Indexed") : html.index("Plain")]
    assert "<th>model</th><th>ndcg@10</th>" in indexed and "<td>recs_lgbm</td>" in indexed and "<td>popularity</td>" in indexed
    plain = html[html.index("Plain") :]
    assert "<th>group</th><th>n</th>" in plain and "<td>0</td>" not in plain  # row numbers (here 1, 0) stay out
