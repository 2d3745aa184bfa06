"""`ecomml` / `python -m ml`: the one command line humans and Airflow tasks share.

Every command reads its paths from the settings module (environment / .env); options override the
scale, seed or mapping, never the locations. Heavy libraries are imported inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from ml.settings import get_settings

app = typer.Typer(
    name="ecomml",
    help=(
        "E-commerce ML data platform: ingest a shop's exports (or generate a synthetic shop), build the dbt/DuckDB "
        "feature warehouse, serve its features through Feast, train and score the user-behaviour, recommendation and "
        "demand models (MLflow registry), all of it through Airflow (`demo`) or in one process (`pipeline`)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
warehouse_app = typer.Typer(help="The dbt/DuckDB feature warehouse.", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")
features_app = typer.Typer(help="The Feast feature store over the dbt feature marts.", no_args_is_help=True)
app.add_typer(features_app, name="features")
models_app = typer.Typer(help="Models: train, score, reports, the MLflow registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
demand_app = typer.Typer(help="Demand forecasting: backtest, train + register, forecast + inventory plan.", no_args_is_help=True)
app.add_typer(demand_app, name="demand")
recs_app = typer.Typer(help="Recommendation and product search: embed, train, score, show, search.", no_args_is_help=True)
app.add_typer(recs_app, name="recs")
airflow_app = typer.Typer(help="The local Airflow that runs the DAGs in dags/.", no_args_is_help=True)
app.add_typer(airflow_app, name="airflow")


def _echo_json(payload) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


@app.command()
def settings() -> None:
    """Print the resolved settings (the environment dbt, Feast and Airflow receive); passwords in URLs masked."""
    import re

    _echo_json({k: re.sub(r"(://[^:/@\s]*:)[^@/\s]+@", r"\1***@", v) for k, v in get_settings().as_env().items()})


@app.command()
def contract(
    markdown: bool = typer.Option(False, "--markdown", help="Print the contract as Markdown."),
    update_docs: bool = typer.Option(False, "--update-docs", help="Rewrite the tables in docs/data_contract.md."),
) -> None:
    """Show the lake data contract and which tables the current lake holds."""
    from ml import contract as c

    if markdown:
        typer.echo(c.markdown(), nl=False)
        return
    if update_docs:
        path = c.DOCS_PATH
        path.write_text(c.render_docs(path.read_text()))
        typer.echo(f"updated {path}")
        return
    status = c.lake_status(get_settings().lake_dir).get("tables", {})
    for t in c.TABLES.values():
        s = status.get(t.name, {})
        held = f"{s.get('rows', 0):>10,} rows" if s.get("present") else "    (absent)"
        need = "required" if t.required else "optional"
        typer.echo(f"{t.name:<20} {need:<9} {held}  key={','.join(t.key)}")


@app.command()
def generate(
    scale: Optional[str] = typer.Option(None, help="tiny | small | medium | large (default: SCALE setting)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: SEED setting)."),
) -> None:
    """Generate a synthetic e-commerce dataset into the lake (replaces earlier generated files)."""
    from ml.generate import generate as run

    s = get_settings()
    s.ensure_dirs()
    summary = run(scale=scale or s.scale, seed=s.seed if seed is None else seed, lake_dir=s.lake_dir, progress=True)
    _echo_json(summary)


@app.command()
def ingest(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A CSV, Parquet or XLSX export."),
    mapping: str = typer.Option(..., "--mapping", "-m", help="Preset name or path to a mapping YAML."),
    force: bool = typer.Option(False, help="Re-ingest even if this exact file was ingested before."),
    accept_quarantine: bool = typer.Option(
        False, help="Commit the file even when it quarantines more than INGEST_MAX_QUARANTINE_SHARE of its rows."
    ),
) -> None:
    """Ingest one export file into the lake through a mapping; prints the read/accepted/quarantined report."""
    from ml.ingest import IngestError, ingest_file

    s = get_settings()
    s.ensure_dirs()
    try:
        report = ingest_file(
            path,
            mapping,
            lake_dir=s.lake_dir,
            quarantine_dir=s.quarantine_dir,
            force=force,
            max_quarantine_share=s.ingest_max_quarantine_share,
            accept_quarantine=accept_quarantine,
        )
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _echo_json(report.to_dict())
    _warn_quarantine(report)


def _warn_quarantine(report) -> None:
    if report.quarantined and not report.skipped:
        typer.echo(
            f"{Path(report.file).name}: {report.accepted:,} of {report.read:,} rows accepted, "
            f"{report.quarantined:,} quarantined ({report.bad_share:.1%} for bad data: {report.top_reasons()})",
            err=True,
        )


@app.command("ingest-landing")
def ingest_landing(
    mapping: str = typer.Option(..., "--mapping", "-m", help="Preset name or path to a mapping YAML."),
    accept_quarantine: bool = typer.Option(
        False, help="Commit files even when they quarantine more than INGEST_MAX_QUARANTINE_SHARE of their rows."
    ),
) -> None:
    """Ingest every file in the landing folder not ingested before; failed files move to <landing>/_failed/."""
    from ml.ingest import IngestError, LandingError
    from ml.ingest import ingest_landing as run

    s = get_settings()
    s.ensure_dirs()

    skipped = []

    def progress(path, report, error):
        if error:
            typer.echo(f"FAILED {path.name}", err=True)
        elif report.skipped:
            skipped.append(path.name)
        else:
            _warn_quarantine(report)

    try:
        reports = run(
            s.landing_dir,
            mapping,
            lake_dir=s.lake_dir,
            quarantine_dir=s.quarantine_dir,
            max_quarantine_share=s.ingest_max_quarantine_share,
            accept_quarantine=accept_quarantine,
            progress=progress,
        )
    except LandingError as exc:
        _echo_json([r.to_dict() for r in exc.reports])
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _echo_json([r.to_dict() for r in reports])
    typer.echo(
        f"{len(reports)} new file(s) ingested from {s.landing_dir}" + (f"; {len(skipped)} ingested before, skipped" if skipped else ""),
        err=True,
    )


@app.command("presets")
def presets() -> None:
    """List the shipped ingestion mapping presets."""
    from ml.ingest import PRESETS

    for name in sorted(PRESETS):
        typer.echo(name)


@warehouse_app.command("build")
def warehouse_build(
    select: Optional[str] = typer.Option(None, "--select", "-s", help="dbt node selection."),
    full_refresh: bool = typer.Option(False, help="Rebuild incremental models from scratch."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="YYYY-MM-DD: build from the facts known at the end of that day (UTC)."),
) -> None:
    """Run `dbt build` (models + tests) into the DuckDB warehouse and the feature Parquet files."""
    from ml.warehouse import WarehouseBuildError, build

    try:
        summary = build(get_settings(), select=select, full_refresh=full_refresh, vars=_as_of_vars(as_of))
    except WarehouseBuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _echo_json(summary)


def _as_of_vars(as_of: Optional[str]) -> dict | None:
    """dbt vars for ``--as-of`` (a checked ISO date), or None."""
    if as_of is None:
        return None
    from datetime import date

    try:
        return {"as_of": date.fromisoformat(as_of).isoformat()}
    except ValueError:
        raise typer.BadParameter(f"{as_of!r} is not a date (YYYY-MM-DD)", param_hint="--as-of") from None


@warehouse_app.command("parse")
def warehouse_parse() -> None:
    """`dbt parse`: write manifest.json, from which the warehouse DAG builds one task per dbt node."""
    from ml.orchestration.tasks import parse

    typer.echo(parse(get_settings(), echo=typer.echo))


@warehouse_app.command("query")
def warehouse_query(
    sql: str = typer.Argument(..., help="ONE SELECT (or EXPLAIN) against the warehouse, run read-only and sandboxed."),
    limit: int = typer.Option(50, help="Rows to print at most."),
    wait: float = typer.Option(600, help="Seconds to wait for a running warehouse build."),
) -> None:
    """Run one read-only SELECT against the DuckDB warehouse and print the result (no writes, no files
    outside the warehouse's Parquet folders, no extensions; waits for a running build)."""
    from ml.warehouse import QueryError, query

    try:
        frame = query(get_settings(), sql, wait_s=wait, on_wait=lambda m: typer.echo(m, err=True))
    except QueryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(frame.head(limit).to_string(index=False))


@warehouse_app.command("docs")
def warehouse_docs(
    serve: bool = typer.Option(
        False, "--serve", help="Then serve the site on 127.0.0.1 until Ctrl-C (from disk a browser cannot load it)."
    ),
    port: int = typer.Option(8081, help="Port for --serve."),
) -> None:
    """Run `dbt docs generate` (catalog + manifest for the docs site); with --serve, browse it."""
    from ml.warehouse import docs

    target = docs(get_settings())
    if not serve:
        _echo_json(target)
        typer.echo(
            "browse it: .venv/bin/ecomml warehouse docs --serve   (index.html fetches manifest.json, so it needs a server)", err=True
        )
        return
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(target))
    handler.log_message = lambda *args: None  # one line per request is noise here
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        typer.echo(f"dbt docs: http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def _utc(value: Optional[str]):
    """Parse an ISO date/time option as UTC (naive values are UTC)."""
    if value is None:
        return None
    from datetime import datetime, timezone

    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


@features_app.command("generate")
def features_generate() -> None:
    """Regenerate feature_repo/ data sources and views from dbt's manifest (run `warehouse build` first)."""
    from ml.features.repo import generate as run

    for path in run(get_settings()):
        typer.echo(f"wrote {path}")


@features_app.command("check")
def features_check() -> None:
    """Check feature_repo/ against dbt's manifest: renamed, dropped or retyped mart columns fail."""
    from ml.features.repo import check_contract

    problems = check_contract(get_settings())
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("feature_repo/ matches the dbt manifest")


@features_app.command("validate")
def features_validate() -> None:
    """Check every feature mart Parquet file: present, non-empty, typed columns, keys, no duplicates."""
    from ml.features.repo import SourceValidationError, validate_sources

    try:
        _echo_json(validate_sources(get_settings()))
    except SourceValidationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@features_app.command("apply")
def features_apply() -> None:
    """Check the contract and sources, then `feast apply` (registers entities, views, services)."""
    from ml.features.repo import apply

    result = apply(get_settings(), echo=typer.echo)  # Feast's lines stream as they come: not printed again
    typer.echo(f"feast apply done in {result['seconds']} s (configuration {result['config']})")


@features_app.command("plan")
def features_plan() -> None:
    """`feast plan`: what `apply` would change in the registry."""
    from ml.features.repo import plan

    typer.echo(plan(get_settings())["output"])


@features_app.command("services")
def features_services() -> None:
    """List the feature services and their features (from the registry; run `features apply` first)."""
    from ml.features.repo import list_feature_services

    _echo_json(list_feature_services(get_settings()))


@features_app.command("training-set")
def features_training_set(
    entities: Path = typer.Argument(..., exists=True, dir_okay=False, help="Parquet/CSV: join keys, event_timestamp, labels."),
    service: str = typer.Option(..., "--service", help="Feature service, e.g. propensity_lgbm_v3."),
    out: Path = typer.Option(..., "--out", help="Output Parquet file."),
) -> None:
    """Point-in-time training set: features of a service as of each row's event_timestamp."""
    import pandas as pd

    from ml.features.training import build_training_set

    frame = pd.read_parquet(entities) if entities.suffix == ".parquet" else pd.read_csv(entities)
    result = build_training_set(get_settings(), frame, service)
    result.to_parquet(out, index=False)
    typer.echo(f"wrote {len(result):,} rows x {result.shape[1]} columns to {out}")


@features_app.command("materialize")
def features_materialize(
    end: Optional[str] = typer.Option(None, help="Window end (ISO, UTC; default now)."),
    start: Optional[str] = typer.Option(None, help="Window start (ISO, UTC); default: since the last materialization."),
    view: Optional[list[str]] = typer.Option(None, "--view", help="Only these feature views (repeatable)."),
) -> None:
    """Fast materialization into the online store: latest value per entity in [start, end)."""
    from ml.features.materialize import materialize, materialize_incremental

    s = get_settings()
    end_at = _utc(end) or _now()
    if start is None:
        stats = materialize_incremental(s, end_at, views=view or None, echo=typer.echo)
    else:
        stats = materialize(s, _utc(start), end_at, views=view or None, echo=typer.echo)
    _echo_json(stats)


@features_app.command("online")
def features_online(
    service: str = typer.Option(..., "--service", help="Feature service, e.g. propensity_lgbm_v3."),
    entity: list[str] = typer.Option(..., "--entity", help="key=value, e.g. user_id=u000001 (repeat for more keys)."),
) -> None:
    """Read one entity's online features for a service."""
    from ml.features.serving import get_online_features

    row = dict(pair.split("=", 1) for pair in entity)
    values = get_online_features(get_settings(), service, row)
    _echo_json({name: column[0] for name, column in values.items()})


@features_app.command("serve")
def features_serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 inside a container)."),
    port: int = typer.Option(6566, help="Port (Feast's default 6566)."),
    workers: int = typer.Option(1, help="Server processes."),
    registry_ttl: int = typer.Option(60, help="Seconds between registry re-reads (a new apply is picked up)."),
) -> None:
    """Run Feast's HTTP feature server in the foreground (this process becomes `feast serve`)."""
    from ml.features.serving import exec_foreground, server_args

    exec_foreground(get_settings(), server_args(host, port, workers, registry_ttl_sec=registry_ttl))


