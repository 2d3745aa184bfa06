-- Static profile attributes per user for models that generalise over demographics (recs_widedeep's
-- deep part): age band and region from dim_users. One row per user, stamped 1970-01-01 00:00 UTC so
-- every point-in-time retrieval sees it (the attributes have no history in the lake; a rebuild
-- overwrites them). Gender is deliberately absent: it stays an audit attribute, never a feature.
with

users as (
    select * from {{ ref('dim_users') }}
),

final as (
    select
        user_id,
        timestamptz '1970-01-01 00:00:00+00' as event_timestamp,
        coalesce(age_band, 'unknown') as age_band,
        coalesce(region, 'unknown') as region
    from users
)

select * from final
