-- One row per holiday per country/region.
with

source as (
    select * from {{ source('lake', 'holidays') }}
),

final as (
    select distinct
        holiday_date,
        trim(country) as country,
        holiday_name,
        nullif(trim(region), '') as region
    from source
    where holiday_date is not null
    qualify row_number() over (partition by holiday_date, trim(country), nullif(trim(region), '') order by holiday_name) = 1
)

select * from final
