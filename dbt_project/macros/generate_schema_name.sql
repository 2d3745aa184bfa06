{#- Use the folder's schema name as is (staging, intermediate) instead of dbt's <target>_<custom>;
    marts land in the target schema (main). -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
