"""Anchoring on an EVM chain through web3.py: :class:`ChainAnchor` and :func:`connect`.

Works with any Ethereum JSON-RPC endpoint (GoQuorum, Besu, Hardhat, eth-tester): transactions
are built here, signed locally with the log's account (``eth_account``), and sent raw, so the
node never holds the key. Proof-of-authority chains are read with web3's extra-data middleware.

Every failure of the chain or the endpoint is raised as :class:`~msec.anchor.base.AnchorError`
(translated in one place, ``_errors``); the key is never logged and the RPC URL
appears in messages only as ``scheme://host:port``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import HTTPProvider, Web3
from web3.exceptions import (
    ContractLogicError,
    TimeExhausted,
    Web3Exception,
)
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from msec.anchor.base import Anchor, AnchorError
from msec.anchor.settings import AnchorSettings
from msec.tlog.checkpoint import Checkpoint

__all__ = [
    "CONTRACT_NAME",
    "ChainAnchor",
    "connect",
    "http_web3",
    "load_account",
    "load_contract",
]

log = logging.getLogger(__name__)

CONTRACT_NAME = "CheckpointAnchor"
_PRIVATE_KEY = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
#: What web3 raises on a response that is not JSON-RPC as it expects (found by feeding it junk).
_MALFORMED = (ValueError, TypeError, AttributeError, KeyError, IndexError)


@functools.cache
def _artifact() -> dict[str, Any]:
    """The compiled contract shipped in the package (built by ``contracts/compile.js``)."""
    path = resources.files("msec.anchor") / "contract" / f"{CONTRACT_NAME}.json"
    artifact: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return artifact


def load_contract() -> tuple[list[dict[str, Any]], str]:
    """The ``CheckpointAnchor`` ABI and creation bytecode (``0x`` hex) shipped with msec.

    Both come from ``msec/anchor/contract/CheckpointAnchor.json``, which CI checks to be the
    build of ``contracts/CheckpointAnchor.sol`` with the solc pinned in ``package.json``.
    """
    artifact = _artifact()
    return artifact["abi"], artifact["bytecode"]


def _strip_metadata(code: bytes) -> bytes:
    """Runtime code without solc's trailing CBOR metadata (its length is in the last 2 bytes).

    Comparing without it accepts a contract built from the same code with different comments.
    """
    if len(code) < 2:
        return code
    length = int.from_bytes(code[-2:], "big")
    return code[: -(length + 2)] if length + 2 <= len(code) else code


def _endpoint(url: str) -> str:
    """``scheme://host:port`` of an RPC URL: hosted endpoints put API keys in path and query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _describe_revert(data: Any) -> str:
    """A contract error's name and arguments, decoded with our ABI, e.g. ``NotOwner(caller=..)``."""
    if not isinstance(data, str) or not data.startswith("0x"):
        return f"reverted ({data!r})"
    try:
        raw = bytes.fromhex(data[2:])
    except ValueError:
        return f"reverted ({data[:74]})"
    abi, _ = load_contract()
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [arg["type"] for arg in item["inputs"]]
        if raw[:4] != keccak(text=f"{item['name']}({','.join(types)})")[:4]:
            continue
        try:
            values = abi_decode(types, raw[4:])
        except Exception:  # malformed arguments: still name the error
            return str(item["name"])
        shown = [
            Web3.to_checksum_address(v) if arg["type"] == "address" else v
            for arg, v in zip(item["inputs"], values, strict=True)
        ]
        args = ", ".join(f"{arg['name']}={v}" for arg, v in zip(item["inputs"], shown, strict=True))
        return f"{item['name']}({args})"
    return f"reverted with unknown error {data[:10]}"


