"""Differentially private exports (ml/governance/privacy.py): the noise is Laplace(sensitivity/epsilon),
contribution bounding gives that sensitivity, the ledger refuses spending beyond the budget (also
under concurrency), small cells are suppressed on their noisy count, and no user_id leaves."""

from __future__ import annotations

import math
import multiprocessing

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ml.governance.privacy import (
    CELL,
    OUTPUT_COLUMNS,
    QUERY,
    SOURCE_MART,
    BudgetExceededError,
    BudgetLedger,
    ContributionBounds,
    NoisePlan,
    PrivacyError,
    add_noise,
    bound_contributions,
    cell_domain,
    dp_export,
    laplace_noise,
    publishable,
    true_aggregates,
)
from ml.settings import settings_for

WEEKS = pd.date_range("2024-01-01", periods=6, freq="7D")


def user_rows(n_users: int = 300, seed: int = 0) -> pd.DataFrame:
    """A fixed user-level frame like the dbt export: 1-8 cells per user, revenue 0-400."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        region = ["north", "south"][u % 2]
        for _ in range(rng.integers(1, 9)):
            rows.append(
                {
                    "user_id": f"u{u:05d}",
                    "category_l1": ["apparel", "home", "sports"][rng.integers(3)],
                    "region": region,
                    "week": WEEKS[rng.integers(len(WEEKS))].date(),
                    "revenue": float(rng.uniform(0, 400)),
                    "order_count": 1,
                }
            )
    return (
        pd.DataFrame(rows).groupby(["user_id", *CELL], as_index=False).agg(revenue=("revenue", "sum"), order_count=("order_count", "sum"))
    )


def exact_cells(frame: pd.DataFrame, bounds: ContributionBounds) -> pd.DataFrame:
    return true_aggregates(bound_contributions(frame, bounds), cell_domain(frame))


# ----------------------------------------------------------------------------- the noise


def residuals(figure: str, plan: NoisePlan, exact: pd.DataFrame, draws: int, seed: int) -> np.ndarray:
    """``draws`` draws of (noisy - exact) for ``figure``, running the mechanism repeatedly on the frame."""
    rng = np.random.default_rng(seed)
    out = []
    while sum(map(len, out)) < draws:
        noisy = add_noise(exact, plan, rng)
        out.append(noisy[figure].to_numpy() - exact[figure].to_numpy())
    return np.concatenate(out)[:draws]


@pytest.mark.parametrize("figure, epsilon", [("revenue", 0.5), ("buyers", 0.5), ("buyers", 2.0)])
def test_noise_is_laplace_of_sensitivity_over_epsilon(figure, epsilon):
    bounds = ContributionBounds(max_cells_per_user=3, revenue_cap=100.0)
    plan = NoisePlan.of(bounds, epsilon, buyers_share=0.5)
    exact = exact_cells(user_rows(), bounds)
    sensitivity = {"revenue": 3 * 100.0, "buyers": 3.0}[figure]
    scale = sensitivity / (epsilon / 2)
    assert getattr(plan, f"{figure}_noise_scale") == pytest.approx(scale)

    draws = residuals(figure, plan, exact, 20_000, seed=round(100 * epsilon) + len(figure))
    fit = stats.kstest(draws, stats.laplace(loc=0, scale=scale).cdf)
    assert fit.pvalue > 1e-3, fit
    assert np.mean(np.abs(draws)) == pytest.approx(scale, rel=0.05)  # E|Laplace(b)| = b
    assert abs(np.median(draws)) < 0.05 * scale
    # The same test rejects a scale 15 % off (it can fail), and the noise of another epsilon.
    assert stats.kstest(draws, stats.laplace(loc=0, scale=1.15 * scale).cdf).pvalue < 1e-6
    assert stats.kstest(draws, stats.laplace(loc=0, scale=sensitivity / epsilon).cdf).pvalue < 1e-6


def test_noise_scales_are_reported_beside_each_figure():
    bounds = ContributionBounds(max_cells_per_user=2, revenue_cap=50.0)
    plan = NoisePlan.of(bounds, 1.0, buyers_share=0.25)
    assert (plan.epsilon_buyers, plan.epsilon_revenue) == pytest.approx((0.25, 0.75))
    noisy = add_noise(exact_cells(user_rows(40), bounds), plan, np.random.default_rng(0))
    assert np.allclose(noisy["revenue_noise_scale"], 2 * 50.0 / 0.75)
    assert np.allclose(noisy["buyers_noise_scale"], 2 / 0.25)
    assert (noisy["epsilon"] == 1.0).all()


@pytest.mark.parametrize("scale", [0, -1.0, math.inf, math.nan])
def test_laplace_noise_rejects_bad_scales(scale):
    with pytest.raises(ValueError):
        laplace_noise(scale, 3, np.random.default_rng(0))


@pytest.mark.parametrize("epsilon", [0, -0.1, math.inf, math.nan, "x"])
def test_bad_epsilon_is_refused(tmp_path, epsilon):
    with pytest.raises(ValueError):
        NoisePlan.of(ContributionBounds(), epsilon)
    with pytest.raises(ValueError):
        BudgetLedger(tmp_path / "ledger.sqlite", 1.0).spend("d", "q", epsilon)
    with pytest.raises(ValueError):
        BudgetLedger(tmp_path / "other.sqlite", epsilon)


# ----------------------------------------------------------------------------- contribution bounding


def heavy_user(n_cells: int = 50) -> pd.DataFrame:
    cells = cell_domain(
        pd.DataFrame({"category_l1": list("abcdefghij") * 5, "region": ["r"] * 50, "week": [WEEKS[i % 5] for i in range(50)]})
    )
    cells = cells.head(n_cells)
    return cells.assign(user_id="whale", revenue=1e6, order_count=3)


def test_a_user_contributes_at_most_k_cells_each_clipped():
    bounds = ContributionBounds(max_cells_per_user=4, revenue_cap=120.0, seed=3)
    others = user_rows(60)
    frame = pd.concat([others, heavy_user(50)], ignore_index=True)
    bounded = bound_contributions(frame, bounds)
    whale = bounded[bounded["user_id"] == "whale"]
    assert len(whale) == 4 and (whale["revenue"] == 120.0).all()
    assert bounded.groupby("user_id").size().max() <= 4
    assert bounded["revenue"].between(0, 120.0).all()
    assert not bounded.duplicated(["user_id", *CELL]).any()
    # A user's kept cells depend on their own rows only (and the seed), never on other users.
    alone = bound_contributions(heavy_user(50), bounds)
    pd.testing.assert_frame_equal(whale.reset_index(drop=True), alone)
    assert bound_contributions(frame, bounds).equals(bounded)  # deterministic
    other_seed = bound_contributions(heavy_user(50), ContributionBounds(4, 120.0, seed=4))
    assert set(map(tuple, other_seed[CELL].astype(str).values)) != set(map(tuple, alone[CELL].astype(str).values))


def test_negative_revenue_counts_zero_and_small_users_are_kept_whole():
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "b"],
            "category_l1": ["x", "x", "y"],
            "region": ["r"] * 3,
            "week": [WEEKS[0].date()] * 3,
            "revenue": [-5.0, 10.0, None],
        }
    )
    bounded = bound_contributions(frame, ContributionBounds(max_cells_per_user=2, revenue_cap=100.0))
    assert bounded.set_index(["user_id", "category_l1"])["revenue"].to_dict() == {("a", "x"): 0.0, ("b", "x"): 10.0, ("b", "y"): 0.0}


def test_sensitivity_bounds_the_effect_of_removing_any_user():
    bounds = ContributionBounds(max_cells_per_user=3, revenue_cap=80.0)
    assert (bounds.revenue_sensitivity, bounds.buyers_sensitivity) == (240.0, 3.0)
    frame = pd.concat([user_rows(80), heavy_user(30)], ignore_index=True)
    cells = cell_domain(frame)
    full = true_aggregates(bound_contributions(frame, bounds), cells)
    worst = {"revenue": 0.0, "buyers": 0.0}
    for user in ["whale", *frame["user_id"].drop_duplicates().sample(20, random_state=0)]:
        without = true_aggregates(bound_contributions(frame[frame["user_id"] != user], bounds), cells)
        for figure in worst:
            worst[figure] = max(worst[figure], float(np.abs(full[figure] - without[figure]).sum()))
    assert worst["revenue"] == pytest.approx(bounds.revenue_sensitivity)  # the whale hits the bound
    assert worst["buyers"] == bounds.buyers_sensitivity


def test_the_domain_holds_every_week_of_the_range_and_explicit_values():
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "category_l1": ["x", "y"],
            "region": ["r", "r"],
            "week": [WEEKS[0].date(), WEEKS[3].date()],
            "revenue": [1.0, 2.0],
        }
    )
    cells = cell_domain(frame)
    assert len(cells) == 2 * 1 * 4  # weeks 0..3, the empty ones included
    exact = true_aggregates(bound_contributions(frame, ContributionBounds()), cells)
    assert exact["buyers"].sum() == 2 and (exact["buyers"] == 0).sum() == 6
    explicit = cell_domain(frame, {"category_l1": ["x", "y", "z"], "region": ["r", "s"]})
    assert len(explicit) == 3 * 2 * 4
    with pytest.raises(ValueError):
        cell_domain(frame, {"user_id": ["a"]})


# ----------------------------------------------------------------------------- suppression


def test_cells_are_suppressed_on_their_noisy_buyer_count():
    noisy = pd.DataFrame(
        {
            "category_l1": ["a", "b", "c", "d"],
            "region": ["r"] * 4,
            "week": [WEEKS[0]] * 4,
            "revenue": [100.4, -30.0, 55.5, 900.0],
            "revenue_noise_scale": 10.0,
            "buyers": [4.99, 5.0, 12.3, 1.2],
            "buyers_noise_scale": 2.0,
            "epsilon": 1.0,
        }
    )
    report, suppressed = publishable(noisy, min_buyers=5)
    assert suppressed == 2
    assert report["category_l1"].tolist() == ["b", "c"]
    assert report["buyers"].tolist() == [5, 12]
    assert report["revenue"].tolist() == [0.0, 56.0]  # rounded; negative noisy revenue reads 0
    assert list(report.columns) == OUTPUT_COLUMNS


# ----------------------------------------------------------------------------- the ledger


def test_ledger_allows_exactly_the_total_then_refuses(tmp_path):
    ledger = BudgetLedger(tmp_path / "privacy" / "ledger.sqlite", total_epsilon=1.0)
    for _ in range(10):
        ledger.spend("mart", QUERY, 0.1)
    assert ledger.spent("mart") == pytest.approx(1.0) and ledger.remaining("mart") == pytest.approx(0.0)
    with pytest.raises(BudgetExceededError, match=r"spent 1 of 1.*remaining 0.*requested 1e-06") as refused:
        ledger.spend("mart", QUERY, 1e-6)
    assert (refused.value.spent, refused.value.requested) == pytest.approx((1.0, 1e-6))
    assert len(ledger.releases("mart")) == 10  # the refused release left no row
    assert ledger.spend("another_mart", QUERY, 1.0).remaining == 0.0  # budgets are per dataset


def test_ledger_refuses_a_query_that_would_cross_the_total(tmp_path):
    ledger = BudgetLedger(tmp_path / "ledger.sqlite", total_epsilon=1.0)
    first = ledger.spend("mart", QUERY, 0.7, details={"min_buyers": 10})
    assert (first.spent, first.remaining) == pytest.approx((0.7, 0.3))
    with pytest.raises(BudgetExceededError, match="remaining 0.3.*requested 0.5"):
        ledger.spend("mart", QUERY, 0.5)
    assert ledger.spend("mart", QUERY, 0.3).remaining == pytest.approx(0.0)
    (row, _) = ledger.releases("mart")
    assert row["query"] == QUERY and row["epsilon"] == 0.7 and row["details"] == {"min_buyers": 10}
    assert pd.Timestamp(row["released_at"]).tzinfo is not None


def test_ledger_persists_across_instances(tmp_path):
    path = tmp_path / "ledger.sqlite"
    BudgetLedger(path, 1.0).spend("mart", QUERY, 0.6)
    again = BudgetLedger(path, 1.0)
    assert again.spent("mart") == pytest.approx(0.6)
    with pytest.raises(BudgetExceededError):
        again.spend("mart", QUERY, 0.6)
    assert again.summary() == [{"dataset": "mart", "releases": 1, "spent": 0.6, "remaining": pytest.approx(0.4), "total": 1.0}]


def _spend_until_refused(path, barrier, results):
    ledger = BudgetLedger(path, total_epsilon=1.0)
    barrier.wait()
    granted = 0
    while True:
        try:
            ledger.spend("mart", QUERY, 0.05)
        except BudgetExceededError:
            break
        granted += 1
    results.put(granted)


def test_a_process_cannot_raise_the_ledgers_total_by_its_own_setting(tmp_path):
    """A ledger at 0.6 of 1.0 must not accept 0.6 more because one process says PRIVACY_TOTAL_EPSILON=5."""
    path = tmp_path / "ledger.sqlite"
    BudgetLedger(path, 1.0).spend("mart", QUERY, 0.6)
    with pytest.raises(ValueError, match="created with a total epsilon of 1"):
        BudgetLedger(path, 5.0)
    stricter = BudgetLedger(path, 0.7)  # a lower setting is stricter: it applies
    with pytest.raises(BudgetExceededError):
        stricter.spend("mart", QUERY, 0.2)


def test_csv_cells_cannot_run_as_formulas():
    from ml.governance.privacy import csv_safe

    frame = pd.DataFrame({"category_l1": ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "toys", None], "revenue": [-1.5, 2, 3, 4, 5, 6]})
    safe = csv_safe(frame)
    assert safe["category_l1"].tolist()[:5] == ["'=1+1", "'+cmd", "'-2+3", "'@SUM(A1)", "toys"]
    assert safe["revenue"].tolist() == frame["revenue"].tolist()  # numbers untouched


def test_concurrent_spenders_never_exceed_the_total(tmp_path):
    path = tmp_path / "ledger.sqlite"
    BudgetLedger(path, 1.0)
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_spend_until_refused, args=(path, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    granted = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    ledger = BudgetLedger(path, 1.0)
    assert sum(granted) == 20 == len(ledger.releases("mart"))
    assert ledger.spent("mart") <= 1.0 + 1e-9


# ----------------------------------------------------------------------------- the export


@pytest.fixture
def export_settings(tmp_path):
    """Settings on a temp DATA_DIR with a hand-made user-level export: a few big cells and many
    single-buyer cells."""
    settings = settings_for(data_dir=tmp_path / "data", privacy_total_epsilon=2.0)
    rows = []
    for u in range(120):  # 120 buyers in (apparel, north, week 0), 60 of them also in week 1
        rows.append(("apparel", "north", WEEKS[0], f"u{u:04d}", 40.0))
        if u < 60:
            rows.append(("apparel", "north", WEEKS[1], f"u{u:04d}", 20.0))
    for u in range(120, 140):  # single-buyer cells
        rows.append(("home", "south", WEEKS[u % 6], f"u{u:04d}", 500.0))
    frame = pd.DataFrame(rows, columns=[*CELL, "user_id", "revenue"]).assign(week=lambda f: f["week"].dt.date, order_count=1)
    settings.exports_dir.mkdir(parents=True)
    frame.to_parquet(settings.exports_dir / f"{SOURCE_MART}.parquet", index=False)
    return settings


def test_paths_derive_from_data_dir(tmp_path):
    s = settings_for(data_dir=tmp_path)
    assert s.privacy_ledger_path == tmp_path / "privacy" / "ledger.sqlite"
    assert s.privacy_exports_dir == tmp_path / "privacy" / "exports"
    assert s.privacy_total_epsilon == 1.0


def test_export_releases_big_cells_suppresses_small_ones_and_never_writes_user_ids(export_settings):
    summary = dp_export(export_settings, epsilon=1.0, min_buyers=10, max_cells_per_user=2, revenue_cap=50.0, seed=5)
    report = pd.read_csv(summary["path"])
    assert list(report.columns) == OUTPUT_COLUMNS and "user_id" not in str(summary)
    text = open(summary["path"]).read()
    assert "user_id" not in text and "u00" not in text
    # 2 categories x 2 regions x 6 weeks; buyers noise scale 2 / 0.5 = 4: big cells out, 1-buyer cells in
    assert summary["cells"] == 24 and summary["cells_released"] + summary["cells_suppressed"] == 24
    assert summary["buyers_noise_scale"] == 4.0 and summary["revenue_noise_scale"] == 200.0
    released = {(r.category_l1, r.week) for r in report.itertuples()}
    assert {("apparel", str(WEEKS[0].date())), ("apparel", str(WEEKS[1].date()))} <= released
    assert (report["buyers"] >= 10).all()
    big = report[(report["category_l1"] == "apparel") & (report["week"] == str(WEEKS[0].date()))].iloc[0]
    assert abs(big["buyers"] - 120) <= 8 * 4 and abs(big["revenue"] - 120 * 40) <= 8 * 200
    assert (summary["epsilon_spent"], summary["epsilon_remaining"]) == pytest.approx((1.0, 1.0))
    assert summary["warnings"] == []


def test_export_warns_when_noise_swamps_the_threshold(export_settings):
    summary = dp_export(export_settings, epsilon=0.1, min_buyers=10, max_cells_per_user=5, seed=0)
    assert summary["buyers_noise_scale"] == pytest.approx(100.0)
    assert any("mostly noise" in w for w in summary["warnings"])


def test_export_spends_first_and_refuses_beyond_the_budget(export_settings):
    dp_export(export_settings, epsilon=1.5, seed=1)
    with pytest.raises(BudgetExceededError, match="remaining 0.5.*requested 1"):
        dp_export(export_settings, epsilon=1.0, seed=2)
    assert len(list(export_settings.privacy_exports_dir.iterdir())) == 1  # nothing released
    (entry,) = BudgetLedger.from_settings(export_settings).releases()
    assert entry["output_path"].endswith("_00001.csv") and entry["dataset"] == SOURCE_MART


def test_export_without_the_dbt_model_names_it(tmp_path):
    with pytest.raises(PrivacyError, match=SOURCE_MART):
        dp_export(settings_for(data_dir=tmp_path / "data"), epsilon=0.1)
    assert not (tmp_path / "data" / "privacy").exists()  # nothing spent, nothing written
