"""The user marts of the propensity model on a real dbt build: feat_user_rfm_segments (weekly RFM
quintiles + segments), feat_user_affinity (30-day item affinity) and the exported labels
mart_user_purchase_labels, checked against recounts from fct_orders / fct_events, and a point-in-time
training set through the Feast service propensity_lgbm_v2. The last test builds the orders-only
Online Retail II sample (skips, or fails under REQUIRE_SERVICES=1, when shared/data lacks it).
"""

from __future__ import annotations

import math
from datetime import timedelta

import duckdb
import pandas as pd
import pytest

from ml import warehouse
from ml.models.user.propensity import RFM_SEGMENTS
from ml.settings import settings_for
from tests.conftest import shared_file

pytestmark = pytest.mark.integration

# the segments dbt may emit are the categories the propensity model encodes rfm_segment with
SEGMENTS = set(RFM_SEGMENTS)


def expected_segment(r: int, f: int, m: int) -> str:
    """The segment rules of feat_user_rfm_segments.yml, written out independently of the SQL."""
    fm = math.ceil((f + m) / 2)
    grid = {
        5: {5: "champions", 4: "champions", 3: "potential_loyalists", 2: "potential_loyalists", 1: "new_customers"},
        4: {5: "loyal_customers", 4: "loyal_customers", 3: "potential_loyalists", 2: "potential_loyalists", 1: "promising"},
        3: {5: "loyal_customers", 4: "loyal_customers", 3: "need_attention", 2: "about_to_sleep", 1: "about_to_sleep"},
        2: {5: "cannot_lose_them", 4: "at_risk", 3: "at_risk", 2: "hibernating", 1: "hibernating"},
        1: {5: "cannot_lose_them", 4: "at_risk", 3: "at_risk", 2: "hibernating", 1: "lost"},
    }
    return grid[r][fm]


@pytest.fixture(scope="module")
def con(built_warehouse):
    """A read-only connection to the built warehouse (closed after the module)."""
    connection = warehouse.connect(built_warehouse)
    yield connection
    connection.close()


def _feature(settings, model: str) -> str:
    return f"read_parquet('{warehouse.feature_path(settings, model)}')"


def _labels(settings) -> str:
    return f"read_parquet('{settings.exports_dir / 'mart_user_purchase_labels.parquet'}')"


def _bounds(con) -> tuple:
    return con.execute("select min(lake_first_date), max(lake_last_date) from intermediate.int_calendar__spined").fetchone()


# -- feat_user_rfm_segments ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segments(built_warehouse, con) -> pd.DataFrame:
    frame = con.execute(f"select * from {_feature(built_warehouse, 'feat_user_rfm_segments')}").df()
    assert len(frame) > 0
    return frame


def test_snapshots_are_weekly_back_from_the_lake_end(con, segments):
    first, last = _bounds(con)
    stamps = sorted(segments["event_timestamp"].unique())
    assert stamps[-1] == pd.Timestamp(last, tz="UTC") + pd.Timedelta(days=1)
    assert all((b - a) == pd.Timedelta(days=7) for a, b in zip(stamps, stamps[1:]))
    assert stamps[0] - pd.Timedelta(days=8) < pd.Timestamp(first, tz="UTC")


def test_scores_are_balanced_quintiles_per_snapshot(segments):
    for score in ("r_score", "f_score", "m_score"):
        assert segments[score].between(1, 5).all(), score
        sizes = segments.groupby(["event_timestamp", score]).size().unstack(fill_value=0)
        buyers = sizes.sum(axis=1)
        full = sizes[buyers >= 5]
        assert len(full) > 0
        # ntile(5): every quintile present, sizes differ by at most one
        assert ((full.max(axis=1) - full.min(axis=1)) <= 1).all(), f"{score} quintiles unbalanced"
        assert (full.min(axis=1) >= 1).all()