def http_web3(rpc_url: str, *, timeout_s: float = 30.0) -> Web3:
    """A :class:`~web3.Web3` on the JSON-RPC endpoint ``rpc_url`` (``http://`` or ``https://``).

    Each request times out after ``timeout_s``; read-only requests are retried twice on a
    connection error. Nothing is sent before the first call. Raises :class:`AnchorError` for a
    URL that is not HTTP(S).
    """
    parts = urlsplit(rpc_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AnchorError(f"RPC URL must be http(s)://host[:port][/path], not {_endpoint(rpc_url)}")
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout_s},
        exception_retry_configuration=ExceptionRetryConfiguration(
            errors=(requests.ConnectionError, requests.Timeout), retries=2, backoff_factor=0.1
        ),
    )
    w3 = Web3(provider)
    # PoA chains (GoQuorum, Besu IBFT/QBFT/Clique) carry more than 32 bytes of extraData, which
    # web3 refuses in blocks unless this middleware is first; on other chains it does nothing.
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def load_account(key_file: Path) -> LocalAccount:
    """The account whose hex private key (64 digits, ``0x`` optional) is in ``key_file``.

    Raises :class:`AnchorError` if the file cannot be read, is readable or writable by group or
    others (it must be mode 0600 or stricter), or does not hold a valid key. Messages name the
    file, never its content.
    """
    try:
        mode = key_file.stat().st_mode
        if mode & 0o077:
            raise AnchorError(
                f"key file {key_file} is accessible by group or others "
                f"(mode {mode & 0o777:04o}); chmod 600 it"
            )
        text = key_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not ASCII"
        raise AnchorError(f"cannot read key file {key_file}: {reason}") from None
    match = _PRIVATE_KEY.fullmatch(text.strip())
    if match is None:
        raise AnchorError(f"key file {key_file} does not hold a 32-byte hex private key")
    try:
        account: LocalAccount = Account.from_key(bytes.fromhex(match.group(1)))
    except Exception:  # eth-keys' ValidationError (0 or >= n); not chained: it may quote the key
        raise AnchorError(f"key file {key_file} holds an invalid secp256k1 key") from None
    return account


