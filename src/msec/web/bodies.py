"""Reading request bodies with a cap: the one place every route that takes a body reads it.

A hostile client may announce nothing and send gigabytes: :func:`read_capped` stops reading
at the first chunk past the limit. :func:`read_body` and :func:`read_json_object` turn what
is wrong into the HTTP error the API answers (413 too large, 400 or 422 not a JSON object)
and record it as a security event (``oversized`` or ``malformed``, with the client's
address) in the event log the app was built with (``app.state.events``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

__all__ = ["BodyTooLarge", "read_body", "read_capped", "read_json_object", "security_event"]


class BodyTooLarge(Exception):
    """The body went past ``limit`` bytes; ``read`` is what was read up to there."""

    def __init__(self, limit: int, read: bytes) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit
        self.read = read


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, read chunk by chunk; :class:`BodyTooLarge` as soon as it passes ``limit``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit, bytes(body))
    return bytes(body)


def security_event(request: Request, reason: str, detail: str) -> None:
    """Record a security event about this request, if the app has an event log."""
    events = getattr(request.app.state, "events", None)
    if events is not None:
        source = request.client.host if request.client else "http"
        events.warn(reason, f"{request.method} {request.url.path}: {detail}", source=source)


async def read_body(request: Request, limit: int, *, what: str = "body") -> bytes:
    """The body; 413 (and an ``oversized`` event) past ``limit`` bytes."""
    try:
        return await read_capped(request, limit)
    except BodyTooLarge:
        await run_in_threadpool(
            security_event, request, "oversized", f"{what} larger than {limit} bytes"
        )
        raise HTTPException(413, f"{what} larger than {limit} bytes") from None


async def read_json_object(
    request: Request, limit: int, *, status: int = 400, empty: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The body as a JSON object. 413 past ``limit`` bytes; ``status`` (400 or 422) when it is
    not JSON (NaN and Infinity included) or not an object; an empty body is ``empty`` if
    given, else refused too. Each refusal is a security event."""
    raw = await read_body(request, limit)
    if not raw.strip() and empty is not None:
        return dict(empty)
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        await run_in_threadpool(security_event, request, "malformed", "the body is not JSON")
        raise HTTPException(status, "the body is not JSON") from None
    if not isinstance(data, dict):
        await run_in_threadpool(
            security_event, request, "malformed", "the body is not a JSON object"
        )
        raise HTTPException(status, "the body must be a JSON object")
    return data


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
