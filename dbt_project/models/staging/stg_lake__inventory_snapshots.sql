-- One row per item per warehouse per day (end-of-day stock), one copy per key.
with

source as (
    select * from {{ source('lake', 'inventory_snapshots') }}
),

final as (
    select
        trim(item_id) as item_id,
        trim(warehouse_id) as warehouse_id,
        snapshot_date,
        on_hand_units,
        lead_time_days,
        on_order_units
    from source
    where item_id is not null
    qualify row_number() over (partition by trim(item_id), trim(warehouse_id), snapshot_date order by on_hand_units) = 1
)

select * from final
