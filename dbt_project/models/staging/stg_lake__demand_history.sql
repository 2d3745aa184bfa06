-- One row per item per warehouse per period (a day, or a week dated by its first day), one copy per
-- key: overlapping exports that disagree keep the row with the most units (deterministic; to correct
-- figures, re-ingest the corrected file with force, which replaces its own rows).
with

source as (
    select * from {{ source('lake', 'demand_history') }}
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
        is_holiday
    from source
    where item_id is not null and warehouse_id is not null and demand_date is not null
),

final as (
    select *
    from renamed
    qualify row_number() over (
        partition by item_id, warehouse_id, demand_date order by units desc, period, price nulls last
    ) = 1
)

select * from final
