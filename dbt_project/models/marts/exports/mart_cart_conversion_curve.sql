-- The cart conversion curve: for hours h since add_to_cart on a fixed grid, among the carts followed
-- for the full 30 days (is_fully_observed), how many are still open at h (not bought, removed or
-- re-added before h) and how many of those are bought later, within 30 days of the add.
-- Beside it, the "bought by h" vs "bought after h" split over every fully observed add (removed ones
-- included): at h = 24 its late_conversion_ratio = P(bought after 24 h | not within 24 h) / P(bought
-- within 24 h), the generator's late_conversion_ratio. Confidence intervals are added in ml/models/user/cart.py.
-- Empty when there is no fully observed add (orders-only lakes, lakes shorter than 30 days).
with

carts as (
    select
        event_id,
        hours_to_purchase,
        epoch(coalesce(removed_at, readded_at) - added_at) / 3600.0 as hours_to_close
    from {{ ref('mart_cart_conversions') }}
    where is_fully_observed
),

grid as (
    select hours_since_add
    from (values (0), (1), (2), (4), (8), (12), (24), (36), (48), (72), (96), (120), (168), (240), (336), (504))
        as hours(hours_since_add)
),

counted as (
    select
        grid.hours_since_add,
        count(*) as n_carts,
        count(*) filter (where carts.hours_to_purchase < grid.hours_since_add) as n_purchased,
        count(*) filter (
            where (carts.hours_to_purchase is null or carts.hours_to_purchase >= grid.hours_since_add)
            and (carts.hours_to_close is null or carts.hours_to_close >= grid.hours_since_add)
        ) as n_open,
        count(*) filter (
            where carts.hours_to_purchase >= grid.hours_since_add
            and (carts.hours_to_close is null or carts.hours_to_close >= grid.hours_since_add)
        ) as n_converted,
        count(*) filter (where carts.hours_to_purchase >= grid.hours_since_add) as n_late_converted
    from grid
    cross join carts
    group by grid.hours_since_add
),

final as (
    select
        hours_since_add::integer as hours_since_add,
        n_carts,
        n_open,
        n_converted,
        n_converted / nullif(n_open, 0) as conversion_rate,
        n_purchased,
        n_purchased / n_carts as purchased_rate,
        n_carts - n_purchased as n_not_purchased,
        n_late_converted,
        n_late_converted / nullif(n_carts - n_purchased, 0) as late_conversion_rate,
        (n_late_converted / nullif(n_carts - n_purchased, 0)) / nullif(n_purchased / n_carts, 0) as late_conversion_ratio
    from counted
    order by hours_since_add
)

select * from final
