"""Cart-abandonment analytics on a generated lake built by dbt (session fixture ``built_warehouse``,
scale tiny, seed 42): the marts recover the generator's planted cart parameters, the curve's
intervals cover the curve those parameters imply, and the at-risk list holds only open carts.

Precision at this scale (measured, seed 42): 2 019 fully observed adds, 171 bought after 24 h.
The 95 % intervals are about +-14 % (ratio) and -12 %/+14 % (delay mean) wide, so a bias below
~10 % cannot be told from noise here. At scale small (11 092 adds, 863 late) they shrink to +-6.5 %
and the estimates are 0.315 [0.296, 0.336] vs 0.33 and 72.3 h [67.9, 77.2] vs 72 h.
The tests check the truth against the 99 % interval AND bound the interval's width, so a wide,
uninformative interval cannot pass either.

Coverage is checked on late_conversion_rate (all adds not bought by h), which the planted parameters
define exactly. conversion_rate (open carts: removed and re-added ones left out) also depends on
remove_share and on stock-outs that block ~3 % of purchases; at scale small its implied value at
24-48 h sits just above the 95 % interval for that reason, so it is checked by recounting instead.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml.models.user import cart
from ml.settings import settings_for
from tests.conftest import shared_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def truth(built_warehouse) -> dict:
    params = json.loads((built_warehouse.lake_dir / "_generator" / "params.json").read_text())
    behaviour = {name: spec["value"] for name, spec in params["behaviour"].items()}
    return {**behaviour, "end_date": date.fromisoformat(params["end_date"])}


@pytest.fixture(scope="module")
def carts(built_warehouse) -> pd.DataFrame:
    return cart.read_conversions(built_warehouse)


def test_decay_matches_the_generator(built_warehouse, truth):
    """The issue's quality bar: the cart curve matches the planted decay parameters within tolerance."""
    est = cart.estimate_decay(built_warehouse, cart.load_config(confidence=0.99))
    low, high = est["late_conversion_ratio_ci"]
    assert low <= truth["late_conversion_ratio"] <= high, est
    assert high / low < 1.6, f"ratio interval too wide to mean anything: {est}"
    low, high = est["late_delay_mean_hours_ci"]
    assert low <= truth["late_delay_mean_hours"] <= high, est
    assert high / low < 1.6, f"delay interval too wide to mean anything: {est}"
    # the brief's claim, directly: carts not bought within 24 h convert far less
    assert est["late_conversion_rate"] < 0.5 * est["purchased_within_rate"]
    assert est["n"] > 1000 and est["n_late"] > 100


def test_curve_counts_match_the_fact_table(built_warehouse, carts):
    """The curve mart recounted from mart_cart_conversions (fully observed adds only)."""
    curve = cart.conversion_curve(built_warehouse)
    full = carts[carts["is_fully_observed"]]
    to_buy = full["hours_to_purchase"]
    to_close = (full["removed_at"].fillna(full["readded_at"]) - full["added_at"]).dt.total_seconds() / 3600.0
    for row in curve.itertuples():
        h = row.hours_since_add
        not_bought = to_buy.isna() | (to_buy >= h)
        is_open = not_bought & (to_close.isna() | (to_close >= h))
        assert row.n_carts == len(full)
        assert row.n_open == int(is_open.sum()), h
        assert row.n_converted == int((is_open & to_buy.notna()).sum()), h
        assert row.n_purchased == int((to_buy < h).sum()), h
        assert row.n_late_converted == int((to_buy >= h).sum()), h
    assert curve["n_open"].is_monotonic_decreasing
    assert (curve["conversion_rate"] >= curve["late_conversion_rate"] - 1e-12).all()  # removed carts never convert


def test_curve_intervals_cover_the_planted_curve(built_warehouse, truth):
    """P(bought after h | not bought by h) implied by the planted parameters, for h >= 24 h.

    The generator: an add is bought within 24 h with probability p_w (mean pw), else bought later
    with probability ratio * pw, after 24 h + Exp(mean delay). So among adds not bought by h >= 24,
    P(bought later) = A S(h) / (A S(h) + N), A = ratio * pw (1 - pw), N = 1 - pw - A,
    S(h) = exp(-(h - 24) / mean). pw is the curve's own within-24 h rate (binomial error < 1 %).
    """
    curve = cart.conversion_curve(built_warehouse)
    pw = float(curve.loc[curve["hours_since_add"] == 24, "purchased_rate"].iloc[0])
    late_mass = truth["late_conversion_ratio"] * pw * (1 - pw)
    never = 1 - pw - late_mass
    after = curve[curve["hours_since_add"] >= 24]
    survival = np.exp(-(after["hours_since_add"] - 24.0) / truth["late_delay_mean_hours"])
    implied = late_mass * survival / (late_mass * survival + never)
    covered = (after["late_ci_low"] <= implied) & (implied <= after["late_ci_high"])
    shown = ["hours_since_add", "late_conversion_rate", "late_ci_low", "late_ci_high", "implied"]
    assert covered.all(), after.assign(implied=implied)[shown]
    # the intervals are Wilson intervals around the rate, and say something
    assert ((after["late_ci_low"] <= after["late_conversion_rate"]) & (after["late_conversion_rate"] <= after["late_ci_high"])).all()
    width_24 = after.iloc[0]["late_ci_high"] - after.iloc[0]["late_ci_low"]
    assert 0 < width_24 < 0.06


