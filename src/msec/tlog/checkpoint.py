"""Signed notes and log checkpoints in the C2SP formats.

Two formats, byte-compatible with ``golang.org/x/mod/sumdb/note`` and the transparency-dev tools:

* ``c2sp.org/signed-note``: UTF-8 text ending in a newline, a blank line, then one or more
  signature lines ``— <key name> <base64(4-byte key ID || signature)>``. Only Ed25519 keys
  (algorithm byte ``0x01``) are supported.
* ``c2sp.org/tlog-checkpoint``: the note text ``<origin>\\n<size>\\n<base64 root>\\n`` followed
  by optional extension lines.

Every parse here is strict: anything malformed raises :class:`~msec.core.errors.NoteError`, never
another exception type, and never returns a partial result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from msec.core.errors import MsecError

__all__ = [
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "note_key_id",
    "open_checkpoint",
    "open_note",
    "sign_note",
]


class NoteError(MsecError):
    """A note, checkpoint or key string is malformed, or its signatures do not verify."""


MAX_SIGNATURES = 100
"""Notes with more signature lines than this are refused unread (same bound as the Go code)."""

_ALG_ED25519 = 0x01
_SIG_PREFIX = "\u2014 "  # EM DASH, then a space
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HASH_LEN = 32
_SEED_LEN = 32
_ED25519_SIG_LEN = 64
_MAX_SIZE = 2**64  # tree sizes are uint64 in every implementation we interoperate with
_HEX8 = re.compile(r"[0-9a-f]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _valid_name(name: str) -> bool:
    """Whether ``name`` is a legal key name: non-empty, no whitespace, no '+'."""
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() for c in name)
        and _valid_text_chars(name)
    )


def _valid_text_chars(text: str) -> bool:
    """Whether ``text`` is encodable UTF-8 with no control character other than newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return not any(ord(c) < 0x20 and c != "\n" for c in text)


