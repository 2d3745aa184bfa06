-- Every user action on the timeline, one row per event: the clickstream (fct_events) plus one
-- 'purchase' row per order line whose order has no purchase event in the clickstream (every line of
-- an orders-only lake), at ordered_at, else order_date 00:00 UTC. Such a line's session is its order.
-- The one definition of "the user's history" that sequence models and recommenders read.
with

events as (
    select * from {{ ref('fct_events') }}
),

order_lines as (
    select * from {{ ref('fct_order_lines') }}
),

clickstream as (
    select
        user_id,
        session_id,
        event_timestamp,
        event_type,
        item_id,
        order_id
    from events
),

orders_in_clickstream as (
    select distinct order_id
    from events
    where event_type = 'purchase' and order_id is not null
),

order_purchases as (
    select
        order_lines.user_id,
        order_lines.order_id as session_id,
        coalesce(order_lines.ordered_at, timezone('UTC', order_lines.order_date::timestamp)) as event_timestamp,
        'purchase' as event_type,
        order_lines.item_id,
        order_lines.order_id
    from order_lines
    anti join orders_in_clickstream on order_lines.order_id = orders_in_clickstream.order_id
    where order_lines.ordered_at is not null or order_lines.order_date is not null
),

final as (
    select * from clickstream
    union all
    select * from order_purchases
)

select * from final
