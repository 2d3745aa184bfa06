"""Differentially private exports on a real dbt build: the user-level export
mart_user_category_region_week recounted from fct_order_lines, then dp_export against a fresh ledger:
released figures within a few noise scales of the bounded truth, suppression, totals, no user_id, and
the budget refusing a second release beyond the total."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml import warehouse
from ml.governance.privacy import (
    CELL,
    OUTPUT_COLUMNS,
    SOURCE_MART,
    BudgetExceededError,
    BudgetLedger,
    ContributionBounds,
    bound_contributions,
    cell_domain,
    dp_export,
    source_path,
    true_aggregates,
)
from ml.settings import settings_for

pytestmark = pytest.mark.integration

# epsilon 8 split in half, k = 4, cap 200: buyers noise scale 4 / 4 = 1, revenue noise scale 800 / 4 = 200.
# min_buyers 3: tiny's customers rebuy across many weeks, so bounding to 4 cells each leaves at most 12
# buyers in a cell (measured); the "large cells" check needs cells 8 noise scales above the threshold.
PARAMS = dict(epsilon=8.0, min_buyers=3, max_cells_per_user=4, revenue_cap=200.0, seed=7)


@pytest.fixture
def dp_settings(built_warehouse, tmp_path):
    """The session's tiny warehouse with a fresh ledger and report folder (total epsilon 10)."""
    return settings_for(
        data_dir=built_warehouse.data_dir,
        feast_repo_dir=built_warehouse.feast_repo_dir,
        privacy_ledger_path=tmp_path / "ledger.sqlite",
        privacy_exports_dir=tmp_path / "exports",
        privacy_total_epsilon=10.0,
    )


