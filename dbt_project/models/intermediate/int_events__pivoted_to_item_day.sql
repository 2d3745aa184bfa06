-- One row per item per day with events: views, cart adds and purchase events.
with

events as (
    select * from {{ ref('stg_lake__events') }}
),

final as (
    select
        item_id,
        event_date as activity_date,
        count_if(event_type = 'view') as view_count,
        count_if(event_type = 'add_to_cart') as cart_add_count,
        count_if(event_type = 'purchase') as purchase_count
    from events
    where item_id is not null
    group by 1, 2
)

select * from final
