"""The security event log interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from msec.core.models import SecurityEvent


class EventLog(Protocol):
    """Durable record of everything refused or suspicious.

    Implementations: :class:`msec.guard.sql.SqlEventLog`.
    """

    def record(self, events: Sequence[SecurityEvent]) -> list[SecurityEvent]:
        """Store ``events`` (durable on return); returns them with ``id`` and ``timestamp`` set."""
        ...

    def query(
        self, *, reason: str | None = None, device: str | None = None, limit: int = 100
    ) -> list[SecurityEvent]:
        """Newest first, filtered by ``reason`` and ``device`` when given."""
        ...

    def counts(self) -> dict[str, int]:
        """Number of stored events per reason."""
        ...

    def warn(
        self, reason: str, detail: str, *, source: str = "", device: str | None = None,
        **extra: str,
    ) -> SecurityEvent:
        """Record one warning entry (a denied access, a refused token) and return it."""
        ...
