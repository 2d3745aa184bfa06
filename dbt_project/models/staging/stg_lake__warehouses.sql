-- One row per warehouse, merged over every export that lists it: the latest export's non-null
-- region and country win.
with

source as (
    select * from {{ committed('warehouses') }}
),

cleaned as (
    select
        trim(warehouse_id) as warehouse_id,
        nullif(trim(region), '') as region,
        nullif(trim(country), '') as country,
        _commit_seq
    from source
    where warehouse_id is not null
),

final as (
    select
        warehouse_id,
        {{ latest_value('region') }} as region,
        {{ latest_value('country') }} as country
    from cleaned
    group by warehouse_id
)

select * from final
