"""What every anchoring backend shares: the :class:`Anchor` record, the error, and the seam.

:class:`AnchorChain` is the one interface the rest of the platform uses (the background
:class:`~msec.anchor.anchorer.Anchorer` and ``msec verify``).
:class:`~msec.anchor.client.ChainAnchor` implements it on an EVM chain,
:class:`~msec.anchor.memory.MemoryAnchorChain` in process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from msec.core.errors import MsecError
from msec.tlog.checkpoint import Checkpoint

__all__ = ["Anchor", "AnchorChain", "AnchorError"]


class AnchorError(MsecError):
    """Anchoring or reading anchors failed: the chain refused, did not answer, or is not ours.

    The message says which and why (a contract error by name, a timeout in seconds, an endpoint
    as ``scheme://host:port``). It never holds key material or the RPC URL's path or query,
    where hosted endpoints put their API keys.
    """


@dataclass(frozen=True)
class Anchor:
    """One anchored checkpoint of an origin: its position, tree size, root and block time.

    ``index`` counts from 0, oldest first; sizes strictly increase with it. ``timestamp`` is the
    Unix time (seconds) of the block that recorded the anchor, as the chain's validators set it.
    """

    index: int
    size: int
    root: bytes
    timestamp: int


class AnchorChain(Protocol):
    """Where checkpoints are anchored: an append-only, per-origin list of (size, root).

    Implementations guarantee that, per origin, anchored sizes strictly increase and anchors
    are never changed or removed; every method raises :class:`AnchorError` and nothing else on
    failure (a refused anchor, an unreachable or misbehaving backend).
    """

    def anchor(self, checkpoint: Checkpoint) -> str:
        """Record ``checkpoint``'s origin, size and root; return the transaction's id (hex).

        Returns only once the anchor is stored (on a chain: mined with a successful receipt).
        Raises :class:`AnchorError` if the size is not greater than the origin's last anchored
        size, if this caller may not anchor, or if the backend fails.
        """
        ...

    def anchors(self, origin: str) -> list[Anchor]:
        """Every anchor of ``origin``, oldest first (empty when none)."""
        ...

    def latest(self, origin: str) -> Anchor | None:
        """The newest anchor of ``origin``, or ``None`` when it has none."""
        ...
