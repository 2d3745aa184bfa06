-- Recency / frequency / monetary features per user.
-- Grain: one row per user per snapshot, only on the days the values change: order days, and the
-- days an order leaves the 90-day window. Values cover non-cancelled orders up to the END of day D
-- and are stamped event_timestamp = D + 1 00:00 UTC, so a point-in-time join never sees the future.
with

orders as (
    select * from {{ ref('fct_orders') }}
),

calendar as (
    select distinct lake_last_date from {{ ref('int_calendar__spined') }}
),

order_days as (
    select
        user_id,
        order_date as activity_date,
        count(*) as order_count,
        sum(net_revenue) as revenue_sum,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at
    from orders
    where status <> 'cancelled'
    group by 1, 2
),

spine as (
    {{ change_spine('order_days', ['user_id'], 'activity_date', [90], 'select lake_last_date from calendar') }}
),

daily as (
    select
        spine.user_id,
        spine.spine_date,
        coalesce(order_days.order_count, 0) as order_count,
        order_days.revenue_sum,
        order_days.first_order_at,
        order_days.last_order_at
    from spine
    left join order_days
        on spine.user_id = order_days.user_id and spine.spine_date = order_days.activity_date
),

windowed as (
    select
        user_id,
        spine_date,
        sum(order_count) over lifetime as order_count_lifetime,
        round(sum(revenue_sum) over lifetime, 4) as revenue_sum_lifetime,
        min(first_order_at) over lifetime as first_order_at,
        max(last_order_at) over lifetime as last_order_at,
        sum(order_count) {{ trailing_days(['user_id'], 'spine_date', 90) }} as order_count_90d,
        round(sum(revenue_sum) {{ trailing_days(['user_id'], 'spine_date', 90) }}, 4) as revenue_sum_90d
    from daily
    window lifetime as (partition by user_id order by spine_date rows between unbounded preceding and current row)
),

changed as (
    select *
    from windowed
    qualify {{ changed(['user_id'], 'spine_date', ['order_count_lifetime', 'revenue_sum_lifetime', 'order_count_90d', 'revenue_sum_90d']) }}
),

final as (
    select
        user_id,
        {{ snapshot_timestamp('spine_date') }} as event_timestamp,
        order_count_lifetime::bigint as order_count_lifetime,
        revenue_sum_lifetime::double as revenue_sum_lifetime,
        (revenue_sum_lifetime / nullif(order_count_lifetime, 0))::double as avg_order_value_lifetime,
        first_order_at,
        last_order_at,
        order_count_90d::bigint as order_count_90d,
        (case when order_count_90d = 0 then 0.0 else revenue_sum_90d end)::double as revenue_sum_90d
    from changed
)

select * from final
