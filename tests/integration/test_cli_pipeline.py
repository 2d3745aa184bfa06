"""The pipeline without Airflow through the real CLI: generate -> dbt build -> feast apply -> materialize -> read online."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import duckdb
import pytest

pytestmark = pytest.mark.integration


def _cli(args, data_dir, timeout=600):
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "ml", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_pipeline_leaves_warehouse_features_and_online_values(tmp_path):
    data_dir = tmp_path / "data"
    result = _cli(["pipeline", "--scale", "tiny"], data_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Where to look" in out
    for name in ("feat_user_rfm", "feat_user_activity", "feat_item_stats", "feat_item_warehouse_demand"):
        assert (data_dir / "warehouse" / "features" / f"{name}.parquet").exists()
    assert (data_dir / "warehouse" / "warehouse.duckdb").exists()
    assert (data_dir / "feast" / "online_store.db").exists()

    # The printed query works and returns the user's latest RFM values.
    user_id = re.search(r"--entity user_id=(\S+)", out).group(1)
    online = _cli(["features", "online", "--service", "propensity_lgbm_v1", "--entity", f"user_id={user_id}"], data_dir)
    assert online.returncode == 0, online.stderr[-3000:]
    values = json.loads(online.stdout)
    latest = (
        duckdb.connect()
        .execute(
            "select order_count_lifetime from read_parquet(?) where user_id = ? order by event_timestamp desc limit 1",
            [str(data_dir / "warehouse" / "features" / "feat_user_rfm.parquet"), user_id],
        )
        .fetchone()[0]
    )
    assert values["user_id"] == user_id
    assert values["order_count_lifetime"] == latest

    # the models were trained, registered and their scores served
    assert re.search(r"propensity_lgbm v1 +(lightgbm|logistic_regression): test ROC AUC [0-9.]+ vs RFM rule", out), out[-2000:]
    assert list((data_dir / "warehouse" / "scores" / "propensity_lgbm").glob("scoring_date=*/part.parquet"))
    assert list((data_dir / "reports" / "propensity_lgbm").glob("*/index.html"))
    assert re.search(r"recs_(widedeep|lgbm|fm) v1 +served ranker: test NDCG@10", out), out[-2000:]

    # every report names its models: each metrics table starts with a model (or metric x model) column,
    # and no promoted model shows as "version ?" / "pending"
    reports = sorted((data_dir / "reports").glob("*/*/index.html"))
    assert {r.parent.parent.name for r in reports} >= {"propensity_lgbm", "recs_widedeep", "demand_backtest", "cart_abandonment"}
    for report in reports:
        html = report.read_text()
        assert not re.search(r"version \?|pending", html), report
        for title, table in re.findall(r"<h2>(.*?)</h2><table.*?>(.*?)</table>", html, re.S):
            first = re.search(r"<th>(.*?)</th>", table).group(1)
            assert first, f"{report}: table {title!r} has an unnamed first column"
            if re.search(r"metrics|Backtest|origin|protocols|Cold start|Sequence model", title):
                assert first in ("model", "metric"), f"{report}: table {title!r} starts with {first!r}"
    assert list((data_dir / "warehouse" / "scores" / "recs_widedeep").glob("scoring_date=*/part.parquet"))

    # Idempotent: a second run succeeds on the existing state (models: tests/integration/test_propensity.py).
    again = _cli(["pipeline", "--scale", "tiny", "--no-models"], data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
