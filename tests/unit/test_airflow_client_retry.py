"""The REST client of the demo and the e2e tests rides out a busy API server (issue 15 item 7)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ml.orchestration.local_airflow import AirflowClient, OrchestrationError


class Flaky(BaseHTTPRequestHandler):
    script: list = []  # what each request gets, in order: an HTTP status, "slow", or "ok"
    seen: list = []

    def log_message(self, *args):
        pass

    def _answer(self):
        self.seen.append((self.command, self.path))
        if self.path.startswith("/auth/token"):
            return self._json(201, {"access_token": f"t{len(self.seen)}"})
        step = self.script.pop(0) if self.script else "ok"
        if step == "slow":
            time.sleep(1.5)
            return self._json(200, {"late": True})
        if isinstance(step, int):
            return self._json(step, {"detail": "busy"})
        return self._json(200, {"ok": True, "auth": self.headers.get("Authorization")})

    def _json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _answer


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Flaky.seen.clear()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_timeouts_and_5xx_are_retried_until_an_answer(server):
    Flaky.script[:] = [503, "slow", 502]
    client = AirflowClient(server, "admin", "pw", timeout=0.5, retry_s=30)
    assert client.request("GET", "/dags/x")["ok"] is True
    assert [p for m, p in Flaky.seen if p.startswith("/api")] == ["/api/v2/dags/x"] * 4


def test_an_expired_token_is_renewed_once(server):
    Flaky.script[:] = [401]
    client = AirflowClient(server, "admin", "pw", timeout=2, retry_s=10)
    assert client.request("GET", "/dags/x")["auth"] == "Bearer t3"  # the second token (requests: token, 401, token)
    assert sum(p == "/auth/token" for _, p in Flaky.seen) == 2


def test_it_gives_up_at_its_deadline_with_a_clear_error(server):
    Flaky.script[:] = [503] * 50
    client = AirflowClient(server, "admin", "pw", timeout=1, retry_s=2)
    with pytest.raises(OrchestrationError, match="HTTP 503"):
        client.request("GET", "/dags/x")


def test_a_client_error_is_not_retried(server):
    Flaky.script[:] = [404]
    with pytest.raises(OrchestrationError, match="HTTP 404"):
        AirflowClient(server, "admin", "pw", retry_s=30).request("GET", "/dags/missing")
    assert len([p for _, p in Flaky.seen if p.startswith("/api")]) == 1


class Scripted(AirflowClient):
    """A client whose run goes queued -> running -> success over three polls, without a server."""

    def __init__(self):
        super().__init__("http://unused", "u", "p")
        self.states = ["queued", "running", "success"]

    def run(self, dag_id, run_id):
        return {"dag_run_id": run_id, "state": self.states.pop(0) if len(self.states) > 1 else self.states[0]}

    def task_instances(self, dag_id, run_id):
        return [
            {"task_id": "a", "state": "success"},
            {"task_id": "b", "state": "running"},
            {"task_id": "c", "state": None},
        ]


def test_waiting_for_a_run_reports_its_progress():
    lines = []
    run = Scripted().wait_for_run("warehouse", "r1", poll=0.01, progress=lines.append, every=0.0)
    assert run["state"] == "success"
    assert lines == [
        "  warehouse: queued for 0 s, 1 of 3 tasks done, 1 running (b)",
        "  warehouse: running for 0 s, 1 of 3 tasks done, 1 running (b)",
    ]
    assert Scripted().wait_for_run("warehouse", "r1", poll=0.01)["state"] == "success"  # no progress asked: silent
