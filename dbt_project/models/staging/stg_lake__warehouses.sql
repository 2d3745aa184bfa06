-- One row per warehouse. Exact duplicates collapse; conflicting rows fail the unique test.
with

source as (
    select * from {{ source('lake', 'warehouses') }}
),

final as (
    select distinct
        trim(warehouse_id) as warehouse_id,
        trim(region) as region,
        nullif(trim(country), '') as country
    from source
    where warehouse_id is not null
)

select * from final
