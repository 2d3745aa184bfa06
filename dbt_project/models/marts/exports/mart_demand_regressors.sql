-- The forecasters' extra regressors (ml/models/demand/pipeline.py pivots them into columns by name beside
-- mart_demand_series): the ERP exports' named regressors of the series that fct_daily_demand holds,
-- sorted by series, date and name.
with

regressors as (
    select * from {{ ref('stg_lake__demand_regressors') }}
),

series as (
    select distinct item_id, warehouse_id from {{ ref('fct_daily_demand') }}
),

final as (
    select regressors.item_id, regressors.warehouse_id, regressors.demand_date, regressors.name, regressors.value
    from regressors
    inner join series on regressors.item_id = series.item_id and regressors.warehouse_id = series.warehouse_id
)

select * from final
order by item_id, warehouse_id, demand_date, name
