"""``ecomml demo`` (``make demo``): a local Airflow runs the whole chain, then the proof of serving
(one user's recommendations and a search read online, the demand backtest and plan) and where to
look. ``where_to_look`` is also the summary ``ecomml pipeline`` prints."""

from __future__ import annotations

import time

from ml.orchestration.local_airflow import LocalAirflow, run_chain
from ml.settings import Settings


def sample_user(settings: Settings) -> str:
    """A user with recent features (the demo prints how to read its online values)."""
    import duckdb

    from ml.warehouse import feature_path

    row = (
        duckdb.connect()
        .execute(
            "select user_id from read_parquet(?) order by event_timestamp desc limit 1",
            [str(feature_path(settings, "feat_user_rfm"))],
        )
        .fetchone()
    )
    return row[0] if row else "<user_id>"


def _print_recs_and_search(settings: Settings, user_id: str) -> None:
    """The demo's proof of serving: one user's recommendations read online and one search."""
    from ml.models import recs

    try:
        listed = recs.recommend(settings, user_id).head(5)
        query = recs.sample_query(settings)
        hits = recs.search_items(settings, query, k=5)
    except Exception as exc:  # noqa: BLE001 - the demo reports it and goes on to print where to look
        print(f"\n(recommendations/search not available: {type(exc).__name__}: {exc})", flush=True)
        return
    kind = "fallback list" if listed["is_fallback"].any() else "personal list"
    print(
        f"\nRecommendations for {user_id} ({kind}, from the online store):\n{listed.drop(columns=['is_fallback']).to_string(index=False)}",
        flush=True,
    )
    print(f"\nSearch {query!r}:\n{hits.to_string(index=False)}", flush=True)


def _print_demand(settings: Settings) -> None:
    """The demo's demand proof: the backtest table, where the plan is, one plan row read online."""
    import pandas as pd

    from ml.models import demand
    from ml.models.lifecycle import outputs

    try:
        backtest = demand.latest_backtest(settings)
        plan_file = outputs.source_path(settings, demand.PLAN_OUTPUT)
        plan = pd.read_parquet(plan_file)
        busiest = plan.sort_values("forecast_units", ascending=False).head(1)
        online = demand.plan_online(settings, list(zip(busiest["item_id"], busiest["warehouse_id"])))
    except Exception as exc:  # noqa: BLE001 - the demo reports it and goes on to print where to look
        print(f"\n(demand forecast not available: {type(exc).__name__}: {exc})", flush=True)
        return
    if backtest is not None:
        overall, test, report = backtest
        cols = [c for c in ("wape", "mase", "bias", "coverage", "n_series", "biased") if c in overall.columns]
        print(f"\nDemand backtest (rolling origin, all origins; report {report}):\n{overall[cols].to_string()}", flush=True)
    cols = [c for c in demand.PLAN_SUMMARY_COLUMNS if c in online.columns]
    print(
        f"\nInventory plan: {len(plan):,} item x warehouse rows in {outputs.scores_root(settings, demand.PLAN_OUTPUT)}; "
        f"the busiest series, read online (Feast view {demand.PLAN_VIEW}):\n"
        f"{online[cols].round(2).to_string(index=False)}",
        flush=True,
    )


