"""The digital twin interface: sensiNact's provider -> service -> resource model.

A provider is one device (or virtual sensor); its services group resources; each
resource has metadata (unit), a latest value and a history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from msec.core.models import Reading, ResourceValue


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A provider with its metadata and device health.

    ``battery`` (%) and ``rssi`` (dBm) are the latest ``health`` readings, ``last_seen``
    the timestamp of the newest reading stored for the provider.
    """

    name: str
    kind: str
    tenant: str
    description: str = ""
    latitude: float | None = None
    longitude: float | None = None
    last_seen: float | None = None
    battery: float | None = None
    rssi: float | None = None
    resources: tuple[ResourceValue, ...] = ()


class Twin(Protocol):
    """Where readings end up. Implementations: :class:`msec.twin.sql.SqlTwin`."""

    def ensure_provider(
        self,
        name: str,
        *,
        kind: str,
        tenant: str = "default",
        description: str = "",
        latitude: float | None = None,
        longitude: float | None = None,
    ) -> None:
        """Create the provider if missing, else update its metadata. Idempotent."""

    def write(
        self, readings: Sequence[Reading], *, also: Callable[[Any], None] | None = None
    ) -> list[Reading]:
        """Store ``readings`` in one transaction and return those that were new.

        ``also(conn)`` runs in the same transaction (other stores' rows of the same batch).

        A reading whose ``(provider, seq)`` is already stored is skipped (idempotent
        redelivery). When this returns, every returned reading is durable (committed).
        The provider of each reading must exist (``ensure_provider``).
        """
        ...

    def providers(self) -> list[ProviderInfo]:
        """All providers, by name, without their resources."""
        ...

    def provider(self, name: str) -> ProviderInfo | None:
        """One provider with all its resources' latest values, or ``None``."""
        ...

    def latest(self, provider: str, service: str, resource: str) -> ResourceValue | None:
        """The newest value of one resource, or ``None`` if never reported."""
        ...

    def history(
        self,
        provider: str,
        service: str,
        resource: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[ResourceValue]:
        """Stored values with ``since <= timestamp < until``, oldest first, at most ``limit``."""
        ...

    def max_seq(self, provider: str) -> int | None:
        """The highest stored sequence number of ``provider``, or ``None``."""
        ...

    def count_readings(self, provider: str | None = None) -> int:
        """How many readings are stored (for one provider, or all)."""
        ...

    def stored_at(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], float]:
        """When each stored ``(provider, seq)`` was written (epoch s); others left out."""
        ...
