"""The few COSE structures (RFC 9052) the platform needs, over cbor2 and libsodium.

* ``COSE_Sign1`` (tag 18) with EdDSA / Ed25519 (alg -8): devices that can hold a key pair.
* ``COSE_Mac0`` (tag 17) with HMAC 256/256 (alg 5): constrained devices with a shared key.
* ``COSE_Encrypt0`` (tag 16) with A256GCM (alg 3), carried as the payload of the outer
  Sign1/Mac0 (encrypt-then-sign), so the broker and anyone on the path see only ciphertext.

Protected headers always carry ``alg`` (1) and ``kid`` (4); the kid is the device name in
UTF-8. External AAD is empty. pycose is not used: its last release cannot decode with cbor2 6
(see ``docs/architecture.md``); the byte layout is cross-checked against RFC 9052's examples in
``tests/crypto/test_cose.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from msec.core.errors import Rejected, RejectReason

TAG_ENCRYPT0 = 16
TAG_MAC0 = 17
TAG_SIGN1 = 18

ALG_A256GCM = 3
ALG_HMAC256 = 5
ALG_EDDSA = -8

H_ALG = 1
H_KID = 4
H_IV = 5

_ED25519_SIG = 64
_HMAC_TAG = 32
_IV_LEN = 12


@dataclass(frozen=True, slots=True)
class Outer:
    """The parsed outer layer of an envelope, before any check of its signature."""

    tag: int
    alg: int
    kid: str
    protected: bytes
    payload: bytes
    auth: bytes  # signature (Sign1) or MAC tag (Mac0)

    def to_be_authenticated(self) -> bytes:
        """The Sig_structure / MAC_structure the signature or tag covers."""
        context = "Signature1" if self.tag == TAG_SIGN1 else "MAC0"
        return cbor2.dumps([context, self.protected, b"", self.payload])


def _protected(alg: int, kid: str) -> bytes:
    return cbor2.dumps({H_ALG: alg, H_KID: kid.encode()})


def sign1(payload: bytes, *, kid: str, signing_key: bytes) -> bytes:
    """Seal ``payload`` as a tagged COSE_Sign1 signed with the 64-byte libsodium secret key."""
    protected = _protected(ALG_EDDSA, kid)
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    signature = nacl.bindings.crypto_sign(tbs, signing_key)[:_ED25519_SIG]
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [protected, {}, payload, signature]))


def mac0(payload: bytes, *, kid: str, mac_key: bytes) -> bytes:
    """Seal ``payload`` as a tagged COSE_Mac0 with HMAC-SHA256 under ``mac_key``."""
    protected = _protected(ALG_HMAC256, kid)
    tbm = cbor2.dumps(["MAC0", protected, b"", payload])
    tag = hmac.new(mac_key, tbm, hashlib.sha256).digest()
    return cbor2.dumps(cbor2.CBORTag(TAG_MAC0, [protected, {}, payload, tag]))


def encrypt0(plaintext: bytes, *, kid: str, key: bytes, iv: bytes | None = None) -> bytes:
    """Encrypt ``plaintext`` as a tagged COSE_Encrypt0 (A256GCM, random 96-bit IV).

    The kid is in the protected header, so the ciphertext is bound to the device.
    """
    protected = _protected(ALG_A256GCM, kid)
    iv = iv if iv is not None else os.urandom(_IV_LEN)
    aad = cbor2.dumps(["Encrypt0", protected, b""])
    ciphertext = AESGCM(key).encrypt(iv, plaintext, aad)
    return cbor2.dumps(cbor2.CBORTag(TAG_ENCRYPT0, [protected, {H_IV: iv}, ciphertext]))


def parse_outer(data: bytes) -> Outer:
    """Parse a tagged COSE_Sign1 or COSE_Mac0 without checking it.

    Raises :class:`Rejected` (``malformed``) for anything that is not exactly that shape.
    """
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types, incl. ValueError/TypeError/MemoryError
        raise Rejected(RejectReason.MALFORMED, f"not CBOR: {type(exc).__name__}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag not in (TAG_SIGN1, TAG_MAC0):
        raise Rejected(RejectReason.MALFORMED, "not a tagged COSE_Sign1 or COSE_Mac0")
    body = obj.value
    # cbor2 6 decodes arrays inside a tag as tuples and maps as frozendicts.
    if not isinstance(body, list | tuple) or len(body) != 4:
        raise Rejected(RejectReason.MALFORMED, "COSE structure must have 4 elements")
    protected, unprotected, payload, auth = body
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, Mapping)
        and isinstance(payload, bytes)
        and isinstance(auth, bytes)
    ):
        raise Rejected(RejectReason.MALFORMED, "COSE element of the wrong type")
    known = _GOOD_HEADERS.get((obj.tag, protected))
    if known is None:
        known = _outer_headers(obj.tag, protected)
    alg, kid_text = known
    return Outer(obj.tag, alg, kid_text, protected, payload, auth)


#: A device sends the same protected header every time: decode and check it once.
_GOOD_HEADERS: dict[tuple[int, bytes], tuple[int, str]] = {}
_GOOD_HEADERS_MAX = 100_000


def _outer_headers(tag: int, protected: bytes) -> tuple[int, str]:
    headers = _decode_headers(protected)
    alg, kid = headers.get(H_ALG), headers.get(H_KID)
    expected = ALG_EDDSA if tag == TAG_SIGN1 else ALG_HMAC256
    if alg != expected:
        raise Rejected(RejectReason.MALFORMED, f"unsupported alg {alg!r} for tag {tag}")
    if not isinstance(kid, bytes) or not 0 < len(kid) <= 128:
        raise Rejected(RejectReason.MALFORMED, "missing or invalid kid")
    try:
        kid_text = kid.decode()
    except UnicodeDecodeError:
        raise Rejected(RejectReason.MALFORMED, "kid is not UTF-8") from None
    if len(_GOOD_HEADERS) < _GOOD_HEADERS_MAX:  # bounded: garbage cannot grow it forever
        _GOOD_HEADERS[(tag, protected)] = (expected, kid_text)
    return expected, kid_text


def verify_sign1(outer: Outer, public_key: bytes) -> None:
    """Check an Ed25519 signature; raises :class:`Rejected` (``bad_signature``) if wrong."""
    if len(outer.auth) != _ED25519_SIG:
        raise Rejected(
            RejectReason.BAD_SIGNATURE, "signature has the wrong length", device=outer.kid
        )
    try:
        nacl.bindings.crypto_sign_open(outer.auth + outer.to_be_authenticated(), public_key)
    except nacl.exceptions.BadSignatureError:
        raise Rejected(
            RejectReason.BAD_SIGNATURE, "Ed25519 signature does not verify", device=outer.kid
        ) from None


def verify_mac0(outer: Outer, mac_key: bytes) -> None:
    """Check an HMAC-SHA256 tag in constant time; raises ``bad_signature`` if wrong."""
    expected = hmac.new(mac_key, outer.to_be_authenticated(), hashlib.sha256).digest()
    if len(outer.auth) != _HMAC_TAG or not hmac.compare_digest(expected, outer.auth):
        raise Rejected(RejectReason.BAD_SIGNATURE, "HMAC tag does not verify", device=outer.kid)


def is_encrypt0(payload: bytes) -> bool:
    """Whether an (already authenticated) payload is a tagged COSE_Encrypt0."""
    # 0xd0 is the one-byte CBOR head of tag 16.
    return payload[:1] == b"\xd0"


def decrypt0(data: bytes, *, kid: str, key: bytes | None) -> bytes:
    """Decrypt a tagged COSE_Encrypt0 sealed for ``kid``.

    Raises :class:`Rejected` with ``decrypt_failed`` or ``malformed``.
    """
    if key is None:
        raise Rejected(
            RejectReason.DECRYPT_FAILED, "device has no encryption key registered", device=kid
        )
    try:
        obj = cbor2.loads(data)
    except Exception as exc:
        raise Rejected(RejectReason.MALFORMED, f"Encrypt0 not CBOR: {type(exc).__name__}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != TAG_ENCRYPT0:
        raise Rejected(RejectReason.MALFORMED, "inner payload is not a COSE_Encrypt0")
    body = obj.value
    if not isinstance(body, list | tuple) or len(body) != 3:
        raise Rejected(RejectReason.MALFORMED, "COSE_Encrypt0 must have 3 elements")
    protected, unprotected, ciphertext = body
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, Mapping)
        and isinstance(ciphertext, bytes)
    ):
        raise Rejected(RejectReason.MALFORMED, "COSE_Encrypt0 element of the wrong type")
    headers = _decode_headers(protected)
    if headers.get(H_ALG) != ALG_A256GCM:
        raise Rejected(RejectReason.MALFORMED, "Encrypt0 alg must be A256GCM")
    if headers.get(H_KID) != kid.encode():
        raise Rejected(
            RejectReason.DECRYPT_FAILED, "Encrypt0 kid differs from the signer", device=kid
        )
    iv = unprotected.get(H_IV)
    if not isinstance(iv, bytes) or len(iv) != _IV_LEN:
        raise Rejected(RejectReason.MALFORMED, "Encrypt0 IV missing or not 12 bytes")
    aad = cbor2.dumps(["Encrypt0", protected, b""])
    try:
        return AESGCM(key).decrypt(iv, ciphertext, aad)
    except InvalidTag:
        raise Rejected(
            RejectReason.DECRYPT_FAILED, "AES-GCM tag does not verify", device=kid
        ) from None


def _decode_headers(protected: bytes) -> Mapping[object, object]:
    try:
        headers = cbor2.loads(protected) if protected else {}
    except Exception:
        raise Rejected(RejectReason.MALFORMED, "protected header is not CBOR") from None
    if not isinstance(headers, Mapping):
        raise Rejected(RejectReason.MALFORMED, "protected header is not a map")
    return headers
