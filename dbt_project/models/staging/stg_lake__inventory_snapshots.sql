-- One row per item per warehouse per day (end-of-day stock); a snapshot re-sent by a later export replaces the earlier one.
with

source as (
    select * from {{ committed('inventory_snapshots') }}
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
    where item_id is not null and {{ known_as_of('snapshot_date', is_date=true) }}
    qualify row_number() over (partition by trim(item_id), trim(warehouse_id), snapshot_date order by _commit_seq desc, on_hand_units) = 1
)

select * from final
