"""The platform's leaf sources: which stores write which kinds of log leaves.

Every reading the twin stores, every security event the guard records and every record and
erasure of the companion store is a leaf of the installation's log, appended in the same
transaction (``SqlTwin(log=...)``, ``SqlEventLog(log=...)``, ``SqlCompanion.put(log=...)``).
:class:`~msec.tlog.trust.TrustLog` checks them through these sources.
"""

from __future__ import annotations

from msec.guard.sql import EVENT_LEAF, SqlEventLog
from msec.tlog.audit import LeafSource
from msec.tlog.trust import RollbackDetected, TrustLog
from msec.twin.sql import READING_LEAF, SqlTwin

__all__ = ["RollbackDetected", "TrustLog", "leaf_sources"]


def leaf_sources(
    twin: SqlTwin, events: SqlEventLog, *more: tuple[str, LeafSource]
) -> dict[str, LeafSource]:
    """The leaf kinds the platform writes and where the audit finds their rows."""
    sources: dict[str, LeafSource] = {READING_LEAF: twin, EVENT_LEAF: events}
    sources.update(more)
    return sources
