"""An in-process ``publish`` for tests and tools: keeps what it was given, or fails on demand."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from msec.core.errors import MsecError

__all__ = ["MemoryPublisher"]


@dataclass
class MemoryPublisher:
    """A :data:`~msec.actuate.actuator.Publish` that appends ``(topic, payload)`` to
    :attr:`sent`. While :attr:`down` is true it raises :class:`MsecError`, like a broker
    that cannot be reached, and keeps nothing."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)
    down: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, topic: str, payload: bytes) -> None:
        if self.down:
            raise MsecError("broker unreachable (MemoryPublisher.down)")
        with self._lock:
            self.sent.append((topic, payload))