def test_user_level_export_recounts_the_order_lines(built_warehouse):
    mart = pd.read_parquet(source_path(built_warehouse))
    assert list(mart.columns) == ["user_id", *CELL, "revenue", "order_count"]
    assert len(mart) > 500 and not mart.duplicated(["user_id", *CELL]).any()
    assert mart[["user_id", *CELL, "revenue", "order_count"]].notna().all().all()
    con = warehouse.connect(built_warehouse)
    try:
        expected = con.execute(
            """
            select coalesce(i.category_l1, 'unknown') as category_l1, coalesce(u.region, 'unknown') as region,
                   date_trunc('week', l.order_date)::date as week,
                   count(distinct l.user_id) as buyers, coalesce(sum(l.net_revenue), 0) as revenue,
                   count(distinct l.order_id) as orders
            from fct_order_lines l
            left join dim_items i using (item_id)
            left join dim_users u using (user_id)
            where l.status <> 'cancelled'
            group by all
            """
        ).df()
        all_users = set(con.execute("select user_id from dim_users").df()["user_id"])
    finally:
        con.close()
    assert set(mart["user_id"]) <= all_users
    got = mart.groupby(CELL, as_index=False).agg(buyers=("user_id", "nunique"), revenue=("revenue", "sum"), orders=("order_count", "sum"))

    def by_cell(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(week=pd.to_datetime(frame["week"]).astype("datetime64[ns]")).sort_values(CELL).reset_index(drop=True)

    got, expected = by_cell(got), by_cell(expected)
    pd.testing.assert_frame_equal(got[CELL], expected[CELL])
    assert (got["buyers"].to_numpy() == expected["buyers"].to_numpy()).all()
    assert np.allclose(got["revenue"], expected["revenue"])
    assert (got["orders"].to_numpy() == expected["orders"].to_numpy()).all()  # each order belongs to one user
    assert (pd.to_datetime(mart["week"]).dt.dayofweek == 0).all()  # weeks start on Monday


def test_dp_export_tracks_the_truth_and_suppresses_small_cells(dp_settings):
    summary = dp_export(dp_settings, **PARAMS)
    assert summary["buyers_noise_scale"] == 1.0 and summary["revenue_noise_scale"] == 200.0
    report = pd.read_csv(summary["path"])
    assert list(report.columns) == OUTPUT_COLUMNS
    assert "user_id" not in open(summary["path"]).read()

    # The exact bounded figures, recomputed from the dbt export with the same bounds.
    rows = pd.read_parquet(source_path(dp_settings))
    bounds = ContributionBounds(max_cells_per_user=4, revenue_cap=200.0)
    cells = cell_domain(rows)
    exact = true_aggregates(bound_contributions(rows, bounds), cells).assign(week=lambda f: f["week"].dt.strftime("%Y-%m-%d"))
    assert summary["cells"] == len(cells) == rows["category_l1"].nunique() * rows["region"].nunique() * len(cells["week"].unique())
    assert summary["cells_released"] == len(report) and summary["cells_released"] + summary["cells_suppressed"] == len(cells)

    joined = report.merge(exact, on=CELL, suffixes=("", "_true"), validate="one_to_one")
    assert len(joined) == len(report)
    assert (joined["buyers"] >= PARAMS["min_buyers"]).all()
    # Every figure within 8 noise scales (+ rounding) of the bounded truth: P(|Laplace| > 8b) = 3e-4.
    assert (abs(joined["buyers"] - joined["buyers_true"]) <= 8 * 1.0 + 0.5).all()
    assert (abs(joined["revenue"] - joined["revenue_true"]) <= 8 * 200.0 + 0.5).all()
    # Large cells (true buyers 8 scales above the threshold) are all released; empty ones almost never.
    large = exact[exact["buyers"] >= PARAMS["min_buyers"] + 8]
    assert len(large) > 0 and set(map(tuple, large[CELL].values)) <= set(map(tuple, report[CELL].values))
    empty_released = joined[joined["buyers_true"] == 0]
    assert len(empty_released) <= max(2, 0.05 * (exact["buyers"] == 0).sum())
    # Totals over the released cells: the noise averages out (sd of a sum of n Laplace(b) = b sqrt(2n)).
    n = len(joined)
    assert abs(joined["buyers"].sum() - joined["buyers_true"].sum()) <= 6 * 1.0 * math.sqrt(2 * n) + 0.5 * n
    assert abs(joined["revenue"].clip(lower=0).sum() - joined["revenue_true"].sum()) <= 6 * 200.0 * math.sqrt(2 * n) + 0.5 * n
    # Bounding only removes: the released population is the bounded one, never above the raw one.
    internal = summary["internal"]
    assert internal["revenue_after_bounding"] <= internal["revenue_before_bounding"] + 1e-6
    assert internal["revenue_after_bounding"] == pytest.approx(exact["revenue"].sum())


def test_a_second_export_beyond_the_budget_is_refused(dp_settings):
    first = dp_export(dp_settings, **PARAMS)
    assert (first["epsilon_spent"], first["epsilon_remaining"]) == pytest.approx((8.0, 2.0))
    with pytest.raises(BudgetExceededError, match=r"spent 8 of 10, remaining 2, requested 8"):
        dp_export(dp_settings, **PARAMS)
    assert len(list(dp_settings.privacy_exports_dir.iterdir())) == 1
    last = dp_export(dp_settings, **{**PARAMS, "epsilon": 2.0, "fmt": "parquet"})
    assert last["epsilon_remaining"] == pytest.approx(0.0)
    assert list(pd.read_parquet(last["path"]).columns) == OUTPUT_COLUMNS
    ledger = BudgetLedger.from_settings(dp_settings)
    assert [(r["dataset"], r["epsilon"]) for r in ledger.releases()] == [(SOURCE_MART, 8.0), (SOURCE_MART, 2.0)]
    assert ledger.summary()[0]["remaining"] == pytest.approx(0.0)
    with pytest.raises(BudgetExceededError):
        dp_export(dp_settings, **{**PARAMS, "epsilon": 0.01})
