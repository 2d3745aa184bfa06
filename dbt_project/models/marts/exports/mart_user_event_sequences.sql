-- Each user's event history for sequence models: one row per user event (the timeline of
-- int_user_events__unioned_with_orders), sorted by user_id, event_timestamp, with the item's
-- category_l1 and price_band from dim_items; searches carry neither (null).
with

timeline as (
    select * from {{ ref('int_user_events__unioned_with_orders') }}
),

items as (
    select * from {{ ref('dim_items') }}
),

final as (
    select
        timeline.user_id,
        timeline.event_timestamp,
        timeline.event_type,
        items.category_l1,
        items.price_band
    from timeline
    left join items on timeline.item_id = items.item_id
)

-- Sorted (ties in a fixed order) so the Parquet file reads as each user's history in time order.
select * from final
order by user_id, event_timestamp, event_type, category_l1, price_band
