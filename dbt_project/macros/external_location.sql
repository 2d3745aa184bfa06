{#- Overrides dbt-duckdb's external_location: feature marts (the default) go to $FEATURES_DIR (the
    profile's external_root, read by Feast); models tagged "export" (models/marts/exports/: labels,
    sequences, cart conversions that Python reads) go to $EXPORTS_DIR. One file per model:
    <root>/<model>.parquet. -#}
{%- macro external_location(relation, config) -%}
  {%- set root = env_var('EXPORTS_DIR') if 'export' in config.get('tags', []) else adapter.external_root() -%}
  {%- set format = config.get('format', 'parquet') -%}
  {%- if config.get('options', {}).get('partition_by') is none -%}
    {{- root }}/{{ relation.identifier }}.{{ format }}
  {%- else -%}
    {{- root }}/{{ relation.identifier }}
  {%- endif -%}
{%- endmacro -%}
