-- Item affinity per user over a trailing 30 days (clickstream only): how concentrated the user's
-- browsing is on categories, how expensive the items they look at are for their category, and how
-- much of their viewing goes to promoted items.
-- Interactions = view, add_to_cart and purchase events on a known item. Categories are top-level
-- (category_l1); the price index of an item is its price (dim_items.price) over the median price of
-- its category_l1 in the catalogue; an item is promoted on a day when a promotion for it (any
-- warehouse) covers that day.
-- Grain: one row per user per snapshot, only on the days the values change: interaction days and
-- the days interactions leave the 30-day window (all values null then). Values cover events up to the
-- END of day D, stamped event_timestamp = D + 1 00:00 UTC. Orders-only lakes (no events) yield no rows.
with

events as (
    select * from {{ ref('fct_events') }}
),

items as (
    select * from {{ ref('dim_items') }}
),

promotions as (
    select * from {{ ref('stg_lake__promotions') }}
),

calendar as (
    select distinct lake_last_date from {{ ref('int_calendar__spined') }}
),

priced_items as (
    select
        item_id,
        category_l1,
        price / nullif(median(price) over (partition by category_l1), 0) as price_index
    from items
),

interactions as (
    select
        events.user_id,
        events.event_date as activity_date,
        events.event_type,
        priced_items.category_l1,
        priced_items.price_index,
        exists (
            select 1 from promotions
            where promotions.item_id = events.item_id
              and events.event_date between promotions.start_date and promotions.end_date
        ) as is_promoted
    from events
    left join priced_items on events.item_id = priced_items.item_id
    where events.event_type in ('view', 'add_to_cart', 'purchase')
      and events.item_id is not null
      and events.user_id is not null
),

user_days as (
    select
        user_id,
        activity_date,
        count(*) as interaction_count,
        count(price_index) as priced_count,
        sum(price_index) as price_index_sum,
        count_if(event_type = 'view') as view_count,
        count_if(event_type = 'view' and is_promoted) as promoted_view_count
    from interactions
    group by 1, 2
),

category_days as (
    select user_id, activity_date, category_l1, count(*) as interaction_count
    from interactions
    where category_l1 is not null
    group by 1, 2, 3
),

spine as (
    {{ change_spine('user_days', ['user_id'], 'activity_date', [30], 'select lake_last_date from calendar') }}
),

daily as (
    select
        spine.user_id,
        spine.spine_date,
        coalesce(user_days.priced_count, 0) as priced_count,
        coalesce(user_days.price_index_sum, 0) as price_index_sum,
        coalesce(user_days.view_count, 0) as view_count,
        coalesce(user_days.promoted_view_count, 0) as promoted_view_count
    from spine
    left join user_days
        on spine.user_id = user_days.user_id and spine.spine_date = user_days.activity_date
),

windowed as (
    select
        user_id,
        spine_date,
        sum(priced_count) {{ trailing_days(['user_id'], 'spine_date', 30) }} as priced_count_30d,
        sum(price_index_sum) {{ trailing_days(['user_id'], 'spine_date', 30) }} as price_index_sum_30d,
        sum(view_count) {{ trailing_days(['user_id'], 'spine_date', 30) }} as view_count_30d,
        sum(promoted_view_count) {{ trailing_days(['user_id'], 'spine_date', 30) }} as promoted_view_count_30d
    from daily
),

category_window as (
    select
        spine.user_id,
        spine.spine_date,
        category_days.category_l1,
        sum(category_days.interaction_count) as interaction_count
    from spine
    inner join category_days
        on spine.user_id = category_days.user_id
        and category_days.activity_date between spine.spine_date - 29 and spine.spine_date
    group by 1, 2, 3
),

category_shares as (
    select
        user_id,
        spine_date,
        interaction_count / sum(interaction_count) over (partition by user_id, spine_date) as share
    from category_window
),

category_mix as (
    select
        user_id,
        spine_date,
        round(max(share), 6) as top_category_share_30d,
        round(abs(sum(share * log2(share))), 6) as category_entropy_30d  -- abs: -sum(...) would give -0.0 for one category
    from category_shares
    group by 1, 2
),

joined as (
    select
        windowed.user_id,
        windowed.spine_date,
        category_mix.top_category_share_30d,
        category_mix.category_entropy_30d,
        round(windowed.price_index_sum_30d / nullif(windowed.priced_count_30d, 0), 6) as price_index_mean_30d,
        round(windowed.promoted_view_count_30d / nullif(windowed.view_count_30d, 0), 6) as promoted_view_share_30d
    from windowed
    left join category_mix
        on windowed.user_id = category_mix.user_id and windowed.spine_date = category_mix.spine_date
),

changed as (
    select *
    from joined
    qualify {{ changed(['user_id'], 'spine_date', [
        'top_category_share_30d', 'category_entropy_30d', 'price_index_mean_30d', 'promoted_view_share_30d']) }}
),

final as (
    select
        user_id,
        {{ snapshot_timestamp('spine_date') }} as event_timestamp,
        top_category_share_30d::double as top_category_share_30d,
        category_entropy_30d::double as category_entropy_30d,
        price_index_mean_30d::double as price_index_mean_30d,
        promoted_view_share_30d::double as promoted_view_share_30d
    from changed
)

select * from final
