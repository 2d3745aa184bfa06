-- One row per order line. A re-delivered (order_id, line_number) keeps one copy; discount and
-- returned quantity default to 0.
with

source as (
    select * from {{ source('lake', 'order_lines') }}
),

renamed as (
    select
        trim(order_id) as order_id,
        line_number,
        trim(item_id) as item_id,
        quantity,
        unit_price,
        order_date,
        coalesce(discount_amount, 0)::double as discount_amount,
        coalesce(returned_quantity, 0)::integer as returned_quantity
    from source
    where order_id is not null
),

final as (
    select *
    from renamed
    qualify row_number() over (partition by order_id, line_number order by returned_quantity desc, item_id) = 1
)

select * from final
