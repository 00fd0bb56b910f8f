"""ChainAnchor and connect() against an in-process py-evm chain (eth-tester)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from msec.anchor import AnchorError, AnchorSettings, ChainAnchor, connect, http_web3, load_account
from msec.core.errors import MsecError
from msec.tlog import Checkpoint


def checkpoint(size: int, origin: str = "example.org/log") -> Checkpoint:
    return Checkpoint(origin, size, hashlib.sha256(f"{origin} {size}".encode()).digest())


def test_anchor_and_read_back(chain: ChainAnchor) -> None:
    assert chain.anchors("example.org/log") == []
    assert chain.latest("example.org/log") is None
    first, second = checkpoint(0), checkpoint(7)
    tx = chain.anchor(first)
    assert tx.startswith("0x") and len(tx) == 66
    chain.anchor(second)
    anchors = chain.anchors("example.org/log")
    assert [(a.index, a.size, a.root) for a in anchors] == [
        (0, 0, first.root),
        (1, 7, second.root),
    ]
    assert 0 < anchors[0].timestamp <= anchors[1].timestamp
    assert chain.latest("example.org/log") == anchors[1]


def test_anchored_event(chain: ChainAnchor, tester_w3: Web3) -> None:
    cp = checkpoint(3)
    receipt = tester_w3.eth.get_transaction_receipt(chain.anchor(cp))
    (event,) = chain._contract.events.Anchored().process_receipt(receipt)
    assert event.args.originHash == Web3.keccak(text=cp.origin)
    assert (event.args.size, event.args.root) == (3, cp.root)


def test_origins_are_independent(chain: ChainAnchor) -> None:
    chain.anchor(checkpoint(10, "a.example/log"))
    chain.anchor(checkpoint(5, "b.example/log"))  # smaller than a's: fine, another origin
    chain.anchor(checkpoint(11, "a.example/log"))
    assert [a.size for a in chain.anchors("a.example/log")] == [10, 11]
    assert [a.size for a in chain.anchors("b.example/log")] == [5]
    assert chain.anchors("c.example/log") == []


@pytest.mark.parametrize("size", [5, 4, 0])
def test_size_must_increase(chain: ChainAnchor, size: int) -> None:
    chain.anchor(checkpoint(5))
    with pytest.raises(AnchorError, match=rf"SizeNotIncreasing\(latestSize=5, size={size}\)"):
        chain.anchor(checkpoint(size))
    assert [a.size for a in chain.anchors("example.org/log")] == [5]


def test_only_the_owner_anchors(
    chain: ChainAnchor, tester_w3: Web3, stranger: LocalAccount
) -> None:
    assert chain.owner() == chain.account_address
    intruder = ChainAnchor(tester_w3, stranger, chain.address)
    with pytest.raises(AnchorError, match=f"NotOwner\\(caller={stranger.address}\\)"):
        intruder.anchor(checkpoint(1))
    assert intruder.anchors("example.org/log") == []  # reading is open to anyone


def test_transfer_ownership(chain: ChainAnchor, tester_w3: Web3, stranger: LocalAccount) -> None:
    with pytest.raises(AnchorError, match="ZeroAddress"):
        chain.transfer_ownership("0x" + "00" * 20)
    chain.transfer_ownership(stranger.address)
    successor = ChainAnchor(tester_w3, stranger, chain.address)
    assert successor.owner() == stranger.address
    successor.anchor(checkpoint(1))
    with pytest.raises(AnchorError, match="NotOwner"):
        chain.anchor(checkpoint(2))


def test_verify_code(chain: ChainAnchor, tester_w3: Web3, owner: LocalAccount) -> None:
    chain.verify_code()
    with pytest.raises(AnchorError, match="no contract at"):
        ChainAnchor(tester_w3, owner, owner.address).verify_code()
    with pytest.raises(AnchorError, match="not a contract address"):
        ChainAnchor(tester_w3, owner, "0x1234")


def test_unreachable_endpoint_is_an_anchor_error(owner: LocalAccount, closed_port: int) -> None:
    port = closed_port
    # Hosted endpoints put API keys in the path: they must not end up in messages.
    w3 = http_web3(f"http://127.0.0.1:{port}/v3/secret-api-key", timeout_s=2)
    client = ChainAnchor(w3, owner, "0x" + "11" * 20, timeout_s=2)
    for action in (lambda: client.latest("o"), lambda: client.anchor(checkpoint(1))):
        with pytest.raises(AnchorError, match=f"cannot connect to http://127.0.0.1:{port}") as info:
            action()
        assert "secret-api-key" not in str(info.value)
        assert isinstance(info.value, MsecError)


class JunkRpc(http.server.HTTPServer):
    """An HTTP server on loopback that answers every POST with ``body`` (set by the test)."""

    body = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _JunkHandler(http.server.BaseHTTPRequestHandler):
    server: JunkRpc

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def junk_rpc() -> Iterator[JunkRpc]:
    server = JunkRpc(("127.0.0.1", 0), _JunkHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b"[]",
        b'{"jsonrpc": "2.0", "id": 0, "result": "0x1"}',
        b'{"jsonrpc": "2.0", "id": 0, "error": {"code": -32000, "message": "boom"}}',
    ],
)
def test_misbehaving_endpoint_is_an_anchor_error(
    junk_rpc: JunkRpc, owner: LocalAccount, body: bytes
) -> None:
    junk_rpc.body = body
    client = ChainAnchor(http_web3(junk_rpc.url, timeout_s=2), owner, "0x" + "11" * 20)
    for action in (
        lambda: client.latest("o"),
        lambda: client.anchor(checkpoint(1)),
        client.verify_code,
    ):
        with pytest.raises(AnchorError):
            action()


@pytest.mark.parametrize("url", ["", "ws://127.0.0.1:8546", "127.0.0.1:8545", "file:///x"])
def test_rejects_non_http_urls(url: str) -> None:
    with pytest.raises(AnchorError, match="RPC URL must be"):
        http_web3(url)


def _key_file(tmp_path: Path, account: LocalAccount, mode: int = 0o600) -> Path:
    path = tmp_path / "anchor.key"
    path.write_text(account.key.hex() + "\n")
    path.chmod(mode)
    return path


def test_load_account(tmp_path: Path, owner: LocalAccount) -> None:
    assert load_account(_key_file(tmp_path, owner)).address == owner.address
    path = tmp_path / "prefixed.key"
    path.write_text("0x" + owner.key.hex())
    path.chmod(0o400)
    assert load_account(path).address == owner.address


def test_load_account_refuses_open_modes_and_junk(tmp_path: Path, owner: LocalAccount) -> None:
    secret = owner.key.hex()
    with pytest.raises(AnchorError, match="chmod 600") as info:
        load_account(_key_file(tmp_path, owner, 0o644))
    assert secret not in str(info.value)
    for junk in ("", "zz" * 32, secret[:-2], "00" * 32):
        path = tmp_path / "junk.key"
        path.write_text(junk)
        path.chmod(0o600)
        with pytest.raises(AnchorError, match="key") as info:
            load_account(path)
        assert junk == "" or junk not in str(info.value)
    with pytest.raises(AnchorError, match="cannot read key file"):
        load_account(tmp_path / "missing.key")


def test_connect_deploys_once_and_remembers(
    tmp_path: Path, tester_w3: Web3, owner: LocalAccount
) -> None:
    settings = AnchorSettings(key_file=_key_file(tmp_path, owner), timeout_s=10)
    contract_file = tmp_path / "anchor" / "contract"
    first = connect(settings, contract_file=contract_file, w3=tester_w3)
    assert contract_file.read_text().strip() == first.address
    first.anchor(checkpoint(1))
    again = connect(settings, contract_file=contract_file, w3=tester_w3)
    assert again.address == first.address
    assert again.latest("example.org/log") is not None
    explicit = settings.model_copy(update={"contract": first.address})
    by_address = connect(explicit, contract_file=tmp_path / "unused", w3=tester_w3)
    assert by_address.address == first.address
    assert not (tmp_path / "unused").exists()


def test_connect_refuses_foreign_contracts(
    tmp_path: Path, tester_w3: Web3, chain: ChainAnchor, stranger: LocalAccount
) -> None:
    settings = AnchorSettings(
        key_file=_key_file(tmp_path, stranger), contract=chain.address, timeout_s=10
    )
    with pytest.raises(AnchorError, match=f"owned by {chain.account_address}"):
        connect(settings, contract_file=tmp_path / "c", w3=tester_w3)
    not_ours = settings.model_copy(update={"contract": stranger.address})
    with pytest.raises(AnchorError, match="no contract at"):
        connect(not_ours, contract_file=tmp_path / "c", w3=tester_w3)


def test_connect_needs_url_and_key(tmp_path: Path, owner: LocalAccount, closed_port: int) -> None:
    with pytest.raises(AnchorError, match="anchoring is off"):
        connect(AnchorSettings(), contract_file=tmp_path / "c")
    with pytest.raises(AnchorError, match="key_file is not set"):
        connect(AnchorSettings(rpc_url="http://127.0.0.1:1"), contract_file=tmp_path / "c")
    settings = AnchorSettings(
        rpc_url=f"http://127.0.0.1:{closed_port}", key_file=_key_file(tmp_path, owner),
        timeout_s=2,
    )  # fmt: skip
    with pytest.raises(AnchorError, match="cannot connect"):
        connect(settings, contract_file=tmp_path / "c")
