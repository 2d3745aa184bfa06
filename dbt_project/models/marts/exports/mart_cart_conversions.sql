-- The cart-conversion export ml/models/user/cart.py reads: every add_to_cart followed for 30 days, as
-- int_cart_adds__matched_to_purchases matches it (the one place the cart rule lives: purchases and
-- removals credited to the latest add of the item, censoring at the lake's end). No matching here.
-- Orders-only lakes have no cart events: the model is empty.
with

cart_adds as (
    select * from {{ ref('int_cart_adds__matched_to_purchases') }}
),

final as (
    select
        event_id,
        user_id,
        item_id,
        added_at,
        purchased_at,
        hours_to_purchase,
        removed_at,
        is_removed,
        readded_at,
        observed_until,
        observed_hours,
        is_fully_observed
    from cart_adds
)

select * from final
