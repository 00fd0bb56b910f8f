"""Device kinds: which resources a kind of device may report, in which unit and range.

The ingest pipeline checks every reading against its device's kind ("schema" and
"physically sane value"). Kinds are declarative tables; the built-in ones live in
:mod:`msec.core.catalogue` and apps may register more with :func:`register_kind`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from msec.core.errors import MsecError, Rejected, RejectReason
from msec.core.models import Value

_TYPES: dict[str, tuple[type, ...]] = {
    "float": (float, int),
    "int": (int,),
    "bool": (bool,),
    "str": (str,),
}


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """One resource a device kind reports.

    ``type`` is one of ``float``, ``int``, ``bool``, ``str``; ``minimum``/``maximum``
    bound what is physically possible (not what is "normal"): a value outside them is
    an ``out_of_range`` rejection, never stored.
    """

    service: str
    resource: str
    unit: str | None
    type: str = "float"
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    max_length: int = 256

    def check(self, value: object) -> Value:
        """Return ``value`` if it fits this spec, else raise :class:`Rejected`."""
        allowed = _TYPES[self.type]
        # bool is an int subclass: never accept it for a number, nor a number for a bool.
        if isinstance(value, bool) and self.type != "bool":
            raise Rejected(RejectReason.SCHEMA, f"{self.path}: expected {self.type}, got bool")
        if not isinstance(value, allowed):
            raise Rejected(
                RejectReason.SCHEMA,
                f"{self.path}: expected {self.type}, got {type(value).__name__}",
            )
        if isinstance(value, str):
            if len(value) > self.max_length:
                raise Rejected(
                    RejectReason.SCHEMA, f"{self.path}: string longer than {self.max_length}"
                )
            return value
        if isinstance(value, bool):
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise Rejected(RejectReason.OUT_OF_RANGE, f"{self.path}: {value!r} is not finite")
        if self.minimum is not None and value < self.minimum:
            raise Rejected(
                RejectReason.OUT_OF_RANGE, f"{self.path}: {value!r} below {self.minimum}"
            )
        if self.maximum is not None and value > self.maximum:
            raise Rejected(
                RejectReason.OUT_OF_RANGE, f"{self.path}: {value!r} above {self.maximum}"
            )
        return value

    @property
    def path(self) -> str:
        """``service/resource``, as in topics and URLs."""
        return f"{self.service}/{self.resource}"


#: Every device reports its own health on the ``health`` service.
HEALTH_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec("health", "battery", "%", "float", 0, 100, "remaining battery charge"),
    ResourceSpec("health", "rssi", "dBm", "float", -140, 0,
                 "received signal strength of the uplink"),
)


@dataclass(frozen=True)
class DeviceKind:
    """A kind of device: its name, what it is, and the resources it may report."""

    name: str
    description: str
    resources: tuple[ResourceSpec, ...]
    _index: dict[tuple[str, str], ResourceSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {(r.service, r.resource): r for r in (*self.resources, *HEALTH_RESOURCES)}
        object.__setattr__(self, "_index", index)

    def spec(self, service: str, resource: str) -> ResourceSpec | None:
        """The spec of ``service/resource``, or ``None`` if this kind does not report it."""
        return self._index.get((service, resource))

    def all_resources(self) -> tuple[ResourceSpec, ...]:
        """The kind's own resources followed by the common ``health`` ones."""
        return tuple(self._index.values())


class UnknownKind(MsecError):
    """No device kind of that name is registered."""


_KINDS: dict[str, DeviceKind] = {}


def register_kind(kind: DeviceKind) -> DeviceKind:
    """Make ``kind`` known to the platform; registering the same name twice replaces it."""
    if kind.name not in _KINDS:
        _load_catalogue()  # so that a later lazy load cannot replace an app's kind
    _KINDS[kind.name] = kind
    return kind


def register_kinds(items: Iterable[DeviceKind]) -> None:
    """Register several kinds (see :func:`register_kind`)."""
    for kind in items:
        register_kind(kind)


def get_kind(name: str) -> DeviceKind:
    """The registered kind called ``name``; raises :class:`UnknownKind` otherwise."""
    _load_catalogue()
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(sorted(_KINDS))
        raise UnknownKind(f"unknown device kind {name!r}; known: {known}") from None


def kinds() -> dict[str, DeviceKind]:
    """All registered kinds by name."""
    _load_catalogue()
    return dict(_KINDS)


def _load_catalogue() -> None:
    # Imported lazily so that the catalogue (data only) can grow without import cycles.
    from msec.core import catalogue  # noqa: F401