@features_app.command("ui")
def features_ui(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 inside a container)."),
    port: int = typer.Option(8888, help="Port (Feast's default 8888)."),
) -> None:
    """Run Feast's web UI (the registry, read-only) in the foreground."""
    from ml.features.serving import exec_foreground

    exec_foreground(get_settings(), ["ui", "-h", host, "-p", str(port)])


@models_app.command("train")
def models_train(
    config: Optional[Path] = typer.Option(None, help="Model config YAML (default ml/models/configs/propensity_lgbm.yaml)."),
) -> None:
    """Train propensity_lgbm from its Feast service, evaluate vs the RFM baseline, register, promote if not worse."""
    from ml.models.user.propensity import load_config, train

    result = train(get_settings(), load_config(config), echo=typer.echo)
    _echo_json(result.summary())


@models_app.command("score")
def models_score(
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Also materialize the scores into the online store."),
) -> None:
    """Batch-score the current users with the champion propensity_lgbm (and serve the scores online)."""
    from ml.orchestration import tasks

    s = get_settings()
    scored = tasks.score_propensity(s)
    if scored["status"] != "scored":
        typer.echo(f"nothing scored: {scored}", err=True)
        raise typer.Exit(1)
    result = {"score": scored}
    if serve:
        result["serve"] = tasks.serve_scores(s, scored)
    _echo_json(result)


