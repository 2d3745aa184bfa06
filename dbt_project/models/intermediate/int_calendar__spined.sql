-- One row per day from the lake's first to its last activity date (orders and events).
-- The lake's bounds ride along on every row: features never stamp a day after the last one.
with

orders as (
    select order_date as activity_date, ordered_at as activity_at from {{ ref('stg_lake__orders') }}
),

events as (
    select event_date as activity_date, event_timestamp as activity_at from {{ ref('stg_lake__events') }}
),

bounds as (
    select
        min(activity_date) as lake_first_date,
        max(activity_date) as lake_last_date,
        max(activity_at) as lake_last_at
    from (select * from orders union all select * from events)
),

final as (
    select
        unnest(generate_series(lake_first_date, lake_last_date, interval 1 day))::date as calendar_date,
        lake_first_date,
        lake_last_date,
        lake_last_at
    from bounds
    where lake_first_date is not null
)

select * from final
