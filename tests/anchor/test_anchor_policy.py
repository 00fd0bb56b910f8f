"""AnchorPolicy: every N leaves, or every T seconds while the log grows."""

from __future__ import annotations

import pytest

from msec.anchor import AnchorPolicy


def test_first_non_empty_log_is_due_at_once() -> None:
    policy = AnchorPolicy(every_leaves=100, every_seconds=60)
    assert not policy.due(0, now=0)
    assert policy.due(1, now=0)


def test_due_after_every_leaves() -> None:
    policy = AnchorPolicy(every_leaves=100, every_seconds=60)
    policy.mark(10, now=0)
    assert not policy.due(109, now=1)
    assert policy.due(110, now=1)
    assert policy.due(5000, now=1)


def test_due_after_every_seconds_only_if_grown() -> None:
    policy = AnchorPolicy(every_leaves=100, every_seconds=60)
    policy.mark(10, now=1000)
    assert not policy.due(11, now=1059.9)
    assert policy.due(11, now=1060)
    assert not policy.due(10, now=5000)  # nothing new: never due, however long ago
    assert not policy.due(9, now=5000)  # smaller: never due (the anchorer reports a rollback)


def test_mark_restarts_both_counters() -> None:
    policy = AnchorPolicy(every_leaves=10, every_seconds=5)
    policy.mark(10, now=0)
    assert policy.due(20, now=1)
    policy.mark(20, now=1)
    assert not policy.due(29, now=5.9)
    assert policy.due(29, now=6)
    assert policy.due(30, now=1)


def test_reset_forgets() -> None:
    policy = AnchorPolicy(every_leaves=10, every_seconds=5)
    policy.mark(10, now=0)
    policy.reset()
    assert policy.due(1, now=0)


@pytest.mark.parametrize(("leaves", "seconds"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -5.0)])
def test_rejects_nonsense(leaves: int, seconds: float) -> None:
    with pytest.raises(ValueError):
        AnchorPolicy(every_leaves=leaves, every_seconds=seconds)
