"""The HTTP API (FastAPI): health, the twin, security events, ingest, metrics, the log.

OpenAPI is served at ``/docs`` and ``/openapi.json``. Every route except health and ingest
needs ``Authorization: Bearer <token>``; ingest is authenticated by the envelope's own
signature (gateways hold a device key, not an API token).
"""

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from msec import __version__
from msec.access.builtin import BUILTIN_POLICIES, PLATFORM
from msec.access.consent import SqlConsent
from msec.access.engine import PolicyEngine
from msec.access.model import Principal, PrincipalKind, Verb
from msec.access.policies import SqlPolicies
from msec.access.principals import SqlPrincipals
from msec.access.service import AccessService, NotAuthenticated
from msec.actuate.actuator import Actuator
from msec.core.errors import RejectReason
from msec.core.models import SecurityEvent
from msec.crypto.envelope import MAX_ENVELOPE_BYTES
from msec.guard.base import EventLog
from msec.ingest.pipeline import Incoming, Ingestor
from msec.registry.base import DeviceRegistry
from msec.tlog.trust import TrustLog
from msec.twin.base import Twin
from msec.web.access_api import add_access_routes
from msec.web.act_api import add_act_routes
from msec.web.bodies import BodyTooLarge, read_capped
from msec.web.consent_api import add_consent_routes
from msec.web.log_api import add_log_routes
from msec.web.proof_pages import add_proof_pages
from msec.web.ui import WebUi, add_ui_routes, html_error

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
    tokens: Mapping[str, str] | None = None,
    metrics: CollectorRegistry | None = None,
    health: Callable[[], dict[str, Any]] | None = None,
    trust: TrustLog | None = None,
    access: AccessService | None = None,
    principals: SqlPrincipals | None = None,
    policies: SqlPolicies | None = None,
    actuator: Actuator | None = None,
    registry: DeviceRegistry | None = None,
    consent: SqlConsent | None = None,
    ui: WebUi | None = None,
) -> FastAPI:
    """The API over the given backends.

    Every route but health, ingest (authenticated by the envelope's signature), the log's
    public proofs and the token endpoint asks ``access`` who the caller is and whether they
    may. Without ``access``, a minimal one is built from ``tokens`` (bearer token -> role, as
    static principals of the ``default`` tenant). With ``trust``, the transparency log's
    routes (``/api/v1/log/...``) are served too; with ``principals``, the OAuth2 password
    flow (``POST /api/v1/auth/token``) and token revocation. With ``ui``, the pages for
    people (``/``, ``/login``, ``/proof/...``, ``/static``), to which apps add theirs.
    """
    if access is None:
        access = static_access(tokens or {}, events)
    app_access: AccessService = access
    # Swagger UI and ReDoc served from the package, not a CDN: a closed network gets them too.
    app: FastAPI = FastAPIOffline(
        title="M-Sec platform API",
        version=__version__,
        description="Signed readings, the digital twin and security events.",
    )

    def caller(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        """The authenticated principal; 401 (and a security event) otherwise, 429 when over
        its rate limit."""
        source = request.client.host if request.client else ""
        token = credentials.credentials if credentials is not None else None
        try:
            who = access.authenticate(token)
        except NotAuthenticated as exc:
            who, reason = None, exc.reason
        else:
            reason = "missing"
        if who is None or not who.authenticated:
            events.warn(
                "unauthorized", f"{request.method} {request.url.path}", source=source, why=reason
            )
            raise HTTPException(
                401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        wait = access.throttle(who, source)
        if wait:
            events.warn("rate_limited", f"{who.id} {request.url.path}", source=source)
            raise HTTPException(
                429, "too many requests", headers={"Retry-After": str(max(1, round(wait)))}
            )
        request.state.principal = who
        return who

    Caller = Annotated[Principal, Depends(caller)]

    def allow(
        request: Request,
        who: Principal,
        verb: Verb,
        provider: str,
        service: str = "*",
        resource: str = "*",
    ) -> None:
        """403 unless allowed (404 for another tenant's resource: its existence is hidden)."""
        source = request.client.host if request.client else ""
        decision = access.authorize(who, verb, provider, service, resource, source=source)
        if not decision.allowed:
            if decision.reason == "another tenant's resource":
                raise HTTPException(404, f"no provider {provider!r}")
            raise HTTPException(403, f"not allowed: {verb} {provider}/{service}/{resource}")

    @app.get("/api/v1/health", tags=["platform"])
    def get_health() -> dict[str, Any]:
        """Liveness and readiness: 200 with ``status: ok`` when storage answers."""
        info = {"status": "ok", "version": __version__}
        if health is not None:
            info.update(health())
        return info

    @app.get("/api/v1/providers", tags=["twin"])
    def list_providers(request: Request, who: Caller) -> list[dict[str, Any]]:
        """The providers (devices) the caller may DESCRIBE, with metadata and health."""
        source = request.client.host if request.client else ""
        return [
            _provider(p)
            for p in twin.providers()
            if access.authorize(who, Verb.DESCRIBE, p.name, source=source, record=False).allowed
        ]

    @app.get("/api/v1/providers/{provider}", tags=["twin"])
    def get_provider(request: Request, provider: str, who: Caller) -> dict[str, Any]:
        """One provider with its services; each resource's latest value where the caller
        may GET it (else only its unit)."""
        allow(request, who, Verb.DESCRIBE, provider)
        info = twin.provider(provider)
        if info is None:
            raise HTTPException(404, f"no provider {provider!r}")
        data = _provider(info)
        source = request.client.host if request.client else ""
        services: dict[str, dict[str, Any]] = {}
        for r in info.resources:
            entry: dict[str, Any] = {"unit": r.unit}
            readable = access.authorize(
                who, Verb.GET, provider, r.service, r.resource, source=source, record=False
            )
            if readable.allowed:
                entry.update(value=r.value, timestamp=r.timestamp)
            services.setdefault(r.service, {})[r.resource] = entry
        data["services"] = services
        return data

    @app.get("/api/v1/providers/{provider}/services/{service}/resources/{resource}", tags=["twin"])
    def get_resource(
        request: Request, provider: str, service: str, resource: str, who: Caller
    ) -> dict[str, Any]:
        """The latest value of one resource, with its unit and timestamp."""
        allow(request, who, Verb.GET, provider, service, resource)
        value = twin.latest(provider, service, resource)
        if value is None:
            raise HTTPException(404, f"no resource {provider}/{service}/{resource}")
        return asdict(value)

    @app.get(
        "/api/v1/providers/{provider}/services/{service}/resources/{resource}/history",
        tags=["twin"],
    )
    def get_history(
        request: Request,
        provider: str,
        service: str,
        resource: str,
        who: Caller,
        since: Annotated[float | None, Query(description="epoch seconds, inclusive")] = None,
        until: Annotated[float | None, Query(description="epoch seconds, exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> dict[str, Any]:
        """Stored values oldest first, ``since <= timestamp < until``, at most ``limit``."""
        if since is not None and until is not None and until < since:
            raise HTTPException(422, "until must not be before since")
        allow(request, who, Verb.GET, provider, service, resource)
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
        request: Request,
        who: Caller,
        reason: Annotated[str | None, Query(max_length=64)] = None,
        device: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        """Security events, newest first, optionally only one ``reason`` and/or ``device``."""
        allow(request, who, Verb.GET, PLATFORM, "security", "events")
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
        try:
            body = await read_capped(request, MAX_ENVELOPE_BYTES)
        except BodyTooLarge as exc:  # ingest refuses it and records the security event
            await run_in_threadpool(ingestor.process, [Incoming(exc.read, None, source)])
            return _refuse(413, "oversized", f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
        # In a worker thread: a durable commit must not stall every other request.
        outcome = (
            await run_in_threadpool(ingestor.process, [Incoming(body, None, source)])
        )[0]
        if outcome.rejected is not None:
            reason = outcome.rejected.reason
            return _refuse(_STATUS.get(reason, 400), reason.value, outcome.rejected.detail)
        status = "duplicate" if outcome.stored == 0 and outcome.duplicates else "stored"
        return JSONResponse(
            {"status": status, "stored": outcome.stored, "duplicates": outcome.duplicates}
        )

    @app.get("/metrics", tags=["platform"], include_in_schema=True)
    def get_metrics(request: Request, who: Caller) -> Response:
        """Prometheus metrics (operators and admins)."""
        allow(request, who, Verb.GET, PLATFORM, "metrics", "prometheus")
        if metrics is None:
            raise HTTPException(404, "metrics are not enabled")
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    app.state.access = app_access  # the enforcement point, for tools and tests
    app.state.events = events  # where msec.web.bodies records refused bodies
    # For apps adding API routes (msec.apps.*): the same authentication and decisions.
    app.state.api_caller = caller
    app.state.api_allow = allow
    if trust is not None:
        add_log_routes(app, trust, caller, allow)
    add_access_routes(app, access, events, caller, allow, principals, policies)
    if actuator is not None and registry is not None:
        add_act_routes(app, caller, allow, actuator, twin, registry)
    if consent is not None and principals is not None and registry is not None:
        known = registry

        def subject_of(name: str) -> str | None:
            device = known.get(name)
            return device.subject if device is not None else None

        add_consent_routes(app, app_access, caller, consent, principals, twin, subject_of)
    if ui is not None:
        add_pages(app, ui, trust)
    return app


def add_pages(app: FastAPI, ui: WebUi, trust: TrustLog | None) -> None:
    """The foundation of the pages for people: static files, login, proofs, error pages."""
    app.mount("/static", StaticFiles(packages=[("msec.web", "static")]), name="static")
    add_ui_routes(app, ui)
    if trust is not None:
        add_proof_pages(app, ui, trust)

    @app.exception_handler(StarletteHTTPException)
    async def errors(request: Request, exc: StarletteHTTPException) -> Response:
        # The API answers JSON; pages answer pages.
        path = request.url.path
        if path.startswith(("/api/", "/metrics", "/docs", "/redoc", "/openapi")) or (
            "text/html" not in request.headers.get("accept", "")
            and exc.status_code not in (301, 302, 303, 307)
        ):
            return await http_exception_handler(request, exc)
        return await run_in_threadpool(
            html_error, ui, request, exc.status_code, str(exc.detail), exc.headers
        )


def static_access(tokens: Mapping[str, str], events: EventLog) -> AccessService:
    """An :class:`AccessService` knowing only ``tokens`` (token -> role), for tests and tools
    that run the API without a principal store: each token is a service principal of the
    ``default`` tenant with that role."""
    static = {
        token: Principal(f"service:{role}", PrincipalKind.SERVICE, "default", frozenset({role}))
        for token, role in tokens.items()
    }
    return AccessService(
        PolicyEngine(BUILTIN_POLICIES),
        tokens=None,
        audit=None,
        events=events,
        resources=lambda provider: None,
        static_tokens=static,
    )


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