@models_app.command("cart")
def models_cart() -> None:
    """Cart-abandonment analytics: conversion curve with intervals, decay estimate, today's carts at risk."""
    from ml.orchestration import tasks

    s = get_settings()
    _echo_json({"analysis": tasks.cart_analytics(s), "at_risk": tasks.cart_at_risk(s)})


@models_app.command("reports")
def models_reports() -> None:
    """List the model reports (HTML) of every training run, newest first."""
    from ml.models.lifecycle.report import list_reports

    reports = list_reports(get_settings())
    if not reports:
        typer.echo("no reports yet: run `ecomml models train`")
    for r in reports:
        typer.echo(f"{r['created_at']}  {r['model']:<20} run {r['run_id']}  {r['path']}")


@models_app.command("ui")
def models_ui(
    port: int = typer.Option(5000, help="Port of the MLflow UI."),
    host: str = typer.Option("127.0.0.1", help="Bind address (keep it local unless you mean to expose it)."),
) -> None:
    """Serve the MLflow UI over the configured tracking/registry backend until Ctrl-C."""
    import subprocess
    import sys

    s = get_settings()
    typer.echo(f"MLflow UI: http://{host}:{port}  (backend {s.mlflow_tracking_uri})")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", s.mlflow_tracking_uri, "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd, env={**os.environ, **s.as_env()}))


