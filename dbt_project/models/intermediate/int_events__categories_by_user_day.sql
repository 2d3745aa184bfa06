-- One row per user per day per category browsed (viewed, added to cart or bought). The category is
-- the item's leaf (category_l3), falling back to l2 then l1. Feeds category_distinct_count_7d/30d.
with

events as (
    select * from {{ ref('stg_lake__events') }}
),

items as (
    select * from {{ ref('stg_lake__items') }}
),

final as (
    select distinct
        events.user_id,
        events.event_date as activity_date,
        coalesce(items.category_l3, items.category_l2, items.category_l1) as category
    from events
    inner join items on events.item_id = items.item_id
    where events.event_type in ('view', 'add_to_cart', 'purchase')
      and coalesce(items.category_l3, items.category_l2, items.category_l1) is not null
)

select * from final
