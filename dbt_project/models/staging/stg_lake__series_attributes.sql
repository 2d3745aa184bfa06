-- Static attributes of demand series (mapping demand.attributes: store type, store size, department),
-- one value per series and name: the latest export's.
with

source as (
    select * from {{ committed('series_attributes') }}
),

renamed as (
    select
        trim(item_id) as item_id,
        trim(warehouse_id) as warehouse_id,
        lower(trim(name)) as name,
        trim(value) as value,
        _commit_seq
    from source
    where item_id is not null and warehouse_id is not null and name is not null and nullif(trim(value), '') is not null
),

final as (
    select * exclude (_commit_seq)
    from renamed
    qualify row_number() over (partition by item_id, warehouse_id, name order by _commit_seq desc, value) = 1
)

select * from final
