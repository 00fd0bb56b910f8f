"""The anchoring loop's body: anchor the log's latest checkpoint whenever the policy says so.

:class:`Anchorer` is synchronous and holds no thread; the platform calls :meth:`Anchorer.run_once`
from a background thread every second or so, tests call it directly with a fake clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from msec.anchor.base import AnchorChain
from msec.anchor.policy import AnchorPolicy
from msec.core.errors import MsecError
from msec.tlog.checkpoint import Checkpoint, NoteVerifier, open_checkpoint

__all__ = ["AnchorOutcome", "AnchorResult", "Anchorer", "CheckpointSource"]

log = logging.getLogger(__name__)

CheckpointSource = Callable[[], tuple[str | bytes, NoteVerifier | Sequence[NoteVerifier]] | None]
"""Returns the log's latest signed checkpoint note and the verifier(s) of the log's key, or
``None`` while the log has signed none (``SqlLog.latest_checkpoint`` plus the log's key)."""


class AnchorOutcome(StrEnum):
    """What one :meth:`Anchorer.run_once` did."""

    ANCHORED = "anchored"  #: the checkpoint is on the chain now
    NOT_DUE = "not_due"  #: the policy said wait (or the size is anchored already)
    NO_CHECKPOINT = "no_checkpoint"  #: the log has no signed checkpoint yet
    FAILED = "failed"  #: chain, endpoint or checkpoint error; retried on the next run
    ROLLBACK = "rollback"  #: the chain holds a larger size, or the same size with another root


@dataclass(frozen=True)
class AnchorResult:
    """The outcome of one run, the checkpoint it looked at, and the transaction or the error."""

    outcome: AnchorOutcome
    checkpoint: Checkpoint | None = None
    tx_hash: str | None = None
    detail: str = ""


class Anchorer:
    """Anchors the latest checkpoint from ``checkpoints`` on ``chain`` when ``policy`` says so.

    Guarantees: a checkpoint is anchored only if its signature verifies with the given
    verifier(s); :meth:`run_once` never raises an :class:`~msec.core.errors.MsecError` (chain,
    endpoint, signature or log errors become a ``FAILED`` result, logged, and the next run
    retries after re-reading the chain); a log that is behind the chain, or that has another root
    at an anchored size, is reported as ``ROLLBACK`` on every run (logged as an error) and never
    anchored over. ``clock`` feeds the policy (default :func:`time.monotonic`). Use from one
    thread at a time.
    """

    def __init__(
        self,
        chain: AnchorChain,
        policy: AnchorPolicy,
        checkpoints: CheckpointSource,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = chain
        self.policy = policy
        self._checkpoints = checkpoints
        self._clock = clock
        # The newest (size, root) known to be on the chain for _synced_origin; None until read.
        self._synced_origin: str | None = None
        self._last: tuple[int, bytes] | None = None
        self._last_failure = ""

    def run_once(self) -> AnchorResult:
        """Look at the latest checkpoint and anchor it if due; see the class for guarantees."""
        now = self._clock()
        checkpoint: Checkpoint | None = None
        try:
            got = self._checkpoints()
            if got is None:
                return AnchorResult(AnchorOutcome.NO_CHECKPOINT)
            note, verifiers = got
            if isinstance(verifiers, NoteVerifier):
                verifiers = [verifiers]
            checkpoint = open_checkpoint(note, verifiers)
            if self._synced_origin != checkpoint.origin:
                self._sync(checkpoint.origin, now)
            conflict = self._conflict(checkpoint)
            if conflict:
                log.error("anchor check failed: %s", conflict)
                return AnchorResult(AnchorOutcome.ROLLBACK, checkpoint, detail=conflict)
            if not self.policy.due(checkpoint.size, now):
                return AnchorResult(AnchorOutcome.NOT_DUE, checkpoint)
            tx_hash = self.chain.anchor(checkpoint)
        except MsecError as exc:
            self._synced_origin = None  # the chain may have moved: read it again next time
            detail = str(exc)
            if detail != self._last_failure:
                log.warning("anchoring failed, will retry: %s", detail)
            self._last_failure = detail
            return AnchorResult(AnchorOutcome.FAILED, checkpoint, detail=detail)
        self.policy.mark(checkpoint.size, now)
        self._last = (checkpoint.size, checkpoint.root)
        self._last_failure = ""
        return AnchorResult(AnchorOutcome.ANCHORED, checkpoint, tx_hash=tx_hash)

    def _sync(self, origin: str, now: float) -> None:
        """Learn the chain's newest anchor of ``origin``; the policy counts from it."""
        latest = self.chain.latest(origin)
        self._last = (latest.size, latest.root) if latest is not None else None
        if latest is None:
            self.policy.reset()
        elif latest.size != self.policy.last_size:
            self.policy.mark(latest.size, now)
        self._synced_origin = origin

    def _conflict(self, checkpoint: Checkpoint) -> str:
        """Why ``checkpoint`` contradicts the chain (a rollback or a fork), or ``""``."""
        if self._last is None:
            return ""
        size, root = self._last
        if checkpoint.size < size:
            return (
                f"the log {checkpoint.origin!r} is at size {checkpoint.size} but size {size} "
                "is anchored on the chain: the log was rolled back"
            )
        if checkpoint.size == size and checkpoint.root != root:
            return (
                f"the log {checkpoint.origin!r} has another root at size {size} than the one "
                "anchored on the chain: the log was rewritten"
            )
        return ""
