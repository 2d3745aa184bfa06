-- One row per item. Exact duplicates collapse; conflicting rows fail the unique test.
with

source as (
    select * from {{ source('lake', 'items') }}
),

final as (
    select distinct
        trim(item_id) as item_id,
        title,
        description,
        nullif(trim(category_l1), '') as category_l1,
        nullif(trim(category_l2), '') as category_l2,
        nullif(trim(category_l3), '') as category_l3,
        nullif(trim(brand), '') as brand,
        price,
        launch_date
    from source
    where item_id is not null
)

select * from final
