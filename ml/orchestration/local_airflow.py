"""A real local Airflow to run the DAGs in (the demo, the end-to-end tests, the benchmark).

    airflow_env(settings, port=)    the environment of every Airflow process (one source: settings)
    setup(settings)                 airflow db migrate + the single-writer pools (+ manifest)
    LocalAirflow(settings).start()  `airflow standalone` (API server + scheduler + dag-processor +
                                    triggerer, SQLite metadata, LocalExecutor) on an (ephemeral) port
                                    in its own process group
    AirflowClient(url, user, pw)    /api/v2 with a JWT from /auth/token: unpause, trigger, wait, logs
    run_chain(client, conf)         unpause the chain, trigger ingest, wait for every DAG of ``chain``

Nothing here imports Airflow at module import: it drives Airflow's CLI and REST API.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from ml.orchestration.chain import CHAIN, INGEST_DAG, MODEL_DAG_PAIRS, MODEL_DAGS
from ml.orchestration.tasks import manifest_file, parse
from ml.settings import PROJECT_ROOT, Settings, get_secrets

log = logging.getLogger(__name__)

DAGS_DIR = PROJECT_ROOT / "dags"


class OrchestrationError(RuntimeError):
    """A local Airflow could not start, a request failed, or a DAG run did not succeed."""


# --------------------------------------------------------------------------------------------------
# A local Airflow: environment, setup, standalone launcher, REST client
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_bin() -> str:
    exe = Path(sys.executable).parent / "airflow"
    return str(exe) if exe.exists() else "airflow"


def airflow_env(settings: Settings, port: int | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every Airflow process: the settings (dbt and Feast read the same values),
    AIRFLOW_HOME with SQLite metadata, our dags/ folder, LocalExecutor, small parallelism."""
    port = settings.airflow_port if port is None else port
    home = Path(settings.airflow_home)
    env = {
        **os.environ,
        **settings.as_env(),
        **get_secrets().subprocess_env(),  # e.g. PSEUDONYMIZE_KEY for the ingest task (read from .env here too)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(settings.airflow_parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra or {})
    return env


def airflow_cli(settings: Settings, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600):
    """Run ``airflow <args>`` with ``airflow_env(settings)``; the CompletedProcess."""
    proc = subprocess.run(
        [airflow_bin(), *args],
        env=env or airflow_env(settings),
        cwd=str(PROJECT_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise OrchestrationError(f"airflow {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    return proc


def pools(settings: Settings) -> dict[str, str]:
    return {
        settings.duckdb_pool: "Single DuckDB writer: every lake/warehouse writing task (DuckDB allows one writer process)",
        settings.feast_pool: "Single writer of the Feast registry file and online store (embedded mode)",
        settings.training_pool: "One model training task at a time (CPU; single writer of a SQLite MLflow backend)",
    }


def ensure_pools(settings: Settings, env: dict[str, str] | None = None) -> dict[str, int]:
    """Create the single-writer pools that are missing, at 1 slot; {pool: slots} afterwards.
    Idempotent, and an operator's resize of the Feast or training pool survives a re-run; the DuckDB
    writer pool is forced back to 1 (DuckDB allows one writer process: more slots are a bug)."""
    listed = airflow_cli(settings, "pools", "list", "--output", "json", env=env).stdout
    existing = {p["pool"]: int(p["slots"]) for p in json.loads(listed[listed.index("[") :])}
    wanted = {
        name: description
        for name, description in pools(settings).items()
        if existing.get(name) is None or (name == settings.duckdb_pool and existing[name] != 1)
    }
    if wanted:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({name: {"slots": 1, "description": d, "include_deferred": False} for name, d in wanted.items()}, f)
        try:
            airflow_cli(settings, "pools", "import", f.name, env=env)
        finally:
            os.unlink(f.name)
    return {name: 1 if name in wanted else existing[name] for name in pools(settings)}


def setup(settings: Settings, env: dict[str, str] | None = None, manifest: bool = True) -> dict[str, int]:
    """Everything a fresh AIRFLOW_HOME needs: metadata DB, the pools, and dbt's manifest (so the
    warehouse DAG renders one task per dbt node instead of its single-task fallback); {pool: slots}."""
    settings.ensure_dirs()
    Path(settings.airflow_home).mkdir(parents=True, exist_ok=True)
    airflow_cli(settings, "db", "migrate", env=env)
    sizes = ensure_pools(settings, env=env)
    if manifest and not manifest_file(settings).exists():
        parse(settings)
    return sizes


class AirflowClient:
    """A tiny /api/v2 client: JWT from ``POST /auth/token``, JSON in and out (stdlib only)."""

    RETRY_STATUS = (500, 502, 503, 504)

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0, retry_s: float = 180.0):
        self.base_url = base_url.rstrip("/")
        self.username, self.password, self.timeout = username, password, timeout
        self.retry_s = retry_s  # how long a request keeps retrying timeouts, refused connections and 5xx
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            body = self._raw("POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False)
            self._token = body["access_token"]
        return self._token

    def _raw(self, method: str, path: str, payload: Any = None, auth: bool = True, params: dict | None = None) -> Any:
        url = self.base_url + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        deadline, delay = time.monotonic() + self.retry_s, 1.0
        while True:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    text = response.read().decode()
                return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:2000]
                if exc.code == 401 and auth and self._token is not None:  # the JWT expired: one new token
                    self._token = None
                    request.add_header("Authorization", f"Bearer {self.token()}")
                    continue
                if exc.code not in self.RETRY_STATUS or time.monotonic() + delay > deadline:
                    raise OrchestrationError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
            except (TimeoutError, ConnectionError, urllib.error.URLError) as exc:
                # a busy API server (the demo on 2 cores at load 8) answers late: retry, with backoff
                reason = getattr(exc, "reason", exc)
                if method == "POST" and isinstance(reason, TimeoutError) and auth:
                    raise OrchestrationError(
                        f"{method} {path} timed out after {self.timeout:.0f} s (not retried: it may have been applied)"
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise OrchestrationError(
                        f"{method} {path}: no answer from {self.base_url} for {self.retry_s:.0f} s ({reason})"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 15.0)

    def request(self, method: str, path: str, payload: Any = None, params: dict | None = None) -> Any:
        return self._raw(method, "/api/v2" + path, payload, params=params)

    # DAGs and runs -------------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}")

    def import_errors(self) -> list[dict]:
        return self.request("GET", "/importErrors").get("import_errors", [])

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 180.0) -> None:
        """Until the dag-processor has serialized every DAG (import errors fail fast)."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while missing:
            errors = self.import_errors()
            if errors:
                raise OrchestrationError("DAG import errors:\n" + "\n".join(f"{e.get('filename')}: {e.get('stack_trace')}" for e in errors))
            still = []
            for dag_id in missing:
                try:
                    self.dag(dag_id)
                except OrchestrationError:
                    still.append(dag_id)
            missing = still
            if missing and time.monotonic() > deadline:
                raise OrchestrationError(f"DAGs {missing} not parsed after {timeout:.0f} s")
            if missing:
                time.sleep(2)

    def set_paused(self, dag_id: str, paused: bool) -> dict:
        return self.request("PATCH", f"/dags/{dag_id}", {"is_paused": paused}, params={"update_mask": "is_paused"})

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: datetime | None = None) -> dict:
        when = logical_date or datetime.now(timezone.utc)
        return self.request("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": when.isoformat(), "conf": conf or {}})

    def runs(self, dag_id: str, limit: int = 50) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": limit})["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        return self.request("GET", path, params={"limit": 1000})["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
        body = self.request("GET", path, params={"full_content": "true", "map_index": map_index})
        content = body.get("content") if isinstance(body, dict) else body
        if isinstance(content, list):
            return "\n".join(c.get("event", "") if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str | None = None,
        after: datetime | None = None,
        timeout: float = 600.0,
        poll: float = 3.0,
        progress: Callable[[str], None] | None = None,
        every: float = 30.0,
    ) -> dict:
        """Wait until a run (``run_id``, else the first run queued after ``after``) ends; the run.
        With ``progress``, every ``every`` seconds of waiting it gets one line: the run's state, its
        task counts and the tasks running now (``progress_line``).

        Raises OrchestrationError when it fails (naming the failed tasks) or the wait times out."""
        started = time.monotonic()
        deadline, next_note = started + timeout, started + every
        while True:
            run = None
            if run_id is not None:
                run = self.run(dag_id, run_id)
            else:
                for candidate in self.runs(dag_id):
                    queued = candidate.get("queued_at") or candidate.get("run_after")
                    if after is None or (queued and datetime.fromisoformat(queued.replace("Z", "+00:00")) >= after):
                        run = candidate
                if run is not None:
                    run_id = run["dag_run_id"]
            if run is not None and run["state"] in ("success", "failed"):
                if run["state"] == "failed":
                    raise OrchestrationError(self.failure_summary(dag_id, run_id))
                return run
            if time.monotonic() > deadline:
                state = run["state"] if run else "not created"
                raise OrchestrationError(f"{dag_id}: run {run_id or '(none yet)'} still {state} after {timeout:.0f} s")
            if progress is not None and time.monotonic() >= next_note:
                next_note = time.monotonic() + every
                tasks = self.task_instances(dag_id, run_id) if run is not None else []
                progress(progress_line(dag_id, run, tasks, time.monotonic() - started))
            time.sleep(poll)

    def failure_summary(self, dag_id: str, run_id: str, tail: int = 12) -> str:
        """Which run failed, where to look (the run in the UI, each failed task's log) and the end of
        each failed task's log."""
        tasks = self.task_instances(dag_id, run_id)
        failed = [t for t in tasks if t["state"] == "failed"]
        upstream = [t["task_id"] for t in tasks if t["state"] == "upstream_failed"]
        lines = [
            f"{dag_id} run {run_id} failed: {[t['task_id'] for t in failed]}" + (f" (upstream_failed: {upstream})" if upstream else ""),
            f"  the run in the Airflow UI: {self.base_url}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}",
        ]
        for t in failed:
            try_number = int(t.get("try_number") or 1)
            lines.append(
                f"  log of {t['task_id']}: {self.base_url}/dags/{dag_id}/runs/"
                f"{urllib.parse.quote(run_id, safe='')}/tasks/{t['task_id']}?try_number={try_number}"
            )
            try:
                text = self.task_log(dag_id, run_id, t["task_id"], try_number, t.get("map_index", -1))
            except OrchestrationError:
                continue
            last = [line for line in text.splitlines() if line.strip()][-tail:]
            lines += [f"    | {line[:300]}" for line in last]
        return "\n".join(lines)

    def backfill(self, dag_id: str, start: datetime, end: datetime, max_active_runs: int = 1, reprocess: str = "completed") -> dict:
        """An Airflow 3 backfill over [start, end] (``reprocess``: none | failed | completed)."""
        return self.request(
            "POST",
            "/backfills",
            {
                "dag_id": dag_id,
                "from_date": start.isoformat(),
                "to_date": end.isoformat(),
                "max_active_runs": max_active_runs,
                "reprocess_behavior": reprocess,
                "run_backwards": False,
            },
        )


def progress_line(dag_id: str, run: dict | None, tasks: list[dict], waited_s: float) -> str:
    """'  warehouse: running for 2 min 05 s, 45 of 130 tasks done, 2 running (dbt.fct_orders.run, ...)'."""
    minutes, seconds = divmod(int(waited_s), 60)
    waited = f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
    if run is None:
        return f"  {dag_id}: waiting {waited} for its run to be queued (its upstream Asset event)"
    done = sum(t.get("state") in ("success", "skipped", "failed", "upstream_failed", "removed") for t in tasks)
    running = [t["task_id"] for t in tasks if t.get("state") == "running"]
    shown = ", ".join(running[:3]) + (", ..." if len(running) > 3 else "")
    return f"  {dag_id}: {run['state']} for {waited}, {done} of {len(tasks)} tasks done" + (
        f", {len(running)} running ({shown})" if running else ""
    )


class LocalAirflow:
    """``airflow standalone`` in its own process group: start(), client(), stop() (also as a context manager)."""

    def __init__(self, settings: Settings, port: int | None = None, log_path: Path | None = None):
        self.settings = settings
        self.port = port if port is not None else (settings.airflow_port or free_port())
        self.home = Path(settings.airflow_home)
        self.log_path = log_path or self.home / "standalone.log"
        # the scheduler's and triggerer's log servers too: two local Airflows must not collide
        self.env = airflow_env(
            settings,
            port=self.port,
            extra={
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            },
        )
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def credentials(self) -> tuple[str, str]:
        users = json.loads(self.password_file().read_text())
        user = "admin" if "admin" in users else next(iter(users))
        return user, users[user]

    def start(self, timeout: float = 240.0, setup_first: bool = True) -> "LocalAirflow":
        if setup_first:
            setup(self.settings, env=self.env)
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [airflow_bin(), "standalone"],
            env=self.env,
            cwd=str(PROJECT_ROOT),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise OrchestrationError(f"airflow standalone exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.password_file().exists() and self._healthy():
                try:
                    self.client().token()
                    return self
                except OrchestrationError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise OrchestrationError(f"airflow standalone not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(2)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/api/v2/monitor/health", timeout=5) as r:
                body = json.loads(r.read().decode())
        except (OSError, ValueError):
            return False
        return all((body.get(k) or {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "dag_processor", "triggerer"))

    def client(self) -> AirflowClient:
        user, password = self.credentials()
        return AirflowClient(self.url, user, password)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the whole process group (standalone and every component it spawned), then SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            pgid = os.getpgid(self.proc.pid)
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        elif self.proc is not None:
            try:  # standalone is gone; its children may not be
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LocalAirflow":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_chain(
    client: AirflowClient,
    conf: dict | None = None,
    timeout: float = 900.0,
    echo: Callable[[str], None] | None = print,
    models: bool = False,
) -> dict[str, dict]:
    """Unpause the chain, trigger the ingest DAG with ``conf``, wait until the Asset-scheduled
    warehouse and feature-store runs it causes have succeeded; with ``models``, also the training
    run and the scoring run that follows its promotion. Returns {dag_id: run}."""
    say = echo or (lambda _msg: None)
    dags = CHAIN + (MODEL_DAGS if models else ())
    client.wait_for_dags(dags)
    for dag_id in dags:
        client.set_paused(dag_id, False)
    started = datetime.now(timezone.utc)
    deadline = time.monotonic() + timeout
    run = client.trigger(INGEST_DAG, conf=conf)
    say(f"triggered {INGEST_DAG} run {run['dag_run_id']}")
    runs = {INGEST_DAG: client.wait_for_run(INGEST_DAG, run["dag_run_id"], timeout=timeout, progress=echo)}
    say(f"  {INGEST_DAG}: {runs[INGEST_DAG]['state']}")
    for dag_id in CHAIN[1:]:  # Asset-scheduled after ingest, in chain order
        left = max(deadline - time.monotonic(), 30)
        runs[dag_id] = client.wait_for_run(dag_id, after=started, timeout=left, progress=echo)
        say(f"  {dag_id}: {runs[dag_id]['state']} ({runs[dag_id]['dag_run_id']})")
    for train_dag, score_dag in MODEL_DAG_PAIRS if models else ():
        left = max(deadline - time.monotonic(), 30)
        runs[train_dag] = client.wait_for_run(train_dag, after=started, timeout=left, progress=echo)
        say(f"  {train_dag}: {runs[train_dag]['state']} ({runs[train_dag]['dag_run_id']})")
        # the scoring run queued by the training run's promotion event (one queued by the feature
        # store may have run before, with the previous champion or none)
        trained = datetime.fromisoformat(runs[train_dag]["end_date"].replace("Z", "+00:00"))
        left = max(deadline - time.monotonic(), 30)
        runs[score_dag] = client.wait_for_run(score_dag, after=trained - timedelta(seconds=5), timeout=left, progress=echo)
        say(f"  {score_dag}: {runs[score_dag]['state']} ({runs[score_dag]['dag_run_id']})")
    return runs
