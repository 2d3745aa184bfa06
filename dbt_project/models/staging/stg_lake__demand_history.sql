-- One row per item per warehouse per period (a day, or a week dated by its first day), one copy per
-- key: a period re-sent by a later export is replaced by it (the latest export wins, so a week re-sent
-- with corrected units corrects it); within one export the row with the most units.
with

source as (
    select * from {{ committed('demand_history') }}
),

renamed as (
    select
        trim(item_id) as item_id,
        trim(warehouse_id) as warehouse_id,
        demand_date,
        units,
        coalesce(nullif(trim(period), ''), 'day') as period,
        is_promoted,
        discount_pct,
        markdown_amount,
        price,
        temperature_c,
        precipitation_mm,
        is_holiday,
        _commit_seq
    from source
    where item_id is not null and warehouse_id is not null and demand_date is not null
        and {{ known_as_of('demand_date', is_date=true) }}
),

final as (
    select * exclude (_commit_seq)
    from renamed
    qualify row_number() over (
        partition by item_id, warehouse_id, demand_date order by _commit_seq desc, units desc, period, price nulls last
    ) = 1
)

select * from final
