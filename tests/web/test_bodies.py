"""``msec.web.bodies``: capped reading, JSON objects, and the security events of refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from msec.web.bodies import BodyTooLarge, read_body, read_capped, read_json_object

LIMIT = 64


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def warn(self, reason: str, detail: str, *, source: str = "", **_: Any) -> None:
        self.seen.append((reason, detail, source))


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def client(events: Events) -> Iterator[TestClient]:
    app = FastAPI()
    app.state.events = events

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, Any]:
        try:
            body = await read_capped(request, LIMIT)
        except BodyTooLarge as exc:
            return {"too_large": len(exc.read), "limit": exc.limit}
        return {"length": len(body)}

    @app.post("/body")
    async def body(request: Request) -> dict[str, Any]:
        return {"length": len(await read_body(request, LIMIT, what="policy"))}

    @app.post("/json")
    async def json_object(request: Request) -> dict[str, Any]:
        return await read_json_object(request, LIMIT, status=422)

    @app.post("/json-or-empty")
    async def json_or_empty(request: Request) -> dict[str, Any]:
        return await read_json_object(request, LIMIT, empty={"empty": True})

    with TestClient(app) as client:
        yield client


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts  # no Content-Length: the body arrives in chunks


def test_reading_stops_at_the_first_chunk_past_the_limit(client: TestClient) -> None:
    assert client.post("/raw", content=b"x" * LIMIT).json() == {"length": LIMIT}
    assert client.post("/raw", content=b"x" * 10_000).json() == {"too_large": 10_000, "limit": 64}
    # At the ASGI level: chunks as a client sends them; the rest is never received.
    parts = [b"x" * 40, b"x" * 40, b"x" * 10_000, b"x"]
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(len(parts[len(received)]))
        more = len(received) < len(parts)
        return {"type": "http.request", "body": parts[len(received) - 1], "more_body": more}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(BodyTooLarge) as caught, ThreadPoolExecutor(1) as pool:
        # In a thread of its own: another test may have left an event loop in this one.
        pool.submit(asyncio.run, read_capped(request, LIMIT)).result()
    assert len(caught.value.read) == 80 and received == [40, 40]


def test_too_large_is_413_and_a_security_event(client: TestClient, events: Events) -> None:
    assert client.post("/body", content=b"y" * 10).json() == {"length": 10}
    assert events.seen == []
    answer = client.post("/body", content=chunks(b"y" * 50, b"y" * 50))
    assert answer.status_code == 413
    assert answer.json()["detail"] == f"policy larger than {LIMIT} bytes"
    [(reason, detail, source)] = events.seen
    assert reason == "oversized" and detail.startswith("POST /body: policy larger")
    assert source == "testclient"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"", "not JSON"),
    ],
)
def test_what_is_not_a_json_object_is_refused(
    client: TestClient, events: Events, body: bytes, why: str
) -> None:
    answer = client.post("/json", content=body)
    assert answer.status_code == 422
    assert why in answer.json()["detail"]
    assert [e[0] for e in events.seen] == ["malformed"]


def test_a_json_object_and_an_empty_body(client: TestClient, events: Events) -> None:
    assert client.post("/json", json={"note": "ok"}).json() == {"note": "ok"}
    assert client.post("/json-or-empty", content=b"").json() == {"empty": True}
    assert client.post("/json-or-empty", content=b"  \n").json() == {"empty": True}
    assert client.post("/json-or-empty", content=b"[]").status_code == 400
    assert client.post("/json", content=b"[" * 30 + b"]" * 30).status_code == 422
    deep = client.post("/json-or-empty", content=chunks(b"[" * 60, b"]" * 60))
    assert deep.status_code == 413
    assert [e[0] for e in events.seen] == ["malformed", "malformed", "oversized"]


def test_without_an_event_log_refusals_still_answer(events: Events) -> None:
    app = FastAPI()

    @app.post("/json")
    async def json_object(request: Request) -> dict[str, Any]:
        return await read_json_object(request, LIMIT)

    with TestClient(app) as client:
        assert client.post("/json", content=b"x" * 100).status_code == 413
        assert client.post("/json", content=b"nope").status_code == 400
