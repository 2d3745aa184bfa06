-- One row per event. Clickstreams are delivered at least once: a re-delivered event_id keeps its
-- earliest copy. event_type is lower-cased into the contract's vocabulary.
with

source as (
    select * from {{ committed('events') }}
),

renamed as (
    select
        trim(event_id) as event_id,
        trim(user_id) as user_id,
        session_id,
        lower(trim(event_type)) as event_type,
        event_timestamp,
        timezone('UTC', event_timestamp)::date as event_date,  -- recomputed: a feature day never precedes its events
        nullif(trim(item_id), '') as item_id,
        search_query,
        dwell_seconds,
        price,
        order_id,
        rating,
        _commit_seq
    from source
    where event_id is not null and {{ known_as_of('event_timestamp') }}
),

final as (
    select * exclude (_commit_seq)
    from renamed
    qualify row_number() over (partition by event_id order by event_timestamp, session_id, _commit_seq desc) = 1
)

select * from final
