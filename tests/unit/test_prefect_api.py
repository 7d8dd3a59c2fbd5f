"""The Prefect REST client retries a busy server's 503 and reports a lasting error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopline.ops import prefect_api
from loopline.ops.prefect_api import PrefectAPI, PrefectAPIError


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    """A loopback server answering each request with the next status of `answers`."""
    answers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status = answers.pop(0) if answers else 200
            body = json.dumps({"id": "run-1"} if status == 200 else {"detail": "busy"}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/api", answers
    finally:
        httpd.shutdown()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_api, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))


@pytest.mark.parametrize("busy", [[503], [503, 503, 429], [502, 503]])
def test_a_busy_answer_is_sent_again_until_it_succeeds(
    server: tuple[str, list[int]], busy: list[int]
) -> None:
    url, answers = server
    answers.extend(busy)
    with PrefectAPI(url) as api:
        assert api._call("POST", "/flow_runs/").json() == {"id": "run-1"}
    assert answers == []


def test_a_lasting_503_is_an_error_naming_the_call(server: tuple[str, list[int]]) -> None:
    url, answers = server
    answers.extend([503] * 10)
    with PrefectAPI(url) as api, pytest.raises(PrefectAPIError, match=r"POST .*/flow_runs/ -> 503"):
        api._call("POST", "/flow_runs/")
    assert len(answers) == 10 - 4  # the first try and three retries


def test_a_client_error_is_not_retried(server: tuple[str, list[int]]) -> None:
    url, answers = server
    answers.extend([422, 200])
    with PrefectAPI(url) as api, pytest.raises(PrefectAPIError, match="-> 422"):
        api._call("POST", "/flow_runs/")
    assert answers == [200]
