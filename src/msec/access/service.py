"""The access layer as the API uses it: who is asking, may they, and what is recorded.

:class:`AccessService` ties the pieces together for one request:

- :meth:`authenticate` turns a bearer token into a :class:`~msec.access.model.Principal`
  (through the principal store; a failure is a security event, never a detail for the
  client);
- :meth:`authorize` asks the :class:`~msec.access.engine.PolicyEngine`, with what the
  platform knows of the resource (its tenant, data subject, sensitivity); records every
  decision on a sensitive resource and every denial in the audit trail, and every denial as
  an ``access_denied`` security event (both are transparency-log leaves);
- :meth:`throttle` applies the per-principal rate limit.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from msec.access.audit import SqlAudit
from msec.access.engine import PolicyEngine, ResourceInfo
from msec.access.model import ANONYMOUS, Decision, Principal, Verb
from msec.access.policies import PolicySync
from msec.access.ratelimit import RateLimiter
from msec.core.errors import MsecError
from msec.guard.base import EventLog

__all__ = ["AccessDenied", "AccessService", "NotAuthenticated", "TokenStore"]


#: Providers whose :class:`ResourceInfo` the service keeps (for ``info_ttl`` seconds).
_INFO_CACHE = 100_000


class NotAuthenticated(MsecError):
    """No valid credentials: the API answers 401; ``reason`` is for the security log only."""

    def __init__(self, message: str, reason: str = "missing") -> None:
        super().__init__(message)
        self.reason = reason


class AccessDenied(MsecError):
    """The principal may not do this: the API answers 403 (or 404 to hide existence)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class TokenStore(Protocol):
    """What the service needs from the principal store."""

    def authenticate_token(self, token: str) -> Principal: ...


ResourceLookup = Callable[[str], ResourceInfo | None]
"""``provider -> ResourceInfo`` (tenant, subject; sensitivity is per resource, see below)."""
ResourcesLookup = Callable[[Iterable[str]], Mapping[str, ResourceInfo | None]]
"""The same for many providers at once (a few queries for a page of them)."""


class AccessService:
    """One installation's enforcement point. Thread-safe."""

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        tokens: TokenStore | None,
        audit: SqlAudit | None,
        events: EventLog,
        resources: ResourceLookup,
        resources_many: ResourcesLookup | None = None,
        sensitive: Callable[[str, str, str], bool] = lambda p, s, r: False,
        static_tokens: Mapping[str, Principal] | None = None,
        limiter: RateLimiter | None = None,
        info_ttl: float = 5.0,
        sync: PolicySync | None = None,
    ) -> None:
        self.engine = engine
        self._tokens = tokens
        self.audit = audit
        self._events = events
        self._resources = resources
        self._resources_many = resources_many
        self._sensitive = sensitive
        self._static = dict(static_tokens or {})
        self.limiter = limiter
        #: Keeps the engine in step with the stored policies (checked at most once a second).
        self.sync = sync
        self._ttl = info_ttl
        self._info: dict[str, tuple[float, ResourceInfo | None]] = {}
        self._lock = threading.Lock()

    # -- who -----------------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal:
        """The principal a bearer token stands for; ANONYMOUS for no token.

        Raises :class:`NotAuthenticated` (its ``reason``: malformed, unknown, expired,
        revoked, disabled) for a token that does not pass; the caller records the security
        event, with what was asked.
        """
        if not token:
            return ANONYMOUS
        for known, principal in self._static.items():
            if _same(token, known):
                return principal
        if self._tokens is not None:
            try:
                return self._tokens.authenticate_token(token)
            except MsecError as exc:
                reason = str(getattr(exc, "reason", "") or "invalid")
                raise NotAuthenticated("invalid bearer token", reason) from None
        raise NotAuthenticated("invalid bearer token", "unknown")

    def throttle(self, principal: Principal, source: str) -> float:
        """0.0, or the seconds this principal (or anonymous client) must wait (429)."""
        if self.limiter is None:
            return 0.0
        key = principal.id if principal.authenticated else f"anonymous:{source}"
        return self.limiter.hit(key)

    # -- may they ------------------------------------------------------------------------------

    def resource_info(self, provider: str) -> ResourceInfo | None:
        now = time.monotonic()
        cached = self._info.get(provider)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        info = self._resources(provider)
        self._remember(now, {provider: info})
        return info

    def prefetch(self, providers: Iterable[str]) -> None:
        """Look up, in one batch, what :meth:`authorize` will need for each of ``providers``
        that is not cached: a list of a thousand homes' alarms then costs a few queries, not
        two per home (each of which waits for the interpreter lock again on a busy
        server). Without a batched lookup, does nothing."""
        if self._resources_many is None:
            return
        now = time.monotonic()
        info, ttl = self._info, self._ttl
        stale = {p for p in providers if (c := info.get(p)) is None or now - c[0] >= ttl}
        if stale:
            self._remember(now, self._resources_many(stale))

    def _remember(self, now: float, infos: Mapping[str, ResourceInfo | None]) -> None:
        with self._lock:
            if len(self._info) + len(infos) > _INFO_CACHE:
                self._info.clear()
            for provider, info in infos.items():
                self._info[provider] = (now, info)

    def authorize(
        self,
        principal: Principal,
        verb: Verb,
        provider: str,
        service: str = "*",
        resource: str = "*",
        *,
        source: str,
        record: bool = True,
        personal: bool = False,
    ) -> Decision:
        """Decide, and record what must be recorded. An unknown provider is decided as a
        resource of the principal's own tenant (so that the answer says nothing about
        whether it exists). ``personal``: the caller knows the resource is personal data
        whatever the registry says (a person's care alarms, even of a home whose devices
        are not, or no longer, registered)."""
        if self.sync is not None:
            self.sync.refresh()
        info = self.resource_info(provider) or ResourceInfo(principal.tenant or "default")
        # Personal data: a device that records a person (it has a data subject), a resource
        # configured sensitive, or one the caller says is.
        if not info.sensitive and (
            personal
            or (service != "*" and resource != "*" and self._sensitive(provider, service, resource))
        ):
            info = ResourceInfo(info.tenant, info.subject, True)
        decision = self.engine.decide(principal, verb, provider, service, resource, info)
        if record and (decision.sensitive or not decision.allowed):
            target = f"{provider}/{service}/{resource}"
            if self.audit is not None:
                self.audit.record(principal, verb, target, decision, source=source)
            if not decision.allowed:
                self._events.warn(
                    "access_denied",
                    f"{principal.id} {verb} {target}: {decision.reason}",
                    source=source,
                )
        return decision

    def refuse(
        self, principal: Principal, verb: Verb, target: str, reason: str, *, source: str
    ) -> Decision:
        """Record a refusal decided outside the engine (e.g. by the consent rules) exactly
        like the engine's own: audit trail and ``access_denied`` event."""
        decision = Decision(False, reason)
        if self.audit is not None:
            self.audit.record(principal, verb, target, decision, source=source)
        self._events.warn("access_denied", f"{principal.id} {verb} {target}: {reason}",
                          source=source)  # fmt: skip
        return decision

    def require(
        self,
        principal: Principal,
        verb: Verb,
        provider: str,
        service: str = "*",
        resource: str = "*",
        *,
        source: str,
    ) -> Decision:
        """:meth:`authorize`, raising :class:`AccessDenied` when not allowed."""
        decision = self.authorize(principal, verb, provider, service, resource, source=source)
        if not decision.allowed:
            raise AccessDenied(decision)
        return decision


def _same(offered: str, known: str) -> bool:
    return hmac.compare_digest(offered.encode(), known.encode())
