-- One row per holiday per country/region; a holiday re-sent by a later export takes its name.
with

source as (
    select * from {{ committed('holidays') }}
),

final as (
    select
        holiday_date,
        trim(country) as country,
        holiday_name,
        nullif(trim(region), '') as region
    from source
    where holiday_date is not null
    qualify row_number() over (partition by holiday_date, trim(country), nullif(trim(region), '') order by _commit_seq desc, holiday_name) = 1
)

select * from final
