"""``ecomml-dbt``: dbt behind an exclusive file lock on the warehouse, so dbt processes queue
instead of failing on DuckDB's single-writer lock.

The Airflow pool ``duckdb_writer`` (size 1) schedules the warehouse writers, but a few dbt calls run
outside it: Cosmos' watcher-mode node tasks fall back to ``dbt run/test --select <node>`` when their
producer was cleared or died, and a person may run ``ecomml warehouse build`` beside Airflow. Every
dbt call of the platform goes through this wrapper (``ml.warehouse.dbt_command``, Cosmos'
``dbt_executable_path``): it takes ``flock(LOCK_EX)`` on ``$WAREHOUSE_PATH.lock`` (blocking), then
``exec``s the real dbt with the lock's descriptor inherited, so the lock is held exactly as long as
that dbt process lives (and released by the kernel if it is killed). It also holds the lake's lock
(``$LAKE_DIR/.lake.lock``) shared, so an ingest commits before or after a build, never during it.

Kept import-light (no settings, no pydantic): it starts once per dbt call.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from pathlib import Path


def real_dbt() -> str:
    exe = Path(sys.executable).parent / "dbt"
    found = str(exe) if exe.exists() else shutil.which("dbt")
    if not found:
        sys.exit("ecomml-dbt: no dbt executable next to this Python or on PATH")
    return found


def lock_path() -> Path:
    warehouse = os.environ.get("WAREHOUSE_PATH")
    if not warehouse:
        from ml.settings import get_settings  # only when dbt is run by hand without the settings' env

        warehouse = str(get_settings().warehouse_path)
    return Path(warehouse + ".lock")


def main() -> None:  # pragma: no cover - replaces the process
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another dbt process of this warehouse runs
    os.set_inheritable(fd, True)
    lake = os.environ.get("LAKE_DIR")
    if lake and Path(lake).is_dir():  # the lake stays as it is while dbt reads it (ml/lake.py)
        lake_fd = os.open(Path(lake) / ".lake.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(lake_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"ecomml-dbt: waiting for the lake {lake}: an ingest is committing", file=sys.stderr, flush=True)
            fcntl.flock(lake_fd, fcntl.LOCK_SH)
        os.set_inheritable(lake_fd, True)
    dbt = real_dbt()
    os.execv(dbt, [dbt, *sys.argv[1:]])


if __name__ == "__main__":  # pragma: no cover
    main()
