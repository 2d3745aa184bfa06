-- One row per user. Exact duplicate rows (a file delivered twice) collapse; the same user_id with
-- different attributes is a data error the unique test reports.
with

source as (
    select * from {{ source('lake', 'users') }}
),

final as (
    select distinct
        trim(user_id) as user_id,
        signup_at,
        nullif(trim(country), '') as country,
        nullif(trim(region), '') as region,
        nullif(trim(gender), '') as gender,
        birth_year
    from source
    where user_id is not null
)

select * from final
