-- The forecasters' input: fct_daily_demand as one row per item x warehouse x period (day, or week for
-- weekly ERP series) with its regressors and the item's top-level category, sorted by series and date.
with

demand as (
    select * from {{ ref('fct_daily_demand') }}
),

items as (
    select * from {{ ref('dim_items') }}
),

final as (
    select
        demand.item_id,
        demand.warehouse_id,
        demand.demand_date,
        demand.period,
        demand.units,
        demand.is_promoted,
        demand.discount_pct,
        demand.temperature_c,
        demand.precipitation_mm,
        demand.is_holiday,
        demand.price,
        demand.markdown_amount,
        demand.on_hand_units,
        items.category_l1
    from demand
    left join items on demand.item_id = items.item_id
)

select * from final
order by item_id, warehouse_id, demand_date
