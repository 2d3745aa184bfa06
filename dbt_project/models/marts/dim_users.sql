-- One row per user: the accounts in the lake plus any user_id seen only in orders or events
-- (has_profile = false, attributes null), so every fact joins a dimension row. age_band is the
-- age in the year of the lake's last date (deterministic for a given lake).
with

users as (
    select * from {{ ref('stg_lake__users') }}
),

orders as (
    select * from {{ ref('stg_lake__orders') }}
),

events as (
    select * from {{ ref('stg_lake__events') }}
),

calendar as (
    select max(lake_last_date) as lake_last_date from {{ ref('int_calendar__spined') }}
),

seen as (
    select user_id from orders
    union
    select user_id from events
),

unprofiled as (
    select seen.user_id
    from seen
    anti join users on seen.user_id = users.user_id
),

final as (
    select
        user_id,
        signup_at,
        country,
        region,
        gender,
        birth_year,
        case
            when birth_year is null or calendar.lake_last_date is null then null
            when extract(year from calendar.lake_last_date) - birth_year < 25 then '18-24'
            when extract(year from calendar.lake_last_date) - birth_year < 35 then '25-34'
            when extract(year from calendar.lake_last_date) - birth_year < 45 then '35-44'
            when extract(year from calendar.lake_last_date) - birth_year < 55 then '45-54'
            else '55+'
        end as age_band,
        true as has_profile
    from users
    cross join calendar
    union all
    select
        user_id,
        null::timestamptz as signup_at,
        null::varchar as country,
        null::varchar as region,
        null::varchar as gender,
        null::integer as birth_year,
        null::varchar as age_band,
        false as has_profile
    from unprofiled
)

select * from final
