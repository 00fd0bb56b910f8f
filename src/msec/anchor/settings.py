"""The ``[anchor]`` settings: which chain, which contract, which account, how often.

Importing this module does not import web3.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AnchorSettings"]


class AnchorSettings(BaseModel):
    """Anchoring of log checkpoints on an EVM chain (``[anchor]``); off while ``rpc_url`` is empty.

    The key file holds the hex private key of the log's account (the contract's owner) and must
    not be readable by group or others (mode 0600); the key is never logged.
    """

    model_config = ConfigDict(extra="forbid")

    #: Ethereum JSON-RPC endpoint over HTTP(S) (GoQuorum, Besu, Hardhat, ...); empty: off.
    rpc_url: str = ""
    #: Address of the deployed ``CheckpointAnchor``. Empty: deploy it on first use and remember
    #: the address in ``contract_file``.
    contract: str = ""
    #: Where a contract deployed on first use is remembered; empty means
    #: ``<data_dir>/anchor/contract`` (resolved by the platform).
    contract_file: Path | None = None
    #: Hex private key (``0x`` optional) of the log's account; mode 0600.
    key_file: Path | None = None
    #: Anchor once this many leaves were added since the last anchor ...
    every_leaves: int = Field(10_000, ge=1)
    #: ... or once this many seconds passed and the log grew at all.
    every_seconds: float = Field(60.0, gt=0)
    #: Limit for one RPC request and for waiting on a transaction's receipt.
    timeout_s: float = Field(30.0, gt=0, le=3600)

    @property
    def enabled(self) -> bool:
        """Whether anchoring is on (an RPC URL is set)."""
        return bool(self.rpc_url)
