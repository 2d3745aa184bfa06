"""ONE real Airflow for the e2e modules of a session (starting one and running the chain costs about
3 minutes on 2 cores): `airflow standalone` in a temp AIRFLOW_HOME on an ephemeral port, the chain
ingest(generate tiny) -> warehouse (watcher mode) -> feature_store triggered once through the API.
test_airflow_e2e.py uses it first (chain, logs, the writers' pool), then test_airflow_recovery.py
(backfill, then a SIGKILL of the whole process group and a restart, which is why the scheduler's
orphan detection is tightened here). The soak test (test_airflow_producer_crash.py) starts its own.
Everything started is stopped (process-group kill) at the end of the session, even on failure."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

import pytest

from ml.settings import PROJECT_ROOT, settings_for
from tests.e2e.airflow_api import run_chain_clearing_once

CHAIN_TIMEOUT_S = 480


@dataclass
class SharedAirflow:
    settings: object
    airflow: object
    runs: dict
    seconds: float  # Airflow start + the three chained runs


@pytest.fixture(scope="session")
def shared_airflow(tmp_path_factory):
    from ml.orchestration import local_airflow

    root = tmp_path_factory.mktemp("airflow_e2e")
    repo = shutil.copytree(PROJECT_ROOT / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    settings = settings_for(data_dir=root / "data", feast_repo_dir=repo, dbt_execution_mode="watcher", airflow_port=0)
    airflow = local_airflow.LocalAirflow(settings)
    # a task whose process died with the old scheduler is detected in seconds, not the default 5 min
    airflow.env.update(
        {
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        }
    )
    started = time.monotonic()
    try:
        airflow.start(timeout=240)
        runs = run_chain_clearing_once(airflow.client(), conf={"generate_scale": "tiny"}, timeout=CHAIN_TIMEOUT_S)
        yield SharedAirflow(settings, airflow, runs, time.monotonic() - started)
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- airflow standalone log tail ---\n{airflow.log_tail(80)}") from exc
    finally:
        airflow.stop()
