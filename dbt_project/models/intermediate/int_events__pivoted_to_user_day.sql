-- One row per user per day with activity: event counts by type, the day's last cart add, and the
-- cart adds whose abandonment became known that day (dated by abandoned_at, see
-- int_cart_adds__matched_to_purchases). The input of feat_user_activity's windows.
with

events as (
    select * from {{ ref('stg_lake__events') }}
),

cart_adds as (
    select * from {{ ref('int_cart_adds__matched_to_purchases') }}
),

event_days as (
    select
        user_id,
        event_date as activity_date,
        count_if(event_type = 'view') as view_count,
        count_if(event_type = 'add_to_cart') as cart_add_count,
        count_if(event_type = 'remove_from_cart') as cart_remove_count,
        count_if(event_type = 'purchase') as purchase_count,
        count_if(event_type = 'search') as search_count,
        max(case when event_type = 'add_to_cart' then event_timestamp end) as last_cart_add_at,
        0::bigint as cart_abandon_count
    from events
    group by 1, 2
),

abandon_days as (
    select
        user_id,
        timezone('UTC', abandoned_at)::date as activity_date,
        0::bigint as view_count,
        0::bigint as cart_add_count,
        0::bigint as cart_remove_count,
        0::bigint as purchase_count,
        0::bigint as search_count,
        null::timestamptz as last_cart_add_at,
        count(*) as cart_abandon_count
    from cart_adds
    where is_abandoned
    group by 1, 2
),

final as (
    select
        user_id,
        activity_date,
        sum(view_count)::bigint as view_count,
        sum(cart_add_count)::bigint as cart_add_count,
        sum(cart_remove_count)::bigint as cart_remove_count,
        sum(purchase_count)::bigint as purchase_count,
        sum(search_count)::bigint as search_count,
        sum(cart_abandon_count)::bigint as cart_abandon_count,
        max(last_cart_add_at) as last_cart_add_at
    from (select * from event_days union all by name select * from abandon_days)
    group by 1, 2
)

select * from final
