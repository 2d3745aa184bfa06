"""Online serving on the real tiny build: SDK, `feast serve` over HTTP and `feast ui`, after materialize.

One temp Feast repo (embedded mode: SQLite online store, file registry) is applied over the marts of
the session's ``built_warehouse`` and loaded with Feast's stock ``store.materialize`` over the marts'
whole time range, so the online store holds the latest row per entity. The expected values are read
straight from the Parquet marts with DuckDB (latest ``event_timestamp`` per entity). The feature
server and the UI are started once for the module (in parallel, on free ports) and killed afterwards.
"""

from __future__ import annotations

import json
import math
import re
import socket
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from ml.features import repo, serving
from ml.settings import PROJECT_ROOT, settings_for
from tests.integration.conftest import copy_repo

pytestmark = pytest.mark.integration

REQUEST_TIME = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
MARTS = {
    "user_rfm": ("feat_user_rfm", ["user_id"]),
    "user_activity": ("feat_user_activity", ["user_id"]),
    "item_stats": ("feat_item_stats", ["item_id"]),
    "item_warehouse_demand": ("feat_item_warehouse_demand", ["item_id", "warehouse_id"]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_rows(settings, view: str) -> dict[tuple, dict]:
    """{join key tuple: latest mart row as a dict} for one view, read with DuckDB from its Parquet mart."""
    import duckdb

    model, keys = MARTS[view]
    path = Path(settings.features_dir) / f"{model}.parquet"
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        cur = con.execute(
            f"select * from read_parquet(?) qualify row_number() over (partition by {', '.join(keys)} order by event_timestamp desc) = 1",
            [str(path)],
        )
        cols = [d[0] for d in cur.description]
        return {tuple(row[cols.index(k)] for k in keys): dict(zip(cols, row)) for row in cur.fetchall()}
    finally:
        con.close()


def same(actual, expected) -> bool:
    """Equal as served: None for null, floats to 1e-9, timestamps as the same instant."""
    if isinstance(expected, Decimal):
        expected = float(expected)
    if isinstance(expected, date) and not isinstance(expected, datetime):  # a DATE mart column
        expected = datetime(expected.year, expected.month, expected.day, tzinfo=timezone.utc)
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        return actual is None or (isinstance(actual, float) and math.isnan(actual))
    if isinstance(expected, datetime):  # Feast keeps UnixTimestamp values to the second
        return isinstance(actual, datetime) and int(actual.timestamp()) == math.floor(expected.timestamp())
    if isinstance(expected, float):
        return actual is not None and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)
    return actual == expected


def assert_matches_marts(result: dict, marts: dict, features: dict, views: list[str], keys_of_row) -> int:
    """Every served value of ``views``' features equals the latest mart row (None for an unknown entity).

    Returns the number of non-null values compared."""
    n = len(next(iter(result.values())))
    compared = 0
    for i in range(n):
        for view in views:
            row = marts[view].get(keys_of_row(result, i, view))
            for feature in features[view]:
                if feature not in result:
                    continue
                actual = result[feature][i]
                if row is None:
                    assert actual is None, (view, feature, i, actual)
                    continue
                assert same(actual, row[feature]), (view, feature, i, actual, row[feature])
                compared += row[feature] is not None
    return compared


@pytest.fixture(scope="module")
def served(built_warehouse, tmp_path_factory):
    """Settings of an applied + materialized repo over the built marts, with the marts' latest rows."""
    import duckdb

    from ml.features.contract import read_view_specs

    root = tmp_path_factory.mktemp("feast_serving")
    settings = settings_for(
        data_dir=root / "data",
        feast_repo_dir=copy_repo(root / "feature_repo"),
        features_dir=built_warehouse.features_dir,
        warehouse_path=built_warehouse.warehouse_path,
    )
    settings.ensure_dirs()
    repo.apply(settings)
    specs = read_view_specs(Path(settings.feast_repo_dir) / "feature_views.py")
    features = {view: [f for f in spec.fields if f not in spec.join_keys] for view, spec in specs.items()}
    paths = [str(Path(settings.features_dir) / f"{m}.parquet") for m, _ in MARTS.values()]
    con = duckdb.connect()
    lo, hi = con.execute("select min(event_timestamp), max(event_timestamp) from read_parquet(?, union_by_name=true)", [paths]).fetchone()
    con.close()
    store = serving.open_store(settings)
    store.materialize(start_date=lo - timedelta(seconds=1), end_date=hi + timedelta(seconds=1))
    marts = {view: latest_rows(settings, view) for view in MARTS}
    return settings, store, marts, features


@pytest.fixture(scope="module")
def servers(served):
    """`feast serve` and `feast ui` on free 127.0.0.1 ports, started together; killed afterwards."""
    settings = served[0]
    api_port, ui_port = free_port(), free_port()
    api = serving.serve(settings, "127.0.0.1", api_port)
    web = serving.ui(settings, "127.0.0.1", ui_port)
    try:
        api_url, ui_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}"
        serving.wait_ready(api_url, api, timeout=120)
        serving.wait_ready(ui_url, web, timeout=120)
        yield {"api": api_url, "ui": ui_url}
    finally:
        serving.stop(api)
        serving.stop(web)