@recs_app.command("embed")
def recs_embed() -> None:
    """Embed every item text (all-MiniLM-L6-v2, offline; cached by text hash) for search and cold start."""
    from ml.models.recs import embed_items

    _echo_json(embed_items(get_settings(), echo=typer.echo))


@recs_app.command("train")
def recs_train(config: Optional[Path] = typer.Option(None, help="Model config (default ml/models/configs/recs.yaml).")) -> None:
    """Train recs_widedeep, recs_lgbm and recs_fm on a time split; register; promote if not worse."""
    from ml.models.recs import load_config, train

    _echo_json(train(get_settings(), load_config(config), echo=typer.echo).summary())


@recs_app.command("score")
def recs_score(serve: bool = typer.Option(True, "--serve/--no-serve", help="Also materialize the lists into the online store.")) -> None:
    """Batch top-K recommendations for every active user with the champion ranker (and serve them)."""
    from ml.orchestration import tasks

    s = get_settings()
    scored = tasks.score_recommender(s)
    if scored["status"] != "scored":
        typer.echo(f"nothing scored: {scored}", err=True)
        raise typer.Exit(1)
    _echo_json({"score": scored, **({"serve": tasks.serve_recommendations(s, scored)} if serve else {})})


@recs_app.command("show")
def recs_show(
    user_id: str = typer.Argument(..., help="The user (unknown users get the fallback list)."),
    new_only: bool = typer.Option(False, "--new-only", help="Only items the user has never bought."),
) -> None:
    """A user's current recommendations, read from the online store (one get_online_features call)."""
    from ml.models.recs import recommend

    recs = recommend(get_settings(), user_id, new_only=new_only)
    if recs.empty:
        typer.echo("no recommendations served yet: run `ecomml recs score`", err=True)
        raise typer.Exit(1)
    what = "fallback list (no list of its own)" if recs["is_fallback"].iloc[0] else "personal list"
    typer.echo(f"{user_id}: {what}{' of new items' if new_only else ''}, model version {recs['model_version'].iloc[0]}")
    shown = recs.drop(columns=["is_fallback", "model_version"] + (["source"] if new_only else []))
    typer.echo(shown.to_string(index=False))


