"""Shared test plumbing: locating shared/data, service availability, temp settings."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ml.settings import PROJECT_ROOT, settings_for

SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))
# .ci/run sets REQUIRE_SERVICES=1: a test that would skip for a missing service or dataset fails instead.
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str):
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(reason)


def shared_file(*parts: str) -> Path:
    """A file under shared/data, or skip (fail under REQUIRE_SERVICES) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        skip_or_fail(f"real sample {path} not found; set SHARED_DATA_DIR to the shared/data folder")
    return path


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def require_services(*services: str) -> None:
    """Skip (fail under REQUIRE_SERVICES=1) unless each of "postgres", "redis" listens locally."""
    ports = {"postgres": ("PostgreSQL", 5432), "redis": ("Redis", 6379)}
    for service in services:
        name, port = ports[service]
        if not port_open("127.0.0.1", port):
            skip_or_fail(f"{name} is not listening on 127.0.0.1:{port}")


@pytest.fixture
def postgres_url():
    require_services("postgres")
    return "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def redis_url():
    require_services("redis")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def _no_pseudonymize_key(monkeypatch):
    """Tests see raw ids unless they set a key themselves: a PSEUDONYMIZE_KEY exported in the
    developer's shell must not change what the ingest tests expect."""
    from ml.settings import get_secrets

    monkeypatch.delenv("PSEUDONYMIZE_KEY", raising=False)
    get_secrets.cache_clear()
    yield
    get_secrets.cache_clear()


@pytest.fixture
def tmp_settings(tmp_path):
    """Settings whose every local path lives under a fresh temp directory."""
    settings = settings_for(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    return settings


# DuckDB 2.0's nanobind bindings print hundreds of "leaked instance" lines to stderr at interpreter exit
# when a library (Feast's ibis-based DuckDB offline store) still holds a connection. They are harmless
# but land after pytest's summary line and bury it. Once pytest has reported, stderr goes to /dev/null;
# the interpreter then exits normally (atexit handlers run, the exit status is pytest's).
# PYTEST_NORMAL_EXIT=1 keeps stderr open.
@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if not os.environ.get("PYTEST_NORMAL_EXIT"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
