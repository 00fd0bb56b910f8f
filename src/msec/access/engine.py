"""Policy decisions on the twin: an index over provider/service/resource, not a scan.

Evaluation of one request ``(principal, verb, provider/service/resource)``:

1. **Tenants are walls.** A principal of one tenant never gets anything on another
   tenant's resources, whatever the policies say (platform administrators, whose tenant is
   ``None`` and who hold the ``admin`` role, are the only exception).
2. **Explicit policies.** The index holds, per verb, the policies of each exact-or-``*``
   combination of the three pattern segments: at most eight dictionary lookups find every
   policy that can match. Among those that apply to the principal and whose conditions hold,
   the highest priority decides; at equal priority a deny wins.
3. **Default profile.** Without a matching policy, sensiNact's access levels decide: each verb
   needs a minimum :class:`~msec.access.model.AccessLevel` (a stricter one on sensitive
   resources); the principal's level on the resource is computed from its tenant, roles and
   data subject.

Pure and thread-safe for reads: adding or removing policies swaps nothing in place that a
concurrent decision is iterating (lists are replaced, not mutated).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from msec.access.model import (
    AccessLevel,
    Decision,
    Effect,
    Policy,
    Principal,
    Verb,
)

__all__ = ["DEFAULT_PROFILE", "SENSITIVE_PROFILE", "PolicyEngine", "ResourceInfo"]

DEFAULT_PROFILE: Final[Mapping[Verb, AccessLevel]] = {
    Verb.DESCRIBE: AccessLevel.AUTHENTICATED,
    Verb.GET: AccessLevel.AUTHENTICATED,
    Verb.SUBSCRIBE: AccessLevel.AUTHENTICATED,
    Verb.SET: AccessLevel.OWNER,
    Verb.ACT: AccessLevel.OWNER,
}
"""The level each verb needs on an ordinary resource when no policy matches."""

SENSITIVE_PROFILE: Final[Mapping[Verb, AccessLevel]] = {
    Verb.DESCRIBE: AccessLevel.AUTHENTICATED,
    Verb.GET: AccessLevel.OWNER,
    Verb.SUBSCRIBE: AccessLevel.OWNER,
    Verb.SET: AccessLevel.OWNER,
    Verb.ACT: AccessLevel.OWNER,
}
"""The same for a sensitive resource (personal data): reading it needs the owner level."""

#: Roles that are the owner of every resource of their tenant (they run it).
OWNER_ROLES: Final = frozenset({"operator"})
ADMIN_ROLE: Final = "admin"


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """What a decision needs to know about the resource: its tenant, data subject, and
    whether it holds personal data."""

    tenant: str
    subject: str | None = None
    sensitive: bool = False


ConsentCheck = Callable[[Principal, str, Verb], bool]
"""``(principal, provider, verb) -> bool``: does an active consent grant let it through?"""


class PolicyEngine:
    """Holds the policies and decides requests. See the module docstring for the rules."""

    def __init__(
        self,
        policies: Iterable[Policy] = (),
        *,
        consent: ConsentCheck | None = None,
        clock: Callable[[], float] = time.time,
        profile: Mapping[Verb, AccessLevel] = DEFAULT_PROFILE,
        sensitive_profile: Mapping[Verb, AccessLevel] = SENSITIVE_PROFILE,
    ) -> None:
        self._index: dict[tuple[Verb, str, str, str], list[Policy]] = {}
        self._by_id: dict[str, Policy] = {}
        self._lock = threading.Lock()
        self.consent = consent
        self._clock = clock
        self._profile = dict(profile)
        self._sensitive_profile = dict(sensitive_profile)
        for policy in policies:
            self.add(policy)

    # -- the policy set -----------------------------------------------------------------------

    def add(self, policy: Policy) -> None:
        """Add (or replace, by id) a policy."""
        with self._lock:
            if policy.id in self._by_id:
                self._remove(policy.id)
            self._by_id[policy.id] = policy
            for verb in policy.verbs:
                key = (verb, policy.provider, policy.service, policy.resource)
                bucket = [*self._index.get(key, ()), policy]
                # Best first: priority, then deny before allow, then id (deterministic).
                bucket.sort(key=_rank)
                self._index[key] = bucket

    def remove(self, policy_id: str) -> bool:
        """Remove a policy; False if there was none with that id."""
        with self._lock:
            return self._remove(policy_id)

    def _remove(self, policy_id: str) -> bool:
        policy = self._by_id.pop(policy_id, None)
        if policy is None:
            return False
        for verb in policy.verbs:
            key = (verb, policy.provider, policy.service, policy.resource)
            bucket = [p for p in self._index.get(key, ()) if p.id != policy_id]
            if bucket:
                self._index[key] = bucket
            else:
                self._index.pop(key, None)
        return True

    def policies(self) -> list[Policy]:
        return sorted(self._by_id.values(), key=lambda p: p.id)

    def __len__(self) -> int:
        return len(self._by_id)

    # -- deciding ------------------------------------------------------------------------------

    def level(self, principal: Principal, info: ResourceInfo) -> AccessLevel:
        """The principal's access level on a resource of ``info``."""
        if not principal.authenticated:
            return AccessLevel.ANONYMOUS
        if principal.tenant is None and ADMIN_ROLE in principal.roles:
            return AccessLevel.ADMIN  # a platform administrator
        if principal.tenant != info.tenant:
            return AccessLevel.ANONYMOUS
        if ADMIN_ROLE in principal.roles:
            return AccessLevel.ADMIN
        if (principal.subject is not None and principal.subject == info.subject) or (
            OWNER_ROLES & principal.roles
        ):
            return AccessLevel.OWNER
        return AccessLevel.AUTHENTICATED

    def decide(
        self,
        principal: Principal,
        verb: Verb,
        provider: str,
        service: str = "*",
        resource: str = "*",
        info: ResourceInfo | None = None,
    ) -> Decision:
        """Decide one request. ``service``/``resource`` ``"*"`` ask about the whole provider
        (or service); ``info`` describes the resource (default: the principal's tenant,
        no subject, not sensitive)."""
        if info is None:
            info = ResourceInfo(principal.tenant or "default")
        sensitive = info.sensitive
        if (
            principal.authenticated
            and principal.tenant is not None
            and principal.tenant != info.tenant
        ):
            return Decision(False, "another tenant's resource", sensitive=sensitive)
        best: Policy | None = None
        index = self._index
        for key in (
            (verb, provider, service, resource),
            (verb, provider, service, "*"),
            (verb, provider, "*", resource),
            (verb, provider, "*", "*"),
            (verb, "*", service, resource),
            (verb, "*", service, "*"),
            (verb, "*", "*", resource),
            (verb, "*", "*", "*"),
        ):
            bucket = index.get(key)
            if not bucket:
                continue
            for policy in bucket:
                if best is not None and _rank(policy) >= _rank(best):
                    break  # sorted best first: nothing later in this bucket can win
                if self._applies(policy, principal, provider, verb, info):
                    best = policy
                    break
        if best is not None:
            allowed = best.effect is Effect.ALLOW
            return Decision(allowed, f"policy {best.id}", best.id, sensitive)
        needed = (self._sensitive_profile if sensitive else self._profile)[verb]
        level = self.level(principal, info)
        if level >= needed:
            return Decision(True, f"default: {level.name.lower()} may {verb}", None, sensitive)
        return Decision(
            False, f"default: {verb} needs {needed.name.lower()}", None, sensitive
        )

    def _applies(
        self, policy: Policy, principal: Principal, provider: str, verb: Verb, info: ResourceInfo
    ) -> bool:
        if (
            (policy.principals or policy.roles)
            and principal.id not in policy.principals
            and not (policy.roles & principal.roles)
        ):
            return False
        if policy.tenant is not None:
            wanted = principal.tenant if policy.tenant == "$principal" else policy.tenant
            if wanted is None or info.tenant != wanted:
                return False
        if policy.owner and (principal.subject is None or principal.subject != info.subject):
            return False
        if policy.consent and (self.consent is None or not self.consent(principal, provider, verb)):
            return False
        if policy.hours is not None:
            start, end = policy.hours
            hour = (self._clock() % 86400) / 3600
            inside = start <= hour < end if start <= end else hour >= start or hour < end
            if not inside:
                return False
        return True


def _rank(policy: Policy) -> tuple[int, int, str]:
    """Sort key, best first: higher priority, then deny, then id."""
    return (-policy.priority, 0 if policy.effect is Effect.DENY else 1, policy.id)
