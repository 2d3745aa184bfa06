-- Recent demand per item and warehouse, from fct_daily_demand (dense from the pair's first sale).
-- Grain: one row per item x warehouse per snapshot, only on the days the values change (sale days,
-- the days sales leave the 7/28-day windows, stock-out and promotion changes). Values cover data up
-- to the END of day D, stamped event_timestamp = D + 1 00:00 UTC. Days before the pair's first sale
-- count as zero demand, so units_mean_28d = units_sold_28d / 28 and units_std_28d is the population
-- standard deviation over those 28 days. days_since_last_sale is as of the row's snapshot; between
-- rows, compute it from last_sale_date.
with

demand as (
    select * from {{ ref('fct_daily_demand') }}
),

windowed as (
    select
        item_id,
        warehouse_id,
        demand_date,
        sum(units) {{ trailing_days(['item_id', 'warehouse_id'], 'demand_date', 7) }} as units_sold_7d,
        sum(units) {{ trailing_days(['item_id', 'warehouse_id'], 'demand_date', 28) }} as units_sold_28d,
        sum(units * units) {{ trailing_days(['item_id', 'warehouse_id'], 'demand_date', 28) }} as units_square_sum_28d,
        sum(case when is_stockout then 1 else 0 end) {{ trailing_days(['item_id', 'warehouse_id'], 'demand_date', 28) }}
            as stockout_day_count_28d,
        sum(case when is_promoted then 1 else 0 end) {{ trailing_days(['item_id', 'warehouse_id'], 'demand_date', 28) }}
            as promo_day_count_28d,
        max(case when units > 0 then demand_date end) over (
            partition by item_id, warehouse_id order by demand_date rows between unbounded preceding and current row
        ) as last_sale_date
    from demand
),

stats as (
    select
        *,
        round(units_sold_28d / 28.0, 6) as units_mean_28d,
        round(sqrt(greatest(units_square_sum_28d / 28.0 - (units_sold_28d / 28.0) ^ 2, 0)), 6) as units_std_28d
    from windowed
),

changed as (
    select *
    from stats
    qualify {{ changed(['item_id', 'warehouse_id'], 'demand_date', [
        'units_sold_7d', 'units_sold_28d', 'units_std_28d', 'stockout_day_count_28d',
        'promo_day_count_28d', 'last_sale_date']) }}
),

final as (
    select
        item_id,
        warehouse_id,
        {{ snapshot_timestamp('demand_date') }} as event_timestamp,
        units_sold_7d::bigint as units_sold_7d,
        units_sold_28d::bigint as units_sold_28d,
        units_mean_28d::double as units_mean_28d,
        units_std_28d::double as units_std_28d,
        stockout_day_count_28d::bigint as stockout_day_count_28d,
        promo_day_count_28d::bigint as promo_day_count_28d,
        last_sale_date,
        (demand_date - last_sale_date)::bigint as days_since_last_sale
    from changed
)

select * from final