def test_scores_are_monotone_in_their_measure(segments):
    """A higher score never has a worse measure than a lower one in the same snapshot."""
    for score, measure, better in [
        ("r_score", "days_since_last_order", "lower"),
        ("f_score", "order_count_365d", "higher"),
        ("m_score", "revenue_sum_365d", "higher"),
    ]:
        by = segments.assign(v=segments[measure].fillna(0)).groupby(["event_timestamp", score])["v"].agg(["min", "max"])
        for _, snap in by.groupby(level=0):
            snap = snap.droplevel(0).sort_index()
            for k in snap.index[:-1]:
                if better == "lower":
                    assert snap.loc[k + 1, "max"] <= snap.loc[k, "min"], (score, k)
                else:
                    assert snap.loc[k + 1, "min"] >= snap.loc[k, "max"], (score, k)


def test_a_user_who_just_ordered_scores_top_recency(segments):
    checked = 0
    for _, snap in segments.groupby("event_timestamp"):
        just = snap[snap["days_since_last_order"] == 0]
        if 0 < len(just) <= len(snap) // 5:  # they fit in the top quintile
            assert (just["r_score"] == 5).all()
            checked += 1
    assert checked > 0
    last = segments[segments["event_timestamp"] == segments["event_timestamp"].max()]
    top = last[last["r_score"] == 5]
    assert top["days_since_last_order"].max() <= last["days_since_last_order"].median()


def test_segments_follow_the_rules(segments):
    assert set(segments["rfm_segment"]) <= SEGMENTS
    assert len(set(segments["rfm_segment"])) >= 6
    expected = [expected_segment(r, f, m) for r, f, m in segments[["r_score", "f_score", "m_score"]].itertuples(index=False)]
    assert (segments["rfm_segment"] == expected).all()
    assert (segments["rfm_score"] == segments["r_score"] + segments["f_score"] + segments["m_score"]).all()


def test_rfm_measures_recount_from_orders(built_warehouse, con):
    """Each row's recency / 365-day count and revenue equal a recount of fct_orders before its stamp;
    a user appears on a snapshot exactly when they ordered by then."""
    mismatches = con.execute(
        f"""
        with feat as (select * from {_feature(built_warehouse, "feat_user_rfm_segments")}),
        snapshots as (select distinct event_timestamp, (timezone('UTC', event_timestamp))::date - 1 as d from feat),
        recount as (
            select o.user_id, s.event_timestamp,
                   s.d - max(o.order_date) as days_since,
                   count(*) filter (where o.order_date > s.d - 365) as n365,
                   coalesce(sum(o.net_revenue) filter (where o.order_date > s.d - 365), 0) as rev365
            from snapshots s join fct_orders o on o.status <> 'cancelled' and o.ordered_at < s.event_timestamp
            group by o.user_id, s.event_timestamp, s.d
        )
        select count(*) from feat full join recount using (user_id, event_timestamp)
        where recount.user_id is null or feat.user_id is null
           or feat.days_since_last_order <> recount.days_since or feat.order_count_365d <> recount.n365
           or abs(coalesce(feat.revenue_sum_365d, 0) - recount.rev365) > 0.01
        """
    ).fetchone()[0]
    assert mismatches == 0


# -- feat_user_affinity --------------------------------------------------------------------------


def test_affinity_values_and_change_only_rows(built_warehouse, con):
    f = _feature(built_warehouse, "feat_user_affinity")
    rows, users, bad, repeated = con.execute(
        f"""
        select count(*), count(distinct user_id),
               count_if(top_category_share_30d not between 0 and 1 or promoted_view_share_30d not between 0 and 1
                        or category_entropy_30d < 0 or price_index_mean_30d <= 0
                        -- one category (share 1) <=> zero entropy; Shannon >= min-entropy = log2(1 / top share)
                        or ((top_category_share_30d = 1) <> (category_entropy_30d = 0))
                        or category_entropy_30d < log2(1 / top_category_share_30d) - 1e-6),
               (select count(*) from (
                   select row(top_category_share_30d, category_entropy_30d, price_index_mean_30d, promoted_view_share_30d)
                          is not distinct from lag(row(top_category_share_30d, category_entropy_30d,
                                                      price_index_mean_30d, promoted_view_share_30d))
                          over (partition by user_id order by event_timestamp) as same
                   from {f}) where same)
        from {f}
        """
    ).fetchone()
    assert rows > 0 and users > 0 and bad == 0 and repeated == 0


