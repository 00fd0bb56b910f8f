"""The client against a real JSON-RPC node: ``hardhat node`` (Hardhat 2, from npm)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from msec.anchor import AnchorError, AnchorSettings, ChainAnchor, connect, http_web3
from msec.tlog import Checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Hardhat's built-in accounts #0 and #1 (from its public test mnemonic "test test ... junk");
#: publicly known keys that hold value on no real network.
HARDHAT_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
)


def account(i: int) -> LocalAccount:
    key: LocalAccount = Account.from_key(HARDHAT_KEYS[i])
    return key


def checkpoint(origin: str, size: int) -> Checkpoint:
    return Checkpoint(origin, size, hashlib.sha256(f"{origin} {size}".encode()).digest())


def test_deploy_anchor_read_back(hardhat_url: str) -> None:
    w3 = http_web3(hardhat_url, timeout_s=10)
    assert w3.eth.chain_id == 31337
    chain = ChainAnchor.deploy(w3, account(0), timeout_s=10)
    chain.verify_code()
    origin = f"hardhat.test/{chain.address}"
    first, second = checkpoint(origin, 1), checkpoint(origin, 1000)
    chain.anchor(first)
    chain.anchor(second)

    # A separate client, as `msec verify` would read it.
    reader = ChainAnchor(http_web3(hardhat_url), account(1), chain.address)
    anchors = reader.anchors(origin)
    assert [(a.index, a.size, a.root) for a in anchors] == [
        (0, 1, first.root),
        (1, 1000, second.root),
    ]
    assert reader.latest(origin) == anchors[-1]
    with pytest.raises(AnchorError, match="SizeNotIncreasing"):
        chain.anchor(checkpoint(origin, 1000))


def test_other_account_is_refused(hardhat_url: str) -> None:
    w3 = http_web3(hardhat_url, timeout_s=10)
    chain = ChainAnchor.deploy(w3, account(0), timeout_s=10)
    intruder = ChainAnchor(w3, account(1), chain.address, timeout_s=10)
    with pytest.raises(AnchorError, match=f"NotOwner\\(caller={account(1).address}\\)"):
        intruder.anchor(checkpoint("hardhat.test/intruder", 1))
    assert chain.anchors("hardhat.test/intruder") == []


def test_connect_over_http(hardhat_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "anchor.key"
    key_file.write_text(HARDHAT_KEYS[0])
    key_file.chmod(0o600)
    settings = AnchorSettings(rpc_url=hardhat_url, key_file=key_file, timeout_s=10)
    chain = connect(settings, contract_file=tmp_path / "contract")
    chain.anchor(checkpoint("hardhat.test/connect", 3))
    again = connect(settings, contract_file=tmp_path / "contract")
    assert again.address == chain.address
    assert [a.size for a in again.anchors("hardhat.test/connect")] == [3]
