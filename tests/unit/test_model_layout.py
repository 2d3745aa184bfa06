"""The model packages' layout: family APIs resolve lazily, importing them stays light, and models
registered before the family folders existed (pickled under the old flat module paths) still load."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from ml.models import demand, recs


def test_family_api_names_resolve_to_their_stage_modules():
    from ml.models.demand import pipeline
    from ml.models.recs import data, scoring, serving, training

    assert recs.train is training.train and recs.score is scoring.score
    assert recs.recommend is serving.recommend and recs.MODEL_NAME == data.MODEL_NAME == "recs_widedeep"
    assert demand.forecast is pipeline.forecast and demand.backtest is pipeline.backtest
    with pytest.raises(AttributeError, match="no attribute 'not_a_stage_name'"):
        recs.not_a_stage_name  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'not_a_stage_name'"):
        demand.not_a_stage_name  # noqa: B018


def test_importing_the_packages_imports_no_heavy_library():
    code = (
        "import sys, ml.models, ml.models.recs, ml.models.demand, ml.models.user, ml.models.lifecycle.registry, "
        "ml.models.lifecycle.report; print(sorted(m for m in ('pandas', 'sklearn', 'mlflow', 'matplotlib', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_model_pickled_under_the_old_module_path_loads():
    from ml.models.demand.forecasters import SeasonalNaive
    from ml.models.recs.ranking import FeatureSpec

    for cls, old in ((SeasonalNaive, "ml.models.forecast_models"), (FeatureSpec, "ml.models.ranking")):
        payload = pickle.dumps(cls, protocol=0)  # text opcodes: the module path can be swapped in place
        legacy = payload.replace(cls.__module__.encode(), old.encode())
        assert legacy != payload
        assert pickle.loads(legacy) is cls