def where_to_look(settings: Settings, user_id: str, trained: dict[str, dict] | None = None) -> list[tuple[str, str]]:
    """The "where to look" rows (label, what) both ``ecomml demo`` and ``ecomml pipeline`` end with:
    the models (from ``trained``, the task bodies' results keyed by name, when given), the latest
    reports, the outputs and the commands that read them. ``aligned`` prints them."""
    from ml.models import recs
    from ml.models.lifecycle.report import list_reports
    from ml.models.user import propensity

    trained = trained or {}
    rows = [("warehouse (DuckDB)", str(settings.warehouse_path))]
    prop, ranked, demand = trained.get("train_user_models"), trained.get("train_recommender"), trained.get("train_demand")
    if prop:
        decision = "promoted" if prop["promoted"] else f"NOT promoted: {prop['decision']}"
        auc = {k: f"{prop[k]['roc_auc']:.3f}" for k in ("test", "baseline_test", "logistic_test")}
        rows.append(
            (
                f"{propensity.MODEL_NAME} v{prop['version']}",
                f"{prop.get('model_type', 'lightgbm')}: test ROC AUC {auc['test']} vs RFM rule {auc['baseline_test']},"
                f" logistic regression {auc['logistic_test']}; {decision}",
            )
        )
    if ranked:
        served = ranked.get("model", recs.MODEL_NAME)
        ndcg = {m: ranked["test"].get(m, {}).get("ndcg@10") for m in (served, "popularity")}
        rows.append(
            (f"{served} v{ranked['version']}", f"served ranker: test NDCG@10 {ndcg[served]:.3f} vs popularity {ndcg['popularity']:.3f}")
        )
    if demand and demand.get("status") == "skipped":
        rows.append(("demand forecasting", f"skipped: {demand['reason']}"))
    elif demand:
        naive = demand["backtest"]["test_origins"].get("demand_seasonal_naive", {}).get("wape")
        rows.append((f"demand_lgbm v{demand['version']}", f"test WAPE {demand['test_wape']} vs seasonal naive {naive}"))
    reports = list_reports(settings)
    for model in (propensity.MODEL_NAME, recs.MODEL_NAME, "demand_backtest"):
        latest = next((r for r in reports if r["model"] == model), None)
        rows.append((f"{model} report", str(latest["path"]) if latest else "(none)"))
    service = propensity.load_config()["feature_service"]
    return rows + [
        ("all reports", ".venv/bin/ecomml models reports"),
        ("MLflow UI", f".venv/bin/ecomml models ui   then open http://127.0.0.1:5000 ({settings.mlflow_tracking_uri})"),
        ("batch scores", f"{settings.scores_dir}  (inventory plan: demand_plan/forecast_date=*)"),
        ("recommendations", f".venv/bin/ecomml recs show {user_id}   (online, one get_online_features call)"),
        ("product search", '.venv/bin/ecomml recs search "<query>"'),
        ("inventory plan", ".venv/bin/ecomml demand plan <item_id> <warehouse_id>"),
        ("online features", f".venv/bin/ecomml features online --service {service} --entity user_id={user_id}"),
        ("online score", f".venv/bin/ecomml features online --service {propensity.SCORES_SERVICE} --entity user_id={user_id}"),
        ("feature services", ".venv/bin/ecomml features services"),
        ("explore the warehouse", '.venv/bin/ecomml warehouse query "select * from fct_daily_demand limit 5"'),
    ]


def aligned(rows: list[tuple[str, str]]) -> str:
    """(label, what) rows as indented lines with the labels padded to one width."""
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"  {label:<{width}}  {what}" for label, what in rows)


def demo(settings: Settings, scale: str | None = None, keep_running: bool = False, timeout: float = 1800.0) -> int:
    """``make demo`` through Airflow: start a local Airflow, run ingest(generate) -> warehouse ->
    feature store -> every model family, print the UI address and login; then stop (the runs stay
    in AIRFLOW_HOME for `ecomml airflow standalone`) or, with ``keep_running``, keep serving until Ctrl-C."""
    scale = scale or settings.scale
    airflow = LocalAirflow(settings)
    print(f"starting Airflow (AIRFLOW_HOME={airflow.home}, log {airflow.log_path}) ...", flush=True)
    airflow.start()
    try:
        user, password = airflow.credentials()
        print(f"Airflow UI: {airflow.url}   login: {user} / {password}", flush=True)
        say = lambda line: print(line, flush=True)  # noqa: E731 - progress lines while the DAGs run
        runs = run_chain(airflow.client(), conf={"generate_scale": scale}, timeout=timeout, models=True, echo=say)
        user_id = sample_user(settings)
        _print_recs_and_search(settings, user_id)
        _print_demand(settings)
        rows = [
            ("Airflow UI", f"{airflow.url}  (login {user} / {password})"),
            *((f"run {dag_id}", run["dag_run_id"]) for dag_id, run in runs.items()),
            *where_to_look(settings, user_id),
        ]
        if not keep_running:
            rows.append(("browse the runs", f".venv/bin/ecomml airflow standalone   then open {airflow.url} (login {user} / {password})"))
        print(f"\nDone: {' -> '.join(runs)} succeeded.\n{aligned(rows)}", flush=True)
        if keep_running:
            print("Airflow keeps running; Ctrl-C stops it.", flush=True)
            while airflow.proc is not None and airflow.proc.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        airflow.stop()
    return 0
