-- One row per item x warehouse x period, from one of two sources, never both for one series:
--   order_lines     every pair with a sale: daily rows, dense from the pair's first sale to the lake's
--                   last date (units = 0 on days without a sale)
--   demand_history  every pair in a planner's ERP export (stg_lake__demand_history): the export's own
--                   period (day, or week dated by its first day), dense on that grid from the pair's
--                   first row to the export's last date of that period (units = 0 on missing periods).
--                   Such a pair's order lines are left out; the units they held on the series' dates
--                   ride along as replaced_order_units (a warn test counts those periods).
-- and the external factors of the period:
--   units        units ordered on non-cancelled orders (gross demand; returns do not undo demand);
--                for an export, its units floored at 0 (its net figure is net_units)
--   is_promoted / discount_pct      the export's promotion columns where it has any, else a promotion
--                                   on the item for this warehouse (or all warehouses) in the period
--   temperature_c / precipitation_mm the export's columns, else the mean weather of the warehouse's
--                                    region over the period (null without weather data)
--   is_holiday   the export's flag, else a public holiday in the warehouse's country (country-wide
--                or its region) in the period
--   is_stockout  stock on hand was 0 at the end of the period (null without an inventory snapshot)
-- Order lines whose order has no warehouse are left out.
with

order_lines as (
    select * from {{ ref('fct_order_lines') }}
),

