"""When to anchor: every N new leaves, or every T seconds while the log grows. Pure."""

from __future__ import annotations

__all__ = ["AnchorPolicy"]


class AnchorPolicy:
    """Decides whether a checkpoint of a given size is due for anchoring.

    A size is due when it is greater than the last anchored size and either at least
    ``every_leaves`` leaves were added since, or at least ``every_seconds`` passed since the
    last anchor. Before the first :meth:`mark` every non-empty log is due at once, so the first
    anchor protects the log as early as possible. ``now`` is any clock that does not go back
    (``time.monotonic``); the policy never reads a clock itself.
    """

    __slots__ = ("every_leaves", "every_seconds", "last_size", "last_time")

    def __init__(self, every_leaves: int, every_seconds: float) -> None:
        if every_leaves < 1:
            raise ValueError("every_leaves must be at least 1")
        if not every_seconds > 0:
            raise ValueError("every_seconds must be positive")
        self.every_leaves = every_leaves
        self.every_seconds = every_seconds
        self.last_size: int | None = None
        self.last_time: float | None = None

    def due(self, size: int, now: float) -> bool:
        """Whether a checkpoint of ``size`` leaves should be anchored at time ``now``."""
        if self.last_size is None or self.last_time is None:
            return size > 0
        if size <= self.last_size:
            return False
        return (
            size - self.last_size >= self.every_leaves or now - self.last_time >= self.every_seconds
        )

    def mark(self, size: int, now: float) -> None:
        """Record that ``size`` was anchored (or found anchored) at time ``now``."""
        self.last_size = size
        self.last_time = now

    def reset(self) -> None:
        """Forget the last anchor: the next non-empty size is due at once."""
        self.last_size = None
        self.last_time = None

    def __repr__(self) -> str:
        return (
            f"AnchorPolicy(every_leaves={self.every_leaves}, every_seconds={self.every_seconds}, "
            f"last_size={self.last_size})"
        )
