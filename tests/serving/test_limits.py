"""The body-size limit: 413 for a declared or streamed body over the limit, never read past it."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from loopline.serving.limits import BodySizeLimit

LIMIT = 1000
MESSAGE = f"request body exceeds the limit of {LIMIT} bytes (max_body_bytes)"


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @app.post("/json")
    def parsed(body: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(body)}

    app.add_middleware(BodySizeLimit, max_bytes=LIMIT)
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(_app()) as http:
        yield http


@pytest.mark.parametrize(
    ("size", "status"), [(0, 200), (LIMIT - 1, 200), (LIMIT, 200), (LIMIT + 1, 413)]
)
def test_a_declared_length_over_the_limit_gets_413(
    client: TestClient, size: int, status: int
) -> None:
    answer = client.post("/echo", content=b"x" * size)
    assert answer.status_code == status
    assert answer.json() == ({"received": size} if status == 200 else {"detail": MESSAGE})


def test_a_streamed_body_over_the_limit_gets_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"x" * (LIMIT + 1)

    answer = client.post("/echo", content=chunks())
    assert answer.status_code == 413 and answer.json() == {"detail": MESSAGE}


def test_a_json_route_gets_413_not_a_parse_error(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps({"k": "v" * LIMIT}).encode()

    answer = client.post("/json", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json() == {"detail": MESSAGE}
    assert client.post("/json", json={"a": 1}).json() == {"keys": 1}


@pytest.mark.parametrize("value", [b"-1", b"lots"])
def test_a_bad_content_length_gets_400(value: bytes) -> None:
    sent = _drive([(b"content-length", value)], [b"x"])
    assert sent[0]["status"] == 400 and not sent[-1]["app_called"]


def _drive(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> list[dict[str, Any]]:
    """Run the middleware over a raw ASGI exchange; the app reads the whole body."""
    import asyncio

    state = {"read": 0, "called": False}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        state["called"] = True
        while True:
            message = await receive()
            state["read"] += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(BodySizeLimit(app, max_bytes=LIMIT)(scope, receive, send))
    sent.append({"app_read": state["read"], "app_called": state["called"]})
    return sent


def test_a_chunked_body_is_cut_at_the_limit_and_never_read_past_it() -> None:
    sent = _drive([], [b"x" * 400] * 5)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"detail": MESSAGE}
    assert sent[-1]["app_read"] == 800  # the chunk that crossed the limit never reached it


def test_a_chunked_body_within_the_limit_passes() -> None:
    sent = _drive([], [b"x" * 250] * 4)
    assert sent[0]["status"] == 200 and sent[-1]["app_read"] == LIMIT


def test_a_declared_length_over_the_limit_never_reaches_the_app() -> None:
    sent = _drive([(b"content-length", str(LIMIT + 1).encode())], [b"x" * (LIMIT + 1)])
    assert sent[0]["status"] == 413 and not sent[-1]["app_called"]


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes: must be > 0"):
        BodySizeLimit(_app(), max_bytes=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _complete(response: bytes) -> bool:
    """Whether a raw HTTP response holds its whole Content-Length body."""
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def test_a_real_server_answers_413_to_a_chunked_upload() -> None:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        # A raw socket: the server may answer 413 and close before the client has sent every
        # chunk, so a broken pipe while sending is expected; the answer is read after it.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = (
                b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(head)
                for _ in range(4):
                    sock.sendall(chunk)
                    time.sleep(0.01)
                sock.sendall(b"0\r\n\r\n")
            received = b""
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                while b"\r\n\r\n" not in received or not _complete(received):
                    data = sock.recv(65536)
                    if not data:
                        break
                    received += data
        status_line, _, rest = received.partition(b"\r\n")
        assert b" 413 " in status_line, received[:200]
        body = rest.split(b"\r\n\r\n", 1)[1]
        assert json.loads(body) == {"detail": MESSAGE}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
