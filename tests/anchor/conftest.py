"""Chains for the anchor tests: eth-tester (py-evm) in process, and a real ``hardhat node``.

The Hardhat fixture needs Node and ``npm ci`` in the repository root; without them it raises
``ServiceUnavailable``, which the top-level conftest turns into a skip, or a failure in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, Web3

from msec.anchor.client import ChainAnchor
from msec.testing.services import ServiceFailed, ServiceUnavailable

ROOT = Path(__file__).resolve().parents[2]
HARDHAT_CHAIN_ID = 31337
_START_TIMEOUT_S = 60.0


def node_tool(package: str) -> tuple[str, Path]:
    """The ``node`` binary and ``node_modules/<package>``; ``ServiceUnavailable`` if missing."""
    node = shutil.which("node")
    if node is None:
        raise ServiceUnavailable("node is not on PATH; install Node 20 (Debian: nodejs npm)")
    path = ROOT / "node_modules" / package
    if not path.exists():
        raise ServiceUnavailable(f"{path} is missing; run `npm ci` in {ROOT}")
    return node, path


@pytest.fixture(scope="session")
def solc_node() -> str:
    """The ``node`` binary, once ``npm ci`` installed solc; ``ServiceUnavailable`` otherwise."""
    node, _ = node_tool("solc")
    return node


# ---------------------------------------------------------------------------------------------
# eth-tester
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tester_w3() -> Web3:
    """One in-process py-evm chain for the session (each test deploys its own contract)."""
    return Web3(EthereumTesterProvider())


def _funded(w3: Web3) -> LocalAccount:
    account: LocalAccount = Account.create()
    tx = w3.eth.send_transaction(
        {"from": w3.eth.accounts[0], "to": account.address, "value": 10**18}
    )
    w3.eth.wait_for_transaction_receipt(tx)
    return account


@pytest.fixture
def owner(tester_w3: Web3) -> LocalAccount:
    """A fresh funded account: the log's account, which deploys the contract."""
    return _funded(tester_w3)


@pytest.fixture
def stranger(tester_w3: Web3) -> LocalAccount:
    """Another fresh funded account, not the contract's owner."""
    return _funded(tester_w3)


@pytest.fixture
def chain(tester_w3: Web3, owner: LocalAccount) -> ChainAnchor:
    """A freshly deployed contract owned by ``owner``."""
    return ChainAnchor.deploy(tester_w3, owner, timeout_s=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listened on a moment ago (for unreachable-endpoint tests)."""
    return _free_port()


# ---------------------------------------------------------------------------------------------
# Hardhat
# ---------------------------------------------------------------------------------------------


def _chain_id(url: str) -> int | None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(json.load(response)["result"], 16)
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Own session: signal the whole group, in case the CLI forked a worker.
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _start_hardhat(node: str, cli: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        node, str(cli), "node", "--config", "contracts/hardhat.config.js",
        "--hostname", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "DO_NOT_TRACK": "1"}
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceFailed(f"hardhat node exited ({process.returncode}):\n{log.read_text()}")
        chain_id = _chain_id(url)
        if chain_id is not None:
            if chain_id != HARDHAT_CHAIN_ID:
                _stop(process)
                raise ServiceFailed(f"port {port} answers chain id {chain_id}, not Hardhat's")
            return process, url
        time.sleep(0.2)
    _stop(process)
    tail = log.read_text()[-4000:]
    raise ServiceFailed(f"hardhat node not up in {_START_TIMEOUT_S:g} s:\n{tail}")


@pytest.fixture(scope="session")
def hardhat_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a ``hardhat node`` (chain id 31337) on a free loopback port, stopped afterwards."""
    node, _ = node_tool("hardhat")
    cli = ROOT / "node_modules" / ".bin" / "hardhat"
    log = tmp_path_factory.mktemp("hardhat") / "node.log"
    for attempt in range(3):
        try:
            process, url = _start_hardhat(node, cli, log)
            break
        except ServiceFailed:
            # Another process may have taken the port between probing and binding.
            if attempt == 2 or "EADDRINUSE" not in log.read_text():
                raise
    try:
        yield url
    finally:
        _stop(process)
