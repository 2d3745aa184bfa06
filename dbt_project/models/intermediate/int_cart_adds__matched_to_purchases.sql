-- One row per add_to_cart event, matched to the first purchase of the same item by the same user
-- within 24 hours (a purchase event or an order line of a non-cancelled order).
-- An add is abandoned when no such purchase happened; that is only known 24 h after the add, so the
-- abandonment is dated abandoned_at = added_at + 24 h (and unknown while that lies beyond the lake).
with

events as (
    select * from {{ ref('stg_lake__events') }}
),

orders as (
    select * from {{ ref('stg_lake__orders') }}
),

order_lines as (
    select * from {{ ref('stg_lake__order_lines') }}
),

calendar as (
    select distinct lake_last_at from {{ ref('int_calendar__spined') }}
),

cart_adds as (
    select event_id, user_id, item_id, event_timestamp as added_at
    from events
    where event_type = 'add_to_cart' and item_id is not null
),

purchases as (
    select user_id, item_id, event_timestamp as purchased_at
    from events
    where event_type = 'purchase' and item_id is not null
    union all
    select orders.user_id, order_lines.item_id, orders.ordered_at as purchased_at
    from order_lines
    inner join orders on order_lines.order_id = orders.order_id
    where orders.status <> 'cancelled'
),

matched as (
    select
        cart_adds.event_id,
        min(purchases.purchased_at) as purchased_at
    from cart_adds
    inner join purchases
        on cart_adds.user_id = purchases.user_id
        and cart_adds.item_id = purchases.item_id
        and purchases.purchased_at >= cart_adds.added_at
        and purchases.purchased_at <= cart_adds.added_at + interval 24 hours
    group by cart_adds.event_id
),

final as (
    select
        cart_adds.event_id,
        cart_adds.user_id,
        cart_adds.item_id,
        cart_adds.added_at,
        timezone('UTC', cart_adds.added_at)::date as added_date,
        matched.purchased_at,
        matched.purchased_at is not null as is_purchased_24h,
        matched.purchased_at is null and cart_adds.added_at + interval 24 hours <= calendar.lake_last_at as is_abandoned,
        case
            when matched.purchased_at is null and cart_adds.added_at + interval 24 hours <= calendar.lake_last_at
                then cart_adds.added_at + interval 24 hours
        end as abandoned_at
    from cart_adds
    left join matched on cart_adds.event_id = matched.event_id
    cross join calendar
)

select * from final