class ChainAnchor:
    """The ``CheckpointAnchor`` contract at ``address``, used by ``account`` through ``w3``.

    Implements :class:`~msec.anchor.base.AnchorChain`. ``w3`` may use any provider
    (``HTTPProvider`` from :func:`http_web3`, eth-tester's ``EthereumTesterProvider``). Only the
    contract's owner can :meth:`anchor`; anyone can read. Building the object sends nothing; call
    :meth:`verify_code` to check the address. Not thread-safe for concurrent :meth:`anchor`
    calls (nonces would collide); reads are.
    """

    def __init__(
        self, w3: Web3, account: LocalAccount, address: str, *, timeout_s: float = 30.0
    ) -> None:
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise AnchorError(f"not a contract address: {address!r}")
        abi, _ = load_contract()
        self._w3 = w3
        self._account = account
        self._timeout_s = timeout_s
        self.address: str = Web3.to_checksum_address(address)
        self._contract = w3.eth.contract(address=self.address, abi=abi)

    @classmethod
    def deploy(cls, w3: Web3, account: LocalAccount, *, timeout_s: float = 30.0) -> ChainAnchor:
        """Deploy a new contract owned by ``account`` and return it once mined.

        Raises :class:`AnchorError` if the transaction fails, reverts or is not mined within
        ``timeout_s``.
        """
        abi, bytecode = load_contract()
        factory = w3.eth.contract(abi=abi, bytecode=bytecode)
        with _errors(w3, "deploying the anchor contract", timeout_s):
            receipt = _transact(w3, account, factory.constructor(), timeout_s)
        address = receipt["contractAddress"]
        log.info("deployed %s at %s (owner %s)", CONTRACT_NAME, address, account.address)
        return cls(w3, account, address, timeout_s=timeout_s)

    @property
    def account_address(self) -> str:
        """The checksummed address that signs this client's transactions."""
        return str(self._account.address)

    def anchor(self, checkpoint: Checkpoint) -> str:
        """Anchor ``checkpoint`` (origin, size, root); return the mined transaction's hash.

        Returns once the transaction has a successful receipt. Raises :class:`AnchorError`
        naming the contract's error (``NotOwner``, ``SizeNotIncreasing``) when refused, and on
        a timeout or an endpoint that cannot be reached.
        """
        call = self._contract.functions.anchor(checkpoint.origin, checkpoint.size, checkpoint.root)
        action = f"anchoring {checkpoint.origin!r} at size {checkpoint.size}"
        with _errors(self._w3, action, self._timeout_s):
            receipt = _transact(self._w3, self._account, call, self._timeout_s)
        tx_hash = Web3.to_hex(receipt["transactionHash"])
        log.info(
            "anchored %r size %d in %s (block %d)",
            checkpoint.origin,
            checkpoint.size,
            tx_hash,
            receipt["blockNumber"],
        )
        return tx_hash

    def anchors(self, origin: str) -> list[Anchor]:
        """Every anchor of ``origin``, oldest first, all read at the same block."""
        with _errors(self._w3, f"reading the anchors of {origin!r}", self._timeout_s):
            block = self._w3.eth.block_number
            count = self._contract.functions.anchorCount(origin).call(block_identifier=block)
            return [self._anchor_at(origin, i, block) for i in range(count)]

    def latest(self, origin: str) -> Anchor | None:
        """The newest anchor of ``origin``, or ``None`` when it has none."""
        with _errors(self._w3, f"reading the latest anchor of {origin!r}", self._timeout_s):
            block = self._w3.eth.block_number
            count = self._contract.functions.anchorCount(origin).call(block_identifier=block)
            return self._anchor_at(origin, count - 1, block) if count else None

    def _anchor_at(self, origin: str, index: int, block: int) -> Anchor:
        size, root, timestamp = self._contract.functions.anchorAt(origin, index).call(
            block_identifier=block
        )
        return Anchor(index=index, size=size, root=bytes(root), timestamp=timestamp)

    def owner(self) -> str:
        """The checksummed address of the account allowed to anchor."""
        with _errors(self._w3, "reading the contract's owner", self._timeout_s):
            return str(self._contract.functions.owner().call())

    def transfer_ownership(self, new_owner: str) -> str:
        """Hand anchoring over to ``new_owner`` (key rotation); return the mined tx's hash.

        Only the current owner can; raises :class:`AnchorError` (``NotOwner``, ``ZeroAddress``,
        or a chain failure) otherwise. This client can no longer anchor afterwards.
        """
        if not isinstance(new_owner, str) or not _ADDRESS.fullmatch(new_owner):
            raise AnchorError(f"not an account address: {new_owner!r}")
        call = self._contract.functions.transferOwnership(Web3.to_checksum_address(new_owner))
        with _errors(self._w3, f"transferring ownership to {new_owner}", self._timeout_s):
            receipt = _transact(self._w3, self._account, call, self._timeout_s)
        log.info("%s at %s now owned by %s", CONTRACT_NAME, self.address, new_owner)
        return Web3.to_hex(receipt["transactionHash"])

    def verify_code(self) -> None:
        """Check that ``address`` holds this version's contract; raise :class:`AnchorError`.

        The runtime code must equal ours apart from solc's metadata trailer (so a rebuild with
        other comments still matches). An address without code (wrong chain, wrong address,
        contract not deployed yet) is an error too.
        """
        with _errors(self._w3, f"reading the code at {self.address}", self._timeout_s):
            code = bytes(self._w3.eth.get_code(self.address))
        if not code:
            raise AnchorError(f"no contract at {self.address} on this chain")
        ours = bytes.fromhex(_artifact()["deployed_bytecode"].removeprefix("0x"))
        if _strip_metadata(code) != _strip_metadata(ours):
            raise AnchorError(f"the contract at {self.address} is not msec's {CONTRACT_NAME}")

    def __repr__(self) -> str:
        return f"ChainAnchor(address={self.address}, account={self.account_address})"


def _transact(w3: Web3, account: LocalAccount, call: Any, timeout_s: float) -> Any:
    """Sign ``call`` (a contract function or constructor) locally, send it, wait for the receipt.

    A revert before sending (gas estimation) surfaces as web3's contract errors; one after
    mining (status 0) as :class:`AnchorError`.
    """
    sender = account.address
    gas = call.estimate_gas({"from": sender})
    tx = call.build_transaction(
        {
            "from": sender,
            "nonce": w3.eth.get_transaction_count(sender, "pending"),
            "chainId": w3.eth.chain_id,
            # Headroom in case state moves between estimate and inclusion; unused gas is refunded.
            "gas": gas + gas // 5,
        }
    )
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s, poll_latency=0.1)
    if receipt["status"] != 1:
        raise AnchorError(f"transaction {Web3.to_hex(tx_hash)} reverted")
    return receipt


