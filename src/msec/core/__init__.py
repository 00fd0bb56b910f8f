"""Shared vocabulary of every layer: readings, security events, device kinds, errors.

Nothing here imports another ``msec`` package.
"""

from msec.core.errors import MsecError, Rejected, RejectReason
from msec.core.kinds import DeviceKind, ResourceSpec, get_kind, kinds, register_kind
from msec.core.models import Reading, ResourceValue, SecurityEvent, Value

__all__ = [
    "DeviceKind",
    "MsecError",
    "Reading",
    "RejectReason",
    "Rejected",
    "ResourceSpec",
    "ResourceValue",
    "SecurityEvent",
    "Value",
    "get_kind",
    "kinds",
    "register_kind",
]
