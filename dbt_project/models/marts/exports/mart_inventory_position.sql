-- The inventory plan's stock input (ml/models/demand/pipeline.py): per item x warehouse, the latest inventory
-- snapshot's on-hand and on-order units and replenishment lead time, with the warehouse's median lead
-- time over its items' latest snapshots (the fallback for an item whose snapshot has none).
-- is_current: the snapshot is from the lake's last inventory day (an older one is stale stock).
with

inventory as (
    select * from {{ ref('stg_lake__inventory_snapshots') }}
),

latest as (
    select *
    from inventory
    qualify row_number() over (partition by item_id, warehouse_id order by snapshot_date desc) = 1
),

last_day as (
    select max(snapshot_date) as snapshot_date from inventory
),

warehouse_lead_times as (
    select
        warehouse_id,
        median(lead_time_days) as warehouse_lead_time_days
    from latest
    where lead_time_days is not null
    group by 1
),

final as (
    select
        latest.item_id,
        latest.warehouse_id,
        latest.snapshot_date,
        latest.snapshot_date = last_day.snapshot_date as is_current,
        latest.on_hand_units,
        latest.on_order_units,
        latest.lead_time_days as item_lead_time_days,
        warehouse_lead_times.warehouse_lead_time_days
    from latest
    cross join last_day
    left join warehouse_lead_times on latest.warehouse_id = warehouse_lead_times.warehouse_id
)

select * from final
order by item_id, warehouse_id
