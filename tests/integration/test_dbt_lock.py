"""Every dbt call goes through ``ecomml-dbt``: a second dbt process waits for the warehouse's file
lock instead of failing on DuckDB's single-writer lock (ml/dbt_locked.py)."""

from __future__ import annotations

import fcntl
import os
import subprocess

import pytest

from ml.warehouse import dbt_command

pytestmark = pytest.mark.integration


def test_dbt_waits_for_the_warehouse_lock_and_runs_after_it(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    env = {**os.environ, "WAREHOUSE_PATH": str(warehouse), "DO_NOT_TRACK": "1"}
    assert dbt_command()[0].endswith("ecomml-dbt")
    fd = os.open(f"{warehouse}.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another dbt process of this warehouse is running
    proc = subprocess.Popen([*dbt_command(), "--version"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # blocked on the lock, not failed
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "Core" in out or "installed" in out.lower(), out  # dbt itself ran once the lock was free


def test_lock_is_held_while_dbt_runs_and_released_when_it_dies(tmp_path):
    """The wrapper execs dbt with the lock's descriptor: the lock lives exactly as long as dbt."""
    import time

    warehouse = tmp_path / "warehouse.duckdb"
    env = {**os.environ, "WAREHOUSE_PATH": str(warehouse), "DO_NOT_TRACK": "1"}
    # `dbt --version` runs for a couple of seconds: watch the lock while it does, then kill it
    proc = subprocess.Popen([*dbt_command(), "--version"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fd = os.open(f"{warehouse}.lock", os.O_CREAT | os.O_RDWR)
    try:
        deadline = time.monotonic() + 30
        held = False
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                held = True
                break
            time.sleep(0.01)
        proc.kill()
        proc.wait(timeout=30)
        assert held, "dbt ran without holding the warehouse lock"
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the killed process
    finally:
        os.close(fd)


def test_a_child_started_for_dbt_dies_with_its_parent(tmp_path):
    """What run_dbt starts dbt with: killed with SIGKILL, the parent takes the child along (a silent
    dbt node would otherwise run on, holding the locks, until its next log line hits the closed pipe)."""
    import signal
    import sys

    import psutil

    script = (
        "import subprocess, sys, time; from ml.warehouse import child_process_kwargs; "
        "p = subprocess.Popen(['sleep', '120'], **child_process_kwargs()); print(p.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _, alive = psutil.wait_procs([child], timeout=10)
    assert not alive, "the child outlived its parent"


def test_killing_the_cli_build_kills_its_dbt_and_frees_the_locks(built_warehouse, tmp_path):
    """`ecomml warehouse build` killed with SIGKILL must not leave dbt running (holding the
    warehouse lock for minutes), nor either lock held."""
    import shutil
    import signal
    import sys
    import time

    import psutil

    data = tmp_path / "data"
    shutil.copytree(built_warehouse.lake_dir, data / "lake")
    env = {**os.environ, "DATA_DIR": str(data), "DO_NOT_TRACK": "1"}
    cli = subprocess.Popen(
        [sys.executable, "-m", "ml", "warehouse", "build"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline, dbt = time.monotonic() + 60, None
    while dbt is None and time.monotonic() < deadline:
        dbt = next((c for c in psutil.Process(cli.pid).children(recursive=True) if "dbt" in " ".join(c.cmdline())), None)
        time.sleep(0.2)
    assert dbt is not None, "dbt never started"
    time.sleep(2)  # dbt holds the warehouse lock and the lake lock now
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    gone, alive = psutil.wait_procs([dbt], timeout=20)
    assert not alive, "dbt outlived the CLI that started it"
    for lock in (data / "warehouse" / "warehouse.duckdb.lock", data / "lake" / ".lake.lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no orphan holds it
        finally:
            os.close(fd)


def test_dbt_holds_the_lake_lock_shared_so_a_commit_waits_for_it(tmp_path):
    """While an ingest commits (exclusive lake lock), a dbt process waits before reading the lake."""
    lake = tmp_path / "lake"
    lake.mkdir()
    env = {**os.environ, "WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"), "LAKE_DIR": str(lake), "DO_NOT_TRACK": "1"}
    fd = os.open(lake / ".lake.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # an ingest is committing
    proc = subprocess.Popen([*dbt_command(), "--version"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "an ingest is committing" in out, out
