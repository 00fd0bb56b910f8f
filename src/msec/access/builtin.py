"""Policies every installation has: the platform's own resources, which are not the twin's.

The API's platform-wide routes are decided like any resource, under the pseudo-provider
``_platform`` (device names cannot start with ``_``): security events, metrics, the log's
entries and record proofs are for the operator and admin roles; the audit trail for admins
only. Everyone else, anonymous included, is denied. These policies sit at priority 1000 and
above, so an installation's own policies (below) cannot open them by accident.
"""

from __future__ import annotations

from typing import Final

from msec.access.model import Effect, Policy, Verb

__all__ = ["BUILTIN_POLICIES", "PLATFORM"]

PLATFORM: Final = "_platform"
_READ: Final = frozenset({Verb.GET, Verb.DESCRIBE})

BUILTIN_POLICIES: Final = (
    Policy("builtin-platform-closed", Effect.DENY, frozenset(Verb), PLATFORM, priority=1000,
           description="nobody else reads or changes the platform's own resources"),
    Policy("builtin-platform-ops", Effect.ALLOW, _READ, PLATFORM,
           roles=frozenset({"admin", "operator"}), priority=1001,
           description="operators and admins read security events, metrics and the log"),
    Policy("builtin-audit-closed", Effect.DENY, frozenset(Verb), PLATFORM, "audit",
           priority=1002, description="the audit trail is for admins only"),
    Policy("builtin-audit-admin", Effect.ALLOW, _READ, PLATFORM, "audit",
           roles=frozenset({"admin"}), priority=1003,
           description="admins read the audit trail"),
    Policy("builtin-audit-counters", Effect.ALLOW, _READ, PLATFORM, "audit", "counters",
           roles=frozenset({"operator", "officer"}), priority=1004,
           description="the KPI counters for the municipality's board"),
    Policy("builtin-policies-admin", Effect.ALLOW, frozenset({*_READ, Verb.SET}), PLATFORM,
           "policies", roles=frozenset({"admin"}), priority=1005,
           description="admins read and change the installation's policies"),
)  # fmt: skip
