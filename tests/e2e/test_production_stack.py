"""The production configuration of docker-compose.yaml, run natively (no Docker engine here):
``NativeStack`` (tests/support/native_stack.py) starts the processes the compose file declares — MLflow server, Airflow
api-server, scheduler, dag-processor, triggerer, TWO Celery workers (one task slot each), the
Feast feature server and the Feast UI — with each service's container environment and command, against this
machine's PostgreSQL (own databases and roles, created by the compose file's postgres-init SQL) and
Redis (db 13: the Celery broker's keys prefixed with the stack's name, Feast's ending with it).
Only what a machine without compose's network needs is mapped (tests/support/native_stack.py says exactly what).

Through the API (login required), the chain ingest(generate tiny) -> warehouse (dbt via Cosmos,
watcher mode) -> feature_store runs on the CeleryExecutor: every task instance must have been
executed by a Celery worker, by both workers between them. While the chain's dbt producer holds the
duckdb_writer slot, an ingest run is triggered beside it: its writer must wait for the slot although
a worker is free (DuckDB's single writer, across workers). The Feast feature server must serve the
materialized features from Redis; the MLflow server (PostgreSQL backend) must take a training run,
a registered model and its promotion from the workers' settings. A second `stack init` keeps an
operator's pool resize but puts the DuckDB pool back to 1. Teardown stops every process and removes
the databases, roles and Redis keys (checked).

Skips without PostgreSQL/Redis/psql (fails under REQUIRE_SERVICES=1). About 6 minutes on 2 cores.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest

from ml.stack import WORKER
from tests.conftest import require_services, skip_or_fail
from tests.e2e.airflow_api import (
    PRODUCER,
    RUN_TIMEOUT_S,
    lock_errors,
    run_chain_clearing_once,
    settle_failed,
    task,
    wait_until,
    writer_intervals,
)
from tests.support.native_stack import NativeStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.services]

WORKERS = 2
CHAIN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_services("postgres", "redis")
    if not shutil.which("psql"):
        skip_or_fail("psql (PostgreSQL client) is not installed: the compose file's postgres-init SQL runs through it")
    import psycopg

    stack = NativeStack(
        tmp_path_factory.mktemp("production_stack"),
        workers=WORKERS,
        variables={"AIRFLOW_PARALLELISM": "2", "AIRFLOW_WORKER_CONCURRENCY": "1"},
    )
    started = time.monotonic()
    try:
        stack.start(timeout=300)
        stack.start_seconds = time.monotonic() - started
        stack.overlap = {}
        watcher = threading.Thread(target=_overlap_an_ingest_with_the_producer, args=(stack.client(), stack.overlap), daemon=True)
        watcher.start()
        stack.runs = run_chain_clearing_once(stack.client(), conf={"generate_scale": "tiny"}, timeout=CHAIN_TIMEOUT_S)
        stack.chain_seconds = time.monotonic() - started - stack.start_seconds
        watcher.join(timeout=RUN_TIMEOUT_S)
        yield stack
    except Exception as exc:
        tails = "\n".join(f"--- {key} ---\n{stack.log_tail(key, 30)}" for key in stack.procs)
        raise AssertionError(f"{exc}\n{tails}") from exc
    finally:
        stack.stop()
        stack.drop()
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as con:
            left = con.execute(
                "select datname from pg_database where datname like %s union all select rolname from pg_roles where rolname like %s",
                [f"{stack.name}%"] * 2,
            ).fetchall()
        assert not left, f"databases/roles left behind: {left}"
        assert not stack.redis_keys(), "Redis keys left behind"


def _overlap_an_ingest_with_the_producer(client, out: dict) -> None:
    """Beside the chain: once the chain's warehouse run has its dbt producer running (it holds the
    only duckdb_writer slot), trigger an ingest run (no new files, but its ingest_new_files is a
    writer in the same pool) and record whether that writer waited while the producer ran."""
    try:

        def producer_running():
            for run in client.runs("warehouse"):
                ti = task(client, "warehouse", run["dag_run_id"], PRODUCER)
                if ti and ti["state"] == "running":
                    return run["dag_run_id"]
            return None

        out["warehouse"] = wait_until(producer_running, CHAIN_TIMEOUT_S, f"{PRODUCER} to run", poll=0.5)
        out["ingest"] = run_i = client.trigger("ingest", logical_date=datetime.now(timezone.utc))["dag_run_id"]
        out["waited"] = waited = []
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            producer = task(client, "warehouse", out["warehouse"], PRODUCER)
            writer = task(client, "ingest", run_i, "ingest_new_files")
            if producer["state"] == "running" and writer and writer["state"] in ("scheduled", "queued", None):
                waited.append(writer["state"])
            if producer["state"] != "running" or (writer and writer["state"] in ("running", "success", "failed")):
                break
            time.sleep(0.5)
    except Exception as exc:  # reported by the test
        out["error"] = repr(exc)


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _post_json(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as exc:
        return exc.code, {"detail": exc.read().decode()[:500]}


def _executed_by(stack: NativeStack) -> dict[tuple[str, str, str], set[str]]:
    """{(dag_id, run_id, task_id): {worker}} from the workers' own logs ("Executing workload in Celery")."""
    out: dict[tuple[str, str, str], set[str]] = {}
    pattern = re.compile(r"Executing workload in Celery.*?task_id='([^']+)', dag_id='([^']+)', run_id='([^']+)'")
    for i in range(stack.workers):
        for task_id, dag_id, run_id in pattern.findall((stack.logs / f"{WORKER}-{i}.log").read_text(errors="replace")):
            out.setdefault((dag_id, run_id, task_id), set()).add(f"worker{i}")
    return out


