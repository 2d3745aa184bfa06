-- One row per order line, with its order's user, warehouse, time and status (a completed order
-- whose every unit was returned is cancelled), and revenue:
--   gross_revenue = quantity * unit_price
--   net_quantity  = 0 for cancelled or returned orders, else quantity - returned_quantity
--   net_revenue   = (gross_revenue - discount_amount) * net_quantity / quantity
-- (revenue is null when the log has no prices).
with

order_lines as (
    select * from {{ ref('stg_lake__order_lines') }}
),

orders as (
    select * from {{ ref('stg_lake__orders') }}
),

joined as (
    select
        order_lines.order_id,
        order_lines.line_number,
        order_lines.item_id,
        orders.user_id,
        orders.warehouse_id,
        orders.ordered_at,
        coalesce(orders.order_date, order_lines.order_date) as order_date,
        -- an order whose every line came back is cancelled, wherever its returns were recorded
        case
            when orders.status = 'completed'
                and bool_and(order_lines.returned_quantity >= order_lines.quantity)
                    over (partition by order_lines.order_id)
            then 'cancelled'
            else orders.status
        end as status,
        order_lines.quantity,
        least(order_lines.returned_quantity, order_lines.quantity) as returned_quantity,
        order_lines.unit_price,
        order_lines.discount_amount
    from order_lines
    inner join orders on order_lines.order_id = orders.order_id
),

final as (
    select
        *,
        (case when status in ('cancelled', 'returned') then 0 else quantity - returned_quantity end)::integer
            as net_quantity,
        quantity * unit_price as gross_revenue,
        case
            when unit_price is null then null
            when status in ('cancelled', 'returned') then 0.0
            else (quantity * unit_price - discount_amount) * (quantity - returned_quantity) / quantity
        end as net_revenue
    from joined
)

select * from final
