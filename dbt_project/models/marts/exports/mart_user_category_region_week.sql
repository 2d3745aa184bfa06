-- The user-level input of the differentially private aggregate exports (ml/governance/privacy.py):
-- one row per user x top-level category x the user's region x week, with the user's net revenue and
-- order count there. The DP export must see each user to bound their contribution before it sums;
-- what it releases (category x region x week figures with Laplace noise) never carries user_id.
--   revenue     = sum of net_revenue of the lines of non-cancelled orders (returned lines carry 0;
--                 lines without a price count 0)
--   order_count = distinct non-cancelled orders with a line in the cell
-- A null category or region reads 'unknown'; week = the Monday of the order's UTC week.
with

order_lines as (
    select * from {{ ref('fct_order_lines') }}
),

items as (
    select * from {{ ref('dim_items') }}
),

users as (
    select * from {{ ref('dim_users') }}
),

kept_lines as (
    select
        order_lines.user_id,
        coalesce(items.category_l1, 'unknown') as category_l1,
        coalesce(users.region, 'unknown') as region,
        date_trunc('week', order_lines.order_date)::date as week,
        order_lines.order_id,
        order_lines.net_revenue
    from order_lines
    left join items on order_lines.item_id = items.item_id
    left join users on order_lines.user_id = users.user_id
    where order_lines.status != 'cancelled'
),

final as (
    select
        user_id,
        category_l1,
        region,
        week,
        coalesce(sum(net_revenue), 0.0)::double as revenue,
        count(distinct order_id) as order_count
    from kept_lines
    group by user_id, category_l1, region, week
)

select * from final
order by user_id, category_l1, region, week
