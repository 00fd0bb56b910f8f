"""Anchorer: anchors signed checkpoints when due, survives chain failures, reports rollbacks."""

from __future__ import annotations

import hashlib

import pytest
from web3 import Web3

from msec.anchor import (
    Anchor,
    AnchorChain,
    Anchorer,
    AnchorError,
    AnchorOutcome,
    AnchorPolicy,
    ChainAnchor,
    MemoryAnchorChain,
)
from msec.tlog import Checkpoint, NoteSigner, NoteVerifier, sign_note

ORIGIN = "example.org/log"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyChain(MemoryAnchorChain):
    """The in-memory chain, unreachable while ``down`` is set (as a dead RPC endpoint)."""

    down = False

    def anchor(self, checkpoint: Checkpoint) -> str:
        if self.down:
            raise AnchorError("cannot connect to http://127.0.0.1:1")
        return super().anchor(checkpoint)

    def latest(self, origin: str) -> Anchor | None:
        if self.down:
            raise AnchorError("cannot connect to http://127.0.0.1:1")
        return super().latest(origin)


class Log:
    """The log as the anchorer sees it: its newest signed checkpoint, settable by the test."""

    def __init__(self) -> None:
        self.signer = NoteSigner.generate(ORIGIN)
        self.note: str | None = None

    def grow_to(self, size: int, *, salt: str = "") -> Checkpoint:
        root = hashlib.sha256(f"{salt}{size}".encode()).digest()
        checkpoint = Checkpoint(ORIGIN, size, root)
        self.note = sign_note(checkpoint.body(), self.signer)
        return checkpoint

    def __call__(self) -> tuple[str, NoteVerifier] | None:
        return None if self.note is None else (self.note, self.signer.verifier())


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(chain: AnchorChain, log: Log, clock: FakeClock) -> Anchorer:
    return Anchorer(chain, AnchorPolicy(every_leaves=100, every_seconds=60), log, clock=clock)


def test_anchors_when_due(log: Log, clock: FakeClock) -> None:
    chain = MemoryAnchorChain()
    anchorer = make(chain, log, clock)
    assert anchorer.run_once().outcome is AnchorOutcome.NO_CHECKPOINT
    first = log.grow_to(5)
    result = anchorer.run_once()
    assert result.outcome is AnchorOutcome.ANCHORED and result.checkpoint == first
    assert result.tx_hash
    log.grow_to(50)
    assert anchorer.run_once().outcome is AnchorOutcome.NOT_DUE
    clock.now += 60
    assert anchorer.run_once().outcome is AnchorOutcome.ANCHORED  # time
    log.grow_to(150)
    assert anchorer.run_once().outcome is AnchorOutcome.ANCHORED  # leaves
    clock.now += 3600
    assert anchorer.run_once().outcome is AnchorOutcome.NOT_DUE  # nothing new
    assert [a.size for a in chain.anchors(ORIGIN)] == [5, 50, 150]


def test_chain_failure_is_returned_and_retried(log: Log, clock: FakeClock) -> None:
    chain = FlakyChain()
    anchorer = make(chain, log, clock)
    log.grow_to(5)
    chain.down = True
    failed = anchorer.run_once()
    assert failed.outcome is AnchorOutcome.FAILED
    assert "cannot connect" in failed.detail
    chain.down = False
    assert anchorer.run_once().outcome is AnchorOutcome.ANCHORED
    assert [a.size for a in chain.anchors(ORIGIN)] == [5]


def test_restart_resumes_from_the_chain(log: Log, clock: FakeClock) -> None:
    chain = MemoryAnchorChain()
    log.grow_to(5)
    assert make(chain, log, clock).run_once().outcome is AnchorOutcome.ANCHORED
    restarted = make(chain, log, clock)  # a fresh policy knows nothing
    assert restarted.run_once().outcome is AnchorOutcome.NOT_DUE
    log.grow_to(104)
    assert restarted.run_once().outcome is AnchorOutcome.NOT_DUE  # counts from 5, not 0
    log.grow_to(105)
    assert restarted.run_once().outcome is AnchorOutcome.ANCHORED


def test_rollback_is_reported_not_anchored(log: Log, clock: FakeClock) -> None:
    chain = MemoryAnchorChain()
    log.grow_to(500)
    make(chain, log, clock).run_once()
    log.grow_to(300)  # the database was restored from an older backup
    anchorer = make(chain, log, clock)
    for _ in range(2):
        result = anchorer.run_once()
        assert result.outcome is AnchorOutcome.ROLLBACK
        assert "rolled back" in result.detail
    log.grow_to(500, salt="forged ")
    result = anchorer.run_once()
    assert result.outcome is AnchorOutcome.ROLLBACK and "rewritten" in result.detail
    assert [a.size for a in chain.anchors(ORIGIN)] == [500]


def test_unverifiable_checkpoint_is_a_failure(log: Log, clock: FakeClock) -> None:
    chain = MemoryAnchorChain()
    log.grow_to(5)
    other = NoteSigner.generate(ORIGIN)
    anchorer = Anchorer(
        chain, AnchorPolicy(1, 1), lambda: (log.note or "", other.verifier()), clock=clock
    )
    result = anchorer.run_once()
    assert result.outcome is AnchorOutcome.FAILED and "no signature by a known key" in result.detail
    assert chain.anchors(ORIGIN) == []


def test_on_eth_tester(chain: ChainAnchor, tester_w3: Web3, log: Log, clock: FakeClock) -> None:
    """The same loop against the real contract, including a refusal from the chain."""
    anchorer = make(chain, log, clock)
    log.grow_to(5)
    assert anchorer.run_once().outcome is AnchorOutcome.ANCHORED
    # Someone else (another instance of the platform) anchors behind our back.
    chain.anchor(Checkpoint(ORIGIN, 200, b"\x01" * 32))
    log.grow_to(200)
    result = anchorer.run_once()
    assert result.outcome is AnchorOutcome.FAILED and "SizeNotIncreasing" in result.detail
    result = anchorer.run_once()  # re-read the chain: same size, other root
    assert result.outcome is AnchorOutcome.ROLLBACK
    assert [a.size for a in chain.anchors(ORIGIN)] == [5, 200]
