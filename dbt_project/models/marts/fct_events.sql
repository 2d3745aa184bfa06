-- One row per clickstream event, with the item's category for convenience.
with

events as (
    select * from {{ ref('stg_lake__events') }}
),

items as (
    select * from {{ ref('stg_lake__items') }}
),

final as (
    select
        events.event_id,
        events.user_id,
        events.session_id,
        events.event_type,
        events.event_timestamp,
        events.event_date,
        events.item_id,
        items.category_l1,
        events.search_query,
        events.dwell_seconds,
        events.price,
        events.order_id,
        events.rating
    from events
    left join items on events.item_id = items.item_id
)

select * from final