def _b64decode(data: str) -> bytes:
    """Decode canonical standard base64 (padded, no whitespace) or raise :class:`NoteError`.

    Stricter than Go's ``StdEncoding``: non-zero padding bits are refused too, so every accepted
    string is the one encoding of its bytes.
    """
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise NoteError("bad base64") from exc
    if base64.b64encode(raw).decode("ascii") != data:
        raise NoteError("non-canonical base64")
    return raw


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def note_key_id(name: str, public_key: bytes) -> int:
    """The 32-bit key ID of an Ed25519 key: first 4 bytes of SHA-256(name || 0x0A || 0x01 || key).

    ``public_key`` is the raw 32-byte Ed25519 public key (without the algorithm byte).
    """
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([_ALG_ED25519]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class NoteVerifier:
    """A named Ed25519 public key that checks note signatures.

    Construct with :meth:`from_string` from a verifier key string
    ``<name>+<8 hex key ID>+<base64(0x01 || public key)>``, or from :meth:`NoteSigner.verifier`.
    The constructor raises :class:`NoteError` for an invalid name or a key that is not 32 bytes.
    """

    name: str
    public_key: bytes
    key_id: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise NoteError("invalid key name")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise NoteError("Ed25519 public key must be 32 bytes")
        object.__setattr__(self, "key_id", note_key_id(self.name, self.public_key))

    @classmethod
    def from_string(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string; raise :class:`NoteError` if malformed.

        The embedded key ID must match the one computed from name and key, the algorithm byte must
        be ``0x01`` (Ed25519) and the key 32 bytes.
        """
        parts = vkey.split("+", 2)  # base64 may itself contain "+"
        if len(parts) != 3:
            raise NoteError("verifier key must be <name>+<hash>+<key>")
        name, hash_hex, key_b64 = parts
        if not _HEX8.fullmatch(hash_hex):
            raise NoteError("key ID must be 8 lower-case hex digits")
        key = _b64decode(key_b64)
        if len(key) != 33 or key[0] != _ALG_ED25519:
            raise NoteError("unsupported key algorithm or key length")
        verifier = cls(name, key[1:])
        if verifier.key_id != int(hash_hex, 16):
            raise NoteError("key ID does not match name and key")
        return verifier

    def to_string(self) -> str:
        """The verifier key string, the inverse of :meth:`from_string`."""
        key = _b64encode(bytes([_ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{key}"

    def verify(self, text: str | bytes, sig: bytes) -> bool:
        """Whether ``sig`` (64 bytes, without the key ID) is this key's signature of ``text``.

        ``text`` is the note text exactly as signed (``str`` is encoded as UTF-8). Never raises for
        a wrong or malformed signature; returns ``False``.
        """
        if isinstance(text, str):
            try:
                text = text.encode("utf-8")
            except UnicodeEncodeError:
                return False
        if len(sig) != _ED25519_SIG_LEN:
            return False
        try:
            nacl.signing.VerifyKey(self.public_key).verify(text, sig)
        except (nacl.exceptions.BadSignatureError, ValueError):
            return False
        return True


class NoteSigner:
    """A named Ed25519 private key that signs notes.

    Holds secret material: ``repr`` does not show it; persist it only through :meth:`to_string`
    into storage meant for secrets. The constructor raises :class:`NoteError` for an invalid name
    or a seed that is not 32 bytes.
    """

    __slots__ = ("_key", "_verifier", "name")

    def __init__(self, name: str, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != _SEED_LEN:
            raise NoteError("Ed25519 seed must be 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self._verifier = NoteVerifier(name, bytes(self._key.verify_key))
        self.name = name

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        """A signer with a fresh random key; raise :class:`NoteError` for an invalid name."""
        return cls(name, os.urandom(_SEED_LEN))

    @classmethod
    def from_string(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>``; raise :class:`NoteError`.

        The key ID must match the public key derived from the seed.
        """
        if not skey.startswith(_PRIVATE_PREFIX):
            raise NoteError("signer key must start with PRIVATE+KEY+")
        parts = skey[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise NoteError("signer key must be PRIVATE+KEY+<name>+<hash>+<key>")
        name, hash_hex, key_b64 = parts
        if not _HEX8.fullmatch(hash_hex):
            raise NoteError("key ID must be 8 lower-case hex digits")
        key = _b64decode(key_b64)
        if len(key) != 1 + _SEED_LEN or key[0] != _ALG_ED25519:
            raise NoteError("unsupported key algorithm or key length")
        signer = cls(name, key[1:])
        if signer.key_id != int(hash_hex, 16):
            raise NoteError("key ID does not match name and key")
        return signer

    def to_string(self) -> str:
        """The secret signer key string, the inverse of :meth:`from_string`."""
        seed = _b64encode(bytes([_ALG_ED25519]) + bytes(self._key))
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id:08x}+{seed}"

    @property
    def key_id(self) -> int:
        """The 32-bit key ID, shared with :meth:`verifier`."""
        return self._verifier.key_id

    def verifier(self) -> NoteVerifier:
        """The matching public verifier."""
        return self._verifier

    def sign(self, text: str) -> bytes:
        """The raw 64-byte Ed25519 signature of ``text`` encoded as UTF-8."""
        return self._key.sign(text.encode("utf-8")).signature

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id:08x})"


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if not _valid_text_chars(text):
        raise NoteError("note text has control characters or is not UTF-8")


def sign_note(text: str, signer: NoteSigner, *cosigners: NoteSigner) -> str:
    """The signed note: ``text``, a blank line, and one signature line per signer, in order.

    ``text`` must end with a newline and hold no control characters other than newlines; otherwise
    :class:`NoteError` is raised.
    """
    _check_note_text(text)
    lines = []
    for s in (signer, *cosigners):
        blob = s.key_id.to_bytes(4, "big") + s.sign(text)
        lines.append(f"{_SIG_PREFIX}{s.name} {_b64encode(blob)}\n")
    return text + "\n" + "".join(lines)