def test_affinity_top_share_recounts_from_events(built_warehouse, con):
    """top_category_share_30d equals a recount of fct_events in the 30 days before the stamp."""
    mismatches, checked = con.execute(
        f"""
        with feat as (select * from {_feature(built_warehouse, "feat_user_affinity")}
                      where top_category_share_30d is not null using sample 200 rows (reservoir, 11)),
        counts as (
            select feat.user_id, feat.event_timestamp, e.category_l1, count(*) as n
            from feat join fct_events e
              on e.user_id = feat.user_id and e.event_type in ('view', 'add_to_cart', 'purchase')
             and e.category_l1 is not null
             and e.event_date < (timezone('UTC', feat.event_timestamp))::date
             and e.event_date >= (timezone('UTC', feat.event_timestamp))::date - 30
            group by 1, 2, 3
        ),
        recount as (select user_id, event_timestamp, max(n) / sum(n) as share from counts group by 1, 2)
        select count_if(recount.share is null or abs(recount.share - feat.top_category_share_30d) > 1e-6), count(*)
        from feat left join recount using (user_id, event_timestamp)
        """
    ).fetchone()
    assert checked > 0 and mismatches == 0


# -- mart_user_purchase_labels ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labels(built_warehouse, con) -> pd.DataFrame:
    frame = con.execute(f"select * from {_labels(built_warehouse)}").df()
    assert list(frame.columns) == [
        "user_id",
        "cutoff_date",
        "event_timestamp",
        "is_purchased_7d",
        "is_purchased_30d",
        "gender",
        "age_band",
        "region",
    ]
    assert len(frame) > 0
    return frame


def test_label_cutoffs(con, labels):
    first, last = _bounds(con)
    cutoffs = sorted(pd.to_datetime(labels["cutoff_date"]).dt.date.unique())
    assert cutoffs[-1] == last + timedelta(days=1)
    assert all((b - a).days == 7 for a, b in zip(cutoffs, cutoffs[1:]))
    assert (cutoffs[0] - first).days >= 28 > (cutoffs[0] - first).days - 7
    stamps = pd.to_datetime(labels["cutoff_date"]).dt.tz_localize("UTC")
    assert (labels["event_timestamp"] == stamps).all()
    assert labels.duplicated(["user_id", "cutoff_date"]).sum() == 0


def test_labels_are_null_exactly_when_the_horizon_is_incomplete(con, labels):
    _, last = _bounds(con)
    cutoff = pd.to_datetime(labels["cutoff_date"])
    for h in (7, 30):
        incomplete = cutoff + pd.Timedelta(days=h - 1) > pd.Timestamp(last)
        assert (labels[f"is_purchased_{h}d"].isna() == incomplete).all(), h
        assert set(labels[f"is_purchased_{h}d"].dropna().unique()) == {0, 1}, h
    scoring = labels[cutoff == cutoff.max()]
    assert scoring[["is_purchased_7d", "is_purchased_30d"]].isna().all().all()
    # 30-day positives include the 7-day ones
    both = labels.dropna(subset=["is_purchased_7d", "is_purchased_30d"])
    assert (both["is_purchased_30d"] >= both["is_purchased_7d"]).all()


def test_labels_agree_with_orders_for_a_sample(con, labels):
    sample = labels.dropna(subset=["is_purchased_7d"]).sample(150, random_state=0)
    for row in sample.itertuples(index=False):
        ordered = con.execute(
            "select min(order_date) from fct_orders where user_id = ? and status <> 'cancelled' and order_date >= ?",
            [row.user_id, row.cutoff_date],
        ).fetchone()[0]
        days = None if ordered is None else (ordered - pd.Timestamp(row.cutoff_date).date()).days
        assert row.is_purchased_7d == int(days is not None and days < 7), row
        if not pd.isna(row.is_purchased_30d):
            assert row.is_purchased_30d == int(days is not None and days < 30), row
    assert set(sample["is_purchased_7d"]) == {0, 1}