@recs_app.command("search")
def recs_search(
    query: str = typer.Argument(..., help="What the shopper typed."),
    k: int = typer.Option(10, help="How many items."),
    method: str = typer.Option("semantic", help="semantic (sentence embeddings) or bm25 (keywords)."),
) -> None:
    """Product search: the top-k items for a query."""
    from ml.models.recs import search_items
    from ml.models.recs.search import SearchError

    try:
        result = search_items(get_settings(), query, k=k, method=method)
    except SearchError as exc:
        typer.echo(f"search: {exc}", err=True)
        raise typer.Exit(2) from None
    if result.empty:
        typer.echo(f"no item matches {query!r}")
        return
    typer.echo(result.to_string(index=False))


@demand_app.command("backtest")
def demand_backtest(
    config: Optional[Path] = typer.Option(None, help="Model config (default ml/models/configs/demand.yaml)."),
    max_series: Optional[int] = typer.Option(
        None,
        help="Backtest the head of this many series by volume before the first origin (0 = every series; default: config data.max_series).",
    ),
    models: Optional[str] = typer.Option(None, help="Comma-separated subset of the configured models."),
    horizon: Optional[int] = typer.Option(None, min=1, help="Periods forecast from each origin (default: config; 28 days / 8 weeks)."),
    origins: Optional[int] = typer.Option(None, min=1, help="Number of origins (default: config backtest.n_origins)."),
    step: Optional[int] = typer.Option(None, min=1, help="Periods between origins (default: the horizon)."),
) -> None:
    """Rolling-origin backtest of seasonal-naive, moving average, LightGBM, Prophet and LSTM on fct_daily_demand;
    writes the report, the aggregate and per-origin tables and every forecast (backtest_forecasts.parquet)."""
    from ml.models.demand import backtest, load_config

    cfg = load_config(config)
    if max_series is not None:
        cfg["data"] = {**cfg.get("data", {}), "max_series": max_series}
    if models:
        cfg["backtest"] = {**cfg["backtest"], "models": models.split(",")}
    given = {"horizon": horizon, "n_origins": origins, "step": step}
    cfg["backtest"] = {**cfg["backtest"], **{k: v for k, v in given.items() if v is not None}}
    _echo_json(backtest(get_settings(), cfg, echo=typer.echo).summary())


