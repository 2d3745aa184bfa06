-- One row per user, merged over every export that lists the user: each attribute is the latest
-- export's non-null value (a customer who moved country shows the new one), signup_at the earliest.
with

source as (
    select * from {{ committed('users') }}
),

cleaned as (
    select
        trim(user_id) as user_id,
        signup_at,
        nullif(trim(country), '') as country,
        nullif(trim(region), '') as region,
        nullif(trim(gender), '') as gender,
        birth_year,
        _commit_seq
    from source
    where user_id is not null
),

final as (
    select
        user_id,
        min(signup_at) as signup_at,
        {{ latest_value('country') }} as country,
        {{ latest_value('region') }} as region,
        {{ latest_value('gender') }} as gender,
        {{ latest_value('birth_year') }} as birth_year
    from cleaned
    group by user_id
)

select * from final
