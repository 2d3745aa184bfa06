-- One row per promotion; a promotion re-sent by a later export replaces the earlier one.
with

source as (
    select * from {{ committed('promotions') }}
),

final as (
    select
        trim(promotion_id) as promotion_id,
        trim(item_id) as item_id,
        start_date,
        end_date,
        discount_pct,
        nullif(trim(warehouse_id), '') as warehouse_id
    from source
    where promotion_id is not null
    qualify row_number() over (partition by promotion_id order by _commit_seq desc, start_date desc) = 1
)

select * from final