@contextmanager
def _errors(w3: Web3, action: str, timeout_s: float) -> Iterator[None]:
    """Translate web3, eth-tester and HTTP errors raised inside into :class:`AnchorError`."""
    url = getattr(w3.provider, "endpoint_uri", None)
    where = _endpoint(str(url)) if url else type(w3.provider).__name__

    def scrub(text: object) -> str:
        message = str(text)
        return message.replace(str(url), where) if url else message

    try:
        yield
    except AnchorError as exc:
        raise AnchorError(f"{action}: {exc}") from None
    except ContractLogicError as exc:  # ContractCustomError included
        data = _revert_data(exc.data)
        if data is None:
            raise AnchorError(f"{action}: reverted: {scrub(exc.message)}") from exc
        reason = _describe_revert(data)
        raise AnchorError(f"{action}: refused by the contract: {reason}") from exc
    except TimeExhausted as exc:
        raise AnchorError(
            f"{action}: no receipt from {where} within {timeout_s:g} s "
            "(the transaction may still be mined)"
        ) from exc
    except requests.Timeout as exc:
        raise AnchorError(f"{action}: {where} did not answer within {timeout_s:g} s") from exc
    except requests.ConnectionError as exc:
        raise AnchorError(f"{action}: cannot connect to {where}") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise AnchorError(f"{action}: {where} answered HTTP {status}") from exc
    except (requests.RequestException, OSError) as exc:
        raise AnchorError(f"{action}: {where}: {type(exc).__name__}") from exc
    except Web3Exception as exc:
        raise AnchorError(f"{action}: {where}: {type(exc).__name__}: {scrub(exc)}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("eth_tester."):
            # eth-tester's provider raises its own TransactionFailed, not web3's contract
            # errors, with the revert data only in the chained original.
            data = _eth_tester_revert_data(exc)
            if data is not None:
                reason = _describe_revert("0x" + data.hex())
                raise AnchorError(f"{action}: refused by the contract: {reason}") from exc
        elif not isinstance(exc, _MALFORMED):
            raise
        # web3 lets a malformed response (not JSON, wrong shapes) escape as one of these.
        detail = scrub(exc)[:300]
        raise AnchorError(f"{action}: {where}: {type(exc).__name__}: {detail}") from exc


def _revert_data(data: Any) -> str | None:
    """The ``0x`` revert data in a JSON-RPC error's ``data``, wherever the node put it.

    Geth, GoQuorum and Besu send the hex string itself; Hardhat a dict with it under ``data``.
    """
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        return data
    return None


def _eth_tester_revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data somewhere in eth-tester's chain of ``TransactionFailed``."""
    seen: BaseException | None = exc
    while seen is not None:
        for arg in seen.args:
            if isinstance(arg, bytes) and len(arg) >= 4:
                return arg
        seen = seen.__cause__ or seen.__context__
    return None


def connect(
    settings: AnchorSettings, *, contract_file: Path, w3: Web3 | None = None
) -> ChainAnchor:
    """The anchor contract of ``settings``, deployed first if needed; checked before use.

    Uses ``settings.contract`` if set, else the address remembered in ``contract_file``, else
    deploys a new contract owned by the key file's account and remembers its address there
    (written atomically; two processes deploying at once would each deploy one, and the last
    one written wins). The contract's code and owner are checked against ours and the key's
    account. ``w3`` replaces the connection to ``settings.rpc_url`` (tests use eth-tester).
    Raises :class:`AnchorError` when anchoring is off, the key is unusable, the address holds
    something else or belongs to another owner, or the chain fails.
    """
    if w3 is None and not settings.enabled:
        raise AnchorError("anchoring is off: [anchor] rpc_url is empty")
    if settings.key_file is None:
        raise AnchorError("[anchor] key_file is not set")
    account = load_account(settings.key_file)
    if w3 is None:
        w3 = http_web3(settings.rpc_url, timeout_s=settings.timeout_s)
    address = settings.contract or _read_address(contract_file)
    if not address:
        chain = ChainAnchor.deploy(w3, account, timeout_s=settings.timeout_s)
        _write_address(contract_file, chain.address)
        return chain
    chain = ChainAnchor(w3, account, address, timeout_s=settings.timeout_s)
    chain.verify_code()
    owner = chain.owner()
    if owner != account.address:
        raise AnchorError(
            f"the contract at {chain.address} is owned by {owner}, "
            f"not by the log's account {account.address}"
        )
    return chain


def _read_address(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorError(f"cannot read the contract address file {path}: {exc}") from exc
    if not _ADDRESS.fullmatch(text):
        raise AnchorError(f"{path} does not hold a contract address")
    return text


def _write_address(path: Path, address: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(address + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise AnchorError(
            f"deployed {CONTRACT_NAME} at {address} but cannot remember it in {path}: {exc}; "
            f'set [anchor] contract = "{address}"'
        ) from exc
