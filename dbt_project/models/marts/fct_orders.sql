-- One row per order: the header with its lines rolled up.
with

orders as (
    select * from {{ ref('stg_lake__orders') }}
),

order_lines as (
    select * from {{ ref('fct_order_lines') }}
),

line_totals as (
    select
        order_id,
        count(*) as line_count,
        sum(quantity)::bigint as units,
        sum(net_quantity)::bigint as net_units,
        sum(discount_amount) as discount_amount,
        sum(gross_revenue) as gross_revenue,
        sum(net_revenue) as net_revenue,
        bool_and(status = 'cancelled') as all_lines_cancelled
    from order_lines
    group by 1
),

final as (
    select
        orders.order_id,
        orders.user_id,
        orders.warehouse_id,
        orders.ordered_at,
        orders.order_date,
        case
            when orders.status = 'completed' and line_totals.all_lines_cancelled then 'cancelled'
            else orders.status
        end as status,
        coalesce(line_totals.line_count, 0) as line_count,
        coalesce(line_totals.units, 0) as units,
        coalesce(line_totals.net_units, 0) as net_units,
        coalesce(line_totals.discount_amount, 0) as discount_amount,
        line_totals.gross_revenue,
        line_totals.net_revenue
    from orders
    left join line_totals on orders.order_id = line_totals.order_id
)

select * from final
