"""REST-API and process helpers shared by the e2e tests that drive a local Airflow: waiting for
runs, clearing tasks the way an operator does, reading every try's log for DuckDB lock errors, the
duckdb_writer pool's task intervals, and the task / dbt processes of a LocalAirflow (psutil)."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone

RUN_TIMEOUT_S = 900
PRODUCER = "dbt.dbt_producer_watcher"
WRITERS = {("warehouse", PRODUCER), ("ingest", "ingest_new_files")}
LOCK_ERRORS = ("Could not set lock", "Conflicting lock")
TERMINAL = ("success", "failed")


def ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def wait_until(predicate, timeout: float, what: str, poll: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def wait_end(client, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    """The run once it is success or failed (no raise on failed, unlike AirflowClient.wait_for_run)."""
    return wait_until(lambda: (r := client.run(dag_id, run_id))["state"] in TERMINAL and r, timeout, f"{dag_id} run {run_id}", poll=3)


def task(client, dag_id: str, run_id: str, task_id: str) -> dict | None:
    return next((t for t in client.task_instances(dag_id, run_id) if t["task_id"] == task_id), None)


def clear_tasks(
    client, dag_id: str, run_id: str, task_ids: list[str] | None = None, downstream: bool = False, only_failed: bool = False
) -> list[dict]:
    """An operator's "Clear" through POST /dags/{dag}/clearTaskInstances; the cleared task instances."""
    body = {"dry_run": False, "dag_run_id": run_id, "only_failed": only_failed, "reset_dag_runs": True}
    if task_ids:
        body.update(task_ids=task_ids, include_downstream=downstream)
    return (client.request("POST", f"/dags/{dag_id}/clearTaskInstances", body) or {}).get("task_instances", [])


def lock_errors(client, dag_id: str, run_id: str) -> list[str]:
    """'task try N: <line>' for every DuckDB lock error in any try of any task of the run."""
    found = []
    for ti in client.task_instances(dag_id, run_id):
        for attempt in range(1, (ti.get("try_number") or 0) + 1):
            try:
                text = client.task_log(dag_id, run_id, ti["task_id"], try_number=attempt, map_index=ti.get("map_index", -1))
            except Exception as exc:  # a try with no log (e.g. cleared before it ran)
                text = str(exc)
            for line in text.splitlines():
                if any(marker in line for marker in LOCK_ERRORS):
                    found.append(f"{dag_id}/{run_id} {ti['task_id']} try {attempt}: {line.strip()[:300]}")
    return found


def writer_intervals(client, runs: list[tuple[str, str]]) -> list[tuple[str, datetime, datetime]]:
    out = []
    for dag_id, run_id in runs:
        for ti in client.task_instances(dag_id, run_id):
            if (dag_id, ti["task_id"]) in WRITERS and ti.get("start_date"):
                assert ti.get("pool") == "duckdb_writer", ti
                out.append((f"{dag_id}/{run_id}/{ti['task_id']}", ts(ti["start_date"]), ts(ti["end_date"])))
    return sorted(out, key=lambda x: x[1])


def clear_failed(client, dag_id: str, run_id: str) -> None:
    """The documented re-run ("Clear" the failed tasks of a run), through the API."""
    client.request(
        "POST",
        f"/dags/{dag_id}/clearTaskInstances",
        {
            "dry_run": False,
            "dag_run_id": run_id,
            "only_failed": True,
            "reset_dag_runs": True,
        },
    )


def run_chain_clearing_once(client, conf: dict, timeout: float = 300) -> dict:
    """``local_airflow.run_chain``, except that a failed warehouse run is cleared (failed tasks
    only) and waited for once more. Airflow 3.3's scheduler can fail a deferrable task whose trigger
    fires within a second of deferring ("finished with state success, but the task instance's state
    attribute is queued": apache/airflow#66374, #71580, #72716); the watcher-mode dbt sensors defer
    and have no retries, so that race fails a warehouse run whose dbt build succeeded. Clearing the
    failed sensors is the operator's documented fix (docs/operations.md); the producer is not re-run."""
    from ml.orchestration import chain, local_airflow

    client.wait_for_dags(chain.CHAIN)
    for dag_id in chain.CHAIN:
        client.set_paused(dag_id, False)
    started = datetime.now(timezone.utc)
    run = client.trigger("ingest", conf=conf)
    runs = {"ingest": client.wait_for_run("ingest", run["dag_run_id"], timeout=timeout)}
    try:
        runs["warehouse"] = client.wait_for_run("warehouse", after=started, timeout=timeout)
    except local_airflow.OrchestrationError as exc:
        failed = [r for r in client.runs("warehouse") if r["state"] == "failed"]
        if not failed:
            raise
        print(f"warehouse run failed, clearing its failed tasks once: {exc}")
        clear_failed(client, "warehouse", failed[0]["dag_run_id"])
        time.sleep(3)
        runs["warehouse"] = client.wait_for_run("warehouse", failed[0]["dag_run_id"], timeout=timeout)
    runs["feature_store"] = client.wait_for_run("feature_store", after=started, timeout=timeout)
    return runs


def settle_failed(client, dag_id: str, run_id: str) -> dict:
    """Wait for the run; if it failed, clear its failed tasks once (the operator's fix for Airflow
    3.3's deferral race that can fail a watcher sensor whose node succeeded; see
    run_chain_clearing_once) and wait again."""
    run = wait_end(client, dag_id, run_id)
    if run["state"] == "failed":
        failed = [t["task_id"] for t in client.task_instances(dag_id, run_id) if t["state"] in ("failed", "upstream_failed")]
        print(f"{dag_id} run {run_id} failed ({failed}); clearing its failed tasks once")
        clear_tasks(client, dag_id, run_id, only_failed=True)
        time.sleep(3)
        run = wait_end(client, dag_id, run_id)
    return run


# --------------------------------------------------------------------------------------------------
# processes of the local Airflow (psutil)
# --------------------------------------------------------------------------------------------------


def task_process(airflow, ti_id: str):
    """The task process of task instance ``ti_id`` (its title is ``airflow worker -- <ti id>``; the
    LocalExecutor worker that supervises it is titled ``... LocalExecutor: <ti id>``), searched
    among the descendants of this module's ``airflow standalone`` only."""
    import psutil

    for proc in psutil.Process(airflow.proc.pid).children(recursive=True):
        try:
            title = " ".join(filter(None, proc.cmdline())).strip()  # setproctitle pads argv with ''s
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith("airflow worker --") and title.endswith(ti_id) and "LocalExecutor" not in title:
            return proc
    return None


def dbt_children(proc, subcommand: str = "build"):
    import psutil

    out = []
    for child in proc.children(recursive=True):
        try:
            cmd = child.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(os.path.basename(part) == "dbt" for part in cmd[:2]) and subcommand in cmd:
            out.append(child)
    return out


def our_dbt_processes(settings) -> list:
    """dbt processes writing this module's warehouse (they may outlive a killed parent)."""
    import psutil

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if not any(os.path.basename(p) == "dbt" for p in cmd[:2]):
            continue
        try:  # Cosmos runs dbt in a temp copy of the project: recognise ours by its environment
            if proc.environ().get("WAREHOUSE_PATH") == str(settings.warehouse_path):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def kill_all(procs) -> None:
    import psutil

    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=15)
