-- Search -> purchase pairs, the ground truth of semantic search: each clickstream purchase that
-- follows a search in the same session, credited to the latest search before it.
with

events as (
    select * from {{ ref('fct_events') }}
),

searches as (
    select
        event_id as search_id,
        user_id,
        session_id,
        event_timestamp as searched_at,
        search_query
    from events
    where event_type = 'search'
      and nullif(trim(search_query), '') is not null
),

purchases as (
    select
        session_id,
        item_id,
        event_timestamp as purchased_at
    from events
    where event_type = 'purchase' and item_id is not null
),

credited as (
    select
        searches.search_id,
        searches.user_id,
        searches.session_id,
        searches.searched_at,
        searches.search_query,
        purchases.item_id,
        purchases.purchased_at
    from purchases
    asof inner join searches
        on purchases.session_id = searches.session_id
        and purchases.purchased_at >= searches.searched_at
),

final as (
    select distinct * from credited
)

select * from final
order by searched_at, search_id, item_id
