"""The model registry against real MLflow (SQLite in a temp folder; PostgreSQL when it runs) with real
LightGBM models: registration, promote-if-not-worse, champion loading and its failures.

One MLflow database per module (its schema migration is the slow part); tests use their own model names.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from ml.models.lifecycle import registry
from ml.models.lifecycle.evaluate import binary_metrics
from ml.settings import settings_for
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.integration

FEATURES = ["recency", "frequency", "monetary", "noise"]
SAMPLE = pd.DataFrame({"recency": [1.0], "frequency": [2.0], "monetary": [3.0], "noise": [0.5]})
SNAPSHOT = {"lake_checksum": "abc123", "max_event_timestamp": "2024-03-31T00:00:00+00:00", "rows": {"orders": 500}}


@pytest.fixture(scope="module")
def data():
    """A tiny propensity-like problem: train and test frames with a learnable signal."""
    rng = np.random.default_rng(42)
    n = 1_200
    x = pd.DataFrame(
        {
            "recency": rng.exponential(30, n),
            "frequency": rng.poisson(3, n).astype(float),
            "monetary": rng.gamma(2, 50, n),
            "noise": rng.random(n),
        }
    )
    logit = -1.0 - 0.05 * x["recency"] + 0.5 * x["frequency"]
    y = rng.binomial(1, 1 / (1 + np.exp(-logit))).astype(int)
    return x.iloc[:900], y[:900], x.iloc[900:], y[900:]


def train(x, y, rounds: int, features=FEATURES, seed: int = 0):
    import lightgbm as lgb

    params = {
        "objective": "binary",
        "num_leaves": 7,
        "min_data_in_leaf": 20,
        "learning_rate": 0.1,
        "verbosity": -1,
        "num_threads": 1,
        "seed": seed,
        "deterministic": True,
    }
    return lgb.train(params, lgb.Dataset(x[features], y), num_boost_round=rounds)


def register(settings, model_name, model, metrics: dict, features=FEATURES):
    """A training run that logs the test metrics and registers the model, as model code does."""
    with registry.training_run(
        settings, model_name, {"rounds": model.current_iteration(), "features": features}, "propensity_lgbm_v2", features, SNAPSHOT
    ) as run:
        logged = registry.log_metrics(metrics, prefix="test_")
        version = registry.log_model(model, model_name, flavor="lightgbm", signature=SAMPLE[features])
    assert version.run_id == run.info.run_id and logged
    return version


@pytest.fixture(scope="module")
def mlflow_settings(tmp_path_factory):
    settings = settings_for(data_dir=tmp_path_factory.mktemp("registry") / "data")
    settings.ensure_dirs()
    return settings


def run_of(settings, version):
    return registry.client(settings).get_run(version.run_id)


def decision_json(settings, version) -> dict:
    path = registry.client(settings).download_artifacts(
        version.run_id, "decision.json", str(Path(settings.data_dir) / f"dl_{uuid.uuid4().hex}")
    )
    return json.loads(Path(path).read_text())


def champion_version(settings, name) -> str | None:
    champion = registry.champion(settings, name)
    return None if champion is None else str(champion.version)


def lifecycle(settings, data, name: str):
    """Register a good and a weak model; check every promotion rule; return (good model, version)."""
    x_train, y_train, x_test, y_test = data
    good, weak = train(x_train, y_train, rounds=60), train(x_train, y_train, rounds=1, features=["noise", "monetary"])
    good_metrics = binary_metrics(y_test, good.predict(x_test[FEATURES]))
    weak_metrics = binary_metrics(y_test, weak.predict(x_test[["noise", "monetary"]]))
    assert weak_metrics["roc_auc"] < good_metrics["roc_auc"] - 0.05  # a real gap between two real models

    # 1. the first version: no champion yet -> promoted
    v1 = register(settings, name, good, good_metrics)
    d1 = registry.promote_if_not_worse(settings, name, str(v1.version), "roc_auc", good_metrics["roc_auc"], tolerance=0.01)
    assert d1.promoted and d1.champion_version is None and "no champion" in d1.reason
    assert champion_version(settings, name) == str(v1.version)
    run1 = run_of(settings, v1)
    assert run1.data.tags["decision"] == "promoted" and run1.data.tags["promoted"] == "true"
    assert run1.data.params["features"] == json.dumps(FEATURES) and run1.data.tags["feature_service"] == "propensity_lgbm_v2"
    assert run1.data.tags["snapshot.lake_checksum"] == "abc123"
    assert run1.data.metrics["test_roc_auc"] == pytest.approx(good_metrics["roc_auc"])

    # 2. a worse version beyond the tolerance -> not promoted, alias unchanged, decision logged
    v2 = register(settings, name, weak, weak_metrics)
    d2 = registry.promote_if_not_worse(settings, name, str(v2.version), "roc_auc", weak_metrics["roc_auc"], tolerance=0.01)
    assert not d2.promoted and d2.champion_version == str(v1.version)
    assert d2.champion_value == pytest.approx(good_metrics["roc_auc"]) and d2.champion_value_source == "logged"
    assert champion_version(settings, name) == str(v1.version)
    run2 = run_of(settings, v2)
    assert run2.data.tags["decision"] == "rejected" and run2.data.tags["promoted"] == "false"
    logged = decision_json(settings, v2)
    assert logged["promoted"] is False and logged["champion_version"] == str(v1.version)
    assert logged["challenger_value"] == pytest.approx(weak_metrics["roc_auc"])
    tags = registry.client(settings).get_model_version(name, str(v2.version)).tags
    assert tags["decision"] == "rejected" and tags["flavor"] == "lightgbm" and "worse" in tags["decision.reason"]

    # 3. the same version within a wide enough tolerance -> promoted
    gap = good_metrics["roc_auc"] - weak_metrics["roc_auc"]
    d3 = registry.promote_if_not_worse(settings, name, str(v2.version), "roc_auc", weak_metrics["roc_auc"], tolerance=gap + 0.01)
    assert d3.promoted and champion_version(settings, name) == str(v2.version)
    assert run_of(settings, v2).data.tags["decision"] == "promoted"
    assert registry.client(settings).get_model_version(name, str(v2.version)).tags["decision"] == "promoted"

    # 4. back to the good model: a caller-supplied champion value (re-scored) wins over the logged one
    d4 = registry.promote_if_not_worse(settings, name, str(v1.version), "roc_auc", good_metrics["roc_auc"], champion_value=0.99)
    assert not d4.promoted and d4.champion_value == 0.99 and d4.champion_value_source == "given"
    d5 = registry.promote_if_not_worse(settings, name, str(v1.version), "roc_auc", good_metrics["roc_auc"])
    assert d5.promoted and champion_version(settings, name) == str(v1.version)
    return good, v1


def test_promotion_lifecycle_and_champion_predictions(mlflow_settings, data):
    good, v1 = lifecycle(mlflow_settings, data, "propensity_lgbm")
    model, version = registry.load_champion(mlflow_settings, "propensity_lgbm")
    assert version.version == v1.version
    x_test = data[2]
    np.testing.assert_array_equal(model.predict(x_test[FEATURES]), good.predict(x_test[FEATURES]))
    assert model.feature_name() == FEATURES
    from mlflow.models import get_model_info

    assert get_model_info(f"models:/propensity_lgbm/{version.version}").signature.inputs.input_names() == FEATURES
    # the model files live under the configured artifact root
    location = Path(urlparse(registry.client(mlflow_settings).get_model_version_download_uri("propensity_lgbm", version.version)).path)
    assert location.is_relative_to(mlflow_settings.mlflow_artifact_root) and (location / "MLmodel").exists()


def test_lower_is_better_and_nan_challenger(mlflow_settings, data):
    x_train, y_train, x_test, y_test = data
    name = "loss_model"
    model = train(x_train, y_train, rounds=5)
    # a NaN metric is never promoted, not even without a champion
    v1 = register(mlflow_settings, name, model, {"log_loss": 0.5})
    d = registry.promote_if_not_worse(mlflow_settings, name, str(v1.version), "log_loss", float("nan"), higher_is_better=False)
    assert not d.promoted and champion_version(mlflow_settings, name) is None
    assert run_of(mlflow_settings, v1).data.tags["decision"] == "rejected"
    with pytest.raises(registry.ModelLoadError, match=r"'loss_model' has no 'champion'"):
        registry.load_champion(mlflow_settings, name)
    assert registry.promote_if_not_worse(mlflow_settings, name, str(v1.version), "log_loss", 0.5, higher_is_better=False).promoted
    v2 = register(mlflow_settings, name, model, {"log_loss": 0.52})
    assert not registry.promote_if_not_worse(
        mlflow_settings, name, str(v2.version), "log_loss", 0.52, higher_is_better=False, tolerance=0.01
    ).promoted
    assert registry.promote_if_not_worse(
        mlflow_settings, name, str(v2.version), "log_loss", 0.52, higher_is_better=False, tolerance=0.03
    ).promoted
    assert champion_version(mlflow_settings, name) == str(v2.version)


def test_a_model_that_loses_to_a_reference_is_never_promoted(mlflow_settings, data):
    x_train, y_train, _, _ = data
    name = "gated_model"
    v1 = register(mlflow_settings, name, train(x_train, y_train, rounds=5), {"ndcg_at_10": 0.3})
    losses = ["repeats: recall 0.1500 < own_history 0.1600"]
    d = registry.promote_if_not_worse(mlflow_settings, name, str(v1.version), "ndcg_at_10", 0.3, losses=losses)
    assert not d.promoted and champion_version(mlflow_settings, name) is None  # not even without a champion
    assert "loses to its plain references" in d.reason and "own_history" in d.reason
    assert run_of(mlflow_settings, v1).data.tags["decision"] == "rejected"
    assert registry.promote_if_not_worse(mlflow_settings, name, str(v1.version), "ndcg_at_10", 0.3, losses=[]).promoted


def test_load_champion_errors(mlflow_settings, data):
    x_train, y_train, x_test, _ = data
    with pytest.raises(registry.ModelLoadError, match="no registered model 'never_trained'"):
        registry.load_champion(mlflow_settings, "never_trained")

    name = "fragile"
    model = train(x_train, y_train, rounds=5)
    version = register(mlflow_settings, name, model, {"roc_auc": 0.7})
    assert registry.promote_if_not_worse(mlflow_settings, name, version.version, "roc_auc", 0.7).promoted
    loaded, _ = registry.load_champion(mlflow_settings, name)
    np.testing.assert_array_equal(loaded.predict(x_test[FEATURES]), model.predict(x_test[FEATURES]))

    location = Path(urlparse(registry.client(mlflow_settings).get_model_version_download_uri(name, version.version)).path)
    (location / "model.lgb").write_text("this is not a LightGBM model\n")
    with pytest.raises(registry.ModelLoadError, match=rf"'fragile' version {version.version} .*LightGBMError"):
        registry.load_champion(mlflow_settings, name)
    shutil.rmtree(location)
    with pytest.raises(registry.ModelLoadError, match=rf"'fragile' version {version.version}") as info:
        registry.load_champion(mlflow_settings, name)
    assert isinstance(info.value, RuntimeError) and info.value.__cause__ is not None


def test_log_model_outside_a_run_and_unknown_flavor(mlflow_settings, data):
    with pytest.raises(RuntimeError, match="inside registry.training_run"):
        registry.log_model(train(data[0], data[1], rounds=2), "outside", flavor="lightgbm")
    with pytest.raises(ValueError, match="flavor"):
        registry.log_model(object(), "outside", flavor="xgboost")


def test_failed_training_block_marks_the_run_failed(mlflow_settings):
    with pytest.raises(KeyError):
        with registry.training_run(mlflow_settings, "broken", {}, "svc_v1", ["a"], {}) as run:
            raise KeyError("boom")
    assert registry.client(mlflow_settings).get_run(run.info.run_id).info.status == "FAILED"


def test_settings_do_not_leak_between_data_dirs(tmp_path, mlflow_settings, data):
    """A second data dir in the same process gets its own database, experiment and artifacts."""
    before = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    registry.client(mlflow_settings)
    assert {name: os.environ.get(name) for name in before} == before  # Settings() reads these variables
    other = settings_for(data_dir=tmp_path / "other")
    assert other.mlflow_tracking_uri != mlflow_settings.mlflow_tracking_uri
    version = register(other, "isolated", train(data[0], data[1], rounds=2), {"roc_auc": 0.6})
    assert Path(other.mlflow_tracking_uri.removeprefix("sqlite:///")).exists()
    experiment = registry.client(other).get_experiment_by_name(other.mlflow_experiment)
    assert urlparse(experiment.artifact_location).path == str(other.mlflow_artifact_root)
    assert registry.client(other).get_model_version("isolated", version.version)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        registry.client(mlflow_settings).get_registered_model("isolated")


def test_sklearn_and_pytorch_flavors_round_trip(mlflow_settings, data):
    import torch
    from sklearn.linear_model import LogisticRegression

    x_train, y_train, x_test, _ = data
    lr = LogisticRegression(max_iter=500).fit(x_train[FEATURES], y_train)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    for name, model, flavor in (("baseline_lr", lr, "sklearn"), ("tiny_net", net, "pytorch")):
        with registry.training_run(mlflow_settings, name, {}, "svc_v1", FEATURES, {}):
            version = registry.log_model(model, name, flavor=flavor)
        assert registry.promote_if_not_worse(mlflow_settings, name, version.version, "roc_auc", 0.6).promoted
        loaded, champion = registry.load_champion(mlflow_settings, name)
        assert champion.tags["flavor"] == flavor
        if flavor == "sklearn":
            np.testing.assert_array_equal(loaded.predict_proba(x_test[FEATURES]), lr.predict_proba(x_test[FEATURES]))
        else:
            tensor = torch.tensor(x_test[FEATURES].to_numpy(), dtype=torch.float32)
            with torch.no_grad():
                assert torch.equal(loaded(tensor), net(tensor))


def test_mlflow_telemetry_is_off_outside_tests(tmp_path):
    """In a plain process (no pytest/CI markers, which MLflow itself treats as "don't track"),
    importing MLflow through the registry leaves it without a telemetry client."""
    import subprocess
    import sys

    markers = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    env = {k: v for k, v in os.environ.items() if k not in markers}
    code = (
        "from ml.models.lifecycle import registry; registry._mlflow(); "
        "from mlflow.telemetry import get_telemetry_client; from mlflow.telemetry.utils import is_telemetry_disabled; "
        "print(get_telemetry_client() is None, is_telemetry_disabled())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "HOME": str(tmp_path)},
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]
    assert not (tmp_path / ".config" / "mlflow" / "telemetry.json").exists()  # no installation id written


# --- PostgreSQL ----------------------------------------------------------------------------------------


@pytest.fixture
def postgres_settings(postgres_url, tmp_path):
    """Settings whose MLflow backend is a fresh PostgreSQL database (created by the registry, dropped here)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"mlflow_test_{uuid.uuid4().hex[:10]}"
    admin = make_url(postgres_url).set(drivername="postgresql+psycopg", database="postgres")
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001
        skip_or_fail(f"PostgreSQL at {admin.render_as_string(hide_password=True)} refuses connections: {exc}")
    settings = settings_for(data_dir=tmp_path / "data", mlflow_tracking_uri=admin.set(database=name).render_as_string(hide_password=False))
    yield settings, engine, name
    with engine.connect() as con:
        con.execute(sa.text(f'drop database if exists "{name}" with (force)'))
    engine.dispose()


def database_exists(engine, name: str) -> bool:
    import sqlalchemy as sa

    with engine.connect() as con:
        return con.execute(sa.text("select 1 from pg_database where datname = :n"), {"n": name}).scalar() is not None


@pytest.mark.services
def test_postgresql_backend(postgres_settings, data):
    settings, engine, name = postgres_settings
    assert not database_exists(engine, name)
    good, v1 = lifecycle(settings, data, "propensity_lgbm")
    assert database_exists(engine, name)
    model, version = registry.load_champion(settings, "propensity_lgbm")
    assert version.version == v1.version
    np.testing.assert_array_equal(model.predict(data[2][FEATURES]), good.predict(data[2][FEATURES]))
