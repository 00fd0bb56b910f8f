"""An in-process :class:`~msec.anchor.base.AnchorChain`: the same rules, no chain.

For tests and for a platform without a chain: anchors live in a dict and are lost with the
process, so this backend detects nothing across restarts. Thread-safe.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from msec.anchor.base import Anchor, AnchorError
from msec.tlog.checkpoint import Checkpoint

__all__ = ["MemoryAnchorChain"]


class MemoryAnchorChain:
    """Per-origin anchor lists in memory, with the contract's monotonic-size rule.

    ``clock`` gives the timestamp recorded with each anchor (default: Unix time, whole seconds).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._anchors: dict[str, list[Anchor]] = {}
        self._sent = 0

    def anchor(self, checkpoint: Checkpoint) -> str:
        """Record the checkpoint; raise :class:`AnchorError` unless its size grew."""
        with self._lock:
            anchors = self._anchors.setdefault(checkpoint.origin, [])
            if anchors and checkpoint.size <= anchors[-1].size:
                raise AnchorError(
                    f"anchor refused: size {checkpoint.size} is not greater than the last "
                    f"anchored size {anchors[-1].size} of {checkpoint.origin!r}"
                )
            anchors.append(
                Anchor(len(anchors), checkpoint.size, checkpoint.root, int(self._clock()))
            )
            self._sent += 1
            tx = hashlib.sha256(f"{self._sent}\n{checkpoint.body()}".encode()).hexdigest()
            return "0x" + tx

    def anchors(self, origin: str) -> list[Anchor]:
        """Every anchor of ``origin``, oldest first."""
        with self._lock:
            return list(self._anchors.get(origin, ()))

    def latest(self, origin: str) -> Anchor | None:
        """The newest anchor of ``origin``, or ``None``."""
        with self._lock:
            anchors = self._anchors.get(origin)
            return anchors[-1] if anchors else None
