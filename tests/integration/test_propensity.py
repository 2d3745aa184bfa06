"""propensity_lgbm end to end on generated `small` data: real dbt marts, Feast (DuckDB offline,
SQLite online), LightGBM, MLflow (SQLite registry) — train, promote, score, serve, fail cleanly."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from ml.models.lifecycle import outputs, registry
from ml.models.lifecycle.report import list_reports
from ml.models.user import propensity

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(small_store):
    return propensity.train(small_store, echo=None)


def test_beats_the_rfm_baseline_and_registers_a_champion(small_store, trained):
    s = trained.summary()
    assert s["horizon_days"] == 7  # the lake has events
    assert trained.metrics["roc_auc"] > 0.68, s
    # the generator plants per-user intent and activity beyond what RFM sees (measured +0.035 AUC on
    # ~7.8k test user-weeks, 3 weekly cutoffs; the paired difference is far above its noise)
    assert trained.metrics["roc_auc"] > trained.baseline_metrics["roc_auc"] + 0.02, s
    assert trained.metrics["lift_top_decile"] > 1.5, s
    # the plain references: the RFM rule and a logistic regression on the same features and rows
    assert trained.logistic_metrics["roc_auc"] > trained.baseline_metrics["roc_auc"] - 0.05, s
    assert trained.metrics["roc_auc"] > trained.logistic_metrics["roc_auc"] - 0.005, s  # measured 0.729 vs 0.728: on par, not below
    assert trained.decision.promoted  # first model, not below either reference
    model, version = registry.load_champion(small_store, propensity.MODEL_NAME)
    assert str(version.version) == trained.version
    assert propensity.model_features(model)  # a real booster came back
    # the served version is refit on every labelled cutoff (the newest labels), the report says so
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=small_store.mlflow_tracking_uri).get_run(trained.run_id)
    assert version.tags["refit"] == "train+valid+test"
    assert version.tags["labelled_through"] == run.data.params["split_test_end"]
    assert model.current_iteration() == int(run.data.params["best_iteration"])
    assert "refit with the same parameters" in trained.report.read_text()


def test_run_logs_service_snapshot_and_report(small_store, trained):
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=small_store.mlflow_tracking_uri).get_run(trained.run_id)
    assert run.data.tags.get("feature_service") == "propensity_lgbm_v3"
    assert {"test_roc_auc", "baseline_test_roc_auc", "logistic_test_roc_auc"} <= set(run.data.metrics)
    assert run.data.params["horizon_days"] == "7"
    report = trained.report
    html = report.read_text()
    for png in ("roc_pr", "calibration", "lift_gain", "importance", "pca_segments"):
        assert (report.parent / f"{png}.png").stat().st_size > 1000
        assert f"{png}.png" in html
    assert "Fairness by group" in html and "Reference gate (roc_auc, paired bootstrap on the test rows): passed" in html
    # the GRU trained on the same split, registered on its own, compared in this report
    assert trained.sequence["metrics"]["roc_auc"] > 0.6, trained.sequence
    assert "propensity_gru" in html and trained.sequence["version"] == "1"
    assert registry.champion(small_store, "propensity_gru") is not None
    assert any(r["run_id"] == trained.run_id for r in list_reports(small_store))


@pytest.fixture(scope="module")
def split_frames(small_store, trained):
    return propensity.training_frames(small_store, propensity.load_config(), 7)


def test_fairness_audit_finds_no_gender_disparity(small_store, split_frames):
    """The generator plants no gender effect (params.gender_effect = 0): the audit must not flag one."""
    split, features = split_frames
    model, _ = registry.load_champion(small_store, propensity.MODEL_NAME)
    p = propensity.predict(model, propensity.feature_matrix(split.test, features))
    from ml.models.lifecycle.evaluate import group_metrics

    table = group_metrics(split.test["label"].to_numpy(), p, split.test["gender"].fillna("unknown"), threshold=float(np.quantile(p, 0.9)))
    big = table[~table["too_small"]]
    assert len(big) >= 2
    assert not big["flagged"].any(), table
    assert not set(propensity.AUDIT_COLUMNS) & set(propensity.model_features(model))


def test_directional_and_invariance(small_store, split_frames):
    split, features = split_frames
    model, _ = registry.load_champion(small_store, propensity.MODEL_NAME)
    x = propensity.feature_matrix(split.test, features).iloc[:500]
    base = propensity.predict(model, x)
    recent = x.copy()
    recent["days_since_last_order_now"] = recent["days_since_last_order_now"] / 4  # bought more recently
    assert (propensity.predict(model, recent) >= base - 1e-12).all()
    # monotone constraints bind known values (a missing value takes its own learned branch)
    known = x["order_count_90d"].notna().to_numpy()
    more = x.copy()
    more["order_count_90d"] = more["order_count_90d"] + 2
    assert known.sum() > 50 and (propensity.predict(model, more)[known] >= base[known] - 1e-12).all()
    shuffled = x.sample(frac=1.0, random_state=1)
    assert np.allclose(pd.Series(propensity.predict(model, shuffled), index=shuffled.index).reindex(x.index), base)
    reordered = x[list(reversed(x.columns))]  # column order must not matter
    assert np.allclose(propensity.predict(model, reordered), base)


def test_worse_challenger_is_not_promoted(small_store, trained):
    config = propensity.load_config()
    config["lightgbm"] = {**config["lightgbm"], "num_leaves": 2, "learning_rate": 0.001}
    config["num_boost_round"] = 1
    config["sequence_model"] = {"enabled": False}
    config["promotion"] = {**config["promotion"], "reference_margin": -1.0}  # the reference gate lets it through
    config["serve_logistic_when_better"] = False  # and the weak booster stays this version's model
    weak = propensity.train(small_store, config, echo=None)
    assert weak.metrics["roc_auc"] < trained.metrics["roc_auc"] - 0.005
    assert not weak.decision.promoted
    assert weak.decision.champion_value_source == "logged"  # the refit champion has seen these test rows
    _, version = registry.load_champion(small_store, propensity.MODEL_NAME)
    assert str(version.version) == trained.version


def test_score_is_idempotent_and_served_online(small_store, trained):
    from ml.features.serving import get_online_features
    from ml.orchestration import tasks

    first = propensity.score(small_store, echo=None)
    part = pd.read_parquet(first["path"])
    population = propensity.load_population(small_store)
    assert len(part) == len(population) == first["rows"] > 100
    assert part["propensity_score"].between(0, 1).all()
    assert set(part["top_feature_1"]) <= set(propensity.model_features(registry.load_champion(small_store, propensity.MODEL_NAME)[0]))
    assert sorted(part["propensity_decile"].unique()) == list(range(1, 11))
    second = propensity.score(small_store, echo=None)
    assert second["path"] == first["path"]
    assert pd.read_parquet(second["path"]).equals(part)
    assert len(list(outputs.scores_root(small_store, propensity.MODEL_NAME).glob("scoring_date=*"))) == 1

    served = tasks.serve_scores(small_store, {"status": "scored", **first})
    assert served["status"] == "served"
    top = part.sort_values("propensity_score", ascending=False).iloc[0]
    online = get_online_features(small_store, "propensity_scores_v1", {"user_id": top["user_id"]})
    assert online["propensity_score"][0] == pytest.approx(top["propensity_score"])
    assert online["top_feature_1"][0] == top["top_feature_1"]


def test_bad_inputs_fail_clearly_and_change_nothing(small_store, trained):
    from ml.features.training import TrainingSetError
    from ml.models.lifecycle.evaluate import InsufficientLabelsError

    client_versions = lambda: len(registry.client(small_store).search_model_versions(f"name='{propensity.MODEL_NAME}'"))  # noqa: E731
    before = client_versions()
    with pytest.raises(InsufficientLabelsError):
        propensity.train(small_store, propensity.load_config(min_positives=10**7), echo=None)
    with pytest.raises(TrainingSetError, match="unknown feature service"):
        propensity.train(small_store, propensity.load_config(feature_service="propensity_lgbm_v99"), echo=None)
    assert client_versions() == before

    # a champion whose artifact no longer loads: scoring fails, the served scores stay
    first = propensity.score(small_store, echo=None)
    kept = pd.read_parquet(first["path"])
    _, version = registry.load_champion(small_store, propensity.MODEL_NAME)
    artifacts = registry.artifact_dir(small_store, version)
    backup = artifacts.parent / "backup"
    shutil.copytree(artifacts, backup)
    try:
        for f in artifacts.rglob("*"):
            if f.is_file():
                f.write_bytes(b"corrupt")
        with pytest.raises(registry.ModelLoadError):
            propensity.score(small_store, echo=None)
        assert pd.read_parquet(first["path"]).equals(kept)
    finally:
        shutil.rmtree(artifacts)
        shutil.copytree(backup, artifacts)
        shutil.rmtree(backup)


def test_empty_population_is_an_error(small_store, trained, monkeypatch):
    monkeypatch.setattr(propensity, "load_population", lambda s: pd.DataFrame(columns=["user_id", "event_timestamp", "cutoff_date"]))
    with pytest.raises(propensity.PropensityError, match="empty scoring population"):
        propensity.score(small_store, echo=None)
