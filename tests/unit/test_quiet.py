"""Library noise is silenced at its source (ml/quiet.py), and only that noise."""

from __future__ import annotations

import logging
import sys
import warnings

from ml import quiet


def test_feast_registry_refresh_lines_go_and_its_warnings_stay(caplog):
    quiet.feast()
    registry = logging.getLogger("feast.infra.registry.registry")
    with caplog.at_level(logging.INFO):
        registry.info("Registry cache expired, so refreshing")
        registry.warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet.feast()  # re-installs its filter in front of the "default" one
        warnings.warn("fetch_arrow_table() is deprecated, use to_arrow_table() instead.", DeprecationWarning, stacklevel=1)
        warnings.warn("another deprecation", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another deprecation"]


def test_mlflow_pickle_warning_dropped_other_warnings_kept(caplog):
    quiet.mlflow()
    quiet.mlflow()  # idempotent: one filter
    logger = logging.getLogger("mlflow.sklearn")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING):
        logger.warning("Saving scikit-learn models in the pickle or cloudpickle format requires exercising caution ...")
        logger.warning("signature inference failed")
    assert [r.getMessage() for r in caplog.records] == ["signature inference failed"]


def test_registration_prints_become_info_lines(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="ml.quiet"), quiet.registered_quietly():
        print("Successfully registered model 'propensity_lgbm'.", file=sys.stderr)
        print("Created version '1' of model 'propensity_lgbm'.", file=sys.stderr)
    assert capsys.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records] == [
        "mlflow: Successfully registered model 'propensity_lgbm'.",
        "mlflow: Created version '1' of model 'propensity_lgbm'.",
    ]
