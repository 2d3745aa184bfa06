"""Cart-abandonment maths and the at-risk list on tiny hand-made marts (ml/models/user/cart.py).

Wilson intervals against textbook values, the late-conversion ratio's delta-method interval and the
truncated-exponential delay MLE against their sampling distributions (seeded simulations), curve
interpolation, and at_risk_carts / write_at_risk on small Parquet files under tmp_path.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from ml.models.user import cart

# ----------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (5, 10, 0.236593, 0.763407),  # symmetric around 0.5
        (0, 10, 0.0, 0.277533),  # never 0 width at the boundary, unlike the Wald interval
        (10, 10, 0.722467, 1.0),
        (81, 263, 0.255289, 0.366210),  # roots of (p - 81/263)^2 = z^2 p (1 - p) / 263
    ],
)
def test_wilson_matches_textbook_values(k, n, low, high):
    lo, hi = cart.wilson_interval(k, n, 0.95)
    assert float(lo) == pytest.approx(low, abs=1e-5)
    assert float(hi) == pytest.approx(high, abs=1e-5)


def test_wilson_vectorised_empty_and_invalid():
    lo, hi = cart.wilson_interval([1, 0, 50], [4, 0, 100], 0.9)
    assert np.isnan(lo[1]) and np.isnan(hi[1])
    assert lo[0] < 0.25 < hi[0] and lo[2] < 0.5 < hi[2]
    lo99, hi99 = cart.wilson_interval(50, 100, 0.99)
    assert lo99 < lo[2] and hi99 > hi[2]  # a higher level gives a wider interval
    with pytest.raises(ValueError):
        cart.wilson_interval(5, 4)
    with pytest.raises(ValueError):
        cart.wilson_interval(1, 4, confidence=1.0)


# ----------------------------------------------------------------------------- late-conversion ratio


def test_ratio_interval_point_estimate():
    out = cart.ratio_interval(n_carts=1000, n_within=400, n_late=60)
    assert out["ratio"] == pytest.approx((60 / 600) / (400 / 1000))
    assert out["ci_low"] < out["ratio"] < out["ci_high"]
    # symmetric on the log scale
    assert np.log(out["ratio"] / out["ci_low"]) == pytest.approx(np.log(out["ci_high"] / out["ratio"]))
    with pytest.raises(ValueError):
        cart.ratio_interval(1000, 0, 10)
    with pytest.raises(ValueError):
        cart.ratio_interval(1000, 400, 0)


def test_ratio_interval_covers_at_its_level():
    """Multinomial carts (within / late / never) with a known ratio: the 95 % interval covers ~95 %."""
    rng = np.random.default_rng(7)
    p_within, ratio = 0.5, 0.33
    p_late = ratio * p_within * (1 - p_within)
    draws = rng.multinomial(2000, [p_within, p_late, 1 - p_within - p_late], size=2000)
    covered = [(lambda o: o["ci_low"] <= ratio <= o["ci_high"])(cart.ratio_interval(2000, int(w), int(a))) for w, a, _ in draws]
    assert 0.93 <= np.mean(covered) <= 0.97


# ----------------------------------------------------------------------------- delay MLE


def test_exponential_mle_without_limits_is_the_sample_mean():
    d = np.random.default_rng(1).exponential(72.0, 400)
    out = cart.exponential_mle(d)
    assert out["mean"] == pytest.approx(d.mean())
    assert out["ci_low"] < 72.0 < out["ci_high"]
    # profile-likelihood interval of an exponential mean ~ mean * exp(+-1.96 / sqrt(n))
    assert np.log(out["ci_high"] / out["ci_low"]) == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.05)


def test_exponential_mle_corrects_a_cap():
    """Delays seen only up to a cap (a short follow-up window): the naive mean is far too low, the MLE is not."""
    d = np.random.default_rng(2).exponential(72.0, 20_000)
    seen = d[d <= 60.0]
    out = cart.exponential_mle(seen, limits=60.0)
    assert seen.mean() < 30.0  # the bias the truncation-aware fit removes
    assert out["ci_low"] <= 72.0 <= out["ci_high"]
    assert out["mean"] == pytest.approx(72.0, rel=0.1)


def test_exponential_mle_with_per_delay_windows():
    rng = np.random.default_rng(3)
    d = rng.exponential(72.0, 20_000)
    window = rng.uniform(10.0, 696.0, d.size)
    kept = d <= window
    out = cart.exponential_mle(d[kept], limits=window[kept])
    assert out["ci_low"] <= 72.0 <= out["ci_high"]
    assert out["mean"] == pytest.approx(72.0, rel=0.05)


def test_exponential_mle_interval_covers_at_its_level():
    rng = np.random.default_rng(4)
    covered = []
    for _ in range(300):
        d = rng.exponential(72.0, 150)
        covered.append((lambda o: o["ci_low"] <= 72.0 <= o["ci_high"])(cart.exponential_mle(d[d <= 120.0], limits=120.0)))
    assert 0.91 <= np.mean(covered) <= 0.99


def test_exponential_mle_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        cart.exponential_mle([5.0])
    with pytest.raises(ValueError, match="exceeds its limit"):
        cart.exponential_mle([5.0, 50.0], limits=[10.0, 10.0])
    with pytest.raises(ValueError):
        cart.exponential_mle([-1.0, 3.0])


# ----------------------------------------------------------------------------- interpolation


def test_interpolate_rate_is_linear_between_grid_points_and_flat_outside():
    curve = pd.DataFrame({"hours_since_add": [24, 0, 48, 96], "conversion_rate": [0.2, 0.6, 0.1, np.nan]})
    got = cart.interpolate_rate(curve, [0, 12, 36, 47.0, 200])
    assert got == pytest.approx([0.6, 0.4, 0.15, 0.1 + 0.1 / 24, 0.1])


def test_load_config_rejects_unknown_keys():
    assert cart.load_config()["threshold_hours"] == 24
    assert cart.load_config(confidence=0.9)["confidence"] == 0.9
    with pytest.raises(ValueError, match="unknown"):
        cart.load_config(treshold_hours=12)


# ----------------------------------------------------------------------------- marts on disk (tmp_path)

AS_OF = date(2024, 3, 10)
T0 = pd.Timestamp("2024-03-10", tz="UTC")


def _ts(hours_before_as_of):
    return None if hours_before_as_of is None else T0 - pd.Timedelta(hours=hours_before_as_of)


def _write_marts(settings, carts: list[dict], curve: pd.DataFrame | None = None):
    settings.exports_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in carts:
        added = _ts(c["added"])
        rows.append(
            {
                "event_id": c["event_id"],
                "user_id": c.get("user_id", "u1"),
                "item_id": c.get("item_id", c["event_id"]),
                "added_at": added,
                "purchased_at": _ts(c.get("purchased")),
                "hours_to_purchase": None if c.get("purchased") is None else c["added"] - c["purchased"],
                "removed_at": _ts(c.get("removed")),
                "is_removed": c.get("removed") is not None,
                "readded_at": _ts(c.get("readded")),
                "observed_until": T0 + pd.Timedelta(days=2),
                "observed_hours": 48.0 + c["added"],
                "is_fully_observed": False,
            }
        )
    frame = pd.DataFrame(rows)
    for col in ("added_at", "purchased_at", "removed_at", "readded_at", "observed_until"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame.to_parquet(cart.export_path(settings, cart.CONVERSIONS_MART), index=False)
    if curve is None:
        curve = pd.DataFrame(
            {
                "hours_since_add": [0, 24, 48, 168],
                "n_carts": 100,
                "n_open": [100, 40, 30, 20],
                "n_converted": [60, 10, 6, 1],
                "conversion_rate": [0.6, 0.25, 0.2, 0.05],
            }
        )
    curve.to_parquet(cart.export_path(settings, cart.CURVE_MART), index=False)


CARTS = [
    {"event_id": "open_12h", "added": 12},
    {"event_id": "open_36h", "added": 36, "user_id": "u2"},
    {"event_id": "bought_later", "added": 30, "purchased": -5},  # bought after as_of: still open at as_of
    {"event_id": "bought_before", "added": 30, "purchased": 2},
    {"event_id": "removed", "added": 20, "removed": 19},
    {"event_id": "removed_later", "added": 20, "removed": -1},
    {"event_id": "readded", "added": 50, "readded": 10},
    {"event_id": "too_old", "added": 7 * 24 + 1},
    {"event_id": "after_as_of", "added": -3},
]


def test_at_risk_lists_exactly_the_open_carts(tmp_settings):
    _write_marts(tmp_settings, CARTS)
    got = cart.at_risk_carts(tmp_settings, AS_OF)
    assert list(got.columns) == list(cart.AT_RISK_COLUMNS)
    assert set(got["event_id"]) == {"open_12h", "open_36h", "bought_later", "removed_later"}
    row = got.set_index("event_id").loc["open_36h"]
    assert row["hours_open"] == pytest.approx(36.0)
    assert row["p_convert"] == pytest.approx(0.25 - 0.05 * 12 / 24)
    assert row["abandonment_risk"] == pytest.approx(1 - row["p_convert"])
    assert got["abandonment_risk"].is_monotonic_decreasing
    assert (got["scoring_date"] == AS_OF).all()


def test_write_at_risk_overwrites_its_partition(tmp_settings):
    _write_marts(tmp_settings, CARTS)
    first = cart.write_at_risk(tmp_settings, AS_OF)
    assert first == tmp_settings.scores_dir / "cart_at_risk" / "scoring_date=2024-03-10" / "part.parquet"
    before = pd.read_parquet(first)
    # the folder reads as a Hive dataset: scoring_date comes from the partition name
    cart.write_at_risk(tmp_settings, date(2024, 3, 9))
    every = pd.read_parquet(tmp_settings.scores_dir / "cart_at_risk")
    assert sorted(every["scoring_date"].astype(str).unique()) == ["2024-03-09", "2024-03-10"]
    (first.parent / "stale.parquet").write_bytes(b"old")
    _write_marts(tmp_settings, CARTS[:1])  # the warehouse changed: the rerun replaces the list
    second = cart.write_at_risk(tmp_settings, AS_OF)
    assert second == first
    assert [p.name for p in first.parent.iterdir()] == ["part.parquet"]
    after = pd.read_parquet(second)
    assert len(before) == 4 and list(after["event_id"]) == ["open_12h"]


def test_empty_list_is_an_error_and_keeps_the_previous_partition(tmp_settings):
    _write_marts(tmp_settings, CARTS)
    path = cart.write_at_risk(tmp_settings, AS_OF)
    _write_marts(tmp_settings, [{"event_id": "too_old", "added": 400}])
    with pytest.raises(cart.CartDataError, match="no open carts"):
        cart.write_at_risk(tmp_settings, AS_OF)
    assert len(pd.read_parquet(path)) == 4


def test_as_of_after_the_data_is_rejected(tmp_settings):
    _write_marts(tmp_settings, CARTS)
    with pytest.raises(cart.CartDataError, match="after the cart data"):
        cart.at_risk_carts(tmp_settings, date(2024, 4, 1))


def test_missing_and_placeholder_marts_explain_themselves(tmp_settings):
    with pytest.raises(cart.CartDataError, match="warehouse build"):
        cart.conversion_curve(tmp_settings)
    # dbt-duckdb writes an empty external model as one all-null row (orders-only lakes)
    tmp_settings.exports_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"event_id": [None], "added_at": pd.to_datetime([None], utc=True)}).to_parquet(
        cart.export_path(tmp_settings, cart.CONVERSIONS_MART)
    )
    pd.DataFrame({"hours_since_add": pd.array([None], dtype="Int32"), "n_open": pd.array([None], dtype="Int64")}).to_parquet(
        cart.export_path(tmp_settings, cart.CURVE_MART)
    )
    for call in (cart.conversion_curve, cart.estimate_decay):
        with pytest.raises(cart.CartDataError, match="need clickstream events"):
            call(tmp_settings)
    with pytest.raises(cart.CartDataError, match="orders-only"):
        cart.at_risk_carts(tmp_settings, AS_OF)


def test_plot_curve_draws_rate_and_band():
    curve = pd.DataFrame(
        {
            "hours_since_add": [0, 24, 48],
            "conversion_rate": [0.6, 0.2, 0.1],
            "ci_low": [0.55, 0.15, 0.05],
            "ci_high": [0.65, 0.25, 0.15],
            "late_conversion_rate": [0.6, 0.15, 0.08],
        }
    )
    fig = cart.plot_curve(curve)
    (ax,) = fig.axes
    assert len(ax.lines) >= 2 and len(ax.collections) == 1  # two curves + the CI band
    assert ax.get_xlabel() == "hours since add to cart"
