"""Consent over HTTP: delegation grants and informed-consent notices.

- ``POST /api/v1/consent/grants`` ``{"grantee", "scope", "verbs"?, "expires_at"?}``: a data
  subject (a principal with a ``subject``) lets a grantee read their devices. An operator or
  admin of the tenant may grant **on the subject's behalf** with ``"subject"`` and
  ``"evidence"`` (the recorded paper consent). The scope (a device name, or a prefix ending in
  ``*``) may only cover the subject's own devices.
- ``GET /api/v1/consent/grants``: the grants the caller gave (as subject) or received;
  operators and admins may add ``?subject=``.
- ``DELETE /api/v1/consent/grants/{id}``: revoked by the subject, the grantee (giving it
  up), or an operator or admin; in force at the very next request.
- ``GET /api/v1/consent/notices/{purpose}?language=``: the notice to show (public: it is
  shown before registration). ``POST /api/v1/consent/notices/{purpose}/accept``
  ``{"notice": id}`` records exactly which version was accepted;
  ``POST /api/v1/consent/notices/{purpose}/withdraw``; ``GET .../status``.

Every refusal is recorded like any access denial (audit trail and ``access_denied`` event).
"""

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request

from msec.access.consent import ConsentError, Grant, Notice, SqlConsent, scope_matches
from msec.access.model import Principal, Verb
from msec.access.principals import SqlPrincipals
from msec.access.service import AccessService
from msec.twin.base import Twin
from msec.web.bodies import read_json_object

__all__ = ["add_consent_routes"]

_MAX_BODY = 4096
_MANAGERS = frozenset({"operator", "admin"})


