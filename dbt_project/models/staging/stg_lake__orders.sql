-- One row per order. A re-delivered order_id keeps its latest version (latest ordered_at wins, then
-- the most advanced status); a missing status means completed.
with

source as (
    select * from {{ source('lake', 'orders') }}
),

renamed as (
    select
        trim(order_id) as order_id,
        trim(user_id) as user_id,
        ordered_at,
        timezone('UTC', ordered_at)::date as order_date,  -- recomputed from ordered_at (UTC)
        nullif(trim(warehouse_id), '') as warehouse_id,
        coalesce(lower(nullif(trim(status), '')), 'completed') as status
    from source
    where order_id is not null
),

final as (
    select *
    from renamed
    qualify row_number() over (
        partition by order_id
        order by ordered_at desc, case status when 'returned' then 0 when 'cancelled' then 1 else 2 end
    ) = 1
)

select * from final
