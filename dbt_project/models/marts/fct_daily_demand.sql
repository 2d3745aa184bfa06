-- One row per item x warehouse x day, dense from the pair's first sale to the lake's last date
-- (units = 0 on days without a sale), with the external factors of that day:
--   units        units ordered on non-cancelled orders (gross demand; returns do not undo demand)
--   is_promoted / discount_pct      a promotion on the item for this warehouse (or all warehouses)
--   temperature_c / precipitation_mm weather of the warehouse's region (null without weather data)
--   is_holiday   a public holiday in the warehouse's country (country-wide or its region)
--   is_stockout  end-of-day stock on hand was 0 (null without an inventory snapshot that day)
-- Order lines whose order has no warehouse are left out.
with

order_lines as (
    select * from {{ ref('fct_order_lines') }}
),

warehouses as (
    select * from {{ ref('dim_warehouses') }}
),

calendar as (
    select * from {{ ref('int_calendar__spined') }}
),

promotions as (
    select * from {{ ref('stg_lake__promotions') }}
),

weather as (
    select * from {{ ref('stg_lake__weather') }}
),

holidays as (
    select * from {{ ref('stg_lake__holidays') }}
),

inventory as (
    select * from {{ ref('stg_lake__inventory_snapshots') }}
),

sales as (
    select
        item_id,
        warehouse_id,
        order_date as demand_date,
        sum(quantity)::bigint as units,
        sum(net_quantity)::bigint as net_units,
        sum(net_revenue) as net_revenue,
        count(distinct order_id) as order_count
    from order_lines
    where status <> 'cancelled' and warehouse_id is not null
    group by 1, 2, 3
),

pairs as (
    select item_id, warehouse_id, min(demand_date) as first_sale_date
    from sales
    group by 1, 2
),

spine as (
    select pairs.item_id, pairs.warehouse_id, calendar.calendar_date as demand_date
    from pairs
    inner join calendar on calendar.calendar_date >= pairs.first_sale_date
),

promoted as (
    select spine.item_id, spine.warehouse_id, spine.demand_date, max(promotions.discount_pct) as discount_pct
    from spine
    inner join promotions
        on spine.item_id = promotions.item_id
        and spine.demand_date between promotions.start_date and promotions.end_date
        and (promotions.warehouse_id is null or promotions.warehouse_id = spine.warehouse_id)
    group by 1, 2, 3
),

holiday_days as (
    select distinct warehouses.warehouse_id, holidays.holiday_date
    from holidays
    inner join warehouses
        on holidays.country = warehouses.country
        and (holidays.region is null or holidays.region = warehouses.region)
),

final as (
    select
        spine.item_id,
        spine.warehouse_id,
        spine.demand_date,
        coalesce(sales.units, 0)::bigint as units,
        coalesce(sales.net_units, 0)::bigint as net_units,
        coalesce(sales.net_revenue, 0.0) as net_revenue,
        coalesce(sales.order_count, 0)::bigint as order_count,
        promoted.discount_pct is not null as is_promoted,
        coalesce(promoted.discount_pct, 0.0) as discount_pct,
        weather.temperature_c,
        weather.precipitation_mm,
        holiday_days.holiday_date is not null as is_holiday,
        inventory.on_hand_units,
        inventory.on_hand_units <= 0 as is_stockout
    from spine
    left join sales
        on spine.item_id = sales.item_id and spine.warehouse_id = sales.warehouse_id
        and spine.demand_date = sales.demand_date
    left join promoted
        on spine.item_id = promoted.item_id and spine.warehouse_id = promoted.warehouse_id
        and spine.demand_date = promoted.demand_date
    left join warehouses on spine.warehouse_id = warehouses.warehouse_id
    left join weather on warehouses.region = weather.region and spine.demand_date = weather.weather_date
    left join holiday_days
        on spine.warehouse_id = holiday_days.warehouse_id and spine.demand_date = holiday_days.holiday_date
    left join inventory
        on spine.item_id = inventory.item_id and spine.warehouse_id = inventory.warehouse_id
        and spine.demand_date = inventory.snapshot_date
)

select * from final
