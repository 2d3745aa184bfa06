-- RFM quintile scores and named segments per user, as weekly snapshots.
-- Grain: one row per user per snapshot day D, for every 7th day counting back from the lake's last
-- day (D = lake_last_date - 7k, D >= lake_first_date), for each user with >= 1 non-cancelled order
-- on or before D. Values cover orders up to the END of day D, stamped event_timestamp = D + 1
-- 00:00 UTC, so the last snapshot is stamped lake_last_date + 1 (the scoring cutoff of
-- mart_user_purchase_labels) and every earlier one lands on a training cutoff.
-- Scores are quintiles (ntile 5) among that snapshot's buyers: equal-sized buckets (sizes differ by
-- at most one), ties broken by the other two measures and then user_id, so a build is deterministic.
-- rfm_segment maps (r_score, fm = ceil((f_score + m_score) / 2)) to one of 11 names (see the .yml).
with

orders as (
    select * from {{ ref('fct_orders') }}
),

calendar as (
    select distinct lake_first_date, lake_last_date from {{ ref('int_calendar__spined') }}
),

order_days as (
    select
        user_id,
        order_date,
        count(*) as order_count,
        -- rounded: a float sum's last bits depend on DuckDB's (parallel) summation order, and the
        -- quintile ranks below must not reorder near-ties from one build of the same lake to the next
        round(sum(net_revenue), 4) as revenue_sum
    from orders
    where status <> 'cancelled'
    group by 1, 2
),

snapshots as (
    select (lake_last_date - (7 * step)::integer)::date as snapshot_date
    from calendar, unnest(range(0, (lake_last_date - lake_first_date) // 7 + 1)) as steps(step)
),

measured as (
    select
        order_days.user_id,
        snapshots.snapshot_date,
        snapshots.snapshot_date - max(order_days.order_date) as days_since_last_order,
        coalesce(sum(order_days.order_count) filter (where order_days.order_date > snapshots.snapshot_date - 365), 0)
            as order_count_365d,
        round(sum(order_days.revenue_sum) filter (where order_days.order_date > snapshots.snapshot_date - 365), 4)
            as revenue_sum_365d
    from snapshots
    inner join order_days on order_days.order_date <= snapshots.snapshot_date
    group by 1, 2
),

scored as (
    select
        *,
        ntile(5) over (
            partition by snapshot_date
            order by days_since_last_order desc, order_count_365d, coalesce(revenue_sum_365d, 0), user_id
        ) as r_score,
        ntile(5) over (
            partition by snapshot_date
            order by order_count_365d, coalesce(revenue_sum_365d, 0), days_since_last_order desc, user_id
        ) as f_score,
        ntile(5) over (
            partition by snapshot_date
            order by coalesce(revenue_sum_365d, 0), order_count_365d, days_since_last_order desc, user_id
        ) as m_score
    from measured
),

segmented as (
    select
        *,
        ceil((f_score + m_score) / 2.0)::integer as fm_score
    from scored
),

final as (
    select
        user_id,
        {{ snapshot_timestamp('snapshot_date') }} as event_timestamp,
        days_since_last_order::integer as days_since_last_order,
        order_count_365d::bigint as order_count_365d,
        (case when order_count_365d = 0 then 0.0 else round(revenue_sum_365d, 4) end)::double as revenue_sum_365d,
        r_score::integer as r_score,
        f_score::integer as f_score,
        m_score::integer as m_score,
        (r_score + f_score + m_score)::integer as rfm_score,
        case
            when r_score = 5 and fm_score >= 4 then 'champions'
            when r_score = 5 and fm_score >= 2 then 'potential_loyalists'
            when r_score = 5 then 'new_customers'
            when r_score = 4 and fm_score >= 4 then 'loyal_customers'
            when r_score = 4 and fm_score >= 2 then 'potential_loyalists'
            when r_score = 4 then 'promising'
            when r_score = 3 and fm_score >= 4 then 'loyal_customers'
            when r_score = 3 and fm_score = 3 then 'need_attention'
            when r_score = 3 then 'about_to_sleep'
            when fm_score = 5 then 'cannot_lose_them'
            when fm_score >= 3 then 'at_risk'
            when r_score = 1 and fm_score = 1 then 'lost'
            else 'hibernating'
        end::varchar as rfm_segment
    from segmented
)

select * from final
