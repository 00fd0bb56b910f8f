"""The access layer's vocabulary: principals, roles, verbs, policies and decisions.

Pure data, no I/O. Modelled on Eclipse sensiNact's access control: five verbs on the twin's
``provider/service/resource`` tree, and four access levels (anonymous, authenticated, owner,
admin) as defaults that explicit policies refine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Final

__all__ = [
    "ANONYMOUS",
    "ROLES",
    "TENANTS",
    "AccessLevel",
    "Decision",
    "Effect",
    "Policy",
    "Principal",
    "PrincipalKind",
    "Verb",
]


class Verb(StrEnum):
    """sensiNact's verbs on a provider, service or resource."""

    DESCRIBE = "DESCRIBE"  #: see that it exists, and its metadata
    GET = "GET"  #: read values (latest and history)
    SET = "SET"  #: write a value
    ACT = "ACT"  #: send a command to the device
    SUBSCRIBE = "SUBSCRIBE"  #: receive values as they arrive


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class AccessLevel(IntEnum):
    """sensiNact's access levels, lowest first: what a principal is, relative to a resource."""

    ANONYMOUS = 0  #: nobody identified
    AUTHENTICATED = 1  #: any signed-in principal
    OWNER = 2  #: the resource's owner (its data subject, or the tenant's operator)
    ADMIN = 3  #: an administrator of the resource's tenant


class PrincipalKind(StrEnum):
    USER = "user"
    SERVICE = "service"  #: a service account (programs)
    DEVICE = "device"
    ANONYMOUS = "anonymous"


ROLES: Final = frozenset(
    {"admin", "operator", "officer", "caregiver", "citizen", "provider", "buyer"}
)
"""The roles every installation knows (more may be added)."""

TENANTS: Final = ("santander", "fujisawa")
"""The tenants every installation has (the pilots' cities); more may be added."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. ``id`` is stable and unique (``user:<name>``, ``service:<name>``, ...)."""

    id: str
    kind: PrincipalKind
    tenant: str | None = None
    roles: frozenset[str] = frozenset()
    #: The data subject this principal is (a citizen's or patient's own account), if any.
    subject: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.kind is not PrincipalKind.ANONYMOUS


ANONYMOUS: Final = Principal("anonymous", PrincipalKind.ANONYMOUS)


@dataclass(frozen=True, slots=True)
class Policy:
    """One rule: ``effect`` for ``verbs`` on a ``provider/service/resource`` pattern.

    Each pattern segment is a name or ``*`` (any). ``roles`` and ``principals`` say whom it
    is for (empty both: everyone, anonymous included). Conditions narrow it further:
    ``tenant`` (``"$principal"``: only the principal's own tenant; a name: that tenant),
    ``owner`` (only the resource's data subject), ``consent`` (only with an active consent
    grant from the resource's data subject), ``hours`` (a UTC time window ``(from, to)`` in
    hours, wrapping past midnight when ``from > to``). Higher ``priority`` wins; at equal
    priority deny wins.
    """

    id: str
    effect: Effect
    verbs: frozenset[Verb]
    provider: str = "*"
    service: str = "*"
    resource: str = "*"
    roles: frozenset[str] = frozenset()
    principals: frozenset[str] = frozenset()
    priority: int = 0
    tenant: str | None = None
    owner: bool = False
    consent: bool = False
    hours: tuple[int, int] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        for segment in (self.provider, self.service, self.resource):
            if not segment or "/" in segment or ("*" in segment and segment != "*"):
                raise ValueError(f"policy {self.id}: a pattern segment is a name or '*'")
        if not self.verbs:
            raise ValueError(f"policy {self.id}: no verbs")
        if self.hours is not None and not all(0 <= h <= 24 for h in self.hours):
            raise ValueError(f"policy {self.id}: hours are 0..24")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request, with why (the deciding policy, or the default level)."""

    allowed: bool
    reason: str
    policy: str | None = None
    sensitive: bool = False
    extra: dict[str, str] = field(default_factory=dict)
