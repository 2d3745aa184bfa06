-- One row per item, merged over every export that lists the item: each attribute is the latest
-- export's non-null value (the current title, category and list price; an export derived from
-- invoice lines prices an item at its median line price in that export), launch_date the earliest.
with

source as (
    select * from {{ committed('items') }}
),

cleaned as (
    select
        trim(item_id) as item_id,
        title,
        description,
        nullif(trim(category_l1), '') as category_l1,
        nullif(trim(category_l2), '') as category_l2,
        nullif(trim(category_l3), '') as category_l3,
        nullif(trim(brand), '') as brand,
        price,
        launch_date,
        _commit_seq
    from source
    where item_id is not null
),

final as (
    select
        item_id,
        {{ latest_value('title') }} as title,
        {{ latest_value('description') }} as description,
        {{ latest_value('category_l1') }} as category_l1,
        {{ latest_value('category_l2') }} as category_l2,
        {{ latest_value('category_l3') }} as category_l3,
        {{ latest_value('brand') }} as brand,
        {{ latest_value('price') }} as price,
        min(launch_date) as launch_date
    from cleaned
    group by item_id
)

select * from final
