"""Point-in-time training sets through a feature service (Feast ``get_historical_features``, DuckDB).

    entity_df = pd.DataFrame({"user_id": [...], "event_timestamp": [...], "label": [...]})
    df = build_training_set(settings, entity_df, "propensity_lgbm_v1")

Each entity row gets, per feature view, the latest feature row with the same keys and
``event_timestamp <= `` the entity row's ``event_timestamp`` (and, for a view with a TTL, not older
than the TTL); a row with none gets nulls. Nothing later than the label time is ever joined. The
output has exactly the input's rows, in the input's order, with the input's columns first (labels
kept) and then the service's features. Feature marts stamp a day's values at the next midnight, so
an entity row at 2024-03-05 00:00 sees values covering days up to 2024-03-04.

Request-time features (on-demand views reading ``request_timestamp``) are computed as of each row's
``event_timestamp`` unless the frame carries its own ``request_timestamp``.

Feast's DuckDB offline store joins every earlier feature row to every entity row before keeping the
latest; its memory grows with entity rows x feature history, so the entity frame is retrieved in
chunks of ``chunk_rows`` (see bench/bench_retrieval.py for the measurements behind the default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from feast import FeatureStore

EVENT_TIMESTAMP = "event_timestamp"
REQUEST_TIMESTAMP = "request_timestamp"
DEFAULT_CHUNK_ROWS = 100_000
_ORDER = "__entity_row_order__"


class TrainingSetError(ValueError):
    """The entity frame or the feature service cannot produce a training set."""


def service_requirements(store: "FeatureStore", feature_service: str, keys: tuple[str, ...] | None = None) -> dict:
    """What a service needs in an entity frame: {"join_keys", "request_fields", "features", "refs"}.

    ``keys``: only the service's views joined on exactly these keys (e.g. ``("user_id",)`` for the
    user side of a user x item service); on-demand views are then left out.
    """
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(feature_service)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise TrainingSetError(f"unknown feature service {feature_service!r}; applied services: {known}") from None
    odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
    join_keys: list[str] = []
    request_fields: list[str] = []
    features: list[str] = []
    refs: list[str] = []
    for projection in service.feature_view_projections:
        if projection.name in odfvs:
            if keys is not None:
                continue
            for source in odfvs[projection.name].source_request_sources.values():
                request_fields += [f.name for f in source.schema if f.name not in request_fields]
        else:
            view = store.get_feature_view(projection.name)
            view_keys = [(projection.join_key_map or {}).get(c.name, c.name) for c in view.entity_columns]
            if keys is not None and sorted(view_keys) != sorted(keys):
                continue
            join_keys += [k for k in view_keys if k not in join_keys]
        features += [f.name for f in projection.features]
        refs += [f"{projection.name_to_use()}:{f.name}" for f in projection.features]
    return {"join_keys": join_keys, "request_fields": request_fields, "features": features, "refs": refs}


def _utc(values: "pd.Series") -> "pd.Series":
    """tz-aware UTC timestamps; naive values are read as UTC, strings as ISO 8601."""
    import pandas as pd

    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        return pd.to_datetime(values, utc=True, format="ISO8601")
    return pd.to_datetime(values, utc=True)


def prepare_entity_df(entity_df: "pd.DataFrame", join_keys: list[str], request_fields: list[str]) -> "pd.DataFrame":
    """A copy of the frame ready for Feast: UTC timestamps, request_timestamp filled, keys checked."""
    import pandas as pd

    missing = [c for c in [*join_keys, EVENT_TIMESTAMP] if c not in entity_df.columns]
    if missing:
        raise TrainingSetError(f"entity frame lacks column(s) {missing}; it needs {[*join_keys, EVENT_TIMESTAMP]}")
    df = entity_df.copy()
    df[EVENT_TIMESTAMP] = _utc(df[EVENT_TIMESTAMP])
    bad = {c: int(df[c].isna().sum()) for c in [*join_keys, EVENT_TIMESTAMP] if df[c].isna().any()}
    if bad:
        raise TrainingSetError(f"entity frame has null keys / timestamps: {bad} (rows cannot be joined; drop them first)")
    for key in join_keys:
        if not (pd.api.types.is_string_dtype(df[key]) or pd.api.types.is_object_dtype(df[key])):
            raise TrainingSetError(f"join key {key!r} must hold strings (the marts' keys are varchar), got {df[key].dtype}")
    for name in request_fields:
        if name not in df.columns:
            if name != REQUEST_TIMESTAMP:
                raise TrainingSetError(f"entity frame lacks request field {name!r} needed by an on-demand view")
            df[name] = df[EVENT_TIMESTAMP]
        else:
            df[name] = _utc(df[name])
    if _ORDER in df.columns:
        raise TrainingSetError(f"column name {_ORDER!r} is reserved")
    return df


def build_training_set(
    settings: Settings,
    entity_df: "pd.DataFrame",
    feature_service: str,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
    full_feature_names: bool = False,
    store: "FeatureStore | None" = None,
    keys: tuple[str, ...] | None = None,
) -> "pd.DataFrame":
    """Point-in-time correct features of ``feature_service`` for every row of ``entity_df``.

    ``entity_df``: the service's join keys (strings), ``event_timestamp`` (label time; naive values
    are read as UTC) and any label columns. ``chunk_rows``: retrieve this many entity rows per Feast
    call (None or 0: one call). ``keys``: retrieve only the service's views joined on these keys (one
    entity side of a multi-entity service, e.g. users and items retrieved apart instead of per pair).
    Returns a new frame: same rows, same order, input columns then features.
    """
    import pandas as pd

    from ml.features.repo import get_store

    store = store or get_store(settings)
    needs = service_requirements(store, feature_service, keys)
    df = prepare_entity_df(entity_df, needs["join_keys"], needs["request_fields"])
    clash = [c for c in needs["features"] if c in entity_df.columns and not full_feature_names]
    if clash:
        raise TrainingSetError(f"entity frame columns {clash} clash with features of {feature_service}")
    df[_ORDER] = range(len(df))
    service = store.get_feature_service(feature_service) if keys is None else needs["refs"]
    step = int(chunk_rows) if chunk_rows else max(len(df), 1)
    parts = []
    for start in range(0, len(df), step):
        chunk = df.iloc[start : start + step]
        job = store.get_historical_features(entity_df=chunk, features=service, full_feature_names=full_feature_names)
        parts.append(job.to_df())
    if not parts:  # an empty frame: the columns it would have had
        job = store.get_historical_features(entity_df=df, features=service, full_feature_names=full_feature_names)
        parts.append(job.to_df())
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if len(out) != len(df):
        raise RuntimeError(f"Feast returned {len(out)} rows for {len(df)} entity rows ({feature_service}); rows must never be dropped")
    out = out.sort_values(_ORDER, kind="stable").reset_index(drop=True)
    if not out[_ORDER].equals(pd.Series(range(len(df)), name=_ORDER)):
        raise RuntimeError(f"Feast returned duplicated or missing entity rows for {feature_service}")
    inputs = [c for c in df.columns if c != _ORDER]
    features = [c for c in out.columns if c not in df.columns]
    return out[inputs + features]


def reference_training_set(settings: Settings, entity_df: "pd.DataFrame", views: list[str]) -> "pd.DataFrame":
    """The same point-in-time join written by hand as DuckDB ``ASOF LEFT JOIN``s (no Feast).

    A reference for tests and benchmarks, not a second production path: it covers plain feature
    views (no on-demand views) and reads the views' columns, keys and TTL from feature_views.py.
    Returns the input columns then each view's features, in input order.
    """
    from pathlib import Path

    import duckdb

    from ml.features.contract import read_view_specs
    from ml.features.repo import source_file

    specs = read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")
    frame = entity_df.copy()
    frame[EVENT_TIMESTAMP] = _utc(frame[EVENT_TIMESTAMP])
    frame[_ORDER] = range(len(frame))
    q = lambda c: '"' + c.replace('"', '""') + '"'  # noqa: E731
    selects, joins, params = [], [], []
    for i, name in enumerate(views):
        spec = specs[name]
        alias = f"f{i}"
        on = " and ".join(f"e.{q(k)} = {alias}.{q(k)}" for k in spec.join_keys)
        joins.append(f"asof left join read_parquet(?) {alias} on {on} and e.{q(EVENT_TIMESTAMP)} >= {alias}.{q(EVENT_TIMESTAMP)}")
        params.append(str(source_file(settings, spec.dbt_model or name)))
        for feature in spec.features:
            value = f"{alias}.{q(feature)}"
            if spec.ttl_days:
                value = (
                    f"case when {alias}.{q(EVENT_TIMESTAMP)} + interval {int(spec.ttl_days)} day >= e.{q(EVENT_TIMESTAMP)} then {value} end"
                )
            selects.append(f"{value} as {q(feature)}")
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.register("entity_frame", frame)
        sql = f"select e.*, {', '.join(selects)} from entity_frame e {' '.join(joins)} order by e.{q(_ORDER)}"
        out = con.execute(sql, params).df()
    finally:
        con.close()
    return out.drop(columns=[_ORDER])
