-- Each user's event history for sequence models: one row per user event, sorted by user_id,
-- event_timestamp. Clickstream events (view, add_to_cart, remove_from_cart, purchase, search)
-- come from fct_events; every order line whose order has no purchase event in the clickstream
-- (all of them in an orders-only lake) adds one 'purchase' row at the order's time. The item's
-- category_l1 and price_band come from dim_items; searches carry neither (null).
with

events as (
    select * from {{ ref('fct_events') }}
),

order_lines as (
    select * from {{ ref('fct_order_lines') }}
),

items as (
    select * from {{ ref('dim_items') }}
),

clickstream as (
    select
        events.user_id,
        events.event_timestamp,
        events.event_type,
        events.item_id
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
        coalesce(order_lines.ordered_at, timezone('UTC', order_lines.order_date::timestamp)) as event_timestamp,
        'purchase' as event_type,
        order_lines.item_id
    from order_lines
    anti join orders_in_clickstream on order_lines.order_id = orders_in_clickstream.order_id
    where order_lines.ordered_at is not null or order_lines.order_date is not null
),

unioned as (
    select * from clickstream
    union all
    select * from order_purchases
),

final as (
    select
        unioned.user_id,
        unioned.event_timestamp,
        unioned.event_type,
        items.category_l1,
        items.price_band
    from unioned
    left join items on unioned.item_id = items.item_id
)

-- Sorted (ties in a fixed order) so the Parquet file reads as each user's history in time order.
select * from final
order by user_id, event_timestamp, event_type, category_l1, price_band
