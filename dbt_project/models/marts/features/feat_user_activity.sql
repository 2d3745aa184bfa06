-- Browsing / cart / purchase activity per user over trailing 7 and 30 days (clickstream only).
-- Grain: one row per user per snapshot, only on the days the values change: activity days, and
-- the days that activity leaves the 7- and 30-day windows. Values cover events up to the END of
-- day D, stamped event_timestamp = D + 1 00:00 UTC. A cart add counts as abandoned on the day its
-- 24 hours ran out without a purchase or a re-add (int_cart_adds__matched_to_purchases), never earlier.
-- Orders-only lakes (no events) yield no rows.
with

user_days as (
    select * from {{ ref('int_events__pivoted_to_user_day') }}
),

categories as (
    select * from {{ ref('int_events__categories_by_user_day') }}
),

calendar as (
    select distinct lake_last_date from {{ ref('int_calendar__spined') }}
),

spine as (
    {{ change_spine('user_days', ['user_id'], 'activity_date', [7, 30], 'select lake_last_date from calendar') }}
),

daily as (
    select
        spine.user_id,
        spine.spine_date,
        coalesce(user_days.view_count, 0) as view_count,
        coalesce(user_days.cart_add_count, 0) as cart_add_count,
        coalesce(user_days.purchase_count, 0) as purchase_count,
        coalesce(user_days.search_count, 0) as search_count,
        coalesce(user_days.cart_abandon_count, 0) as cart_abandon_count,
        user_days.last_cart_add_at
    from spine
    left join user_days
        on spine.user_id = user_days.user_id and spine.spine_date = user_days.activity_date
),

windowed as (
    select
        user_id,
        spine_date,
        sum(view_count) {{ trailing_days(['user_id'], 'spine_date', 7) }} as view_count_7d,
        sum(view_count) {{ trailing_days(['user_id'], 'spine_date', 30) }} as view_count_30d,
        sum(cart_add_count) {{ trailing_days(['user_id'], 'spine_date', 7) }} as cart_add_count_7d,
        sum(cart_add_count) {{ trailing_days(['user_id'], 'spine_date', 30) }} as cart_add_count_30d,
        sum(purchase_count) {{ trailing_days(['user_id'], 'spine_date', 7) }} as purchase_count_7d,
        sum(purchase_count) {{ trailing_days(['user_id'], 'spine_date', 30) }} as purchase_count_30d,
        sum(search_count) {{ trailing_days(['user_id'], 'spine_date', 7) }} as search_count_7d,
        sum(search_count) {{ trailing_days(['user_id'], 'spine_date', 30) }} as search_count_30d,
        sum(cart_abandon_count) {{ trailing_days(['user_id'], 'spine_date', 7) }} as cart_abandon_count_7d,
        sum(cart_abandon_count) {{ trailing_days(['user_id'], 'spine_date', 30) }} as cart_abandon_count_30d,
        max(last_cart_add_at) over (partition by user_id order by spine_date rows between unbounded preceding and current row)
            as last_cart_add_at
    from daily
),

category_counts as (
    select
        spine.user_id,
        spine.spine_date,
        count(distinct case when categories.activity_date > spine.spine_date - 7 then categories.category end)
            as category_distinct_count_7d,
        count(distinct categories.category) as category_distinct_count_30d
    from spine
    inner join categories
        on spine.user_id = categories.user_id
        and categories.activity_date between spine.spine_date - 29 and spine.spine_date
    group by 1, 2
),

joined as (
    select
        windowed.*,
        coalesce(category_counts.category_distinct_count_7d, 0) as category_distinct_count_7d,
        coalesce(category_counts.category_distinct_count_30d, 0) as category_distinct_count_30d
    from windowed
    left join category_counts
        on windowed.user_id = category_counts.user_id and windowed.spine_date = category_counts.spine_date
),

changed as (
    select *
    from joined
    qualify {{ changed(['user_id'], 'spine_date', [
        'view_count_7d', 'view_count_30d', 'cart_add_count_7d', 'cart_add_count_30d',
        'purchase_count_7d', 'purchase_count_30d', 'search_count_7d', 'search_count_30d',
        'cart_abandon_count_7d', 'cart_abandon_count_30d', 'category_distinct_count_7d',
        'category_distinct_count_30d', 'last_cart_add_at']) }}
),

final as (
    select
        user_id,
        {{ snapshot_timestamp('spine_date') }} as event_timestamp,
        view_count_7d::bigint as view_count_7d,
        view_count_30d::bigint as view_count_30d,
        cart_add_count_7d::bigint as cart_add_count_7d,
        cart_add_count_30d::bigint as cart_add_count_30d,
        purchase_count_7d::bigint as purchase_count_7d,
        purchase_count_30d::bigint as purchase_count_30d,
        search_count_7d::bigint as search_count_7d,
        search_count_30d::bigint as search_count_30d,
        category_distinct_count_7d::bigint as category_distinct_count_7d,
        category_distinct_count_30d::bigint as category_distinct_count_30d,
        cart_abandon_count_7d::bigint as cart_abandon_count_7d,
        cart_abandon_count_30d::bigint as cart_abandon_count_30d,
        last_cart_add_at,
        ((epoch({{ snapshot_timestamp('spine_date') }}) - epoch(last_cart_add_at)) / 3600.0)::double
            as hours_since_last_cart_add
    from changed
)

select * from final
