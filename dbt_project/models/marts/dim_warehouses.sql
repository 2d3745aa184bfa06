-- One row per warehouse: the lake's warehouses plus any warehouse_id seen only on orders.
with

warehouses as (
    select * from {{ ref('stg_lake__warehouses') }}
),

orders as (
    select * from {{ ref('stg_lake__orders') }}
),

unlisted as (
    select distinct orders.warehouse_id
    from orders
    anti join warehouses on orders.warehouse_id = warehouses.warehouse_id
    where orders.warehouse_id is not null
),

final as (
    select warehouse_id, region, country, true as is_listed from warehouses
    union all
    select warehouse_id, null::varchar as region, null::varchar as country, false as is_listed from unlisted
)

select * from final
