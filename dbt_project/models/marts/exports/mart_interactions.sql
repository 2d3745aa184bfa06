-- User x item interactions for recommenders: the timeline's views, cart adds and purchases (orders-
-- only lakes: purchases only, one session per order), sorted by user_id, event_timestamp.
with

timeline as (
    select * from {{ ref('int_user_events__unioned_with_orders') }}
),

final as (
    select
        user_id,
        item_id,
        session_id,
        event_type,
        event_timestamp
    from timeline
    where event_type in ('view', 'add_to_cart', 'purchase')
      and item_id is not null
)

select * from final
order by user_id, event_timestamp, item_id, event_type, session_id
