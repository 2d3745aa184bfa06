{#- Snapshot stamp of the feature marts: values computed from data up to the END of day `day` are
    stamped the next midnight UTC, as timestamptz, so a point-in-time join never sees the future. -#}
{% macro snapshot_timestamp(day) -%}
    timezone('UTC', ({{ day }} + 1)::timestamp)
{%- endmacro %}

{#- The change spine: the days on which an entity's windowed values can change. A value of a
    window of N days changes on an activity day d and again on d + N, when d leaves the window.
    Returns (keys..., spine_date), capped at the lake's last date (no future rows). -#}
{% macro change_spine(relation, keys, date_column, windows, last_date) -%}
    select distinct {{ keys | join(', ') }}, spine_date
    from (
        select {{ keys | join(', ') }}, {{ date_column }} as spine_date from {{ relation }}
        {%- for window in windows %}
        union all
        select {{ keys | join(', ') }}, {{ date_column }} + {{ window }} as spine_date from {{ relation }}
        {%- endfor %}
    ) as shifted
    where spine_date <= ({{ last_date }})
{%- endmacro %}

{#- A trailing window of `days` days ending on (and including) the row's date. -#}
{% macro trailing_days(keys, order_column, days) -%}
    over (partition by {{ keys | join(', ') }} order by {{ order_column }} range between interval {{ days - 1 }} days preceding and current row)
{%- endmacro %}

{#- Keep only the rows whose values differ from the entity's previous row (the first row always stays). -#}
{% macro changed(keys, order_column, columns) -%}
    row({{ columns | join(', ') }}) is distinct from lag(row({{ columns | join(', ') }})) over (partition by {{ keys | join(', ') }} order by {{ order_column }})
{%- endmacro %}

{#- dbt-duckdb's external materialization writes one all-null row when a model is empty (so the file
    keeps its schema) and hides it behind the view. Feast and ml/ read the files themselves, so this
    post-hook (every feature mart and export) rewrites such a file without that row: an empty mart is
    a zero-row Parquet file with its schema, and "is it empty?" means what it says. -#}
{% macro drop_empty_placeholder() -%}
    {%- if execute -%}
        {%- set location = external_location(this, config) -%}
        {%- set probe = run_query("select count(*), count(*) filter (where columns(*) is null) from read_parquet('" ~ location ~ "')") -%}
        {%- if probe[0][0] == 1 and probe[0][1] == 1 -%}
            copy (select * from read_parquet('{{ location }}') limit 0) to '{{ location }}' (format parquet)
        {%- else -%}
            select 1
        {%- endif -%}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
