-- One row per cancellation line matched to an original order line (ingestion's returns table). A
-- cancellation re-sent by a later export is counted once (the latest export's match wins).
with

source as (
    select * from {{ committed('returns') }}
),

renamed as (
    select
        trim(return_id) as return_id,
        trim(order_id) as order_id,
        trim(item_id) as item_id,
        quantity,
        returned_at,
        _commit_seq
    from source
    where return_id is not null and quantity > 0 and {{ known_as_of('returned_at') }}
),

final as (
    select * exclude (_commit_seq)
    from renamed
    qualify row_number() over (partition by return_id order by _commit_seq desc, returned_at desc) = 1
)

select * from final
