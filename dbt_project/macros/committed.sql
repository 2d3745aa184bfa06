{#- The committed rows of a lake table: only files whose stem is in the lake's commit log
    (ml/lake.py; a writer that died before its commit left files no build may read), each row with
    the sequence number of the export that brought it (_commit_seq: the order exports arrived in,
    what "the latest export wins" orders by) and its file stem (_commit_stem). -#}
{%- macro committed(table) -%}
(
    select
        source_rows.* exclude (filename),
        commits.seq as _commit_seq,
        commits.stem as _commit_stem
    from {{ source('lake', table) }} as source_rows
    inner join {{ ref('stg_lake__commits') }} as commits
        on commits.stem = parse_filename(source_rows.filename, true)
)
{%- endmacro -%}

{#- The latest export's non-null value of a column within a group (ties: the greatest value). -#}
{%- macro latest_value(column) -%}
    arg_max({{ column }}, (_commit_seq, {{ column }})) filter (where {{ column }} is not null)
{%- endmacro -%}

{#- With the var `as_of` (YYYY-MM-DD: `ecomml warehouse build --as-of`, `ecomml pipeline --as-of`),
    facts after the END of that day (UTC) are left out, so the warehouse, its features and every model
    trained or scored on them see the shop as it was that evening. Without it: true. -#}
{%- macro known_as_of(column, is_date=false) -%}
    {%- set as_of = var('as_of', none) -%}
    {%- if as_of -%}
        {%- if is_date -%}
            {{ column }} <= date '{{ as_of }}'
        {%- else -%}
            {{ column }} < timezone('UTC', (date '{{ as_of }}' + 1)::timestamp)
        {%- endif -%}
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro -%}
