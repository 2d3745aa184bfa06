"""The CLI: every command answers --help, and commands read locations from the settings module."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ml.cli import app

runner = CliRunner()


def _commands(typer_app, prefix=()):
    group = typer_app
    for info in group.registered_commands:
        yield prefix + (info.name or info.callback.__name__.replace("_", "-"),)
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance, prefix + (sub.name,))


COMMANDS = list(_commands(app))


def test_cli_has_the_documented_commands():
    assert {("generate",), ("ingest",), ("warehouse", "build"), ("demo",), ("contract",)} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def _settings_output(monkeypatch, **env) -> str:
    """`ecomml settings` with these environment variables set."""
    from ml.settings import get_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["settings"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


def test_settings_command_prints_resolved_paths(tmp_path, monkeypatch):
    env = json.loads(_settings_output(monkeypatch, DATA_DIR=str(tmp_path)))
    assert env["LAKE_DIR"] == str(tmp_path / "lake")


def test_settings_command_masks_passwords_in_urls(monkeypatch):
    output = _settings_output(
        monkeypatch,
        FEAST_REGISTRY_URL="postgresql+psycopg://feast:s3cr3t-pw@db:5432/feast_registry",
        REDIS_URL="redis://:r3dis-pw@redis:6379/1",
    )
    assert "s3cr3t-pw" not in output and "r3dis-pw" not in output
    env = json.loads(output)
    assert env["FEAST_REGISTRY_URL"] == "postgresql+psycopg://feast:***@db:5432/feast_registry"
    assert env["REDIS_URL"] == "redis://:***@redis:6379/1"
