-- Purchase labels per user and weekly cutoff: did the user place a non-cancelled order within 7 / 30
-- days from the cutoff? The training (and scoring) population of the propensity model.
-- Grain: one row per user per cutoff_date. Cutoffs are every 7th day counting back from
-- lake_last_date + 1 (the last one is the scoring population: its labels are unknown, null),
-- skipping cutoffs less than 28 days after the lake's first day. A user enters the population at
-- the first cutoff after their first event or non-cancelled order (activity strictly before the
-- cutoff day). A label covers the days [cutoff_date, cutoff_date + h) and is null when that horizon
-- runs past the lake's last day. Features for a row are those stamped <= event_timestamp (the
-- cutoff's midnight), i.e. covering days up to cutoff_date - 1. Orders-only lakes work unchanged.
with

orders as (
    select * from {{ ref('fct_orders') }}
),

events as (
    select * from {{ ref('fct_events') }}
),

users as (
    select * from {{ ref('dim_users') }}
),

calendar as (
    select distinct lake_first_date, lake_last_date from {{ ref('int_calendar__spined') }}
),

cutoffs as (
    select
        (calendar.lake_last_date + 1 - (7 * step)::integer)::date as cutoff_date,
        calendar.lake_last_date
    from calendar, unnest(range(0, (calendar.lake_last_date + 1 - calendar.lake_first_date) // 7 + 1)) as steps(step)
    where calendar.lake_last_date + 1 - (7 * step)::integer >= calendar.lake_first_date + 28
),

order_days as (
    select distinct user_id, order_date
    from orders
    where status <> 'cancelled'
),

first_activity as (
    select user_id, min(activity_date) as first_activity_date
    from (
        select user_id, order_date as activity_date from order_days
        union all
        select user_id, event_date as activity_date from events where user_id is not null
    )
    group by 1
),

population as (
    select
        first_activity.user_id,
        cutoffs.cutoff_date,
        cutoffs.lake_last_date
    from cutoffs
    inner join first_activity on first_activity.first_activity_date < cutoffs.cutoff_date
),

purchases as (
    select
        cutoffs.cutoff_date,
        order_days.user_id,
        bool_or(order_days.order_date < cutoffs.cutoff_date + 7) as has_order_7d
    from cutoffs
    inner join order_days
        on order_days.order_date >= cutoffs.cutoff_date
        and order_days.order_date < cutoffs.cutoff_date + 30
    group by 1, 2
),

labelled as (
    select
        population.user_id,
        population.cutoff_date,
        case
            when population.cutoff_date + 7 - 1 > population.lake_last_date then null
            when coalesce(purchases.has_order_7d, false) then 1
            else 0
        end as is_purchased_7d,
        case
            when population.cutoff_date + 30 - 1 > population.lake_last_date then null
            when purchases.user_id is not null then 1
            else 0
        end as is_purchased_30d
    from population
    left join purchases
        on population.user_id = purchases.user_id and population.cutoff_date = purchases.cutoff_date
),

final as (
    select
        labelled.user_id,
        labelled.cutoff_date,
        timezone('UTC', labelled.cutoff_date::timestamp) as event_timestamp,
        labelled.is_purchased_7d::integer as is_purchased_7d,
        labelled.is_purchased_30d::integer as is_purchased_30d,
        users.gender,
        users.age_band,
        users.region
    from labelled
    left join users on labelled.user_id = users.user_id
    order by labelled.cutoff_date, labelled.user_id
)

select * from final
