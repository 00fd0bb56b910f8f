"""The HTTP API (FastAPI): health, the twin, security events, ingest, metrics, the log.

OpenAPI is served at ``/docs`` and ``/openapi.json``. Every route except health and ingest
needs ``Authorization: Bearer <token>``; ingest is authenticated by the envelope's own
signature (gateways hold a device key, not an API token).
"""

import hmac
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from msec import __version__
from msec.core.errors import RejectReason
from msec.core.models import SecurityEvent
from msec.crypto.envelope import MAX_ENVELOPE_BYTES
from msec.guard.base import EventLog
from msec.ingest.pipeline import Incoming, Ingestor
from msec.tlog.trust import TrustLog
from msec.twin.base import Twin
from msec.web.log_api import add_log_routes

_bearer = HTTPBearer(auto_error=False)

#: HTTP status for each rejection reason of ``POST /api/v1/ingest``.
_STATUS = {
    RejectReason.OVERSIZED: 413,
    RejectReason.UNKNOWN_DEVICE: 403,
    RejectReason.REVOKED_DEVICE: 403,
    RejectReason.BAD_SIGNATURE: 401,
    RejectReason.REPLAY: 409,
}


def create_app(
    *,
    twin: Twin,
    events: EventLog,
    ingestor: Ingestor,
    tokens: Mapping[str, str],
    metrics: CollectorRegistry | None = None,
    health: Callable[[], dict[str, Any]] | None = None,
    trust: TrustLog | None = None,
) -> FastAPI:
    """The API over the given backends; ``tokens`` maps bearer token -> role name.

    With ``trust``, the transparency log's routes (``/api/v1/log/...``) are served too.
    """
    # Swagger UI and ReDoc served from the package, not a CDN: a closed network gets them too.
    app: FastAPI = FastAPIOffline(
        title="M-Sec platform API",
        version=__version__,
        description="Signed readings, the digital twin and security events.",
    )

    def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        if credentials is not None:
            offered = credentials.credentials.encode()
            for token, role in tokens.items():
                if hmac.compare_digest(offered, token.encode()):
                    return role
        events.record(
            [
                SecurityEvent(
                    reason="unauthorized",
                    detail=f"{request.method} {request.url.path}",
                    source=request.client.host if request.client else "",
                )
            ]
        )
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )

    Role = Annotated[str, Depends(principal)]

    @app.get("/api/v1/health", tags=["platform"])
    def get_health() -> dict[str, Any]:
        """Liveness and readiness: 200 with ``status: ok`` when storage answers."""
        info = {"status": "ok", "version": __version__}
        if health is not None:
            info.update(health())
        return info

    @app.get("/api/v1/providers", tags=["twin"])
    def list_providers(_role: Role) -> list[dict[str, Any]]:
        """Every provider (device) with metadata and health, without resources."""
        return [_provider(p) for p in twin.providers()]

    @app.get("/api/v1/providers/{provider}", tags=["twin"])
    def get_provider(provider: str, _role: Role) -> dict[str, Any]:
        """One provider with its services and each resource's latest value."""
        info = twin.provider(provider)
        if info is None:
            raise HTTPException(404, f"no provider {provider!r}")
        data = _provider(info)
        services: dict[str, dict[str, Any]] = {}
        for r in info.resources:
            services.setdefault(r.service, {})[r.resource] = {
                "value": r.value,
                "unit": r.unit,
                "timestamp": r.timestamp,
            }
        data["services"] = services
        return data

    @app.get("/api/v1/providers/{provider}/services/{service}/resources/{resource}", tags=["twin"])
    def get_resource(provider: str, service: str, resource: str, _role: Role) -> dict[str, Any]:
        """The latest value of one resource, with its unit and timestamp."""
        value = twin.latest(provider, service, resource)
        if value is None:
            raise HTTPException(404, f"no resource {provider}/{service}/{resource}")
        return asdict(value)

    @app.get(
        "/api/v1/providers/{provider}/services/{service}/resources/{resource}/history",
        tags=["twin"],
    )
    def get_history(
        provider: str,
        service: str,
        resource: str,
        _role: Role,
        since: Annotated[float | None, Query(description="epoch seconds, inclusive")] = None,
        until: Annotated[float | None, Query(description="epoch seconds, exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> dict[str, Any]:
        """Stored values oldest first, ``since <= timestamp < until``, at most ``limit``."""
        if since is not None and until is not None and until < since:
            raise HTTPException(422, "until must not be before since")
        if twin.latest(provider, service, resource) is None:
            raise HTTPException(404, f"no resource {provider}/{service}/{resource}")
        values = twin.history(provider, service, resource, since=since, until=until, limit=limit)
        return {
            "provider": provider,
            "service": service,
            "resource": resource,
            "values": [{"value": v.value, "timestamp": v.timestamp, "seq": v.seq} for v in values],
        }

    @app.get("/api/v1/security/events", tags=["security"])
    def get_events(
        _role: Role,
        reason: Annotated[str | None, Query(max_length=64)] = None,
        device: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        """Security events, newest first, optionally only one ``reason`` and/or ``device``."""
        return [asdict(e) for e in events.query(reason=reason, device=device, limit=limit)]

    @app.post(
        "/api/v1/ingest",
        tags=["ingest"],
        status_code=200,
        responses={
            413: {"description": "envelope larger than 64 KiB"},
            415: {"description": "not application/cose"},
        },
    )
    async def post_ingest(request: Request) -> JSONResponse:
        """Ingest one sealed envelope (``Content-Type: application/cose``).

        200 once its readings are durable; 413 when oversized; 4xx with ``reason`` when
        refused (each refusal is also a security event).
        """
        source = request.client.host if request.client else "http"
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/cose":
            events.record(
                [
                    SecurityEvent(
                        reason="malformed",
                        source=source,
                        detail=f"ingest with Content-Type {content_type[:60]!r}",
                    )
                ]
            )
            return _refuse(415, "malformed", "Content-Type must be application/cose")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_ENVELOPE_BYTES:
                # Stop reading: a hostile client may send gigabytes.
                await run_in_threadpool(ingestor.process, [Incoming(bytes(body), None, source)])
                return _refuse(413, "oversized", f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
        # In a worker thread: a durable commit must not stall every other request.
        outcome = (
            await run_in_threadpool(ingestor.process, [Incoming(bytes(body), None, source)])
        )[0]
        if outcome.rejected is not None:
            reason = outcome.rejected.reason
            return _refuse(_STATUS.get(reason, 400), reason.value, outcome.rejected.detail)
        status = "duplicate" if outcome.stored == 0 and outcome.duplicates else "stored"
        return JSONResponse(
            {"status": status, "stored": outcome.stored, "duplicates": outcome.duplicates}
        )

    @app.get("/metrics", tags=["platform"], include_in_schema=True)
    def get_metrics(_role: Role) -> Response:
        """Prometheus metrics (needs the operator token, like the rest of the API)."""
        if metrics is None:
            raise HTTPException(404, "metrics are not enabled")
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    if trust is not None:
        add_log_routes(app, trust, principal)
    return app


def _refuse(status: int, reason: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"status": "rejected", "reason": reason, "detail": detail}, status_code=status
    )


def _provider(p: Any) -> dict[str, Any]:
    return {
        "name": p.name,
        "kind": p.kind,
        "tenant": p.tenant,
        "description": p.description,
        "location": (
            {"latitude": p.latitude, "longitude": p.longitude} if p.latitude is not None else None
        ),
        "health": {"last_seen": p.last_seen, "battery": p.battery, "rssi": p.rssi},
    }