def user_sample(marts, n: int) -> list[str]:
    """Users in both views, in one only, and unknown ones."""
    rfm, act = {k[0] for k in marts["user_rfm"]}, {k[0] for k in marts["user_activity"]}
    both, rfm_only, act_only = sorted(rfm & act), sorted(rfm - act), sorted(act - rfm)
    picked = both[:: max(1, len(both) // max(1, n - 4))][: n - 4] + rfm_only[:1] + act_only[:1] + ["nobody", "u9999999"]
    return (picked * (n // len(picked) + 1))[:n]


def user_keys(result, i, view):
    return (result["user_id"][i],)


def demand_keys(result, i, view):
    return (result["item_id"][i],) if view == "item_stats" else (result["item_id"][i], result["warehouse_id"][i])


# --------------------------------------------------------------------------------------------------
# SDK
# --------------------------------------------------------------------------------------------------


def test_one_user_equals_latest_mart_row(served):
    settings, store, marts, features = served
    compared = 0
    for user in user_sample(marts, 8):  # settings, not a store: the store is opened once and reused
        result = serving.get_online_features(settings, "propensity_lgbm_v1", {"user_id": user}, request_time=REQUEST_TIME)
        assert list(result)[0] == "user_id" and result["user_id"] == [user]
        assert all(len(v) == 1 for v in result.values())
        compared += assert_matches_marts(result, marts, features, ["user_rfm", "user_activity"], user_keys)
    assert compared > 50
    assert serving.open_store(settings) is serving.open_store(settings)


def test_batch_of_100_users_equals_marts_and_request_time_features(served):
    settings, store, marts, features = served
    users = user_sample(marts, 100)
    result = serving.get_online_features(store, "propensity_lgbm_v1", [{"user_id": u} for u in users], request_time=REQUEST_TIME)
    assert result["user_id"] == users
    assert all(len(v) == 100 for v in result.values())
    assert assert_matches_marts(result, marts, features, ["user_rfm", "user_activity"], user_keys) > 500
    # Request-time features are measured from the stored timestamps to REQUEST_TIME.
    for i, user in enumerate(users):
        row = marts["user_rfm"].get((user,))
        if row is None or row["last_order_at"] is None:
            assert result["days_since_last_order_now"][i] is None
        else:
            expected = (REQUEST_TIME - row["last_order_at"]).total_seconds() / 86400
            assert result["days_since_last_order_now"][i] == pytest.approx(max(expected, 0.0))
    # The service's features, in the service's order, after the join key.
    services = repo.list_feature_services(settings, store)
    assert list(result) == ["user_id"] + [ref.split(":")[1] for ref in services["propensity_lgbm_v1"]["features"]]


def test_item_warehouse_service_one_and_batch(served):
    settings, store, marts, features = served
    pairs = sorted(marts["item_warehouse_demand"])[::37][:99] + [("i_unknown", "w_unknown")]
    rows = [{"item_id": i, "warehouse_id": w} for i, w in pairs]
    result = serving.get_online_features(store, "item_warehouse_demand_v1", rows)
    assert list(result)[:2] == ["item_id", "warehouse_id"] and len(result["item_id"]) == len(rows)
    # compare each view's features the service serves (item_stats comes without its units_sold_*)
    served_features = {}
    for ref in repo.list_feature_services(settings, store)["item_warehouse_demand_v1"]["features"]:
        view, feature = ref.split(":")
        served_features.setdefault(view, []).append(feature)
    assert "units_sold_7d" not in served_features["item_stats"] and "units_sold_7d" in served_features["item_warehouse_demand"]
    assert assert_matches_marts(result, marts, served_features, ["item_warehouse_demand", "item_stats"], demand_keys) > 100
    one = serving.get_online_features(store, "item_warehouse_demand_v1", rows[0])
    assert {k: v[0] for k, v in one.items()} == {k: v[0] for k, v in result.items()}


def test_request_time_defaults_to_now_and_rows_can_carry_their_own(served):
    settings, store, marts, features = served
    user = next(k[0] for k, row in marts["user_rfm"].items() if row["last_order_at"] is not None)
    last = marts["user_rfm"][(user,)]["last_order_at"].replace(microsecond=0)  # Feast keeps whole seconds
    before = datetime.now(timezone.utc).replace(microsecond=0)  # the request time too travels as whole seconds
    now = serving.get_online_features(store, "propensity_lgbm_v1", {"user_id": user})["days_since_last_order_now"][0]
    after = datetime.now(timezone.utc)
    assert (before - last).total_seconds() / 86400 <= now <= (after - last).total_seconds() / 86400
    own = serving.get_online_features(
        store, "propensity_lgbm_v1", [{"user_id": user, "request_timestamp": "2026-12-02T12:00:00Z"}], request_time=REQUEST_TIME
    )["days_since_last_order_now"][0]
    assert own == pytest.approx((datetime(2026, 12, 2, 12, tzinfo=timezone.utc) - last).total_seconds() / 86400)


def test_bad_requests_are_clear(served):
    settings, store, _, _ = served
    with pytest.raises(serving.ServingError, match="unknown feature service 'nope'"):
        serving.get_online_features(store, "nope", {"user_id": "u1"})
    with pytest.raises(serving.ServingError, match="lacks join key 'warehouse_id'"):
        serving.get_online_features(store, "item_warehouse_demand_v1", {"item_id": "i1"})
    with pytest.raises(serving.ServingError, match="must be a string"):
        serving.get_online_features(store, "propensity_lgbm_v1", {"user_id": 7})
    with pytest.raises(serving.ServingError, match="request_time"):
        serving.get_online_features(store, "propensity_lgbm_v1", {"user_id": "u1"}, request_time="yesterday")
    assert serving.get_online_features(store, "item_warehouse_demand_v1", [])["item_id"] == []


# --------------------------------------------------------------------------------------------------
# HTTP (feast serve) and UI (feast ui)
# --------------------------------------------------------------------------------------------------


def as_json_values(result: dict) -> dict:
    """SDK values as the feature server's JSON gives them (UnixTimestamp -> epoch seconds)."""
    return {k: [int(v.timestamp()) if isinstance(v, datetime) else v for v in values] for k, values in result.items()}


@pytest.mark.parametrize(
    "service,rows",
    [
        ("propensity_lgbm_v1", "users"),
        ("item_warehouse_demand_v1", "pairs"),
    ],
)
def test_http_equals_sdk(served, servers, service, rows):
    import requests

    settings, store, marts, features = served
    entity_rows = (
        [{"user_id": u} for u in user_sample(marts, 100)]
        if rows == "users"
        else [{"item_id": i, "warehouse_id": w} for i, w in sorted(marts["item_warehouse_demand"])[:100]]
    )
    with requests.Session() as session:
        for batch in (entity_rows[:1], entity_rows):
            sdk = serving.get_online_features(store, service, batch, request_time=REQUEST_TIME)
            http = serving.get_online_features_http(servers["api"], service, batch, request_time=REQUEST_TIME, session=session)
            assert set(http) == set(sdk)
            expected = as_json_values(sdk)
            for name in sdk:
                assert all(same(a, b) for a, b in zip(http[name], expected[name])), name


def test_http_errors_are_reported(servers):
    with pytest.raises(serving.ServingError, match="feature server answered"):
        serving.get_online_features_http(servers["api"], "nope", {"user_id": "u1"})


def test_ui_serves_the_registry(served, servers):
    import requests

    settings = served[0]
    page = requests.get(servers["ui"] + "/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    views = requests.get(servers["ui"] + "/api/v1/feature_views", params={"project": settings.feast_project}, timeout=10)
    assert views.status_code == 200
    names = {v["spec"]["name"] for v in views.json()["featureViews"]}
    assert set(MARTS) <= names
    services = requests.get(servers["ui"] + "/api/v1/feature_services", params={"project": settings.feast_project}, timeout=10)
    assert {s["spec"]["name"] for s in services.json()["featureServices"]} >= {"propensity_lgbm_v1", "item_warehouse_demand_v1"}


# --------------------------------------------------------------------------------------------------
# docs/feature_store.md examples
# --------------------------------------------------------------------------------------------------


def doc_block(name: str, lang: str = "python") -> str:
    text = (PROJECT_ROOT / "docs" / "feature_store.md").read_text()
    match = re.search(rf"<!-- example: {name} -->\s*```{lang}\n(.*?)```", text, flags=re.S)
    assert match, f"docs/feature_store.md has no '<!-- example: {name} -->' {lang} block"
    return match.group(1)


@pytest.mark.parametrize("name", ["list-services", "online-sdk"])
def test_docs_examples_run(served, monkeypatch, capsys, name):
    import ml.settings

    settings = served[0]
    monkeypatch.setattr(ml.settings, "get_settings", lambda: settings)
    namespace: dict = {}
    exec(compile(doc_block(name), f"docs/feature_store.md:{name}", "exec"), namespace)
    printed = capsys.readouterr().out
    if name == "list-services":
        assert "propensity_lgbm_v1" in printed and "user_rfm:order_count_lifetime" in printed
    else:
        assert namespace["features"]["user_id"] and namespace["batch"]["user_id"]
        assert "days_since_last_order_now" in namespace["features"]


def test_docs_http_request_body_is_accepted(served, servers):
    import requests

    body = json.loads(doc_block("http-request", "json"))
    resp = requests.post(servers["api"] + "/get-online-features", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    result = serving.parse_http_response(resp.json())
    assert result["user_id"] == body["entities"]["user_id"] and "days_since_last_order_now" in result
