-- One row per region per day; a day re-sent by a later export replaces the earlier value.
with

source as (
    select * from {{ committed('weather') }}
),

final as (
    select
        trim(region) as region,
        weather_date,
        temperature_c,
        precipitation_mm
    from source
    where region is not null and {{ known_as_of('weather_date', is_date=true) }}
    qualify row_number() over (partition by trim(region), weather_date order by _commit_seq desc, temperature_c) = 1
)

select * from final
