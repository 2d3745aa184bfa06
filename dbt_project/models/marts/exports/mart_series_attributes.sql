-- Static attributes of the demand series (store type, store size, department ...; mapping
-- demand.attributes), long format; ml/models/demand/pipeline.py joins them as one column attr_<name> per name.
with

attributes as (
    select * from {{ ref('stg_lake__series_attributes') }}
),

series as (
    select distinct item_id, warehouse_id from {{ ref('fct_daily_demand') }}
),

final as (
    select attributes.item_id, attributes.warehouse_id, attributes.name, attributes.value
    from attributes
    inner join series on attributes.item_id = series.item_id and attributes.warehouse_id = series.warehouse_id
)

select * from final
order by item_id, warehouse_id, name
