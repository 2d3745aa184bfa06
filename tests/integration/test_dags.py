"""DAG integrity and parse hygiene: every DAG in dags/ imports without error, is documented, tagged,
starts in UTC with catchup off and shares the default_args; parsing imports no heavy library
(feast, pandas, torch, lightgbm), touches no database and takes well under 2 s per file; the
warehouse DAG renders one task per dbt model from manifest.json and still imports without it.

Parsing runs in a subprocess (fresh sys.modules, the settings of a temp DATA_DIR), like the
dag-processor does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ml.settings import PROJECT_ROOT, settings_for

pytestmark = pytest.mark.integration

HEAVY = ("feast", "pandas", "torch", "lightgbm", "sklearn", "dbt.cli.main", "pyarrow", "duckdb")
PARSE_BUDGET_S = 2.0

PROBE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    t0 = time.perf_counter()
    import airflow.sdk  # noqa: F401  (warm-up, not part of a file's parse time)
    from airflow.dag_processing.dagbag import BundleDagBag
    warm = time.perf_counter() - t0
    folder = Path(sys.argv[1])
    def asset_names(condition):  # an Asset, or AssetAll / AssetAny of them, or None
        if condition is None:
            return []
        if hasattr(condition, "objects"):
            return [n for o in condition.objects for n in asset_names(o)]
        return [condition.name]
    out = {"warmup_s": warm, "files": {}, "errors": {}, "dags": {}}
    for path in sorted(folder.glob("*_dag.py")):
        t = time.perf_counter()
        bag = BundleDagBag(str(path), bundle_path=folder, bundle_name="dags-folder")
        out["files"][path.name] = time.perf_counter() - t
        out["errors"].update({str(k): v for k, v in bag.import_errors.items()})
        for dag in bag.dags.values():
            out["dags"][dag.dag_id] = {
                "file": path.name,
                "doc_md": dag.doc_md or "",
                "description": dag.description or "",
                "tags": sorted(dag.tags),
                "start_date": dag.start_date.isoformat() if dag.start_date else None,
                "tz": str(dag.timezone),
                "catchup": dag.catchup,
                "tasks": sorted(t.task_id for t in dag.tasks),
                "retries": sorted({t.retries for t in dag.tasks}),
                "callbacks": sorted({
                    getattr(t.on_failure_callback[0] if isinstance(t.on_failure_callback, list) and t.on_failure_callback
                            else t.on_failure_callback, "__name__", None) or ""
                    for t in dag.tasks}),
                "pools": sorted({t.pool for t in dag.tasks}),
                "timeouts": sorted({str(t.execution_timeout) for t in dag.tasks}),
                "schedule": sorted(asset_names(getattr(dag.timetable, "asset_condition", None))),
                "outlets": sorted({o.name for t in dag.tasks for o in (t.outlets or []) if hasattr(o, "name")}),
            }
    heavy = sys.argv[2].split(",")
    out["heavy"] = [m for m in heavy if m in sys.modules]
    print("PROBE" + json.dumps(out))
    """
)