def test_population_starts_at_first_activity(built_warehouse, con):
    """No row before a user's first event or non-cancelled order; every active user has a row after it."""
    early, missing = con.execute(
        f"""
        with labels as (select * from {_labels(built_warehouse)}),
        first_activity as (
            select user_id, min(d) as first_day from (
                select user_id, order_date as d from fct_orders where status <> 'cancelled'
                union all select user_id, event_date from fct_events where user_id is not null)
            group by 1
        ),
        cutoffs as (select distinct cutoff_date from labels)
        select
            (select count(*) from labels left join first_activity using (user_id)
             where first_activity.first_day is null or first_activity.first_day >= labels.cutoff_date),
            (select count(*) from cutoffs join first_activity on first_activity.first_day < cutoffs.cutoff_date
             anti join labels on labels.user_id = first_activity.user_id and labels.cutoff_date = cutoffs.cutoff_date)
        """
    ).fetchone()
    assert early == 0 and missing == 0


def test_no_empty_feature_view_is_excused_when_every_lake_table_is_present(built_warehouse):
    from ml.features import repo

    assert repo.views_allowed_empty(built_warehouse) == set()


def test_audit_attributes_come_from_dim_users(built_warehouse, con):
    mismatches = con.execute(
        f"""select count(*) from {_labels(built_warehouse)} l join dim_users u using (user_id)
            where l.gender is distinct from u.gender or l.age_band is distinct from u.age_band
               or l.region is distinct from u.region"""
    ).fetchone()[0]
    assert mismatches == 0


# -- point-in-time through the feature service --------------------------------------------------------


def through_service(settings, labels, service: str, n: int, seed: int):
    """(entity rows: n labelled user-cutoffs, the training set built for them through ``service``)."""
    from ml.features import repo, training

    repo.apply(settings)
    picked = labels.dropna(subset=["is_purchased_30d"]).sample(n, random_state=seed)
    entity_df = picked[["user_id", "event_timestamp", "is_purchased_30d"]].reset_index(drop=True)
    return entity_df, training.build_training_set(settings, entity_df, service)


def test_training_set_through_v2_sees_no_feature_after_the_cutoff(built_warehouse, labels):
    from ml.features import training

    settings = built_warehouse
    entity_df, got = through_service(settings, labels, "propensity_lgbm_v2", 60, seed=1)
    assert len(got) == len(entity_df) and got["user_id"].tolist() == entity_df["user_id"].tolist()
    for column in (
        "r_score",
        "rfm_segment",
        "top_category_share_30d",
        "order_count_lifetime",
        "view_count_30d",
        "days_since_last_order_now",
    ):
        assert column in got.columns, column

    ref = training.reference_training_set(settings, entity_df, ["user_rfm_segments", "user_affinity", "user_rfm"])
    for column in (
        "r_score",
        "f_score",
        "rfm_segment",
        "days_since_last_order",
        "top_category_share_30d",
        "price_index_mean_30d",
        "order_count_lifetime",
        "last_order_at",
    ):
        pd.testing.assert_series_equal(got[column], ref[column], check_dtype=False, check_names=False, obj=column)

    # Which stored row each entity row got: the latest stamped <= the cutoff, never a later one.
    with duckdb.connect() as c:
        c.register("entities", entity_df)
        used = c.execute(
            f"""select e.user_id, e.event_timestamp, max(f.event_timestamp) as feature_ts
                from entities e join {_feature(settings, "feat_user_rfm_segments")} f
                  on f.user_id = e.user_id and f.event_timestamp <= e.event_timestamp
                group by 1, 2"""
        ).df()
    assert (used["feature_ts"] <= used["event_timestamp"]).all()
    # weekly snapshots land on the cutoffs: a buyer's segment row is the one stamped at the cutoff itself
    assert (used["feature_ts"] == used["event_timestamp"]).all()
    assert got["last_order_at"].dropna().lt(got["event_timestamp"][got["last_order_at"].notna()]).all()
    assert got["days_since_last_order_now"].dropna().ge(0).all()
    assert got["r_score"].notna().sum() > 0 and got["top_category_share_30d"].notna().sum() > 0


