"""The settings module: derivation of paths, env export, no side effects, .env.example completeness."""

from __future__ import annotations

import re
import subprocess
import sys

from ml.settings import PROJECT_ROOT, TELEMETRY_OFF, Settings, settings_for


def test_paths_derive_from_data_dir(tmp_path):
    s = settings_for(data_dir=tmp_path)
    assert s.lake_dir == tmp_path / "lake"
    assert s.warehouse_path == tmp_path / "warehouse" / "warehouse.duckdb"
    assert s.features_dir == tmp_path / "warehouse" / "features"


def test_explicit_path_wins_over_derived(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / "elsewhere.duckdb"))
    s = Settings()
    assert s.warehouse_path == tmp_path / "elsewhere.duckdb"
    assert s.lake_dir == tmp_path / "lake"


def test_as_env_exports_every_setting_and_turns_telemetry_off(tmp_path):
    env = settings_for(data_dir=tmp_path).as_env()
    for name in Settings.model_fields:
        assert name.upper() in env
    assert env["WAREHOUSE_PATH"] == str(tmp_path / "warehouse" / "warehouse.duckdb")
    for key, value in TELEMETRY_OFF.items():
        assert env[key] == value
    assert all(isinstance(v, str) for v in env.values())


def test_invalid_scale_is_rejected(tmp_path):
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError):
        settings_for(data_dir=tmp_path, scale="huge")


def test_import_has_no_side_effects(tmp_path):
    """Importing the settings module must not read the environment or create folders."""
    code = "import ml.settings, os; print(os.listdir('.'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_env_example_lists_every_setting():
    text = (PROJECT_ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    assert {n.upper() for n in Settings.model_fields} <= listed


def test_as_env_round_trips_through_the_environment(tmp_path, monkeypatch):
    """A subprocess rebuilding Settings from as_env() sees the same values (unset optionals stay unset)."""
    original = settings_for(data_dir=tmp_path)
    assert original.ingest_mapping is None
    for key, value in original.as_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_paths_and_env_file_resolve_from_the_project_the_user_stands_in(tmp_path, monkeypatch):
    """The console script installed elsewhere must not put ./data where it was installed."""
    from ml.settings import get_settings, user_root

    project = tmp_path / "shop"
    (project / "dbt_project").mkdir(parents=True)
    (project / "dbt_project" / "dbt_project.yml").write_text("name: x\n")
    (project / "feature_repo").mkdir()
    (project / ".env").write_text("DATA_DIR=./state\nSEED=7\n")
    inside = project / "notebooks"
    inside.mkdir()
    monkeypatch.chdir(inside)
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.delenv("SEED", raising=False)
    assert user_root() == project
    get_settings.cache_clear()
    try:
        s = get_settings()
    finally:
        get_settings.cache_clear()
    assert s.data_dir == project / "state" and s.lake_dir == project / "state" / "lake"
    assert s.seed == 7 and s.dbt_project_dir == project / "dbt_project"
    monkeypatch.chdir(tmp_path)  # outside any project: the installed package's root
    assert user_root() == PROJECT_ROOT


def test_cli_failures_are_one_error_line_and_exit_2(tmp_path):
    env = {**__import__("os").environ, "DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "ml", "warehouse", "query", "copy x to '/tmp/y'"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("error: only SELECT") and len(proc.stderr.splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "ml", "ingest", "--mapping", "nope", __file__], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("error: mapping 'nope' is neither a preset")
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ml", "generate", "--scale", "huge"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: unknown scale 'huge'; choose one of tiny, small, medium, large (--debug shows the traceback)"
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "ml", "--debug", "demand", "plan", "x", "y"],
        capture_output=True,
        text=True,
        env={**env, "FEAST_REPO_DIR": str(tmp_path / "none")},
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr  # --debug: the traceback, for a bug report