demand_history as (
    select * from {{ ref('stg_lake__demand_history') }}
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

-- the ERP series: one period per series (that of its latest row) and the export's last date per period
history_series as (
    select
        item_id,
        warehouse_id,
        min(demand_date) as first_date,
        arg_max(period, demand_date) as period
    from demand_history
    group by 1, 2
),

history_ends as (
    select period, max(demand_date) as last_date
    from demand_history
    group by 1
),

history_spine as (
    select
        history_series.item_id,
        history_series.warehouse_id,
        unnest(generate_series(
            history_series.first_date,
            history_ends.last_date,
            case when history_series.period = 'week' then interval 7 day else interval 1 day end
        ))::date as demand_date,
        history_series.period
    from history_series
    inner join history_ends on history_series.period = history_ends.period
),

pairs as (
    select sales.item_id, sales.warehouse_id, min(sales.demand_date) as first_sale_date
    from sales
    anti join history_series
        on sales.item_id = history_series.item_id and sales.warehouse_id = history_series.warehouse_id
    group by 1, 2
),

order_spine as (
    select pairs.item_id, pairs.warehouse_id, calendar.calendar_date as demand_date
    from pairs
    inner join calendar on calendar.calendar_date >= pairs.first_sale_date
),

order_demand as (
    select
        order_spine.item_id,
        order_spine.warehouse_id,
        order_spine.demand_date,
        'day' as period,
        1 as period_days,
        'order_lines' as demand_source,
        coalesce(sales.units, 0)::bigint as units,
        coalesce(sales.net_units, 0)::bigint as net_units,
        coalesce(sales.net_revenue, 0.0) as net_revenue,
        coalesce(sales.order_count, 0)::bigint as order_count,
        null::boolean as export_is_promoted,
        null::double as export_discount_pct,
        null::double as markdown_amount,
        null::double as price,
        null::double as export_temperature_c,
        null::double as export_precipitation_mm,
        null::boolean as export_is_holiday,
        null::bigint as replaced_order_units
    from order_spine
    left join sales
        on order_spine.item_id = sales.item_id and order_spine.warehouse_id = sales.warehouse_id
        and order_spine.demand_date = sales.demand_date
),

replaced as (
    select
        history_spine.item_id,
        history_spine.warehouse_id,
        history_spine.demand_date,
        sum(sales.units)::bigint as replaced_order_units
    from history_spine
    inner join sales
        on history_spine.item_id = sales.item_id and history_spine.warehouse_id = sales.warehouse_id
        and sales.demand_date >= history_spine.demand_date
        and sales.demand_date < history_spine.demand_date + case when history_spine.period = 'week' then 7 else 1 end
    group by 1, 2, 3
),

history_demand as (
    select
        history_spine.item_id,
        history_spine.warehouse_id,
        history_spine.demand_date,
        history_spine.period,
        case when history_spine.period = 'week' then 7 else 1 end as period_days,
        'demand_history' as demand_source,
        greatest(coalesce(demand_history.units, 0), 0)::bigint as units,
        coalesce(demand_history.units, 0)::bigint as net_units,
        case when demand_history.units is null then 0.0 else demand_history.units * demand_history.price end
            as net_revenue,
        null::bigint as order_count,
        demand_history.is_promoted as export_is_promoted,
        demand_history.discount_pct as export_discount_pct,
        demand_history.markdown_amount,
        demand_history.price,
        demand_history.temperature_c as export_temperature_c,
        demand_history.precipitation_mm as export_precipitation_mm,
        demand_history.is_holiday as export_is_holiday,
        replaced.replaced_order_units
    from history_spine
    left join demand_history
        on history_spine.item_id = demand_history.item_id and history_spine.warehouse_id = demand_history.warehouse_id
        and history_spine.demand_date = demand_history.demand_date
    left join replaced
        on history_spine.item_id = replaced.item_id and history_spine.warehouse_id = replaced.warehouse_id
        and history_spine.demand_date = replaced.demand_date
),

demand as (
    select
        *,
        export_is_promoted is not null or export_discount_pct is not null or markdown_amount is not null
            as has_export_promotion
    from (
        select * from order_demand
        union all by name
        select * from history_demand
    ) as unioned
),

-- the distinct periods (warehouse x start x length) the factors are looked up for
periods as (
    select distinct demand.warehouse_id, warehouses.region, demand.demand_date, demand.period_days
    from demand
    left join warehouses on demand.warehouse_id = warehouses.warehouse_id
),

promoted as (
    select demand.item_id, demand.warehouse_id, demand.demand_date, max(promotions.discount_pct) as discount_pct
    from demand
    inner join promotions
        on demand.item_id = promotions.item_id
        and promotions.start_date <= demand.demand_date + (demand.period_days - 1)
        and promotions.end_date >= demand.demand_date
        and (promotions.warehouse_id is null or promotions.warehouse_id = demand.warehouse_id)
    group by 1, 2, 3
),

period_weather as (
    select
        periods.region,
        periods.demand_date,
        periods.period_days,
        avg(weather.temperature_c) as temperature_c,
        avg(weather.precipitation_mm) as precipitation_mm
    from periods
    inner join weather
        on periods.region = weather.region
        and weather.weather_date >= periods.demand_date
        and weather.weather_date < periods.demand_date + periods.period_days
    group by 1, 2, 3
),

holiday_days as (
    select distinct warehouses.warehouse_id, holidays.holiday_date
    from holidays
    inner join warehouses
        on holidays.country = warehouses.country
        and (holidays.region is null or holidays.region = warehouses.region)
),

holiday_periods as (
    select distinct periods.warehouse_id, periods.demand_date, periods.period_days
    from periods
    inner join holiday_days
        on periods.warehouse_id = holiday_days.warehouse_id
        and holiday_days.holiday_date >= periods.demand_date
        and holiday_days.holiday_date < periods.demand_date + periods.period_days
),

final as (
    select
        demand.item_id,
        demand.warehouse_id,
        demand.demand_date,
        demand.units,
        demand.net_units,
        demand.net_revenue,
        demand.order_count,
        case
            when demand.has_export_promotion
                then coalesce(demand.export_is_promoted, coalesce(demand.export_discount_pct, 0) > 0)
            else promoted.discount_pct is not null
        end as is_promoted,
        case
            when demand.has_export_promotion
                then coalesce(demand.export_discount_pct, 0.0)
            else coalesce(promoted.discount_pct, 0.0)
        end as discount_pct,
        coalesce(demand.export_temperature_c, period_weather.temperature_c) as temperature_c,
        coalesce(demand.export_precipitation_mm, period_weather.precipitation_mm) as precipitation_mm,
        coalesce(demand.export_is_holiday, holiday_periods.warehouse_id is not null) as is_holiday,
        inventory.on_hand_units,
        inventory.on_hand_units <= 0 as is_stockout,
        demand.period,
        demand.demand_source,
        demand.price,
        demand.markdown_amount,
        demand.replaced_order_units
    from demand
    left join promoted
        on demand.item_id = promoted.item_id and demand.warehouse_id = promoted.warehouse_id
        and demand.demand_date = promoted.demand_date
    left join warehouses on demand.warehouse_id = warehouses.warehouse_id
    left join period_weather
        on warehouses.region = period_weather.region and demand.demand_date = period_weather.demand_date
        and demand.period_days = period_weather.period_days
    left join holiday_periods
        on demand.warehouse_id = holiday_periods.warehouse_id and demand.demand_date = holiday_periods.demand_date
        and demand.period_days = holiday_periods.period_days
    left join inventory
        on demand.item_id = inventory.item_id and demand.warehouse_id = inventory.warehouse_id
        and inventory.snapshot_date = demand.demand_date + (demand.period_days - 1)
)

select * from final