def test_purchase_cycle_features_through_v3_match_their_definition(built_warehouse, labels):
    _, got = through_service(built_warehouse, labels, "propensity_lgbm_v3", 200, seed=2)
    day = pd.Timedelta(days=1)
    n = got["order_count_lifetime"]
    gap = ((got["last_order_at"] - got["first_order_at"]) / day / (n - 1)).where(n > 1)
    pd.testing.assert_series_equal(got["mean_order_gap_days"], gap, check_names=False, atol=1e-6, obj="mean_order_gap_days")
    ratio = got["days_since_last_order_now"] / gap.clip(lower=1.0)
    pd.testing.assert_series_equal(got["order_gap_ratio_now"], ratio, check_names=False, atol=1e-6, obj="order_gap_ratio_now")
    tenure = (got["event_timestamp"] - got["first_order_at"]) / day
    pd.testing.assert_series_equal(got["tenure_days_now"], tenure.clip(lower=0), check_names=False, atol=1e-6, obj="tenure_days_now")
    rate = (got["order_count_90d"].fillna(0) / 90) / (n / tenure.clip(lower=90))
    pd.testing.assert_series_equal(got["order_rate_trend_90d"], rate.where(n > 0), check_names=False, atol=1e-6, obj="order_rate_trend_90d")
    assert gap.notna().sum() > 20 and (got["order_rate_trend_90d"].dropna() >= 0).all()


# -- an orders-only lake ---------------------------------------------------------------------------


def test_orders_only_online_retail_has_labels(tmp_path):
    """Online Retail II (Dec 2009 - Feb 2010, no events): labels and RFM segments from orders alone."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ml.ingest import ingest_file

    sample = shared_file("online_retail_ii", "online_retail_ii_2009-12_2010-12.parquet")
    settings = settings_for(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    table = pq.read_table(sample)
    sliced = tmp_path / "online_retail_ii_slice.parquet"
    pq.write_table(table.filter(pc.less(table["InvoiceDate"], "2010-03-01")), sliced)
    ingest_file(sliced, "online_retail_ii", lake_dir=settings.lake_dir, quarantine_dir=settings.quarantine_dir)

    summary = warehouse.build(settings, echo=None)
    assert summary["success"]
    with duckdb.connect() as c:
        rows, users, known_30d, positives_30d, last_cutoff, null_last = c.execute(
            f"""select count(*), count(distinct user_id), count(is_purchased_30d), sum(is_purchased_30d),
                       max(cutoff_date), count_if(cutoff_date = (select max(cutoff_date) from {_labels(settings)})
                                                  and is_purchased_7d is null)
                from {_labels(settings)}"""
        ).fetchone()
        segments = c.execute(f"select count(*), count(distinct rfm_segment) from {_feature(settings, 'feat_user_rfm_segments')}").fetchone()
        affinity = c.execute(f"select count(*) from {_feature(settings, 'feat_user_affinity')}").fetchone()[0]
    con = warehouse.connect(settings)
    try:
        (last_day,) = con.execute("select max(order_date) from fct_orders").fetchone()
    finally:
        con.close()
    assert rows > 0 and users > 100
    assert known_30d > 0 and 0 < positives_30d < known_30d
    assert last_cutoff == last_day + timedelta(days=1)
    assert null_last > 0
    assert segments[0] > 0 and segments[1] >= 6
    assert affinity == 0  # clickstream features are absent without events (documented)
    # the feature-store gate accepts exactly the marts built from the absent events table as empty
    from ml.features import repo

    allowed = repo.views_allowed_empty(settings)
    assert {"user_activity", "user_affinity"} <= allowed and "user_rfm" not in allowed and "user_rfm_segments" not in allowed
    repo.validate_sources(settings)