def test_every_service_passes_its_compose_health_check(stack):
    expected = {
        "mlflow",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "feast-server",
        "feast-ui",
        *(f"{WORKER}-{i}" for i in range(WORKERS)),
    }
    assert set(stack.procs) == expected
    for key in stack.procs:  # the compose health checks themselves, run again now
        ok, output = stack.check(key)
        assert ok, f"{key}: {output}"
    print(
        f"stack healthy in {stack.start_seconds:.0f} s (databases, init, {len(stack.procs)} processes); chain {stack.chain_seconds:.0f} s"
    )


def test_api_requires_login(stack):
    from ml.orchestration.local_airflow import AirflowClient, OrchestrationError

    assert _get(f"{stack.api_url}/api/v2/dags") == 401
    assert _get(f"{stack.api_url}/api/v2/dags", token="not-a-token") in (401, 403)
    client = stack.client()
    assert _get(f"{stack.api_url}/api/v2/dags", token=client.token()) == 200
    with pytest.raises(OrchestrationError):
        AirflowClient(stack.api_url, client.username, "wrong-password").token()


def test_chain_ran_on_the_celery_workers(stack):
    client = stack.client()
    for dag_id, run in stack.runs.items():
        assert run["state"] == "success", (dag_id, run)
    assert stack.runs["warehouse"]["run_type"] == "asset_triggered"
    executed = _executed_by(stack)
    # EmptyOperator tasks (Cosmos' producer_watcher_done) are marked success by the scheduler: no executor runs them
    tis = [
        (d, r["dag_run_id"], t["task_id"])
        for d, r in stack.runs.items()
        for t in client.task_instances(d, r["dag_run_id"])
        if t["state"] == "success" and t["operator"] != "EmptyOperator"
    ]
    assert len(tis) >= 10, tis
    missing = [ti for ti in tis if ti not in executed]
    assert not missing, f"task instances no Celery worker executed: {missing}"
    workers = set().union(*(executed[ti] for ti in tis))
    assert workers == {f"worker{i}" for i in range(WORKERS)}, f"tasks ran on {workers} only"
    assert "Loaded executor: :CeleryExecutor:" in (stack.logs / "airflow-scheduler.log").read_text(errors="replace")
    # the broker's keys carry the stack's prefix (nothing unprefixed leaks into the shared Redis db)
    import redis

    keys = redis.Redis(host="127.0.0.1", port=6379, db=stack.redis_db).keys(b"*_kombu*")
    assert keys and all(k.startswith(f"{stack.name}:".encode()) for k in keys), keys[:5]


def test_overlapping_writers_are_serialised_across_workers(stack):
    """While the chain's warehouse run had its dbt producer holding the only duckdb_writer slot, an
    ingest run was triggered (the fixture's watcher thread): its writer must have waited (seen
    `scheduled`) although the other worker was free, the writers' intervals must be disjoint, both
    runs must succeed and no try of any task may log a DuckDB lock error."""
    client = stack.client()
    overlap = stack.overlap
    assert "error" not in overlap and "ingest" in overlap, overlap
    assert client.request("GET", "/pools/duckdb_writer")["slots"] == 1
    runs = [("warehouse", overlap["warehouse"]), ("ingest", overlap["ingest"])]
    states = {f"{d}/{r}": settle_failed(client, d, r)["state"] for d, r in runs}
    assert all(s == "success" for s in states.values()), states
    intervals = writer_intervals(client, runs)
    executed = _executed_by(stack)
    print("writer intervals:\n  " + "\n  ".join(f"{n}: {s:%H:%M:%S.%f} -> {e:%H:%M:%S.%f}" for n, s, e in intervals))
    print("writers ran on:", {f"{d}/{t}": executed.get((d, r, t)) for d, r in runs for t in (PRODUCER, "ingest_new_files")})
    assert len(intervals) == 2, intervals
    (n1, s1, e1), (n2, s2, e2) = intervals
    assert e1 <= s2, f"writers overlapped: {n1} [{s1}, {e1}] and {n2} [{s2}, {e2}]"
    assert overlap["waited"], "ingest_new_files never waited for the duckdb_writer slot while the producer held it"
    errors = [e for d, r in runs for e in lock_errors(client, d, r)]
    assert not errors, "DuckDB lock errors in task logs:\n" + "\n".join(errors)


