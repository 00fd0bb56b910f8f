"""The signed command format: what the platform sends to a device, and how the device checks it.

A command is a tagged ``COSE_Sign1`` (Ed25519, :mod:`msec.crypto.cose`) signed with the
platform's **command key**, whose payload is canonical CBOR of::

    {"d": device, "s": service, "r": resource, "a": args, "n": seq,
     "t": issued_at, "x": expires_at, "i": command id, "p": principal id}

``a`` is a small JSON-like value (``{"on": true}``), ``n`` strictly increases per device,
``t``/``x`` are epoch seconds, ``i`` is 32 random hex digits, ``p`` who asked. The ``kid`` is
:attr:`CommandSigner.key_id`, derived from the public key.

:func:`open_command` is the device's check. It guarantees that an accepted command was signed
by the holder of the command key, names this device, has not expired by the device's clock
and (given the highest sequence number the device accepted before) is not a replay. Refusals
raise :class:`CommandRejected` with a stable ``reason``.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import cbor2
import nacl.bindings

from msec.core.errors import MsecError, Rejected
from msec.crypto import cose
from msec.crypto.envelope import NAME_RE

__all__ = [
    "MAX_ARGS_BYTES",
    "MAX_COMMAND_BYTES",
    "MAX_TTL_S",
    "Command",
    "CommandRejected",
    "CommandSigner",
    "JsonValue",
    "RejectedBecause",
    "check_args",
    "check_command",
    "key_id",
    "open_command",
]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

#: Largest sealed command accepted (the device refuses bigger ones as ``malformed``).
MAX_COMMAND_BYTES: Final = 4096
#: Largest ``args`` once CBOR-encoded.
MAX_ARGS_BYTES: Final = 1024
#: Longest lifetime a command may have; the platform issues 1..300 s.
MAX_TTL_S: Final = 300
_MAX_DEPTH = 4
_MAX_ITEMS = 32
_MAX_TEXT = 256
_MAX_KEY = 64
_MAX_PRINCIPAL = 200
_MAX_INT = 2**63 - 1
_SEED_BYTES = 32
_ID_HEX = 32


class RejectedBecause(StrEnum):
    """Why a device refused a command."""

    BAD_SIGNATURE = "bad_signature"  #: not signed by the platform's command key
    WRONG_DEVICE = "wrong_device"  #: a command for another device
    EXPIRED = "expired"  #: past its ``expires_at`` by the device's clock
    MALFORMED = "malformed"  #: not a command (shape, size, types)
    REPLAY = "replay"  #: its sequence number is not above the highest accepted before


class CommandRejected(MsecError):
    """A command failed a check; ``reason`` says which, ``detail`` what was seen.

    ``detail`` never holds key material.
    """

    def __init__(self, reason: RejectedBecause, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Command:
    """One command for ``device``'s ``service/resource``, as signed."""

    device: str
    service: str
    resource: str
    args: JsonValue
    seq: int
    issued_at: float
    expires_at: float
    id: str
    principal: str

    def encode(self) -> bytes:
        """The payload: canonical CBOR (deterministic bytes for the same command)."""
        return cbor2.dumps(
            {
                "d": self.device,
                "s": self.service,
                "r": self.resource,
                "a": self.args,
                "n": self.seq,
                "t": self.issued_at,
                "x": self.expires_at,
                "i": self.id,
                "p": self.principal,
            },
            canonical=True,
        )

    @staticmethod
    def new_id() -> str:
        """A fresh command id: 128 random bits as 32 hex digits."""
        return secrets.token_hex(_ID_HEX // 2)


def key_id(public_key: bytes) -> str:
    """The ``kid`` of a command key: ``cmd-`` and 16 hex digits of SHA-256 of the public key."""
    return "cmd-" + hashlib.sha256(public_key).hexdigest()[:16]


class CommandSigner:
    """The platform's Ed25519 command key. Holds the seed; never logs or prints it."""

    __slots__ = ("_secret", "key_id", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != _SEED_BYTES:
            raise ValueError("a command key seed is 32 bytes")
        public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        self._secret = secret
        #: The 32-byte public key devices verify commands with (their credentials file).
        self.public_key: bytes = public
        self.key_id: str = key_id(public)

    def __repr__(self) -> str:
        return f"CommandSigner(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> CommandSigner:
        """A fresh random key (tests, throwaway platforms)."""
        return cls(os.urandom(_SEED_BYTES))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> CommandSigner:
        """The key kept in ``path`` (32 raw bytes, mode 0600), created on first use.

        Two processes creating it at once end up with the same key (exclusive create).
        Raises ``ValueError`` if the file is not a 32-byte key. Losing the file means every
        device must be given the new public key: back it up with the other keys.
        """
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # created by another process meanwhile: use theirs
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(os.urandom(_SEED_BYTES))
                    fh.flush()
                    os.fsync(fh.fileno())
        seed = path.read_bytes()
        if len(seed) != _SEED_BYTES:
            raise ValueError(f"{path} is not a 32-byte command key")
        return cls(seed)

    def seal(self, command: Command) -> bytes:
        """The command as a tagged COSE_Sign1 under this key.

        Raises ``ValueError`` if the command is not one a device would accept (names, args,
        sequence number, lifetime, size), so the platform never sends what will be refused.
        """
        check_command(command)
        data = cose.sign1(command.encode(), kid=self.key_id, signing_key=self._secret)
        if len(data) > MAX_COMMAND_BYTES:
            raise ValueError(f"command larger than {MAX_COMMAND_BYTES} bytes")
        return data


def open_command(
    data: bytes,
    public_key: bytes,
    *,
    device: str,
    now: float,
    after_seq: int | None = None,
) -> Command:
    """Verify a sealed command for ``device`` and return it.

    Checks, in this order: size and COSE shape (``malformed``); signature by ``public_key``
    (``bad_signature``); payload shape (``malformed``); ``d`` is ``device``
    (``wrong_device``); ``now`` is before ``expires_at`` (``expired``); and, when
    ``after_seq`` is given, its sequence number is above it (``replay``). Nothing of an
    unauthenticated command is looked at beyond its COSE shape. The caller must persist the
    returned ``seq`` as its new ``after_seq`` before acting on the command.
    """
    malformed = RejectedBecause.MALFORMED
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandRejected(malformed, f"larger than {MAX_COMMAND_BYTES} bytes")
    try:
        outer = cose.parse_outer(data)
    except Rejected as exc:
        raise CommandRejected(malformed, exc.detail) from None
    if outer.tag != cose.TAG_SIGN1:
        raise CommandRejected(RejectedBecause.BAD_SIGNATURE, "not a COSE_Sign1")
    if outer.kid != key_id(public_key):
        raise CommandRejected(RejectedBecause.BAD_SIGNATURE, "signed by another key")
    try:
        cose.verify_sign1(outer, public_key)
    except Rejected as exc:
        raise CommandRejected(RejectedBecause.BAD_SIGNATURE, exc.detail) from None
    command = _decode(outer.payload)
    if command.device != device:
        raise CommandRejected(
            RejectedBecause.WRONG_DEVICE, f"for {command.device!r}, not {device!r}"
        )
    if now >= command.expires_at:
        raise CommandRejected(
            RejectedBecause.EXPIRED, f"expired {now - command.expires_at:.1f}s ago"
        )
    if after_seq is not None and command.seq <= after_seq:
        raise CommandRejected(
            RejectedBecause.REPLAY, f"sequence {command.seq} is not above {after_seq}"
        )
    return command


def check_args(args: object) -> JsonValue:
    """``args`` as a command may carry it, or ``ValueError`` saying what is wrong.

    JSON-like only: null, booleans, integers of 64 bits, finite floats, text of at most 256
    characters (no NUL, valid Unicode), lists and objects (text keys of 1..64 characters) of
    at most 32 items, nested at most 4 deep, and at most 1 KiB once CBOR-encoded. Tuples
    become lists.
    """
    value = _clean(args, 0)
    if len(cbor2.dumps(value, canonical=True)) > MAX_ARGS_BYTES:
        raise ValueError(f"args larger than {MAX_ARGS_BYTES} bytes")
    return value


def _clean(value: object, depth: int) -> JsonValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -_MAX_INT - 1 <= value <= _MAX_INT:
            raise ValueError("args: integer out of the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("args: numbers must be finite")
        return value
    if isinstance(value, str):
        _check_text(value, _MAX_TEXT, "args: text")
        return value
    if depth >= _MAX_DEPTH:
        raise ValueError(f"args: nested more than {_MAX_DEPTH} deep")
    if isinstance(value, list | tuple):
        if len(value) > _MAX_ITEMS:
            raise ValueError(f"args: a list holds at most {_MAX_ITEMS} items")
        return [_clean(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        if len(value) > _MAX_ITEMS:
            raise ValueError(f"args: an object holds at most {_MAX_ITEMS} keys")
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ValueError("args: object keys are non-empty text")
            _check_text(key, _MAX_KEY, "args: a key")
            out[key] = _clean(item, depth + 1)
        return out
    raise ValueError(f"args: {type(value).__name__} is not JSON-like")


def _check_text(text: str, limit: int, what: str) -> None:
    if len(text) > limit:
        raise ValueError(f"{what} longer than {limit} characters")
    if "\x00" in text:
        raise ValueError(f"{what} holds NUL")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode") from None


def check_command(command: Command) -> None:
    """Raise ``ValueError`` unless every field of ``command`` is what a device accepts
    (names, sequence number 1..2^63-1, times, lifetime within 300 s, id, principal, args)."""
    _check_fields(command, ValueError)


def _check_fields(command: Command, error: type[Exception]) -> None:
    for what, name in (
        ("device", command.device),
        ("service", command.service),
        ("resource", command.resource),
    ):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise error(f"{what} is not a name")
    if type(command.seq) is not int or not 0 < command.seq <= _MAX_INT:
        raise error("sequence number out of range")
    for what, t in (("issued_at", command.issued_at), ("expires_at", command.expires_at)):
        if type(t) not in (int, float) or not math.isfinite(t) or not 0 <= t < 2**40:
            raise error(f"{what} is not a time")
    if not 0 < command.expires_at - command.issued_at <= MAX_TTL_S:
        raise error(f"lifetime must be within (0, {MAX_TTL_S}] seconds")
    if (
        not isinstance(command.id, str)
        or len(command.id) != _ID_HEX
        or any(c not in "0123456789abcdef" for c in command.id)
    ):
        raise error("command id is not 32 lowercase hex digits")
    if not isinstance(command.principal, str) or not 0 < len(command.principal) <= _MAX_PRINCIPAL:
        raise error("principal is not 1..200 characters")
    try:
        check_args(command.args)
    except ValueError as exc:
        raise error(str(exc)) from None


def _decode(payload: bytes) -> Command:
    malformed = RejectedBecause.MALFORMED
    try:
        obj: Any = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on hostile input
        raise CommandRejected(malformed, f"payload not CBOR: {type(exc).__name__}") from None
    if not isinstance(obj, Mapping):
        raise CommandRejected(malformed, "payload is not a map")
    keys = ("d", "s", "r", "a", "n", "t", "x", "i", "p")
    if set(obj) != set(keys):
        raise CommandRejected(malformed, "payload keys are not d s r a n t x i p")
    d, s, r, a, n, t, x, i, p = (obj[k] for k in keys)
    # CBOR may carry a whole second as an integer; anything else is left for the checks.
    t, x = (float(v) if type(v) is int and 0 <= v < 2**40 else v for v in (t, x))
    try:
        command = Command(d, s, r, check_args(a), n, t, x, i, p)
        _check_fields(command, ValueError)
    except ValueError as exc:
        raise CommandRejected(malformed, str(exc)) from None
    return command
