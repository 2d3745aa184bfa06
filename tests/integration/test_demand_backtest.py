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
    config["backtest"] = {
        **config["backtest"],
        "models": ["demand_seasonal_naive", "demand_moving_average", "demand_lgbm"],
        "n_origins": 3,
        "n_validation": 2,
    }
    return demand.backtest(built_warehouse, config, echo=None)


def test_every_model_is_scored_on_the_same_series(result):
    overall = result.overall
    assert set(overall.index) == {"demand_seasonal_naive", "demand_moving_average", "demand_lgbm"}
    assert result.n_series == 40 and (overall["n_series"] == 40).all()
    assert overall["wape"].between(0, 10).all() and overall["coverage"].between(0, 1).all()
    assert "demand_best" in result.test.index  # the per-series choice, scored on the test origin only
    # the export's series are daily and the warehouse's short series were counted, not silently lost
    assert result.freq == "D"
    assert set(result.preparation["rule"]) <= {
        "too_short",
        "all_zero",
        "gap",
        "duplicate_date",
        "negative_y",
        "nan_y",
        "missing_key",
        "off_grid",
        "regressor_filled",
    }


def test_report_and_run_are_written(built_warehouse, result):
    import mlflow

    html = result.report.read_text()
    assert "Backtest, all origins" in html and "forecast_vs_actual.png" in html
    assert (result.report.parent / "forecast_vs_actual.png").stat().st_size > 1000
    run = mlflow.MlflowClient(tracking_uri=built_warehouse.mlflow_tracking_uri).get_run(result.run_id)
    assert "demand_lgbm_wape" in run.data.metrics and "test_demand_best_wape" in run.data.metrics


def test_forecasts_per_origin_figures_and_the_served_model_are_written(result):
    import pandas as pd

    forecasts = pd.read_parquet(result.forecasts_path)
    assert list(forecasts.columns) == ["model", "origin", "item_id", "warehouse_id", "demand_date", "units", "yhat", "yhat_p10", "yhat_p90"]
    n_origins = forecasts["origin"].nunique()  # of the 3 asked, those with enough history before them (2 on `tiny`)
    assert forecasts.groupby(["item_id", "warehouse_id"]).ngroups == 40 and n_origins >= 2
    assert (forecasts["demand_date"] >= forecasts["origin"]).all()  # forecasts start at their origin
    by_origin = result.by_origin
    assert by_origin.shape == (3, n_origins) and by_origin.notna().all().all()
    # the pooled WAPE is the volume-weighted mean of the per-origin WAPEs: the per-origin table is not made up
    lgbm = forecasts[forecasts["model"] == "demand_lgbm"]
    weights = lgbm.groupby("origin")["units"].sum().to_numpy()
    pooled = float((by_origin.loc["demand_lgbm"].to_numpy() * weights).sum() / weights.sum())
    assert pooled == pytest.approx(result.overall.loc["demand_lgbm", "wape"], rel=1e-6)
    assert result.overall["served"].sum() == 1 and result.overall.loc["demand_lgbm", "served"]
    assert "WAPE per origin" in result.report.read_text() and result.summary()["served_model"] == "demand_lgbm"


def test_the_head_of_series_is_ranked_before_the_first_origin():
    import pandas as pd

    days = pd.date_range("2024-01-01", periods=10, freq="D")
    frame = pd.concat(
        [
            pd.DataFrame({"item_id": "steady", "warehouse_id": "w", "demand_date": days, "units": 5.0}),
            pd.DataFrame({"item_id": "late_spike", "warehouse_id": "w", "demand_date": days, "units": [1.0] * 8 + [100.0] * 2}),
        ]
    )
    assert set(demand.head_by_volume(frame, 1)["item_id"]) == {"late_spike"}  # all periods: the spike wins
    assert set(demand.head_by_volume(frame, 1, before=days[8])["item_id"]) == {"steady"}  # no look-ahead
    assert len(demand.head_by_volume(frame, 0)) == len(frame)  # 0 = every series


def test_missing_export_is_a_clear_error(tmp_path):
    from ml.settings import settings_for

    with pytest.raises(demand.DemandError, match="mart_demand_series"):
        demand.backtest(settings_for(data_dir=tmp_path / "none"), echo=None)
