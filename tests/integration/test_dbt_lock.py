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