@demand_app.command("train")
def demand_train(config: Optional[Path] = typer.Option(None, help="Model config (default ml/models/configs/demand.yaml).")) -> None:
    """Backtest, fit the global LightGBM forecaster on all history, register it, promote if not worse."""
    from ml.models.demand import load_config, train

    _echo_json(train(get_settings(), load_config(config), echo=typer.echo).summary())


@demand_app.command("uplift")
def demand_uplift(config: Optional[Path] = typer.Option(None, help="Model config (default ml/models/configs/demand.yaml).")) -> None:
    """Promotion uplift on demand: double ML with a difference-in-differences cross-check; report + MLflow run."""
    from ml.models.demand import load_config, promotion_effect

    _echo_json(promotion_effect(get_settings(), load_config(config), echo=typer.echo))


@demand_app.command("forecast")
def demand_forecast(
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Also materialize the plan into the online store."),
) -> None:
    """Forecast every item x warehouse with the champion and write the inventory plan (and serve it)."""
    from ml.orchestration import tasks

    s = get_settings()
    planned = tasks.forecast_demand(s)
    if planned["status"] != "forecast":
        typer.echo(f"nothing forecast: {planned}", err=True)
        raise typer.Exit(1)
    _echo_json({"forecast": planned, **({"serve": tasks.serve_demand_plan(s, planned)} if serve else {})})


@demand_app.command("plan")
def demand_plan(
    item_id: str = typer.Argument(..., help="Item."),
    warehouse_id: str = typer.Argument(..., help="Warehouse."),
) -> None:
    """The current inventory plan of an item at a warehouse, read from the online store."""
    from ml.models.demand import plan_online

    row = plan_online(get_settings(), [(item_id, warehouse_id)]).iloc[0]
    if row.drop(["item_id", "warehouse_id"]).isna().all():
        typer.echo(f"error: no plan served for {item_id} @ {warehouse_id}: run `ecomml demand forecast` (or check the ids)", err=True)
        raise typer.Exit(2)
    typer.echo(row.to_string())


privacy_app = typer.Typer(help="Differentially private exports: noisy aggregates under a privacy budget ledger.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")


@privacy_app.command("export")
def privacy_export(
    epsilon: float = typer.Option(0.1, help="Epsilon this release spends (split between revenue and buyers)."),
    min_buyers: float = typer.Option(10, help="Suppress cells whose noisy buyer count is below this."),
    max_cells_per_user: int = typer.Option(5, help="Contribution bound: cells one user may count in."),
    revenue_cap: float = typer.Option(250.0, help="Contribution bound: revenue of one user per cell is clipped to [0, cap]."),
    buyers_share: float = typer.Option(0.5, help="Share of epsilon given to the buyer counts (the rest to revenue)."),
    fmt: str = typer.Option("csv", "--format", help="Report format: csv | parquet."),
    query: str = typer.Option("revenue_buyers_by_category_region_week", help="The aggregate query to release."),
) -> None:
    """Noisy revenue and buyers per category x region x week (user-level DP): spends EPSILON in the ledger, writes PRIVACY_EXPORTS_DIR."""
    from ml.governance.privacy import BudgetExceededError, PrivacyError, dp_export

    try:
        summary = dp_export(
            get_settings(),
            query=query,
            epsilon=epsilon,
            min_buyers=min_buyers,
            max_cells_per_user=max_cells_per_user,
            revenue_cap=revenue_cap,
            buyers_share=buyers_share,
            fmt=fmt,
        )
    except (BudgetExceededError, PrivacyError, ValueError) as exc:
        typer.echo(f"privacy export refused: {exc}", err=True)
        raise typer.Exit(1) from None
    _echo_json(summary)


