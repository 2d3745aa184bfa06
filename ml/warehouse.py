"""The feature warehouse: run the dbt project (lake -> DuckDB warehouse + feature Parquet files).

dbt always runs as a subprocess with ``Settings.as_env()`` in its environment, so the project,
its profile and the Python side read the same paths. Each settings object gets its own dbt target
and log folders (``<data_dir>/dbt/target``, ``<data_dir>/dbt/logs``): builds in different temp
directories never collide in ``dbt_project/target``.

    build(settings)            dbt build (models + data tests + unit tests); summary dict or WarehouseBuildError
    build(settings, select="marts.features", full_refresh=True)
    docs(settings)             dbt docs generate; the folder holding index.html / catalog.json
    connect(settings)          a read-only DuckDB connection to the warehouse file
    query(settings, sql)       one sandboxed read-only SELECT (what `ecomml warehouse query` runs)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from ml.settings import Settings

_FINISHED = re.compile(r"\d+ of \d+ (OK|PASS|ERROR|FAIL|WARN|SKIP)\b")


def feature_models(settings: Settings) -> list[str]:
    """The dbt feature marts (one Feast view each): every model under models/marts/features/."""
    return sorted(p.stem for p in (Path(settings.dbt_project_dir) / "models" / "marts" / "features").glob("*.sql"))


class WarehouseBuildError(RuntimeError):
    """dbt failed: ``summary`` holds the parsed run results, ``failures`` the failing nodes."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}
        self.failures = self.summary.get("failures", [])


def target_path(settings: Settings) -> Path:
    """dbt's target folder for these settings (manifest.json, run_results.json, compiled SQL, docs)."""
    return settings.data_dir / "dbt" / "target"


def log_path(settings: Settings) -> Path:
    return settings.data_dir / "dbt" / "logs"


def feature_path(settings: Settings, model: str) -> Path:
    """The Parquet file a feature mart is written to (``$FEATURES_DIR/<model>.parquet``)."""
    return settings.features_dir / f"{model}.parquet"


def dbt_env(settings: Settings) -> dict[str, str]:
    """The environment of a dbt subprocess: ours, the settings, and per-settings target/log folders."""
    return {
        **os.environ,
        **settings.as_env(),
        "DBT_TARGET_PATH": str(target_path(settings)),
        "DBT_LOG_PATH": str(log_path(settings)),
    }


def dbt_command() -> list[str]:
    """dbt behind the warehouse's file lock (``ecomml-dbt``, ml/dbt_locked.py): the venv's console
    script, else ``python -m ml.dbt_locked``. Every dbt call of the platform (CLI, Airflow/Cosmos)
    goes through it, so two dbt processes never meet DuckDB's single-writer lock."""
    exe = Path(sys.executable).parent / "ecomml-dbt"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "ml.dbt_locked"]


