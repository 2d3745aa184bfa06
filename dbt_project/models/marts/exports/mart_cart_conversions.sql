-- One row per add_to_cart event, followed for 30 days: the first purchase of the same item by the same
-- user at or after the add (a purchase event or a line of a non-cancelled order), the first
-- remove_from_cart of it before that purchase, and how long the add was observed (the lake may end
-- before the 30 days are over: such adds are censored, is_fully_observed = false).
-- A purchase or removal is credited to the most recent add of the item before it: once the user adds
-- the same item again (readded_at), the earlier add collects nothing more (without this, a later cart
-- bought the same item would count as a days-late conversion of the earlier one).
-- Orders-only lakes have no cart events: the model is empty. ml/models/cart.py reads the Parquet file.
with

events as (
    select * from {{ ref('fct_events') }}
),

order_lines as (
    select * from {{ ref('fct_order_lines') }}
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
        lead(event_timestamp) over (partition by user_id, item_id order by event_timestamp, event_id) as readded_at
    from events
    where event_type = 'add_to_cart' and item_id is not null
),

purchases as (
    select user_id, item_id, event_timestamp as purchased_at
    from events
    where event_type = 'purchase' and item_id is not null
    union all
    select user_id, item_id, ordered_at as purchased_at
    from order_lines
    where status <> 'cancelled'
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
        cart_adds.added_at + interval 30 days <= calendar.lake_last_at as is_fully_observed
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
        and (windowed.readded_at is null or purchases.purchased_at < windowed.readded_at)
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
        and (windowed.readded_at is null or removals.removed_at < windowed.readded_at)
        and (first_purchase.purchased_at is null or removals.removed_at < first_purchase.purchased_at)
    group by windowed.event_id
),

final as (
    select
        windowed.event_id,
        windowed.user_id,
        windowed.item_id,
        windowed.added_at,
        first_purchase.purchased_at,
        epoch(first_purchase.purchased_at - windowed.added_at) / 3600.0 as hours_to_purchase,
        first_removal.removed_at,
        first_removal.removed_at is not null as is_removed,
        case when windowed.readded_at <= windowed.added_at + interval 30 days then windowed.readded_at end as readded_at,
        windowed.observed_until,
        epoch(windowed.observed_until - windowed.added_at) / 3600.0 as observed_hours,
        windowed.is_fully_observed
    from windowed
    left join first_purchase on windowed.event_id = first_purchase.event_id
    left join first_removal on windowed.event_id = first_removal.event_id
)

select * from final
