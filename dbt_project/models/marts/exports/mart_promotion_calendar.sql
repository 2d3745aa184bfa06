-- The promotion calendar after the demand history ends: one row per item x warehouse x promoted day
-- for every demand series (fct_daily_demand) that a promotion covers after the series' last period.
-- A promotion without a warehouse covers all of the item's series. The forecast job
-- (ml/models/demand/pipeline.py) reads it as the known future of the is_promoted / discount_pct regressors.
with

demand as (
    select * from {{ ref('fct_daily_demand') }}
),

promotions as (
    select * from {{ ref('stg_lake__promotions') }}
),

series as (
    select
        item_id,
        warehouse_id,
        max(demand_date + case when period = 'week' then 6 else 0 end) as last_demand_date
    from demand
    group by 1, 2
),

promoted_days as (
    select
        series.item_id,
        series.warehouse_id,
        unnest(generate_series(
            greatest(promotions.start_date, series.last_demand_date + 1)::timestamp,
            promotions.end_date::timestamp,
            interval 1 day
        ))::date as promotion_date,
        promotions.discount_pct
    from promotions
    inner join series
        on promotions.item_id = series.item_id
        and (promotions.warehouse_id is null or promotions.warehouse_id = series.warehouse_id)
    where promotions.end_date > series.last_demand_date
),

final as (
    select
        item_id,
        warehouse_id,
        promotion_date,
        max(discount_pct) as discount_pct
    from promoted_days
    group by 1, 2, 3
)

select * from final
order by item_id, warehouse_id, promotion_date