@privacy_app.command("budget")
def privacy_budget(releases: bool = typer.Option(False, "--releases", help="List every recorded release, not just the totals.")) -> None:
    """Epsilon spent and remaining per dataset, from the privacy budget ledger."""
    from ml.governance.privacy import BudgetLedger

    ledger = BudgetLedger.from_settings(get_settings())
    payload = {"ledger": str(ledger.path), "total_epsilon": ledger.total_epsilon, "datasets": ledger.summary()}
    if releases:
        payload["releases"] = ledger.releases()
    _echo_json(payload)


@airflow_app.command("setup")
def airflow_setup() -> None:
    """`airflow db migrate`, the single-writer pools, and dbt's manifest for the warehouse DAG."""
    from ml.orchestration.local_airflow import pools, setup

    s = get_settings()
    setup(s)
    typer.echo(f"AIRFLOW_HOME {s.airflow_home}: database migrated, pools {sorted(pools(s))} set")


@airflow_app.command("standalone")
def airflow_standalone() -> None:
    """Start a local Airflow (API server + scheduler + DAG processor + triggerer) until Ctrl-C."""
    import time

    from ml.orchestration.local_airflow import LocalAirflow

    airflow = LocalAirflow(get_settings()).start()
    user, password = airflow.credentials()
    typer.echo(f"Airflow UI: {airflow.url}   login: {user} / {password}   (Ctrl-C stops it)")
    try:
        while airflow.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        airflow.stop()


@app.command()
def demo(
    scale: Optional[str] = typer.Option(None, help="Generator scale (default: SCALE setting)."),
    keep: bool = typer.Option(False, "--keep", help="Keep Airflow serving after the chain (Ctrl-C stops it)."),
) -> None:
    """The main job, through Airflow: ingest(generate) -> warehouse (dbt) -> feature store, then print the UI login."""
    from ml.orchestration.demo import demo as run

    raise typer.Exit(run(get_settings(), scale=scale, keep_running=keep))


@app.command()
def pipeline(
    scale: Optional[str] = typer.Option(None, help="Generator scale (default: SCALE setting)."),
    models: bool = typer.Option(True, "--models/--no-models", help="Also train, score and serve the user models."),
    generate: Optional[bool] = typer.Option(
        None,
        "--generate/--no-generate",
        help="Generate a synthetic lake first. Default: only when the lake holds no ingested exports (a real shop's lake runs as it is).",
    ),
    as_of: Optional[str] = typer.Option(
        None, "--as-of", help="YYYY-MM-DD: build, train and score on the facts known at the end of that day (UTC)."
    ),
) -> None:
    """The same steps without Airflow: generate (or use the ingested lake), dbt build, feast apply, materialize, train, score."""

    from ml import contract as c
    from ml.features.materialize import materialize_incremental
    from ml.features.repo import apply
    from ml.generate import generate as run_generate
    from ml.orchestration.chain import FAMILIES, run_family
    from ml.orchestration.demo import aligned, sample_user, where_to_look
    from ml.warehouse import build

    s = get_settings()
    s.ensure_dirs()
    scale = scale or s.scale
    dbt_vars = _as_of_vars(as_of)
    from datetime import timedelta

    from ml.lake import read_commits

    exports = [c for c in read_commits(s.lake_dir) if c.get("kind") == "ingest"]
    if generate is None:
        generate = not exports
    if generate:
        typer.echo(f"[1/6] generating the '{scale}' dataset into {s.lake_dir}")
        gen = run_generate(scale=scale, seed=s.seed, lake_dir=s.lake_dir, progress=True)
        typer.echo(f"      {gen['rows']}")
    else:
        held = {n: t["rows"] for n, t in c.lake_status(s.lake_dir).get("tables", {}).items() if t["present"]}
        if not held:
            typer.echo(f"error: the lake {s.lake_dir} is empty: ingest exports first (`ecomml ingest`) or run with --generate", err=True)
            raise typer.Exit(2)
        typer.echo(f"[1/6] using the lake as it is: {len(exports)} ingested export(s) in {s.lake_dir}: {held}")
    typer.echo(f"[2/6] dbt build into {s.warehouse_path}" + (f", as of the end of {as_of}" if as_of else ""))
    summary = build(s, vars=dbt_vars)
    typer.echo("[3/6] feast apply (definitions checked against the dbt manifest)")
    apply(s)
    typer.echo("[4/6] materializing the latest feature values into the online store")
    stats = materialize_incremental(s, _utc(as_of) + timedelta(days=1) if as_of else _now())
    materialized = stats["rows"]
    results: dict[str, dict] = {}
    if models:
        typer.echo("[5/6] training each model family (MLflow registry, promote if not worse)")
        for family in FAMILIES:
            typer.echo(f"      {family.name}: {', '.join(n for step in family.train for n in step.names)}")
            results.update(run_family(s, family, "train"))
        typer.echo("[6/6] batch scoring with the champions and serving the scores, recommendations and inventory plan online")
        for family in FAMILIES:
            typer.echo(f"      {family.name}: {', '.join(n for step in family.score for n in step.names)}")
            results.update(run_family(s, family, "score"))
    features = sorted(p.name for p in s.features_dir.glob("*.parquet"))
    held = [n for n, t in c.lake_status(s.lake_dir)["tables"].items() if t["present"]]
    served = {name: r.get("status") for name, r in results.items() if name.startswith("serve_")}
    rows = [
        (f"lake (raw Parquet, {len(held)} tables)", str(s.lake_dir)),
        ("feature marts (Parquet)", f"{s.features_dir}: {', '.join(features)}"),
        ("dbt build", f"{summary['nodes']} nodes {summary['by_status']} in {summary['elapsed_s']} s"),
        ("online store (SQLite)", f"{s.feast_online_path} ({materialized:,} rows materialized)"),
        *((name.replace("_", " "), str(status)) for name, status in served.items()),
        *where_to_look(s, sample_user(s), results),
    ]
    typer.echo("\nDone. Where to look:\n" + aligned(rows))


