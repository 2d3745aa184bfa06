-- One row per order. An order re-sent by a later export is replaced by it (the latest export wins;
-- within one export the latest ordered_at, then the most advanced status); a missing status means
-- completed.
with

source as (
    select * from {{ committed('orders') }}
),

renamed as (
    select
        trim(order_id) as order_id,
        trim(user_id) as user_id,
        ordered_at,
        timezone('UTC', ordered_at)::date as order_date,  -- recomputed from ordered_at (UTC)
        nullif(trim(warehouse_id), '') as warehouse_id,
        coalesce(lower(nullif(trim(status), '')), 'completed') as status,
        _commit_seq
    from source
    where order_id is not null and {{ known_as_of('ordered_at') }}
),

final as (
    select * exclude (_commit_seq)
    from renamed
    qualify row_number() over (
        partition by order_id
        order by _commit_seq desc, ordered_at desc,
            case status when 'returned' then 0 when 'cancelled' then 1 else 2 end
    ) = 1
)

select * from final