def probe(settings, **env_overrides) -> dict:
    env = {
        **os.environ,
        **settings.as_env(),
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        # parse must not need the metadata DB: point it at a path that does not exist
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{settings.data_dir / 'no-such-dir' / 'airflow.db'}",
        "PYTHONDONTWRITEBYTECODE": "1",
        **env_overrides,
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(PROJECT_ROOT / "dags"), ",".join(HEAVY)],
        env=env,
        cwd=str(PROJECT_ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next((row for row in proc.stdout.splitlines() if row.startswith("PROBE")), None)
    assert line, f"probe failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[len("PROBE") :])


@pytest.fixture(scope="module")
def parsed_settings(tmp_path_factory):
    """Settings on a temp DATA_DIR whose dbt manifest exists (`dbt parse`, no data needed)."""
    from ml.orchestration import tasks

    settings = settings_for(data_dir=tmp_path_factory.mktemp("dags") / "data")
    settings.ensure_dirs()
    tasks.parse(settings, echo=None)
    return settings


@pytest.fixture(scope="module")
def parsed(parsed_settings):
    return probe(parsed_settings)


def test_every_dag_imports_without_error(parsed):
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == {
        "ingest",
        "warehouse",
        "feature_store",
        "train_user_models",
        "score_user_models",
        "train_recommender",
        "score_recommender",
        "train_demand",
        "forecast_demand",
    }


def test_dags_follow_the_conventions(parsed):
    for dag_id, info in parsed["dags"].items():
        assert info["doc_md"].startswith(f"# {dag_id}"), f"{dag_id}: module docstring is its doc_md"
        assert 20 <= len(info["description"]) <= 140, f"{dag_id}: a one-line description for the DAG list"
        assert "ecomml" in info["tags"] and len(info["tags"]) >= 2, dag_id
        assert info["tz"] in ("UTC", "Timezone('UTC')") and info["start_date"].endswith("+00:00"), dag_id
        assert info["catchup"] is False, dag_id
        assert "log_failure" in info["callbacks"], dag_id
        assert "None" not in info["timeouts"], f"{dag_id}: every task has an execution_timeout"


def test_parse_hygiene_no_heavy_imports_and_fast(parsed):
    assert parsed["heavy"] == [], f"parsing the DAGs imported {parsed['heavy']}"
    for name, seconds in parsed["files"].items():
        assert seconds < PARSE_BUDGET_S, f"{name} took {seconds:.2f} s to parse"
    print({k: round(v, 3) for k, v in parsed["files"].items()}, "warm-up", round(parsed["warmup_s"], 2))


def test_warehouse_dag_has_a_task_per_dbt_model(parsed, parsed_settings):
    from ml.warehouse import manifest

    models = [n["name"] for n in manifest(parsed_settings)["nodes"].values() if n["resource_type"] == "model"]
    tasks = set(parsed["dags"]["warehouse"]["tasks"])
    # a model with tests is a task group (<model>.run, <model>.test); one without is <model>_run
    missing = [m for m in models if f"dbt.{m}.run" not in tasks and f"dbt.{m}_run" not in tasks]
    assert not missing, f"dbt models without a task: {missing}"
    assert "dbt.dbt_producer_watcher" in tasks  # watcher mode: one dbt build
    assert any(t.endswith(".test") for t in tasks)  # tests as tasks
    assert {"mark_build_start", "publish_warehouse"} <= tasks


def test_writers_run_in_the_single_writer_pools(parsed, parsed_settings):
    s = parsed_settings
    assert s.duckdb_pool in parsed["dags"]["warehouse"]["pools"]
    assert s.duckdb_pool in parsed["dags"]["ingest"]["pools"]
    assert s.feast_pool in parsed["dags"]["feature_store"]["pools"]
    assert s.feast_pool in parsed["dags"]["score_user_models"]["pools"]  # writes the online store
    assert s.feast_pool in parsed["dags"]["score_recommender"]["pools"]
    assert s.feast_pool in parsed["dags"]["forecast_demand"]["pools"]
    for dag_id in ("train_user_models", "train_recommender", "train_demand"):  # one trainer at a time
        assert s.training_pool in parsed["dags"][dag_id]["pools"], dag_id


def test_local_mode_renders_dbt_build_per_model(parsed_settings):
    out = probe(parsed_settings, DBT_EXECUTION_MODE="local")
    assert out["errors"] == {}
    info = out["dags"]["warehouse"]
    assert "dbt.dbt_producer_watcher" not in info["tasks"]
    assert "dbt.fct_orders.build" in info["tasks"] or any(t.startswith("dbt.fct_orders") for t in info["tasks"])
    assert parsed_settings.duckdb_pool in info["pools"]


def test_warehouse_dag_imports_without_manifest(tmp_path):
    settings = settings_for(data_dir=tmp_path / "data")
    out = probe(settings)
    assert out["errors"] == {}
    assert "dbt_build" in out["dags"]["warehouse"]["tasks"]


def test_run_interval_follows_the_triggering_asset_events():
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from ml.orchestration import tasks

    d = lambda day: datetime(2026, 11, day, tzinfo=timezone.utc)  # noqa: E731
    events = {
        "lake": [
            SimpleNamespace(extra=tasks.interval_extra(d(1), d(2))),
            SimpleNamespace(extra=tasks.interval_extra(d(2), d(3))),
        ]
    }
    assert tasks.run_interval({"triggering_asset_events": events}) == (d(1), d(3))
    assert tasks.run_interval({"data_interval_start": d(4), "data_interval_end": d(5)}) == (d(4), d(5))
    start, end = tasks.run_interval({})
    assert start is None and end.tzinfo is not None
    ctx = {"triggering_asset_events": events}
    assert tasks.materialize_window(ctx, "full") == (None, d(3))
    assert tasks.materialize_window(ctx, "interval") == (d(1), d(3))


def test_failure_callback_names_the_dbt_node_or_view(capsys):
    from types import SimpleNamespace

    from ml.orchestration import tasks

    ti = SimpleNamespace(dag_id="warehouse", task_id="dbt.fct_orders.test", try_number=1, map_index=-1)
    task = SimpleNamespace(model_unique_id="model.ecom_warehouse.fct_orders", task_id=ti.task_id)
    tasks.log_failure({"ti": ti, "task": task, "run_id": "r1", "exception": ValueError("test failed\nmore")})
    assert "dbt node model.ecom_warehouse.fct_orders" in capsys.readouterr().err
    ti = SimpleNamespace(dag_id="feature_store", task_id="materialize", try_number=2, map_index=1, rendered_map_index="user_rfm")
    tasks.log_failure({"ti": ti, "task": SimpleNamespace(task_id="materialize"), "run_id": "r2", "exception": RuntimeError("x")})
    assert "feature view user_rfm" in capsys.readouterr().err


def test_the_dag_files_follow_the_chain(parsed):
    """ml/orchestration/chain.py defines the order once; the DAG files' Assets and task bodies must
    follow it (run_chain and `ecomml pipeline` use chain.py, Airflow uses the DAG files)."""
    from ml.orchestration import chain

    dags = parsed["dags"]
    assert set(dags) == set(chain.CHAIN + chain.MODEL_DAGS)
    assert dags[chain.CHAIN[0]]["schedule"] == []  # triggered (by an operator, run_chain or the landing sensor)
    for upstream, downstream in zip(chain.CHAIN, chain.CHAIN[1:]):
        assert set(dags[upstream]["outlets"]) & set(dags[downstream]["schedule"]), (upstream, downstream)
    feature_store = set(dags[chain.CHAIN[-1]]["outlets"])
    for family in chain.FAMILIES:
        train, score = dags[family.train_dag], dags[family.score_dag]
        assert feature_store & set(train["schedule"]), family.train_dag
        assert set(train["outlets"]) & set(score["schedule"]), (family.train_dag, family.score_dag)
        for dag, steps in ((train, family.train), (score, family.score)):
            source = (PROJECT_ROOT / "dags" / dag["file"]).read_text()
            for name in (n for step in steps for n in step.names):
                assert f"tasks.{name}(" in source, f"{dag['file']} does not call tasks.{name}"
