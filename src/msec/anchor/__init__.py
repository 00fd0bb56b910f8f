"""Anchoring transparency-log checkpoints on an EVM chain (issue 3).

The light parts (settings, policy, the :class:`AnchorChain` seam, the in-memory backend and the
:class:`Anchorer`) import without web3. The chain client (:class:`ChainAnchor`, :func:`connect`,
:func:`load_contract`, ...) lives in :mod:`msec.anchor.client` and is imported on first use of
one of its names here, because importing web3 takes seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from msec.anchor.anchorer import Anchorer, AnchorOutcome, AnchorResult, CheckpointSource
from msec.anchor.base import Anchor, AnchorChain, AnchorError
from msec.anchor.memory import MemoryAnchorChain
from msec.anchor.policy import AnchorPolicy
from msec.anchor.settings import AnchorSettings

if TYPE_CHECKING:
    from msec.anchor.client import (
        CONTRACT_NAME,
        ChainAnchor,
        connect,
        http_web3,
        load_account,
        load_contract,
    )

__all__ = [
    "CONTRACT_NAME",
    "Anchor",
    "AnchorChain",
    "AnchorError",
    "AnchorOutcome",
    "AnchorPolicy",
    "AnchorResult",
    "AnchorSettings",
    "Anchorer",
    "ChainAnchor",
    "CheckpointSource",
    "MemoryAnchorChain",
    "connect",
    "http_web3",
    "load_account",
    "load_contract",
]

_CLIENT_NAMES = frozenset(
    {"CONTRACT_NAME", "ChainAnchor", "connect", "http_web3", "load_account", "load_contract"}
)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        return getattr(importlib.import_module("msec.anchor.client"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