def open_note(signed: str | bytes, verifiers: Sequence[NoteVerifier]) -> str:
    """The text of ``signed`` if at least one of ``verifiers`` signed it; raise :class:`NoteError`.

    Signature lines for keys not in ``verifiers`` are skipped. A line naming a known key (same
    name and key ID) whose signature does not verify is an error, even if another line verifies:
    a bad signature from a trusted key means tampering, not noise. Also refused: bytes that are not
    UTF-8, control characters, no blank line before the signatures, no signature lines, a malformed
    line, bad base64, more than :data:`MAX_SIGNATURES` lines, and two verifiers that share a name
    and key ID but differ in key.
    """
    if isinstance(signed, bytes):
        try:
            signed = signed.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("note is not UTF-8") from exc
    if not _valid_text_chars(signed):
        raise NoteError("note has control characters or is not UTF-8")

    known: dict[tuple[str, int], NoteVerifier] = {}
    for v in verifiers:
        if known.setdefault((v.name, v.key_id), v) != v:
            raise NoteError(f"ambiguous verifiers for {v.name}+{v.key_id:08x}")

    split = signed.rfind("\n\n")
    if split < 0:
        raise NoteError("no blank line before signatures")
    text, sigs = signed[: split + 1], signed[split + 2 :]
    if not sigs or not sigs.endswith("\n"):
        raise NoteError("no signature lines, or last line not terminated")
    lines = sigs[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too many signatures")

    verified = 0
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise NoteError("signature line must start with an em dash and a space")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not _valid_name(name) or not b64:
            raise NoteError("malformed signature line")
        blob = _b64decode(b64)
        if len(blob) < 5:
            raise NoteError("signature too short")
        verifier = known.get((name, int.from_bytes(blob[:4], "big")))
        if verifier is None:
            continue
        if not verifier.verify(text, blob[4:]):
            raise NoteError(f"invalid signature by {name}")
        verified += 1
    if verified == 0:
        raise NoteError("no signature by a known key")
    return text


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed-over state: ``origin``, tree ``size`` and Merkle ``root`` (tlog-checkpoint).

    The constructor raises :class:`NoteError` if the fields cannot form a valid body: empty
    origin or one with a newline or control character, size outside ``[0, 2**64)``, root not
    32 bytes, or an extension line that is empty or holds a newline or control character.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line in (self.origin, *self.extensions):
            if not isinstance(line, str) or not line or "\n" in line:
                raise NoteError("origin and extension lines must be non-empty single lines")
            if not _valid_text_chars(line):
                raise NoteError("checkpoint line has control characters or is not UTF-8")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise NoteError("size must be an int")
        if not 0 <= self.size < _MAX_SIZE:
            raise NoteError("size out of range")
        if not isinstance(self.root, bytes) or len(self.root) != _HASH_LEN:
            raise NoteError("root hash must be 32 bytes")

    def body(self) -> str:
        """The note text to sign, every line newline-terminated."""
        lines = [self.origin, str(self.size), _b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the note text, not the signed note); raise :class:`NoteError`.

        Strict: the text must end in a newline and have at least three lines; the size is decimal
        without sign or leading zeros; the root is canonical standard base64 of 32 bytes.
        ``Checkpoint.parse(c.body()) == c`` for every checkpoint ``c``.
        """
        if not isinstance(text, str) or not text.endswith("\n"):
            raise NoteError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint needs origin, size and root lines")
        origin, size_s, root_s, *extensions = lines
        # The length bound keeps int() clear of Python's digit limit; 2**64 has 20 digits.
        if len(size_s) > 20 or not _DECIMAL.fullmatch(size_s):
            raise NoteError("size must be decimal without sign or leading zeros")
        return cls(origin, int(size_s), _b64decode(root_s), tuple(extensions))


def open_checkpoint(signed: str | bytes, verifiers: Sequence[NoteVerifier]) -> Checkpoint:
    """The checkpoint in ``signed`` after :func:`open_note`; raise :class:`NoteError` on failure."""
    return Checkpoint.parse(open_note(signed, verifiers))
