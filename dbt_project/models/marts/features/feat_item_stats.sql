-- Engagement and sales per item over trailing 7 and 30 days, with the item's price and price band.
-- Grain: one row per item per snapshot, only on the days the values change (event or sale days,
-- and the days they leave the 7/30-day windows). Values cover data up to the END of day D, stamped
-- event_timestamp = D + 1 00:00 UTC. Event-based columns are null when the lake has no events
-- (orders-only data); price and price_band are the catalogue's current values.
with

item_days as (
    select * from {{ ref('int_events__pivoted_to_item_day') }}
),

order_lines as (
    select * from {{ ref('fct_order_lines') }}
),

items as (
    select * from {{ ref('dim_items') }}
),

calendar as (
    select distinct lake_last_date from {{ ref('int_calendar__spined') }}
),

lake as (
    select exists (select 1 from item_days) as has_events
),

sale_days as (
    select item_id, order_date as activity_date, sum(quantity) as units_sold
    from order_lines
    where status <> 'cancelled'
    group by 1, 2
),

activity_days as (
    select item_id, activity_date from item_days
    union
    select item_id, activity_date from sale_days
),

spine as (
    {{ change_spine('activity_days', ['item_id'], 'activity_date', [7, 30], 'select lake_last_date from calendar') }}
),

daily as (
    select
        spine.item_id,
        spine.spine_date,
        coalesce(item_days.view_count, 0) as view_count,
        coalesce(item_days.cart_add_count, 0) as cart_add_count,
        coalesce(item_days.purchase_count, 0) as purchase_count,
        coalesce(sale_days.units_sold, 0) as units_sold
    from spine
    left join item_days on spine.item_id = item_days.item_id and spine.spine_date = item_days.activity_date
    left join sale_days on spine.item_id = sale_days.item_id and spine.spine_date = sale_days.activity_date
),

windowed as (
    select
        item_id,
        spine_date,
        sum(view_count) {{ trailing_days(['item_id'], 'spine_date', 7) }} as view_count_7d,
        sum(view_count) {{ trailing_days(['item_id'], 'spine_date', 30) }} as view_count_30d,
        sum(cart_add_count) {{ trailing_days(['item_id'], 'spine_date', 7) }} as cart_add_count_7d,
        sum(cart_add_count) {{ trailing_days(['item_id'], 'spine_date', 30) }} as cart_add_count_30d,
        sum(purchase_count) {{ trailing_days(['item_id'], 'spine_date', 7) }} as purchase_count_7d,
        sum(purchase_count) {{ trailing_days(['item_id'], 'spine_date', 30) }} as purchase_count_30d,
        sum(units_sold) {{ trailing_days(['item_id'], 'spine_date', 7) }} as units_sold_7d,
        sum(units_sold) {{ trailing_days(['item_id'], 'spine_date', 30) }} as units_sold_30d
    from daily
),

changed as (
    select *
    from windowed
    qualify {{ changed(['item_id'], 'spine_date', [
        'view_count_7d', 'view_count_30d', 'cart_add_count_7d', 'cart_add_count_30d',
        'purchase_count_7d', 'purchase_count_30d', 'units_sold_7d', 'units_sold_30d']) }}
),

final as (
    select
        changed.item_id,
        {{ snapshot_timestamp('changed.spine_date') }} as event_timestamp,
        case when lake.has_events then changed.view_count_7d end::bigint as view_count_7d,
        case when lake.has_events then changed.view_count_30d end::bigint as view_count_30d,
        case when lake.has_events then changed.cart_add_count_7d end::bigint as cart_add_count_7d,
        case when lake.has_events then changed.cart_add_count_30d end::bigint as cart_add_count_30d,
        case when lake.has_events then changed.purchase_count_7d end::bigint as purchase_count_7d,
        case when lake.has_events then changed.purchase_count_30d end::bigint as purchase_count_30d,
        changed.units_sold_7d::bigint as units_sold_7d,
        changed.units_sold_30d::bigint as units_sold_30d,
        case when lake.has_events then changed.cart_add_count_30d / nullif(changed.view_count_30d, 0) end::double
            as view_to_cart_rate_30d,
        case when lake.has_events then changed.purchase_count_30d / nullif(changed.cart_add_count_30d, 0) end::double
            as cart_to_purchase_rate_30d,
        items.price,
        coalesce(items.price_band, 'unknown') as price_band
    from changed
    cross join lake
    left join items on changed.item_id = items.item_id
)

select * from final
