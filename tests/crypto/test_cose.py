"""COSE structures: round trips, tamper detection, and bytes checked against RFC 9052 by hand."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from msec.core.errors import Rejected, RejectReason
from msec.crypto import cose
from msec.crypto.keys import new_ed25519, new_symmetric_key


def test_sign1_bytes_follow_rfc9052_and_verify_with_an_independent_library() -> None:
    public, secret = new_ed25519()
    data = cose.sign1(b"hello", kid="dev-1", signing_key=secret)
    # Tag 18 (0xd2), array of 4 (0x84), protected bstr {1: -8, 4: h'6465762d31'}.
    protected = bytes.fromhex("a2") + bytes.fromhex("0127") + bytes.fromhex("0445") + b"dev-1"
    assert data.startswith(bytes.fromhex("d284") + bytes([0x40 + len(protected)]) + protected)
    signature = data[-64:]
    # Sig_structure built by hand: ["Signature1", protected, h'', payload].
    tbs = (
        bytes.fromhex("84")
        + bytes.fromhex("6a")
        + b"Signature1"
        + bytes([0x40 + len(protected)])
        + protected
        + bytes.fromhex("40")
        + bytes.fromhex("45")
        + b"hello"
    )
    Ed25519PublicKey.from_public_bytes(public).verify(signature, tbs)  # raises if wrong
    outer = cose.parse_outer(data)
    assert outer.kid == "dev-1" and outer.payload == b"hello"
    cose.verify_sign1(outer, public)


def test_mac0_round_trip_and_wrong_key() -> None:
    key = new_symmetric_key()
    data = cose.mac0(b"payload", kid="m", mac_key=key)
    assert data[0] == 0xD1  # tag 17
    outer = cose.parse_outer(data)
    cose.verify_mac0(outer, key)
    with pytest.raises(Rejected) as err:
        cose.verify_mac0(outer, new_symmetric_key())
    assert err.value.reason is RejectReason.BAD_SIGNATURE


def test_encrypt0_round_trip_binds_the_kid() -> None:
    key = new_symmetric_key()
    sealed = cose.encrypt0(b"secret reading", kid="a", key=key)
    assert b"secret reading" not in sealed
    assert cose.is_encrypt0(sealed)
    assert cose.decrypt0(sealed, kid="a", key=key) == b"secret reading"
    with pytest.raises(Rejected) as err:
        cose.decrypt0(sealed, kid="b", key=key)
    assert err.value.reason is RejectReason.DECRYPT_FAILED
    with pytest.raises(Rejected) as err:
        cose.decrypt0(sealed, kid="a", key=new_symmetric_key())
    assert err.value.reason is RejectReason.DECRYPT_FAILED


def test_every_flipped_bit_of_a_sign1_is_refused() -> None:
    public, secret = new_ed25519()
    data = cose.sign1(b"\x01\x02\x03", kid="d", signing_key=secret)
    for i in range(len(data)):
        for bit in (0, 7):
            tampered = bytearray(data)
            tampered[i] ^= 1 << bit
            with pytest.raises(Rejected):
                cose.verify_sign1(cose.parse_outer(bytes(tampered)), public)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xd2",
        b"\xd2\x84",
        cbor2.dumps([1, 2, 3, 4]),
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])),
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: b"k"}), {}, b"", b"x" * 64])),
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps([1]), {}, b"", b""])),
        cbor2.dumps(cbor2.CBORTag(18, "text")),
        cbor2.dumps(cbor2.CBORTag(99, [b"", {}, b"", b""])),
        b"\x9f" * 10000,  # deeply nested indefinite arrays
    ],
)
def test_malformed_structures_are_rejected_as_malformed(data: bytes) -> None:
    with pytest.raises(Rejected) as err:
        cose.parse_outer(data)
    assert err.value.reason is RejectReason.MALFORMED


@given(st.binary(max_size=300))
def test_garbage_never_escapes_as_another_exception(data: bytes) -> None:
    try:
        cose.parse_outer(data)
    except Rejected as exc:
        assert exc.reason is RejectReason.MALFORMED
