"""Command routes: ask a device to act on one of its resources, and follow the command.

``POST /api/v1/providers/{provider}/services/{service}/resources/{resource}/act`` takes
``{"args": <JSON value>, "ttl_s": 1..300 (optional, default 30)}`` (at most 4 KiB), checks
that the caller may ``ACT`` on that resource, signs the command with the platform's command
key, records it and publishes it to the device (MQTT QoS 1). ``202`` with
``{"command": id, "seq": n, "status": "sent", "expires_at": t}`` once the broker has it; the
device verifies the signature itself and confirms by reporting the resource's new state.

``GET /api/v1/commands/{id}`` tells what became of a command (``sent``, ``acknowledged``
once the device reported the resource after the command, ``failed``); the caller must be
allowed to ``DESCRIBE`` the command's provider.
"""

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from msec.access.model import Principal, Verb
from msec.actuate.actuator import Actuator, CommandNotSent, LatestValues
from msec.actuate.command import MAX_TTL_S
from msec.core.kinds import UnknownKind, get_kind
from msec.registry.base import DeviceRecord
from msec.web.bodies import read_body

__all__ = ["MAX_ACT_BODY", "add_act_routes"]

#: Largest request body of the act route.
MAX_ACT_BODY = 4096
_DEFAULT_TTL_S = 30
_BODY_KEYS = frozenset({"args", "ttl_s"})
_COMMAND_ID = re.compile(r"^[0-9a-f]{32}$")
#: Device health is reported, never commanded.
_NOT_ACTUATABLE = frozenset({"health"})
#: The body as OpenAPI shows it (the route reads and checks the raw body itself).
_ACT_BODY_DOC: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["args"],
                "additionalProperties": False,
                "properties": {
                    "args": {
                        "description": "what to do, any small JSON value (at most 1 KiB as "
                        "CBOR, 4 levels, 32 items per list or object, text up to 256)",
                    },
                    "ttl_s": {
                        "type": "number",
                        "minimum": 1,
                        "maximum": MAX_TTL_S,
                        "default": _DEFAULT_TTL_S,
                        "description": "seconds the device may still act on it",
                    },
                },
            },
            "example": {"args": {"on": True}, "ttl_s": 30},
        }
    },
}


class DeviceLookup(Protocol):
    """What the routes need of the device registry."""

    def get(self, name: str) -> DeviceRecord | None: ...


def add_act_routes(
    app: FastAPI,
    caller: Callable[..., Any],
    allow: Callable[..., None],
    actuator: Actuator,
    twin: LatestValues,
    registry: DeviceLookup,
) -> None:
    """Add ``POST .../resources/{resource}/act`` and ``GET /api/v1/commands/{id}``.

    ``caller`` is the dependency giving the authenticated principal (401 otherwise) and
    ``allow(request, principal, verb, provider, service, resource)`` raises 403 (or 404 for
    another tenant's resource) unless allowed, as in :func:`msec.web.app.create_app`.
    """
    Caller = Annotated[Principal, Depends(caller)]

    @app.post(
        "/api/v1/providers/{provider}/services/{service}/resources/{resource}/act",
        tags=["actuate"],
        status_code=202,
        responses={
            202: {"description": "signed, recorded and handed to the broker"},
            400: {"description": "the body is not JSON"},
            404: {"description": "no such device, or its kind has no such resource"},
            409: {"description": "the device is revoked"},
            413: {"description": "body larger than 4 KiB"},
            415: {"description": "not application/json"},
            422: {"description": "args or ttl_s not acceptable"},
            503: {"description": "the MQTT broker did not take the command"},
        },
        openapi_extra={"requestBody": _ACT_BODY_DOC},
    )
    async def post_act(
        request: Request, provider: str, service: str, resource: str, who: Caller
    ) -> JSONResponse:
        """Send a signed command to the device (``ACT`` on the resource).

        Body: ``{"args": {...}, "ttl_s": 30}``; ``args`` is any small JSON value (for a
        smart plug's ``plug/switch``: ``{"on": true}``), ``ttl_s`` how long the device may
        still act on it (1..300 s). The device refuses it once expired, replayed, or not
        signed by this platform; it confirms by reporting the resource's state.
        """
        content_type = request.headers.get("content-type", "application/json")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise HTTPException(415, "Content-Type must be application/json")
        body = await _body(request)

        def act() -> dict[str, Any]:
            # Authorization first: nothing about the device is told to whoever may not act.
            allow(request, who, Verb.ACT, provider, service, resource)
            device = _actuatable(registry, provider, service, resource)
            args, ttl_s = _parse(body)
            try:
                info = actuator.send(
                    device.name,
                    device.tenant,
                    service,
                    resource,
                    args,
                    principal_id=who.id,
                    ttl_s=ttl_s,
                )
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
            except CommandNotSent:
                raise HTTPException(
                    503, "the message broker is unreachable: command not sent"
                ) from None
            return {
                "command": info.id,
                "seq": info.seq,
                "status": info.status,
                "expires_at": info.expires_at,
            }

        # In a worker thread: a commit and a wait for the broker must not stall the server.
        answer = await run_in_threadpool(act)
        return JSONResponse(
            answer, status_code=202, headers={"Location": f"/api/v1/commands/{answer['command']}"}
        )

    @app.get("/api/v1/commands/{command_id}", tags=["actuate"])
    def get_command(request: Request, command_id: str, who: Caller) -> dict[str, Any]:
        """One command: what was asked, by whom, and its status (``sent``,
        ``acknowledged`` once the device reported the resource after it, ``failed``)."""
        record = actuator.commands.get(command_id) if _COMMAND_ID.match(command_id) else None
        if record is None:
            raise HTTPException(404, f"no command {command_id[:40]!r}")
        allow(request, who, Verb.DESCRIBE, record.device)
        record = actuator.status(command_id, twin=twin) or record
        data = record.as_dict()
        data["provider"] = data.pop("device")
        data["principal"] = data.pop("principal_id")
        return data


def _actuatable(registry: DeviceLookup, provider: str, service: str, resource: str) -> DeviceRecord:
    device = registry.get(provider)
    if device is None:
        raise HTTPException(404, f"no provider {provider!r}")
    try:
        kind = get_kind(device.kind)
    except UnknownKind:
        kind = None
    if service in _NOT_ACTUATABLE or kind is None or kind.spec(service, resource) is None:
        raise HTTPException(404, f"{provider} has no resource {service}/{resource} to act on")
    if device.revoked:
        raise HTTPException(409, f"{provider} is revoked")
    return device


async def _body(request: Request) -> bytes:
    return await read_body(request, MAX_ACT_BODY)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes) -> tuple[object, float]:
    """``(args, ttl_s)`` from the body; 400 if not JSON, 422 if not the expected shape."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise HTTPException(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(422, 'body must be an object: {"args": ..., "ttl_s": ...}')
    unknown = set(data) - _BODY_KEYS
    if unknown:
        raise HTTPException(422, f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    if "args" not in data:
        raise HTTPException(422, "args is required")
    ttl_s = data.get("ttl_s")
    if ttl_s is None:
        ttl_s = _DEFAULT_TTL_S
    elif isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise HTTPException(422, "ttl_s must be a number of seconds")
    elif not 1 <= ttl_s <= MAX_TTL_S:
        raise HTTPException(422, f"ttl_s must be within 1..{MAX_TTL_S}")
    return data["args"], float(ttl_s)