stack_app = typer.Typer(help="The production stack (docker-compose.yaml, docs/deployment.md).", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


@stack_app.command("init")
def stack_init() -> None:
    """The airflow-init service's work, with Airflow's configuration from the environment: migrate the
    metadata DB, create missing pools, write dbt's manifest, create the Feast registry. Idempotent."""
    from ml import stack

    stack.init(get_settings(), env=dict(os.environ), echo=typer.echo)


@stack_app.command("secrets")
def stack_secrets() -> None:
    """Print a fresh value for every secret docker-compose.yaml requires, as .env lines."""
    from ml.stack import generate_secrets

    for name, value in generate_secrets().items():
        typer.echo(f"{name}={value}")


def main() -> None:  # pragma: no cover - console entry
    """``ecomml``: an expected failure is one ``error:`` line on stderr and exit 2; ``--debug`` (anywhere) or ECOMML_DEBUG=1
    shows the traceback instead."""
    debug = "--debug" in sys.argv or os.environ.get("ECOMML_DEBUG") == "1"
    sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        app()
    except KeyboardInterrupt:
        raise
    except SystemExit as done:
        _exit(done.code)
    except Exception as exc:  # noqa: BLE001 - the CLI's last word on anything a command raised
        if debug:
            raise
        text = str(exc).strip() or type(exc).__name__
        named = (
            text if type(exc).__module__.startswith("ml.") or isinstance(exc, (ValueError, KeyError)) else f"{type(exc).__name__}: {text}"
        )
        typer.echo(f"error: {named} (--debug shows the traceback)", err=True)
        _exit(2)


def _exit(code) -> None:
    """Exit with ``code``. When DuckDB was loaded, leave without the interpreter's teardown: DuckDB
    2.0's bindings print dozens of harmless 'nanobind: leaked instance' lines there (a library still
    holding a connection), burying the command's last line. Output is flushed first; the work is done."""
    if isinstance(code, str):  # sys.exit("message")
        print(code, file=sys.stderr)
    code = code if isinstance(code, int) else (0 if code is None else 1)
    if "duckdb" not in sys.modules:
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
