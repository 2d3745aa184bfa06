"""Train, forecast and plan on a real dbt build (the session's tiny generated warehouse): the
registered champion, a plan row for every demand series, the plan's internal consistency, an
idempotent re-run for the same forecast date, and the plan served online through Feast."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ml.models import demand

pytestmark = pytest.mark.integration

KEY = ["item_id", "warehouse_id"]


@pytest.fixture(scope="module")
def run(built_warehouse):
    config = demand.load_config()
    config["backtest"] = {**config["backtest"], "models": ["demand_seasonal_naive", "demand_lgbm"], "n_origins": 2, "n_validation": 1}
    trained = demand.train(built_warehouse, config, echo=None)
    first = demand.forecast(built_warehouse, config, echo=None)
    second = demand.forecast(built_warehouse, config, echo=None)
    return built_warehouse, trained, first, second


def test_train_registers_an_unbiased_forecaster_that_beats_seasonal_naive(run):
    from ml.models.lifecycle import registry

    settings, trained, _, _ = run
    assert trained.decision.promoted and str(registry.champion(settings, "demand_lgbm").version) == trained.version
    test = trained.backtest.test
    assert test.loc["demand_lgbm", "wape"] < test.loc["demand_seasonal_naive", "wape"]
    # the mean forecast on intermittent demand: the P50 would sit near 0 with bias near -1
    assert abs(test.loc["demand_lgbm", "bias"]) < 0.3


def test_every_demand_series_gets_a_plan_row(run):
    settings, _, first, _ = run
    series = pd.read_parquet(settings.exports_dir / "mart_demand_series.parquet", columns=KEY).drop_duplicates()
    plan = first.plan
    assert len(plan) == len(series) and not plan.duplicated(KEY).any()
    assert set(plan["method"]) <= {"demand_lgbm", "moving_average", "zero"}
    short = first.forecast[first.forecast["method"] == "moving_average"]
    assert len(short), "the tiny world has series shorter than min_history: the moving average serves them"
    # forecasts start the day after the history ends (the forecast date)
    assert first.forecast.groupby(KEY)["demand_date"].min().eq(first.forecast_date + pd.Timedelta(days=1)).all()
    # the tiny lake's weather is observed, not forecast: its future is filled, and the report says so
    html = first.report.read_text()
    assert "Future regressor values not known ahead" in html and "temperature_c unknown" in html


def test_plan_is_consistent(run):
    settings, _, first, _ = run
    plan = first.plan
    assert (plan["safety_stock"] >= 0).all() and (plan["reorder_point"] >= plan["demand_lt"] - 1e-9).all()
    assert (plan["order_up_to"] >= plan["reorder_point"] - 1e-9).all()
    known = plan[plan["inventory_position"].notna()]
    assert len(known) > 0.5 * len(plan), "the tiny world has inventory snapshots for most series"
    needed = known[known["order_needed"].astype(bool)]
    assert (needed["suggested_order_units"] == (needed["order_up_to"] - needed["inventory_position"]).map(math.ceil).clip(lower=0)).all()
    assert (known.loc[~known["order_needed"].astype(bool), "suggested_order_units"] == 0).all()
    position = pd.read_parquet(settings.exports_dir / "mart_inventory_position.parquet")
    with_lead = position.dropna(subset=["item_lead_time_days"]).merge(plan, on=KEY)
    assert (with_lead["lead_time_source"] == "item").all()
    assert (with_lead["lead_time_days"] == with_lead["item_lead_time_days"]).all()


def test_rerun_for_the_same_forecast_date_rewrites_it(run):
    from ml.models.lifecycle.outputs import scores_root, source_path

    settings, _, first, second = run
    assert first.plan_path == second.plan_path and first.forecast_path == second.forecast_path
    assert len(list(scores_root(settings, demand.PLAN_OUTPUT).glob("forecast_date=*"))) == 1
    served = pd.read_parquet(source_path(settings, demand.PLAN_OUTPUT))
    assert len(served) == len(second.plan) and not served.duplicated(KEY).any()


def test_plan_is_served_online(run, tmp_path):
    from ml.features.repo import apply
    from ml.orchestration import tasks
    from tests.integration.conftest import copy_repo

    built, _, _, second = run
    # its own Feast repo, registry and online store over the shared warehouse's files: the session's
    # built_warehouse registry stays as other modules expect it (test_feast_repo plans against it)
    settings = built.model_copy(
        update={
            "feast_repo_dir": copy_repo(tmp_path / "feature_repo"),
            "feast_registry_path": tmp_path / "feast" / "registry.db",
            "feast_online_path": tmp_path / "feast" / "online_store.db",
        }
    )
    apply(settings)
    served = tasks.serve_demand_plan(settings, {"status": "forecast", "forecast_date": f"{second.forecast_date:%Y-%m-%d}"})
    assert served["status"] == "served"
    rows = second.plan.sort_values("forecast_units", ascending=False).head(3)
    online = demand.plan_online(settings, list(zip(rows["item_id"], rows["warehouse_id"])))
    assert online["reorder_point"].tolist() == pytest.approx(rows["reorder_point"].tolist())
    assert online["model_version"].tolist() == rows["model_version"].tolist()


def test_forecast_without_a_champion_is_a_clear_no_op(tmp_path):
    from ml.orchestration import tasks
    from ml.settings import settings_for

    assert tasks.forecast_demand(settings_for(data_dir=tmp_path / "data"))["status"] == "no_champion"


def test_promotion_effect_report_on_the_warehouse(run):
    """`ecomml demand uplift`: the DML lift of the tiny world's promotions (planted through the shoppers'
    utilities, simulated true lift 3.39: tests/integration/test_promotion_effect.py) is positive with a
    CI that excludes 0, in a report with its plot and an MLflow run."""
    settings = run[0]
    effect = demand.promotion_effect(settings, echo=None)
    dml = effect["estimates"]["double ML"]
    assert 1.0 < dml["relative_lift"] < 6.0 and dml["relative_ci_low"] > 0
    html = open(effect["report"]).read()
    assert "promotion_effect.png" in html and "double ML" in html
