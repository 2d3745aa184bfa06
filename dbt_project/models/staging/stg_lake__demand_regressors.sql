-- The extra regressors of demand exports (mapping demand.regressors), one value per series, period and
-- name: a period re-sent by a later export is replaced by it (the latest export wins, as in
-- stg_lake__demand_history). Names are lower_snake_case; non-finite values are dropped.
with

source as (
    select * from {{ committed('demand_regressors') }}
),

renamed as (
    select
        trim(item_id) as item_id,
        trim(warehouse_id) as warehouse_id,
        demand_date,
        lower(trim(name)) as name,
        value,
        _commit_seq
    from source
    where item_id is not null and warehouse_id is not null and demand_date is not null and name is not null
        and value is not null and isfinite(value)
        and {{ known_as_of('demand_date', is_date=true) }}
),

final as (
    select * exclude (_commit_seq)
    from renamed
    qualify row_number() over (
        partition by item_id, warehouse_id, demand_date, name order by _commit_seq desc, value desc
    ) = 1
)

select * from final
