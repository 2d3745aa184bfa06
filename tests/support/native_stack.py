"""``NativeStack``: the services of docker-compose.yaml as processes on this machine, from the same
environment variables (ml/stack.py reads the file the way Docker Compose does).

``NativeStack`` is how the configuration is proven where no Docker engine runs (tests, benchmarks,
or a VM without containers): each service's container environment and command, with only what a
machine without compose's network and volumes needs changed, all of it here:
- service names -> this machine: ``postgres:5432`` -> the local PostgreSQL, ``redis:6379`` -> the
  local Redis, ``airflow-apiserver:8080`` / ``mlflow:5000`` / ``feast-server:6566`` -> free ports on
  127.0.0.1 (servers listen on 127.0.0.1, not 0.0.0.0);
- PostgreSQL databases and roles get the stack's name as prefix (``airflow`` -> ``<name>_airflow``),
  created by the compose file's own ``postgres-init`` SQL run through psql with the same renaming;
- Redis: one database (``redis_db``) for the Celery broker (every key prefixed ``<name>:``) and the
  Feast online store (every key ends with the Feast project, ``<name>``); the local Redis has no
  password, so the URLs lose theirs (the compose Redis adds ``--requirepass``);
- container paths: ``/data`` -> ``<root>/data``, ``/opt/ecomml`` -> the project, ``/home/airflow``
  -> ``<root>/home``;
- what one host shares that containers do not: each Celery worker gets its own node name
  (``celery@worker<i>.<name>``, its ``HOSTNAME``) and log-server port; the scheduler's health-check
  and the triggerer's log-server ports are free ports;
- the init container's root part (chown of the volumes, setpriv) is not run: it runs
  ``ecomml stack init`` as the current user.
``drop()`` removes the databases, roles and Redis keys the stack created.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ml.orchestration.local_airflow import free_port
from ml.settings import PROJECT_ROOT, Settings
from ml.stack import (
    AIRFLOW_SERVICES,
    COMPOSE_FILE,
    CONTAINER_PORTS,
    OPTIONAL_SECRETS,
    SCHEDULER_HEALTH_PORT,
    SERVERS,
    WORKER,
    generate_secrets,
    load_compose,
    resolved_compose,
    service_command,
    service_environment,
)


def _airflow_hostname() -> str:
    """The host name Airflow records for its jobs (airflow.utils.net.getfqdn, its default
    hostname_callable): the canonical name of gethostname(); a container's is its $HOSTNAME."""
    name = socket.gethostname()
    try:
        for *_, canonical, _ in socket.getaddrinfo(name, None, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME):
            if canonical:
                return canonical
    except OSError:
        pass
    return socket.getfqdn(name)