def test_feature_server_serves_the_materialized_features_from_redis(stack):
    import duckdb

    from ml.features.serving import ServingError, get_online_features_http

    settings = stack.settings()
    assert settings.feast_mode == "production" and settings.redis_url.endswith(f"/{stack.redis_db}")
    user_id = (
        duckdb.connect()
        .execute("select min(user_id) from read_parquet(?)", [str(settings.features_dir / "feat_user_rfm.parquet")])
        .fetchone()[0]
    )
    assert _get(f"{stack.url('feast-server')}/health") == 200

    def served():
        # The server started before the chain applied the repo: it sees the new registry at its next
        # refresh (registry_ttl_sec, 60 s), not at once; a 404 before then is Feast's documented behaviour.
        try:
            return get_online_features_http(stack.url("feast-server"), "propensity_lgbm_v1", [{"user_id": user_id}])
        except ServingError as exc:
            if "FeatureServiceNotFoundException" not in str(exc):
                raise
            return None

    values = wait_until(served, 60 + 30, "the feature server to pick up the applied registry", poll=5)
    assert values["user_id"] == [user_id]
    features = {k: v[0] for k, v in values.items() if k != "user_id"}
    assert features and sum(v is not None for v in features.values()) >= len(features) // 2, features
    assert any(k.endswith(stack.name.encode()) for k in stack.redis_keys()), "no Feast key of this project in Redis"


def test_feast_ui_browses_the_sql_registry(stack):
    ui = stack.url("feast-ui")
    with urllib.request.urlopen(f"{ui}/projects-list.json", timeout=15) as r:
        assert stack.name in r.read().decode()
    with urllib.request.urlopen(f"{ui}/api/v1/feature_views?project={stack.name}", timeout=30) as r:
        body = r.read().decode()
    assert "user_rfm" in body and "item_warehouse_demand" in body, body[:500]


def test_mlflow_server_tracks_and_registers_from_the_workers_settings(stack):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ml.models.lifecycle import registry

    settings = stack.settings()
    assert settings.mlflow_tracking_uri == stack.url("mlflow")
    assert _get(f"{stack.url('mlflow')}/health") == 200
    X = np.random.default_rng(0).normal(size=(60, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    with registry.training_run(settings, "stack_check", {"C": 1.0}, "none", ["a", "b", "c"], {}):
        registry.log_metrics({"auc": 0.9})
        version = registry.log_model(model, "stack_check", "sklearn")
    decision = registry.promote_if_not_worse(settings, "stack_check", version.version, "auc", 0.9)
    assert decision.promoted, decision
    loaded, champion = registry.load_champion(settings, "stack_check")
    assert champion.version == version.version
    assert np.array_equal(loaded.predict(X), model.predict(X))
    # the run lives in the server's PostgreSQL backend, the artifacts on the shared data volume
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{stack.name}_mlflow") as con:
        assert con.execute("select count(*) from registered_models where name = 'stack_check'").fetchone()[0] == 1
    assert str(registry.artifact_dir(settings, champion)).startswith(str(stack.root / "data"))


def test_init_again_keeps_an_operators_pool_resize_but_not_a_second_duckdb_writer(stack):
    client = stack.client()
    settings = stack.settings()
    for pool, slots in ((settings.training_pool, 2), (settings.duckdb_pool, 3)):  # an operator's edit in the UI
        client.request("PATCH", f"/pools/{pool}?update_mask=slots", {"pool": pool, "slots": slots, "include_deferred": False})
    assert client.request("GET", f"/pools/{settings.duckdb_pool}")["slots"] == 3
    stack.run_init()
    assert client.request("GET", f"/pools/{settings.training_pool}")["slots"] == 2
    assert client.request("GET", f"/pools/{settings.duckdb_pool}")["slots"] == 1
