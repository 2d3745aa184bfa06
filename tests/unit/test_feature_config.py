"""Rendering feature_store.yaml from the settings (both modes), and the Feast settings themselves."""

from __future__ import annotations

import pytest
import yaml

from ml.features import repo
from ml.settings import settings_for


@pytest.mark.parametrize("mode", ["embedded", "production"])
def test_no_placeholder_survives_rendering(tmp_path, mode):
    settings = settings_for(data_dir=tmp_path, feast_mode=mode)
    text = repo.render_config(settings)
    assert "${" not in text
    assert "${" in repo.template_path(settings).read_text()  # the template does use placeholders
    config = yaml.safe_load(text)
    assert config["project"] == settings.feast_project
    assert config["offline_store"] == {"type": "duckdb"}
    assert config["entity_key_serialization_version"] == 3


def test_embedded_mode_is_sqlite_and_a_file_registry(tmp_path):
    settings = settings_for(data_dir=tmp_path)
    config = yaml.safe_load(repo.render_config(settings))
    assert config["online_store"] == {"type": "sqlite", "path": str(tmp_path / "feast" / "online_store.db")}
    assert config["registry"]["registry_type"] == "file"
    assert config["registry"]["path"] == str(tmp_path / "feast" / "registry.db")


def test_production_mode_is_redis_and_a_postgres_registry(tmp_path):
    settings = settings_for(
        data_dir=tmp_path,
        feast_mode="production",
        redis_url="redis://:s3cr%23t@redis.internal:6380/2",
        feast_registry_url="postgresql+psycopg://feast:pw@db:5432/feast",
    )
    config = yaml.safe_load(repo.render_config(settings))
    assert config["registry"]["registry_type"] == "sql"
    assert config["registry"]["path"] == "postgresql+psycopg://feast:pw@db:5432/feast"
    assert config["online_store"]["type"] == "redis"
    assert config["online_store"]["connection_string"] == "redis.internal:6380,db=2,password=s3cr#t"


def test_unknown_placeholder_stays_literal_like_feast(tmp_path):
    settings = settings_for(data_dir=tmp_path)
    assert repo.render_config(settings, "a: ${NOT_A_SETTING}\nb: ${FEAST_PROJECT}") == 'a: ${NOT_A_SETTING}\nb: "ecom"'


def test_write_config_refuses_leftover_placeholders(tmp_path, monkeypatch):
    settings = settings_for(data_dir=tmp_path)
    monkeypatch.setattr(repo, "render_config", lambda s: "project: ${MISSING}")
    with pytest.raises(ValueError, match="MISSING"):
        repo.write_config(settings)


def test_written_config_is_private_and_outside_the_repo(tmp_path):
    settings = settings_for(data_dir=tmp_path)
    path = repo.write_config(settings)
    assert path == tmp_path / "feast" / "feature_store.yaml"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not path.is_relative_to(settings.feast_repo_dir)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://localhost", "localhost:6379,db=0"),
        ("rediss://user:p%40ss@h:1/5", "h:1,db=5,username=user,password=p@ss,ssl=true"),
        ("redis:6379,db=1", "redis:6379,db=1"),
    ],
)
def test_redis_url_to_feast_connection_string(url, expected):
    assert repo.redis_connection_string(url) == expected


def test_feast_settings_and_env(tmp_path):
    settings = settings_for(data_dir=tmp_path)
    env = settings.as_env()
    assert env["FEAST_MODE"] == "embedded" and env["FEAST_USAGE"] == "False"
    assert env["FEAST_REGISTRY_PATH"] == str(tmp_path / "feast" / "registry.db")
    assert env["FEAST_ONLINE_PATH"] == str(tmp_path / "feast" / "online_store.db")
    assert env["FEAST_REPO_DIR"].endswith("feature_repo")
    with pytest.raises(ValueError):  # pydantic's ValidationError
        settings_for(data_dir=tmp_path, feast_mode="cloud")
    with pytest.raises(ValueError):
        settings_for(data_dir=tmp_path, feast_project="bad-name")


def test_importing_the_package_does_not_import_feast():
    import subprocess
    import sys

    code = "import ml.features.repo, ml.features.training, ml.features.contract, sys; print('feast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
