-- One row per region per day (one copy per key).
with

source as (
    select * from {{ source('lake', 'weather') }}
),

final as (
    select
        trim(region) as region,
        weather_date,
        temperature_c,
        precipitation_mm
    from source
    where region is not null
    qualify row_number() over (partition by trim(region), weather_date order by temperature_c) = 1
)

select * from final
