-- One row per order line, merged over exports. A line's identity across exports is
-- (order_id, item_id, n): the n-th line of that item in the order within its export. The latest
-- export's copy of a line wins, so an overlapping re-export counts a line once, a corrected line
-- replaces the old one, and lines of one order spread over several exports (late-arriving lines, a
-- file cut mid-invoice) are all kept. line_number is renumbered 1..n per order (export order, then
-- the export's own numbering). returned_quantity = the line's own + the units of the returns table
-- matched to its order and item (allocated to the order's last lines of that item first, never
-- more than a line's quantity); discount defaults to 0.
with

source as (
    select * from {{ committed('order_lines') }}
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
        coalesce(returned_quantity, 0)::integer as own_returned_quantity,
        _commit_seq,
        _commit_stem,
        row_number() over (
            partition by _commit_stem, trim(order_id), trim(item_id) order by line_number
        ) as item_occurrence
    from source
    where order_id is not null and {{ known_as_of('order_date', is_date=true) }}
),

latest as (
    select *
    from renamed
    qualify row_number() over (
        partition by order_id, item_id, item_occurrence order by _commit_seq desc, _commit_stem desc
    ) = 1
),

returns as (
    select order_id, item_id, sum(quantity) as returned_units
    from {{ ref('stg_lake__returns') }}
    group by 1, 2
),

numbered as (
    select
        latest.*,
        row_number() over (partition by latest.order_id order by _commit_seq, line_number, latest.item_id)
            as new_line_number,
        least(quantity, own_returned_quantity) as own_returned,
        coalesce(returns.returned_units, 0) as returned_units,
        coalesce(sum(quantity - least(quantity, own_returned_quantity)) over (
            partition by latest.order_id, latest.item_id
            order by _commit_seq desc, line_number desc
            rows between unbounded preceding and 1 preceding
        ), 0) as capacity_before
    from latest
    left join returns on latest.order_id = returns.order_id and latest.item_id = returns.item_id
),

final as (
    select
        order_id,
        new_line_number::integer as line_number,
        item_id,
        quantity,
        unit_price,
        order_date,
        discount_amount,
        (own_returned + least(quantity - own_returned, greatest(0, returned_units - capacity_before)))::integer
            as returned_quantity
    from numbered
)

select * from final
