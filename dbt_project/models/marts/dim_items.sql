-- One row per item: the catalogue plus item_ids seen only in order lines or events. price is the
-- list price, else the median unit price paid. price_band is the price quartile within the item's
-- top-level category: low | mid | high | premium (unknown without a price).
with

items as (
    select * from {{ ref('stg_lake__items') }}
),

order_lines as (
    select * from {{ ref('stg_lake__order_lines') }}
),

events as (
    select * from {{ ref('stg_lake__events') }}
),

paid as (
    select item_id, median(unit_price) as median_unit_price
    from order_lines
    where unit_price is not null
    group by 1
),

seen as (
    select item_id from order_lines
    union
    select item_id from events where item_id is not null
),

catalogue as (
    select *, true as is_in_catalogue from items
    union all by name
    select seen.item_id, false as is_in_catalogue
    from seen
    anti join items on seen.item_id = items.item_id
),

priced as (
    select
        catalogue.*,
        coalesce(catalogue.price, paid.median_unit_price) as effective_price
    from catalogue
    left join paid on catalogue.item_id = paid.item_id
),

banded as (
    select
        *,
        case when effective_price is not null then
            ntile(4) over (partition by coalesce(category_l1, ''), effective_price is null order by effective_price, item_id)
        end as price_quartile
    from priced
),

final as (
    select
        item_id,
        title,
        description,
        category_l1,
        category_l2,
        category_l3,
        brand,
        effective_price as price,
        case price_quartile when 1 then 'low' when 2 then 'mid' when 3 then 'high' when 4 then 'premium' else 'unknown' end
            as price_band,
        launch_date,
        is_in_catalogue
    from banded
)

select * from final
