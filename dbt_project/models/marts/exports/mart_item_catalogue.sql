-- One row per item: dim_items plus the text that embeddings and keyword search read (item_text:
-- title. description. brand. category path; null when the item has none of them) and the item's
-- stock across warehouses on the lake's last inventory day (null without inventory data).
with

items as (
    select * from {{ ref('dim_items') }}
),

inventory as (
    select * from {{ ref('stg_lake__inventory_snapshots') }}
),

last_day as (
    select max(snapshot_date) as snapshot_date from inventory
),

stock as (
    select
        inventory.item_id,
        sum(inventory.on_hand_units) as on_hand_units
    from inventory
    inner join last_day on inventory.snapshot_date = last_day.snapshot_date
    group by 1
),

texted as (
    select
        *,
        nullif(concat_ws('. ',
            nullif(rtrim(trim(title), '.'), ''),
            nullif(rtrim(trim(description), '.'), ''),
            nullif(trim(brand), ''),
            nullif(concat_ws(' > ', category_l1, category_l2, category_l3), '')
        ), '') as item_text
    from items
),

final as (
    select
        texted.item_id,
        texted.title,
        texted.description,
        texted.category_l1,
        texted.category_l2,
        texted.category_l3,
        texted.brand,
        texted.price,
        texted.price_band,
        texted.launch_date,
        texted.is_in_catalogue,
        texted.item_text,
        stock.on_hand_units,
        case when stock.item_id is not null then stock.on_hand_units > 0 end as is_in_stock
    from texted
    left join stock on texted.item_id = stock.item_id
)

select * from final
order by item_id