def test_plot_curve_writes_a_png(built_warehouse, tmp_path):
    fig = cart.plot_curve(cart.conversion_curve(built_warehouse))
    fig.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 5_000


@pytest.mark.parametrize("days_before_end", [-1, 10])
def test_at_risk_lists_only_open_carts(built_warehouse, carts, truth, days_before_end):
    """Scoring the day after the lake ends, and a backtest 10 days earlier (later purchases unseen)."""
    as_of = truth["end_date"] - timedelta(days=days_before_end)
    at = pd.Timestamp(as_of, tz="UTC")
    listed = cart.at_risk_carts(built_warehouse, as_of)
    assert len(listed) > 10
    rows = carts.set_index("event_id").loc[listed["event_id"]]
    assert ((rows["added_at"] < at) & (rows["added_at"] >= at - pd.Timedelta(days=7))).all()
    for column in ("purchased_at", "removed_at", "readded_at"):
        assert (rows[column].isna() | (rows[column] >= at)).all(), column
    assert (rows["user_id"].to_numpy() == listed["user_id"].to_numpy()).all()
    # nothing open is missing: every cart of the window that is not listed was bought, removed or re-added
    window = carts[(carts["added_at"] < at) & (carts["added_at"] >= at - pd.Timedelta(days=7))]
    unlisted = window[~window["event_id"].isin(listed["event_id"])]
    closed = pd.concat([unlisted[c] < at for c in ("purchased_at", "removed_at", "readded_at")], axis=1).any(axis=1)
    assert closed.all()
    if days_before_end > 0:  # a backtest lists carts that were bought after the scoring date
        assert rows["purchased_at"].notna().any()
    curve = cart.conversion_curve(built_warehouse)
    assert listed["p_convert"].between(curve["conversion_rate"].min(), curve["conversion_rate"].max()).all()
    assert listed["abandonment_risk"].is_monotonic_decreasing
    assert listed["hours_open"].is_monotonic_decreasing  # the curve falls with age: older carts are riskier


def test_write_at_risk_twice_gives_one_identical_partition(built_warehouse, truth):
    as_of = truth["end_date"] + timedelta(days=1)
    first = cart.write_at_risk(built_warehouse, as_of)
    content = pq.read_table(first)
    second = cart.write_at_risk(built_warehouse, as_of)
    assert second == first
    root = built_warehouse.scores_dir / "cart_at_risk"
    assert [p.name for p in root.iterdir()] == [f"scoring_date={as_of.isoformat()}"]
    assert [p.name for p in first.parent.iterdir()] == ["part.parquet"]
    assert pq.read_table(second).equals(content)
    assert content.num_rows == len(cart.at_risk_carts(built_warehouse, as_of))


def test_orders_only_lake_has_empty_cart_marts(tmp_path):
    """The real Online Retail II sample (orders only): both marts build empty and Python says why."""
    sample = shared_file("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet")
    import pyarrow.compute as pc

    from ml import warehouse
    from ml.ingest import ingest_file

    settings = settings_for(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    table = pq.read_table(sample)
    sliced = tmp_path / "slice.parquet"
    pq.write_table(table.filter(pc.less(table["InvoiceDate"], "2010-01-15")), sliced)
    ingest_file(sliced, "online_retail_ii", lake_dir=settings.lake_dir, quarantine_dir=settings.quarantine_dir)
    # the cart marts and their parents; relationship tests would need the dims this selection skips
    summary = warehouse.build(settings, select="+mart_cart_conversion_curve", exclude="test_name:relationships", echo=None)
    assert summary["success"]
    conversions = pq.read_table(cart.export_path(settings, cart.CONVERSIONS_MART))
    assert "hours_to_purchase" in conversions.column_names and "is_fully_observed" in conversions.column_names
    assert conversions.column("event_id").null_count == conversions.num_rows  # at most dbt-duckdb's all-null placeholder row
    with pytest.raises(cart.CartDataError, match="need clickstream events"):
        cart.estimate_decay(settings)
    with pytest.raises(cart.CartDataError, match="orders-only"):
        cart.at_risk_carts(settings, date(2010, 1, 15))
