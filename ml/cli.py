"""`ecomml` / `python -m ml`: the one command line humans and Airflow tasks share.

Every command reads its paths from the settings module (environment / .env); options override the
scale, seed or mapping, never the locations. Heavy libraries are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ml.settings import get_settings

app = typer.Typer(
    name="ecomml",
    help="E-commerce ML data platform: generate or ingest data, build the feature warehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
warehouse_app = typer.Typer(help="The dbt/DuckDB feature warehouse.", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")


def _echo_json(payload) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


@app.command()
def settings() -> None:
    """Print the resolved settings (the environment dbt, Feast and Airflow receive)."""
    _echo_json(get_settings().as_env())


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
) -> None:
    """Ingest one export file into the lake through a mapping; prints the read/accepted/quarantined report."""
    from ml.ingest import IngestError, ingest_file

    s = get_settings()
    s.ensure_dirs()
    try:
        report = ingest_file(path, mapping, lake_dir=s.lake_dir, quarantine_dir=s.quarantine_dir, force=force)
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _echo_json(report.to_dict())


@app.command("ingest-landing")
def ingest_landing(
    mapping: str = typer.Option(..., "--mapping", "-m", help="Preset name or path to a mapping YAML."),
) -> None:
    """Ingest every file in the landing folder not ingested before."""
    from ml.ingest import ingest_landing as run

    s = get_settings()
    s.ensure_dirs()
    reports = run(s.landing_dir, mapping, lake_dir=s.lake_dir, quarantine_dir=s.quarantine_dir)
    _echo_json([r.to_dict() for r in reports])


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
) -> None:
    """Run `dbt build` (models + tests) into the DuckDB warehouse and the feature Parquet files."""
    from ml.warehouse import WarehouseBuildError, build

    try:
        summary = build(get_settings(), select=select, full_refresh=full_refresh)
    except WarehouseBuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _echo_json(summary)


@warehouse_app.command("docs")
def warehouse_docs() -> None:
    """Run `dbt docs generate` (catalog + manifest for the docs site)."""
    from ml.warehouse import docs

    _echo_json(docs(get_settings()))


@app.command()
def demo(
    scale: Optional[str] = typer.Option(None, help="Generator scale (default: SCALE setting)."),
) -> None:
    """The main job on the embedded default: generate data, build the warehouse, print where to look."""
    from ml import contract as c
    from ml.generate import generate as run_generate
    from ml.warehouse import build

    s = get_settings()
    s.ensure_dirs()
    scale = scale or s.scale
    typer.echo(f"[1/2] generating the '{scale}' dataset into {s.lake_dir}")
    gen = run_generate(scale=scale, seed=s.seed, lake_dir=s.lake_dir, progress=True)
    typer.echo(f"      {gen.get('rows', gen)}")
    typer.echo(f"[2/2] dbt build into {s.warehouse_path}")
    summary = build(s)
    features = sorted(p.name for p in s.features_dir.glob("*.parquet"))
    held = [n for n, t in c.lake_status(s.lake_dir)["tables"].items() if t["present"]]
    typer.echo(
        "\nDone. Where to look:\n"
        f"  lake (raw Parquet, {len(held)} tables)   {s.lake_dir}\n"
        f"  warehouse (DuckDB)              {s.warehouse_path}\n"
        f"  feature marts (Parquet)         {s.features_dir}: {', '.join(features)}\n"
        f"  dbt results                     {summary.get('nodes', summary)}\n"
        f"  explore:  duckdb -readonly {s.warehouse_path}   or   .venv/bin/ecomml warehouse docs"
    )


def main() -> None:  # pragma: no cover - console entry
    app()
