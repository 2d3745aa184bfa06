"""The demand backtest on a real dbt build (the session's tiny generated warehouse): the export
mart_demand_series -> preparation -> rolling-origin backtest of real models -> metrics, the choice per
series on validation origins, the report and the MLflow run."""

from __future__ import annotations

import pytest

from ml.models import demand

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def result(built_warehouse):
    config = demand.load_config()
    config["data"] = {"min_history": 56, "max_series": 40}
    config["backtest"] = {**config["backtest"], "models": ["demand_seasonal_naive", "demand_moving_average", "demand_lgbm"],
                          "n_origins": 3, "n_validation": 2}
    return demand.backtest(built_warehouse, config, echo=None)


def test_every_model_is_scored_on_the_same_series(result):
    overall = result.overall
    assert set(overall.index) == {"demand_seasonal_naive", "demand_moving_average", "demand_lgbm"}
    assert result.n_series == 40 and (overall["n_series"] == 40).all()
    assert overall["wape"].between(0, 10).all() and overall["coverage"].between(0, 1).all()
    assert "demand_best" in result.test.index  # the per-series choice, scored on the test origin only
    # the export's series are daily and the warehouse's short series were counted, not silently lost
    assert result.freq == "D"
    assert set(result.preparation["rule"]) <= {"too_short", "all_zero", "gap", "duplicate_date", "negative_y", "nan_y",
                                               "missing_key", "off_grid", "regressor_filled"}


def test_report_and_run_are_written(built_warehouse, result):
    import mlflow

    html = result.report.read_text()
    assert "Backtest, all origins" in html and "forecast_vs_actual.png" in html
    assert (result.report.parent / "forecast_vs_actual.png").stat().st_size > 1000
    run = mlflow.MlflowClient(tracking_uri=built_warehouse.mlflow_tracking_uri).get_run(result.run_id)
    assert "demand_lgbm_wape" in run.data.metrics and "test_demand_best_wape" in run.data.metrics


def test_missing_export_is_a_clear_error(tmp_path):
    from ml.settings import settings_for

    with pytest.raises(demand.DemandError, match="mart_demand_series"):
        demand.backtest(settings_for(data_dir=tmp_path / "none"), echo=None)
