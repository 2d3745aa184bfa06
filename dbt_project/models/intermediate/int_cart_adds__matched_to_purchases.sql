-- The one cart rule: every add_to_cart event matched to what became of it, read by both the 24-hour
-- abandonment feature (int_events__pivoted_to_user_day -> feat_user_activity) and the cart-conversion
-- export (mart_cart_conversions -> mart_cart_conversion_curve, ml/models/user/cart.py).
--   purchase: the first purchase of the same item by the same user at or after the add and within
--             30 days of it (a purchase event, or a line of an order not cancelled at checkout; a
--             later return does not undo a conversion, and is not known when the add is judged).
--   credit:   a purchase or a remove_from_cart belongs to the most recent add of the item before it:
--             once the user adds the same item again (readded_at), the earlier add collects nothing
--             more (otherwise a later cart that bought the item would convert every earlier add).
--   removal:  the first remove_from_cart of the item after the add, before its purchase.
--   follow-up: 30 days, censored at the lake's last timestamp (is_fully_observed = false).
--   24 hours: bought within 24 h = hours_to_purchase < 24 (the curve's "bought by h" at h = 24).
--             An add is abandoned when 24 h pass without its purchase and without a re-add of the
--             item (a re-add within 24 h continues the same cart: only its latest add can be
--             abandoned). That is known 24 h after the add: abandoned_at = added_at + 24 h, and
--             unknown while that lies beyond the lake.
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
    select
        event_id,
        user_id,
        item_id,
        event_timestamp as added_at,
        lead(event_timestamp) over (partition by user_id, item_id order by event_timestamp, event_id) as next_added_at
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

removals as (
    select user_id, item_id, event_timestamp as removed_at
    from events
    where event_type = 'remove_from_cart' and item_id is not null
),

windowed as (
    select
        cart_adds.*,
        least(cart_adds.added_at + interval 30 days, calendar.lake_last_at) as observed_until,
        cart_adds.added_at + interval 30 days <= calendar.lake_last_at as is_fully_observed,
        cart_adds.added_at + interval 24 hours <= calendar.lake_last_at as is_24h_observed
    from cart_adds
    cross join calendar
),

first_purchase as (
    select windowed.event_id, min(purchases.purchased_at) as purchased_at
    from windowed
    inner join purchases
        on windowed.user_id = purchases.user_id
        and windowed.item_id = purchases.item_id
        and purchases.purchased_at >= windowed.added_at
        and purchases.purchased_at <= windowed.added_at + interval 30 days
        and (windowed.next_added_at is null or purchases.purchased_at < windowed.next_added_at)
    group by windowed.event_id
),

first_removal as (
    select windowed.event_id, min(removals.removed_at) as removed_at
    from windowed
    left join first_purchase on windowed.event_id = first_purchase.event_id
    inner join removals
        on windowed.user_id = removals.user_id
        and windowed.item_id = removals.item_id
        and removals.removed_at >= windowed.added_at
        and removals.removed_at <= windowed.added_at + interval 30 days
        and (windowed.next_added_at is null or removals.removed_at < windowed.next_added_at)
        and (first_purchase.purchased_at is null or removals.removed_at < first_purchase.purchased_at)
    group by windowed.event_id
),

matched as (
    select
        windowed.*,
        first_purchase.purchased_at,
        first_removal.removed_at,
        coalesce(first_purchase.purchased_at < windowed.added_at + interval 24 hours, false) as is_purchased_24h,
        coalesce(windowed.next_added_at < windowed.added_at + interval 24 hours, false) as is_readded_24h
    from windowed
    left join first_purchase on windowed.event_id = first_purchase.event_id
    left join first_removal on windowed.event_id = first_removal.event_id
),

final as (
    select
        event_id,
        user_id,
        item_id,
        added_at,
        timezone('UTC', added_at)::date as added_date,
        purchased_at,
        epoch(purchased_at - added_at) / 3600.0 as hours_to_purchase,
        removed_at,
        removed_at is not null as is_removed,
        case when next_added_at <= added_at + interval 30 days then next_added_at end as readded_at,
        observed_until,
        epoch(observed_until - added_at) / 3600.0 as observed_hours,
        is_fully_observed,
        is_purchased_24h,
        not is_purchased_24h and not is_readded_24h and is_24h_observed as is_abandoned,
        case
            when not is_purchased_24h and not is_readded_24h and is_24h_observed
                then added_at + interval 24 hours
        end as abandoned_at
    from matched
)

select * from final