def add_consent_routes(
    app: FastAPI,
    access: AccessService,
    caller: Callable[..., Any],
    consent: SqlConsent,
    principals: SqlPrincipals,
    twin: Twin,
    subject_of: Callable[[str], str | None],
) -> None:
    """Add the consent routes; ``subject_of(provider)`` names a device's data subject."""
    Caller = Annotated[Principal, Depends(caller)]

    def refuse(request: Request, who: Principal, target: str, reason: str) -> HTTPException:
        source = request.client.host if request.client else ""
        access.refuse(who, Verb.SET, f"_platform/consent/{target}", reason, source=source)
        return HTTPException(403, reason)

    def manager(who: Principal) -> bool:
        return bool(_MANAGERS & who.roles)

    @app.post("/api/v1/consent/grants", tags=["consent"], status_code=201)
    async def post_grant(request: Request, who: Caller) -> dict[str, Any]:
        """Grant a principal access to the subject's devices (see the module docstring)."""
        body = await _json(request)
        subject = body.get("subject") or who.subject
        on_behalf = subject != who.subject
        if not subject or (on_behalf and not manager(who)):
            raise refuse(request, who, "grants", "only a data subject, or an operator on their "
                         "behalf, may grant access")  # fmt: skip
        grantee = body.get("grantee")
        target = principals.principal(grantee) if isinstance(grantee, str) else None
        if target is None or target.tenant != who.tenant:
            raise HTTPException(400, "grantee must be an active principal of your tenant")
        scope = body.get("scope")
        if not isinstance(scope, str) or not _own_scope(scope, subject, twin, subject_of):
            raise refuse(request, who, "grants", "the scope must cover only the subject's devices")
        try:
            grant = consent.grant(
                subject,
                target.id,
                scope=scope,
                verbs=body.get("verbs") or ("GET", "DESCRIBE", "SUBSCRIBE"),
                granted_by=who.id,
                on_behalf=on_behalf,
                evidence=body.get("evidence"),
                expires_at=body.get("expires_at"),
            )
        except (ConsentError, ValueError, TypeError) as exc:
            raise HTTPException(400, str(exc)) from None
        return _grant(grant)

    @app.get("/api/v1/consent/grants", tags=["consent"])
    def get_grants(
        request: Request,
        who: Caller,
        subject: Annotated[str | None, Query(max_length=100)] = None,
    ) -> dict[str, Any]:
        """Grants given by the caller (as data subject) and received by the caller."""
        if subject is not None and subject != who.subject and not manager(who):
            raise refuse(request, who, "grants", "only operators list another subject's grants")
        given = consent.grants_of(subject or who.subject) if (subject or who.subject) else []
        received = consent.active(who.id)
        return {"given": [_grant(g) for g in given], "received": [_grant(g) for g in received]}

    @app.delete("/api/v1/consent/grants/{grant_id}", tags=["consent"])
    def delete_grant(request: Request, grant_id: str, who: Caller) -> dict[str, Any]:
        """Revoke a grant: by its subject, its grantee, or an operator; at once."""
        grant = consent.get_grant(grant_id)
        if grant is None:
            raise HTTPException(404, "no such grant")
        if who.subject != grant.subject and who.id != grant.grantee and not manager(who):
            raise refuse(request, who, f"grants/{grant_id}", "not your grant")
        return _grant(consent.revoke(grant_id, by=who.id))

    @app.get("/api/v1/consent/notices/{purpose}", tags=["consent"])
    def get_notice(
        purpose: str, language: Annotated[str, Query(max_length=8)] = "en"
    ) -> dict[str, Any]:
        """The informed-consent notice to show for ``purpose`` (latest version)."""
        notice = consent.latest_notice(purpose, language) if len(purpose) <= 64 else None
        if notice is None:
            raise HTTPException(404, f"no notice for {purpose!r} in {language!r}")
        return _notice(notice)

    @app.post("/api/v1/consent/notices/{purpose}/accept", tags=["consent"], status_code=201)
    async def post_accept(request: Request, purpose: str, who: Caller) -> dict[str, Any]:
        """Record that the caller accepted exactly this notice (``{"notice": id}``)."""
        body = await _json(request)
        notice_id = body.get("notice")
        if not isinstance(notice_id, str) or not notice_id.startswith(f"{purpose}/"):
            raise HTTPException(400, "notice must be the id of a notice of this purpose")
        try:
            accepted = consent.accept(who.id, notice_id)
        except ConsentError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"notice": accepted.notice_id, "accepted_at": accepted.accepted_at}

    @app.post("/api/v1/consent/notices/{purpose}/withdraw", tags=["consent"])
    def post_withdraw(purpose: str, who: Caller) -> dict[str, Any]:
        """Withdraw the caller's consent for ``purpose``."""
        withdrawn = consent.withdraw(who.id, purpose) if len(purpose) <= 64 else None
        return {"withdrawn": withdrawn is not None}

    @app.get("/api/v1/consent/notices/{purpose}/status", tags=["consent"])
    def get_status(purpose: str, who: Caller) -> dict[str, Any]:
        """Whether the caller consented for ``purpose``, and whether a newer notice awaits."""
        if len(purpose) > 64:
            raise HTTPException(404, "no such purpose")
        return {
            "consented": consent.has_consented(who.id, purpose),
            "needs_renewal": consent.needs_renewal(who.id, purpose),
        }


def _own_scope(
    scope: str, subject: str, twin: Twin, subject_of: Callable[[str], str | None]
) -> bool:
    """Whether every existing device the scope covers records ``subject`` (at least one)."""
    covered = [p.name for p in twin.providers() if scope_matches(scope, p.name)]
    return bool(covered) and all(subject_of(name) == subject for name in covered)


async def _json(request: Request) -> dict[str, Any]:
    return await read_json_object(request, _MAX_BODY, empty={})


def _grant(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "subject": grant.subject,
        "grantee": grant.grantee,
        "scope": grant.scope,
        "verbs": sorted(str(v) for v in grant.verbs),
        "granted_by": grant.granted_by,
        "on_behalf": grant.on_behalf,
        "created": grant.created,
        "expires_at": grant.expires_at,
        "revoked_at": grant.revoked_at,
        "active": grant.in_force(time.time()),
    }


def _notice(notice: Notice) -> dict[str, Any]:
    return {
        "id": notice.id,
        "purpose": notice.purpose,
        "version": notice.version,
        "language": notice.language,
        "controller": notice.controller,
        "purpose_text": notice.purpose_text,
        "legal_basis": notice.legal_basis,
        "recipients": notice.recipients,
        "rights": notice.rights,
        "text": notice.text,
    }