def run_dbt(
    settings: Settings,
    args: list[str],
    echo: Callable[[str], None] | None = print,
) -> tuple[int, list[str]]:
    """Run ``dbt <args>`` for these settings; stream each output line to ``echo``. Returns (rc, lines)."""
    from ml.contract import ensure_schema_files

    ensure_schema_files(settings.lake_dir)  # a lake from before a table joined the contract
    settings.features_dir.mkdir(parents=True, exist_ok=True)
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    target_path(settings).mkdir(parents=True, exist_ok=True)
    log_path(settings).mkdir(parents=True, exist_ok=True)
    cmd = [
        *dbt_command(),
        *args,
        "--project-dir",
        str(settings.dbt_project_dir),
        "--profiles-dir",
        str(settings.dbt_profiles_dir),
        "--target",
        settings.dbt_target,
    ]
    lines: list[str] = []
    with subprocess.Popen(
        cmd,
        **child_process_kwargs(),  # a killed `ecomml warehouse build` takes its dbt with it
        env=dbt_env(settings),
        cwd=str(settings.dbt_project_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if echo is not None:
                echo(line)
    return proc.returncode, lines


def child_process_kwargs() -> dict:
    """Popen arguments for a child that must not outlive this process (dbt holding the locks)."""
    return {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the process that started it dies (even by SIGKILL)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def summarize(run_results: Path) -> dict:
    """Nodes by status, failures with node names and messages, and seconds, from run_results.json."""
    data = json.loads(Path(run_results).read_text())
    results = data.get("results", [])
    counts = Counter(r["status"] for r in results)
    failures = [
        {
            "node": r["unique_id"],
            "name": r["unique_id"].split(".")[2] if r["unique_id"].count(".") >= 2 else r["unique_id"],
            "status": r["status"],
            "message": (r.get("message") or "").strip(),
            "failures": r.get("failures"),
        }
        for r in results
        if r["status"] in ("error", "fail", "runtime error")
    ]
    by_type = Counter(r["unique_id"].split(".")[0] for r in results)
    return {
        "success": not failures,
        "nodes": len(results),
        "by_status": dict(counts),
        "by_type": dict(by_type),
        "failures": failures,
        "warnings": [r["unique_id"] for r in results if r["status"] == "warn"],
        "skipped": [r["unique_id"] for r in results if r["status"] == "skipped"],
        "elapsed_s": round(float(data.get("elapsed_time") or 0.0), 3),
        "node_seconds": {r["unique_id"]: round(float(r.get("execution_time") or 0.0), 3) for r in results},
    }


def _run_and_summarize(settings: Settings, command: str, args: list[str], echo) -> dict:
    results_file = target_path(settings) / "run_results.json"
    results_file.unlink(missing_ok=True)
    start = time.perf_counter()
    rc, lines = run_dbt(settings, [command, *args], echo=echo)
    seconds = round(time.perf_counter() - start, 3)
    if not results_file.exists():
        tail = "\n".join(lines[-30:])
        done = sum(1 for line in lines if _FINISHED.search(line))
        where = "before running any node" if not done else f"after {done} node(s) had finished, without run results"
        raise WarehouseBuildError(f"dbt {command} stopped {where} (exit {rc}):\n{tail}")
    summary = summarize(results_file)
    summary.update(command=command, returncode=rc, seconds=seconds, target_path=str(target_path(settings)))
    if summary["failures"] or rc != 0:
        names = ", ".join(f"{f['name']} ({f['status']})" for f in summary["failures"]) or f"exit code {rc}"
        details = "\n".join(f"  {f['node']}: {f['message']}" for f in summary["failures"][:20])
        raise WarehouseBuildError(f"dbt {command} failed: {names}\n{details}".rstrip(), summary)
    return summary


def build(
    settings: Settings,
    select: str | None = None,
    full_refresh: bool = False,
    vars: dict | None = None,
    exclude: str | None = None,
    echo: Callable[[str], None] | None = print,
) -> dict:
    """``dbt build`` (models, data tests, unit tests) for these settings.

    Returns the summary of run_results.json; raises WarehouseBuildError naming the failing nodes.
    """
    args: list[str] = []
    if select:
        args += ["--select", select]
    if exclude:
        args += ["--exclude", exclude]
    if full_refresh:
        args.append("--full-refresh")
    if vars:
        args += ["--vars", json.dumps(vars)]
    return _run_and_summarize(settings, "build", args, echo)


def run(settings: Settings, select: str | None = None, echo: Callable[[str], None] | None = print) -> dict:
    """``dbt run``: the models only, without tests."""
    return _run_and_summarize(settings, "run", ["--select", select] if select else [], echo)


def docs(settings: Settings, echo: Callable[[str], None] | None = print) -> Path:
    """``dbt docs generate``; returns the target folder holding index.html, manifest.json and catalog.json."""
    rc, lines = run_dbt(settings, ["docs", "generate"], echo=echo)
    catalog = target_path(settings) / "catalog.json"
    if rc != 0 or not catalog.exists():
        tail = "\n".join(lines[-30:])
        raise WarehouseBuildError(f"dbt docs generate failed (exit {rc}):\n{tail}")
    return target_path(settings)


def manifest(settings: Settings) -> dict:
    """The manifest.json of the last dbt invocation for these settings (Feast reads meta/columns from it)."""
    return json.loads((target_path(settings) / "manifest.json").read_text())


class QueryError(ValueError):
    """A query the read-only query path refuses or cannot run; the message says why."""


READ_STATEMENTS = ("SELECT", "EXPLAIN")


def query(settings: Settings, sql: str, *, wait_s: float = 600.0, on_wait: Callable[[str], None] | None = None):
    """Run ONE read-only statement (SELECT / WITH ... SELECT / EXPLAIN) against the warehouse; a frame.

    Refused before running: several statements, or any other kind (COPY, ATTACH, DETACH, INSTALL,
    SET, PRAGMA, CREATE ...). The connection is read-only and sandboxed: no file outside the
    warehouse's own Parquet folders (FEATURES_DIR, EXPORTS_DIR), no extension installs, no network,
    and the configuration locked. While a build writes the warehouse, it waits (up to ``wait_s``,
    saying so once through ``on_wait``) instead of failing on DuckDB's lock.
    """
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError(f"one statement at a time (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in READ_STATEMENTS:
        raise QueryError(f"only SELECT (or EXPLAIN) queries run here, not {kind}: the warehouse is dbt's to write")
    if not settings.warehouse_path.exists():
        raise QueryError(f"no warehouse at {settings.warehouse_path}: run `ecomml warehouse build` first")
    with _build_lock(settings, wait_s=wait_s, on_wait=on_wait):
        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        try:
            dirs = [str(d.resolve()) + "/" for d in (settings.features_dir, settings.exports_dir)]
            con.execute(f"set allowed_directories = {dirs!r}")
            con.execute("set enable_external_access = false")
            con.execute("set autoinstall_known_extensions = false")
            con.execute("set TimeZone = 'UTC'")
            con.execute("set lock_configuration = true")
            try:
                return con.execute(statements[0].query).fetch_df()
            except duckdb.Error as exc:
                raise QueryError(_first_line(exc)) from None
        finally:
            con.close()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def _build_lock(settings: Settings, *, wait_s: float, on_wait):
    """Shared hold of the warehouse lock that every dbt run holds exclusively (ml/dbt_locked.py)."""
    from ml.lake import LakeBusyError, held

    say = (lambda: on_wait(f"waiting for the running warehouse build to finish (up to {wait_s:.0f} s)")) if on_wait else None
    try:
        with held(Path(str(settings.warehouse_path) + ".lock"), shared=True, timeout=wait_s, on_wait=say):
            yield
    except LakeBusyError:
        raise QueryError(
            f"a warehouse build still holds {settings.warehouse_path} after {wait_s:.0f} s; try again when it has finished"
        ) from None


def connect(settings: Settings, read_only: bool = True):
    """A DuckDB connection to the warehouse file (read-only by default: dbt is the only writer)."""
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=read_only)
    con.execute("set TimeZone = 'UTC'")
    return con
