"""Value objects that travel between layers."""

from __future__ import annotations

from dataclasses import dataclass, field

Value = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one resource, as the device signed it.

    ``provider`` is the device's name (sensiNact's provider), ``seq`` the device's
    sequence number of this reading (unique per provider, so writes are idempotent
    on ``(provider, seq)``), ``timestamp`` seconds since the Unix epoch (UTC).
    """

    provider: str
    service: str
    resource: str
    value: Value
    timestamp: float
    seq: int


@dataclass(frozen=True, slots=True)
class ResourceValue:
    """The latest known value of a resource, with its metadata."""

    provider: str
    service: str
    resource: str
    value: Value | None
    timestamp: float | None
    unit: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """Something the platform refused or noticed; ``reason`` is a stable machine name."""

    reason: str
    detail: str
    source: str = ""
    device: str | None = None
    timestamp: float = 0.0
    id: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
