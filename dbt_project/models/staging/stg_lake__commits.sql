-- One row per committed file stem of the lake (ml/lake.py writes _commits.json atomically: a stem
-- is in it only once all of its files are in place). Every staging model keeps only committed rows.
with

source as (
    select * from {{ source('lake_log', 'commits') }}
),

final as (
    select
        seq,
        stem,
        kind,
        source,
        committed_at
    from source
    qualify row_number() over (partition by stem order by seq desc) = 1
)

select * from final
