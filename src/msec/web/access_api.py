"""Access routes: OAuth2 password flow, token revocation, who am I, and the audit trail.

``POST /api/v1/auth/token`` takes ``application/x-www-form-urlencoded`` ``grant_type=password``,
``username``, ``password`` (and optional ``expires_in``, seconds) and answers RFC 6749's
``{"access_token", "token_type": "bearer", "expires_in"}``. Every failure is the same 401
``invalid_grant`` (unknown user, wrong password, locked or disabled account alike) and a
security event with the real reason. ``POST /api/v1/auth/revoke`` (RFC 7009 style) revokes
the caller's own token, or with ``token=`` any token of the caller's.
"""

import json
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from msec.access.builtin import PLATFORM
from msec.access.model import ANONYMOUS, Principal, Verb
from msec.access.policies import PolicyError, SqlPolicies, policy_from_json, policy_to_json
from msec.access.principals import TOKEN_PREFIX, AuthError, SqlPrincipals
from msec.access.service import AccessService
from msec.guard.base import EventLog
from msec.web.bodies import read_body

_MAX_FORM = 4096
_DEFAULT_TTL_S = 3600
_MAX_TTL_S = 30 * 86400


def add_access_routes(
    app: FastAPI,
    access: AccessService,
    events: EventLog,
    caller: Callable[..., Any],
    allow: Callable[..., None],
    principals: SqlPrincipals | None,
    policies: SqlPolicies | None = None,
) -> None:
    """Add ``/api/v1/auth/...`` (with a principal store), ``/api/v1/audit...`` and, with a
    policy store, ``/api/v1/policies``."""
    Caller = Annotated[Principal, Depends(caller)]

    if policies is not None:

        @app.get("/api/v1/policies", tags=["access"])
        def get_policies(request: Request, who: Caller) -> list[dict[str, Any]]:
            """The installation's stored policies (admins)."""
            allow(request, who, Verb.GET, PLATFORM, "policies", "all")
            return [policy_to_json(p) for p in policies.active()]

        @app.post("/api/v1/policies", tags=["access"], status_code=201)
        async def post_policy(request: Request, who: Caller) -> dict[str, Any]:
            """Add a policy (JSON, see docs/access-control.md); in force at once (admins)."""
            allow(request, who, Verb.SET, PLATFORM, "policies", "all")
            body = await read_body(request, _MAX_FORM, what="policy")
            try:
                policy = policies.add(policy_from_json(json.loads(body)), by=who.id)
            except (ValueError, PolicyError) as exc:
                raise HTTPException(400, str(exc)) from None
            if access.sync is not None:
                access.sync.refresh(force=True)
            return policy_to_json(policy)

        @app.delete("/api/v1/policies/{policy_id}", tags=["access"])
        def delete_policy(request: Request, policy_id: str, who: Caller) -> dict[str, Any]:
            """Remove a policy; in force at once (admins)."""
            allow(request, who, Verb.SET, PLATFORM, "policies", "all")
            if not policies.remove(policy_id, by=who.id):
                raise HTTPException(404, f"no active policy {policy_id!r}")
            if access.sync is not None:
                access.sync.refresh(force=True)
            return {"removed": policy_id}

    @app.get("/api/v1/auth/me", tags=["access"])
    def get_me(who: Caller) -> dict[str, Any]:
        """Who the bearer token stands for: id, kind, tenant, roles, data subject."""
        return {
            "id": who.id,
            "kind": str(who.kind),
            "tenant": who.tenant,
            "roles": sorted(who.roles),
            "subject": who.subject,
        }

    if principals is not None:

        @app.post("/api/v1/auth/token", tags=["access"])
        async def post_token(request: Request) -> JSONResponse:
            """OAuth2 resource-owner password flow: a bearer token for a user."""
            source = request.client.host if request.client else ""
            form = await _form(request)
            if form.get("grant_type") != "password":
                return _oauth_error(400, "unsupported_grant_type", "grant_type must be password")
            username, password = form.get("username", ""), form.get("password", "")
            ttl = _ttl(form.get("expires_in"))
            if ttl is None:
                return _oauth_error(400, "invalid_request", "expires_in: 60..2592000 seconds")
            limited = access.throttle(ANONYMOUS, source)  # per client address
            if limited:
                return _oauth_error(429, "slow_down", "too many attempts", retry=limited)
            try:
                who = principals.authenticate_password(username, password)
            except AuthError as exc:
                events.warn(
                    "login_failed",
                    f"password login for {username[:64]!r} refused",
                    source=source,
                    why=str(getattr(exc, "reason", "invalid")),
                )
                return _oauth_error(401, "invalid_grant", "invalid username or password")
            except ValueError:
                return _oauth_error(401, "invalid_grant", "invalid username or password")
            token, _ = principals.issue_token(who.id, ttl_s=ttl, label="oauth2 password")
            return JSONResponse(
                {"access_token": token, "token_type": "bearer", "expires_in": int(ttl)},
                headers={"Cache-Control": "no-store"},
            )

        @app.post("/api/v1/auth/revoke", tags=["access"])
        async def post_revoke(request: Request, who: Caller) -> dict[str, Any]:
            """Revoke the caller's own bearer token, or (``token=...``) another of theirs."""
            form = await _form(request)
            header = request.headers.get("authorization", "")
            token = form.get("token") or header.partition(" ")[2]
            token_id = _token_id(token)
            info = principals.token_info(token_id) if token_id else None
            if info is None or info.principal_id != who.id:
                # RFC 7009: an unknown token is not an error; never reveal others' tokens.
                return {"revoked": False}
            return {"revoked": principals.revoke_token(token_id)}

    @app.get("/api/v1/audit", tags=["access"])
    def get_audit(
        request: Request,
        who: Caller,
        decision: Annotated[str | None, Query(pattern="^(allow|deny)$")] = None,
        principal: Annotated[str | None, Query(max_length=100)] = None,
        since: Annotated[float | None, Query(description="epoch seconds, inclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        """Recorded decisions (every denial, every decision on a sensitive resource), newest
        first; admins only."""
        allow(request, who, Verb.GET, PLATFORM, "audit", "entries")
        if access.audit is None:
            return []
        allowed = None if decision is None else decision == "allow"
        entries = access.audit.query(allowed=allowed, principal=principal, since=since, limit=limit)
        return [entry.as_dict() for entry in entries]

    @app.get("/api/v1/audit/counters", tags=["access"])
    def get_audit_counters(request: Request, who: Caller) -> dict[str, int]:
        """For the KPI board: unauthorised attempts and how many were detected (recorded as
        security events), decisions recorded, sensitive reads allowed."""
        allow(request, who, Verb.GET, PLATFORM, "audit", "counters")
        counts = events.counts()
        recorded = access.audit.counters() if access.audit is not None else {}
        attempts = counts.get("access_denied", 0) + counts.get("unauthorized", 0)
        return {
            "attempts": attempts,
            "detections": attempts,
            "denied": recorded.get("denied", 0),
            "decisions": recorded.get("decisions", 0),
            "sensitive_allowed": recorded.get("sensitive_allowed", 0),
            "login_failed": counts.get("login_failed", 0),
        }


async def _form(request: Request) -> dict[str, str]:
    body = await read_body(request, _MAX_FORM, what="form")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed form") from None
    return {key: values[0] for key, values in fields.items()}


def _ttl(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return float(_DEFAULT_TTL_S)
    if not raw.isdigit() or len(raw) > 8 or not 60 <= int(raw) <= _MAX_TTL_S:
        return None
    return float(raw)


def _token_id(token: str) -> str | None:
    parts = token.split("_", 2)  # the secret itself may hold "_"
    if len(parts) != 3 or f"{parts[0]}_" != TOKEN_PREFIX:
        return None
    return parts[1]


def _oauth_error(status: int, error: str, description: str, *, retry: float = 0) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if retry:
        headers["Retry-After"] = str(max(1, round(retry)))
    return JSONResponse(
        {"error": error, "error_description": description, "detail": description},
        status_code=status,
        headers=headers,
    )