class NativeStack:
    """docker-compose.yaml's services as processes on this machine (see the module docstring for
    every difference from the containers). ``start()`` creates the databases, runs the init, starts
    MLflow, the Airflow services, ``workers`` Celery workers and the Feast feature server and UI
    (``servers``: the platform's servers to start), and waits
    until each answers its compose health check; ``stop()`` ends them; ``drop()`` removes the
    databases, roles and Redis keys."""

    def __init__(
        self,
        root: Path,
        workers: int = 1,
        name: str | None = None,
        variables: dict[str, str] | None = None,
        postgres: tuple[str, int] = ("127.0.0.1", 5432),
        redis: tuple[str, int] = ("127.0.0.1", 6379),
        redis_db: int = 13,
        admin_user: str = "postgres",
        compose_file: Path = COMPOSE_FILE,
        servers: tuple[str, ...] = SERVERS,
    ):
        self.root = Path(root)
        self.name = name or f"ecomml_{uuid.uuid4().hex[:8]}"
        self.workers = workers
        self.servers = servers
        self.postgres, self.redis, self.redis_db, self.admin_user = postgres, redis, redis_db, admin_user
        self.compose_file = compose_file
        self.variables = {**generate_secrets(), "FEAST_PROJECT": self.name, **(variables or {})}
        self.ports = {service: free_port() for service in CONTAINER_PORTS}
        self.scheduler_health_port = free_port()
        self.trigger_log_port = free_port()
        # the log server each Airflow process may start (workers serve their tasks' logs)
        self.log_ports = {key: free_port() for key in (*AIRFLOW_SERVICES, *(f"{WORKER}-{i}" for i in range(workers)))}
        self.logs = self.root / "logs"
        self.procs: dict[str, subprocess.Popen] = {}

    # ---- the mapping ---------------------------------------------------------------------------

    def local(self, value: str) -> str:
        """A container value (URL, path, command argument) as it reads on this machine."""
        value = re.sub(r"(?P<scheme>[a-z][\w+]*)://(?P<auth>[^@/\s]*@)?(?P<host>[\w-]+):(?P<port>\d+)(?P<path>/\w*)?", self._url, value)
        value = re.sub(r"(?<![\w.-])/data(?=/|\b|$)", str(self.root / "data"), value)
        value = re.sub(r"(?<![\w.-])/opt/ecomml(?=/|\b|$)", str(PROJECT_ROOT), value)
        return re.sub(r"(?<![\w.-])/home/airflow(?=/|\b|$)", str(self.root / "home"), value)

    def _url(self, m: re.Match) -> str:
        scheme, auth, host, port, path = m["scheme"], m["auth"] or "", m["host"], m["port"], m["path"] or ""
        if host == "postgres":
            user, _, secret = auth.rstrip("@").partition(":")
            auth = f"{self.name}_{user}:{secret}@" if user else ""
            return f"{scheme}://{auth}{self.postgres[0]}:{self.postgres[1]}/{self.name}_{path.lstrip('/')}"
        if host == "redis":  # the local Redis has no password
            return f"{scheme}://{self.redis[0]}:{self.redis[1]}/{self.redis_db}"
        if host in CONTAINER_PORTS and int(port) == CONTAINER_PORTS[host]:
            return f"{scheme}://{auth}127.0.0.1:{self.ports[host]}{path}"
        return m.group(0)

    def _base_env(self) -> dict[str, str]:
        """This shell's environment without anything the platform or Airflow reads (a container
        starts clean), plus the venv on PATH (the image's Python)."""
        drop = {*(f.upper() for f in Settings.model_fields), *OPTIONAL_SECRETS, "HOSTNAME"}
        env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("AIRFLOW__")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def env(self, service: str, worker: int = 0) -> dict[str, str]:
        env = {
            **self._base_env(),
            **{
                k: self.local(v)
                for k, v in service_environment(
                    "airflow-worker" if service == WORKER else service, self.variables, self.compose_file
                ).items()
            },
        }
        if "AIRFLOW__CORE__EXECUTOR" in env:
            env.update(
                {
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{self.name}:",
                    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.scheduler_health_port),
                    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(
                        self.log_ports.get(f"{WORKER}-{worker}" if service == WORKER else service, 0)
                    ),
                    "HOSTNAME": _airflow_hostname(),  # what `airflow jobs check --hostname` matches, as in a container
                }
            )
        if service == "airflow-apiserver":
            env.update({"AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.ports[service])})
        if service == WORKER:
            env["HOSTNAME"] = f"worker{worker}.{self.name}"
        return env

    def command(self, service: str, worker: int = 0) -> list[str]:
        args = [self._local_arg(service, a) for a in service_command(service, self.variables, self.compose_file)]
        if service == WORKER:  # containers differ by hostname; processes on one host need their own node name
            args += ["--celery-hostname", f"celery@worker{worker}.{self.name}"]
        return args

    def _local_arg(self, service: str, arg: str) -> str:
        arg = self.local(arg).replace("0.0.0.0", "127.0.0.1")
        if service in CONTAINER_PORTS:
            arg = re.sub(rf"(?<![\d.]){CONTAINER_PORTS[service]}(?!\d)", str(self.ports[service]), arg)
        return arg

    def healthcheck(self, service: str, worker: int = 0) -> list[str] | None:
        """The service's compose health check as argv, on this machine's ports."""
        test = (
            resolved_compose(self.variables, self.compose_file)["services"]["airflow-worker" if service == WORKER else service]
            .get("healthcheck", {})
            .get("test")
        )
        if not test:
            return None
        kind, *rest = test
        args = ["bash", "-c", rest[0]] if kind == "CMD-SHELL" else rest
        out = []
        for a in args:
            a = self._local_arg(service, a) if service in CONTAINER_PORTS else self.local(a)
            out.append(a.replace(f":{SCHEDULER_HEALTH_PORT}/", f":{self.scheduler_health_port}/"))
        return out

    def settings(self, service: str = WORKER) -> Settings:
        from ml.settings import settings_for

        env = self.env(service)
        return settings_for(**{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['airflow-apiserver']}"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def client(self):
        from ml.orchestration.local_airflow import AirflowClient

        env = self.env("airflow-apiserver")
        user = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(":")[0]
        return AirflowClient(self.api_url, user, self.variables["AIRFLOW_ADMIN_PASSWORD"])

    # ---- lifecycle -----------------------------------------------------------------------------

    def _admin(self):
        import psycopg

        return psycopg.connect(host=self.postgres[0], port=self.postgres[1], user=self.admin_user, dbname="postgres", autocommit=True)

    def create_databases(self) -> None:
        """The compose file's postgres-init SQL, with this stack's database and role names, via psql."""
        sql = load_compose(self.compose_file)["configs"]["postgres-init"]["content"]
        names = sorted(set(re.findall(r"CREATE (?:ROLE|DATABASE) (\w+)", sql)), key=len, reverse=True)
        sql = re.sub(rf"\b({'|'.join(names)})\b(?!_password)", lambda m: f"{self.name}_{m.group(1)}", sql)
        env = {**self._base_env(), **service_environment("postgres", self.variables, self.compose_file)}
        psql = shutil.which("psql") or "psql"
        proc = subprocess.run(
            [
                psql,
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.postgres[0],
                "-p",
                str(self.postgres[1]),
                "-U",
                self.admin_user,
                "-d",
                "postgres",
                "-f",
                "-",
            ],
            input=sql,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"postgres-init failed:\n{proc.stderr[-2000:]}")

    def _spawn(self, key: str, service: str, worker: int = 0) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{key}.log", "ab") as log:
            proc = subprocess.Popen(
                self.command(service, worker),
                env=self.env(service, worker),
                cwd=str(PROJECT_ROOT),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[key] = proc
        return proc

    def run_init(self) -> None:
        env = self.env("airflow-init")
        for path in (env["DATA_DIR"], self.root / "home"):
            Path(path).mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["ecomml", "stack", "init"], env=env, cwd=str(PROJECT_ROOT), capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"stack init failed:\n{(proc.stdout + proc.stderr)[-3000:]}")

    def start(self, timeout: float = 300) -> "NativeStack":
        self.create_databases()
        self.run_init()
        if "mlflow" in self.servers:  # before the workers (compose: they depend on it)
            self._spawn("mlflow", "mlflow")
        for service in AIRFLOW_SERVICES:
            self._spawn(service, service)
        for i in range(self.workers):
            self._spawn(f"{WORKER}-{i}", WORKER, i)
        for server in self.servers:
            if server != "mlflow":
                self._spawn(server, server)
        self.wait_healthy(timeout)
        return self

    def service_of(self, key: str) -> tuple[str, int]:
        return (WORKER, int(key.rsplit("-", 1)[1])) if key.startswith(WORKER) else (key, 0)

    def check(self, key: str) -> tuple[bool, str]:
        """Run the compose health check of one started service; (passed, output)."""
        service, worker = self.service_of(key)
        args = self.healthcheck(service, worker)
        proc = subprocess.run(args, env=self.env(service, worker), capture_output=True, text=True, timeout=60)
        return proc.returncode == 0, (proc.stdout + proc.stderr)[-500:]

    def wait_healthy(self, timeout: float) -> dict[str, float]:
        """Seconds until each service passed its health check (all in parallel); raises with the
        failing services' log tails on timeout or when a process exits."""
        started, ready = time.monotonic(), {}

        def wait(key: str) -> None:
            while time.monotonic() - started < timeout:
                if self.procs[key].poll() is not None:
                    return
                ok, _ = self.check(key)
                if ok:
                    ready[key] = round(time.monotonic() - started, 1)
                    return
                time.sleep(5)

        with ThreadPoolExecutor(len(self.procs)) as pool:
            list(pool.map(wait, list(self.procs)))
        missing = [k for k in self.procs if k not in ready]
        if missing:
            tails = "\n".join(f"--- {k} (exit {self.procs[k].poll()}) ---\n{self.log_tail(k)}" for k in missing)
            raise RuntimeError(f"not healthy after {timeout:.0f} s: {missing}\n{tails}")
        return ready

    def log_tail(self, key: str, lines: int = 40) -> str:
        try:
            return "\n".join((self.logs / f"{key}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every process group (a Celery worker's warm shutdown), then SIGKILL what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def redis_keys(self) -> list[bytes]:
        import redis

        client = redis.Redis(host=self.redis[0], port=self.redis[1], db=self.redis_db)
        return list(client.scan_iter(match=f"*{self.name}*".encode(), count=1000))

    def drop(self) -> None:
        """Remove the databases, roles and Redis keys of this stack."""
        import redis

        with self._admin() as con:
            for (db,) in con.execute("select datname from pg_database where datname like %s", [f"{self.name}\\_%"]).fetchall():
                con.execute(f'drop database if exists "{db}" with (force)')
            for (role,) in con.execute("select rolname from pg_roles where rolname like %s", [f"{self.name}\\_%"]).fetchall():
                con.execute(f'drop role if exists "{role}"')
        client = redis.Redis(host=self.redis[0], port=self.redis[1], db=self.redis_db)
        keys = self.redis_keys()
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])

    def __enter__(self) -> "NativeStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
