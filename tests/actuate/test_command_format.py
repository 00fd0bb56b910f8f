"""The signed command format: what a device accepts, and every way a command is refused."""

from __future__ import annotations

import math
import os
import stat
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msec.actuate.command import (
    MAX_ARGS_BYTES,
    MAX_COMMAND_BYTES,
    Command,
    CommandRejected,
    CommandSigner,
    RejectedBecause,
    check_args,
    key_id,
    open_command,
)
from msec.crypto import cose

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SIGNER = CommandSigner(b"\x07" * 32)


def command(**changes: object) -> Command:
    base = Command(
        device="plug-01",
        service="plug",
        resource="switch",
        args={"on": True},
        seq=42,
        issued_at=NOW,
        expires_at=NOW + 30,
        id="0123456789abcdef0123456789abcdef",
        principal="user:alice",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def open_(data: bytes, **kw: object) -> Command:
    options: dict[str, object] = {"device": "plug-01", "now": NOW + 1}
    options.update(kw)
    return open_command(data, SIGNER.public_key, **options)  # type: ignore[arg-type]


def refused(data: bytes, **kw: object) -> RejectedBecause:
    with pytest.raises(CommandRejected) as caught:
        open_(data, **kw)
    return caught.value.reason


# ---- round trip -------------------------------------------------------------------------------
def test_round_trip() -> None:
    sent = command(args={"on": False, "level": 0.5, "tags": ["a", None]})
    assert open_(SIGNER.seal(sent)) == sent


def test_payload_is_canonical_cbor_with_the_documented_keys() -> None:
    outer = cose.parse_outer(SIGNER.seal(command()))
    assert outer.kid == SIGNER.key_id == key_id(SIGNER.public_key)
    assert outer.kid.startswith("cmd-")
    payload = cbor2.loads(outer.payload)
    assert payload == {
        "d": "plug-01", "s": "plug", "r": "switch", "a": {"on": True}, "n": 42,
        "t": NOW, "x": NOW + 30, "i": "0123456789abcdef0123456789abcdef", "p": "user:alice",
    }
    assert outer.payload == cbor2.dumps(payload, canonical=True)


def test_sealing_is_deterministic() -> None:
    # Ed25519 is deterministic and the payload canonical: the same command, the same bytes.
    assert SIGNER.seal(command()) == SIGNER.seal(command())


def test_seal_refuses_what_a_device_would_refuse() -> None:
    for bad in (
        command(device="Plug 01"),
        command(seq=0),
        command(expires_at=NOW),
        command(expires_at=NOW + 301),
        command(id="not-hex"),
        command(principal=""),
        command(args={"on": math.nan}),
    ):
        with pytest.raises(ValueError):
            SIGNER.seal(bad)


# ---- refusals ---------------------------------------------------------------------------------
def test_another_key_is_a_bad_signature() -> None:
    forger = CommandSigner(b"\x08" * 32)
    assert refused(forger.seal(command())) is RejectedBecause.BAD_SIGNATURE


def test_another_key_under_the_platform_kid_is_a_bad_signature() -> None:
    forger = CommandSigner(b"\x08" * 32)
    forged = cose.sign1(command().encode(), kid=SIGNER.key_id, signing_key=forger._secret)
    assert refused(forged) is RejectedBecause.BAD_SIGNATURE


def test_a_changed_payload_is_a_bad_signature() -> None:
    data = bytearray(SIGNER.seal(command(args={"on": False})))
    at = bytes(data).index(b"\xf4")  # CBOR false -> true, signature left as it was
    data[at] = 0xF5
    assert refused(bytes(data)) is RejectedBecause.BAD_SIGNATURE


def test_a_mac0_is_a_bad_signature() -> None:
    data = cose.mac0(command().encode(), kid=SIGNER.key_id, mac_key=b"\x01" * 32)
    assert refused(data) is RejectedBecause.BAD_SIGNATURE


def test_a_command_for_another_device_is_refused() -> None:
    data = SIGNER.seal(command(device="plug-02"))
    assert refused(data) is RejectedBecause.WRONG_DEVICE
    assert open_(data, device="plug-02").device == "plug-02"


def test_an_expired_command_is_refused() -> None:
    data = SIGNER.seal(command())
    assert open_(data, now=NOW + 29.9).seq == 42
    assert refused(data, now=NOW + 30) is RejectedBecause.EXPIRED
    assert refused(data, now=NOW + 3600) is RejectedBecause.EXPIRED


def test_a_number_not_above_the_last_is_a_replay() -> None:
    data = SIGNER.seal(command(seq=42))
    assert open_(data, after_seq=41).seq == 42
    assert refused(data, after_seq=42) is RejectedBecause.REPLAY
    assert refused(data, after_seq=100) is RejectedBecause.REPLAY


def test_the_signature_is_checked_before_anything_else() -> None:
    # A forged command for another device, expired and replayed: the signature decides.
    forger = CommandSigner(b"\x08" * 32)
    data = forger.seal(command(device="plug-02"))
    assert refused(data, now=NOW + 999, after_seq=99) is RejectedBecause.BAD_SIGNATURE


def test_an_oversized_message_is_malformed() -> None:
    assert refused(b"\xd2" + b"\x00" * MAX_COMMAND_BYTES) is RejectedBecause.MALFORMED


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",  # not CBOR
        cbor2.dumps([1, 2, 3]),  # not a map
        cbor2.dumps({"d": "plug-01"}),  # keys missing
        cbor2.dumps({**cbor2.loads(command().encode()), "z": 1}),  # a key too many
        cbor2.dumps({**cbor2.loads(command().encode()), "n": -1}),
        cbor2.dumps({**cbor2.loads(command().encode()), "n": True}),
        cbor2.dumps({**cbor2.loads(command().encode()), "t": "yesterday"}),
        cbor2.dumps({**cbor2.loads(command().encode()), "x": NOW + 86400}),  # lives too long
        cbor2.dumps({**cbor2.loads(command().encode()), "a": b"bytes"}),
        cbor2.dumps({**cbor2.loads(command().encode()), "a": {1: "int key"}}),
        cbor2.dumps({**cbor2.loads(command().encode()), "d": "Not A Name"}),
        cbor2.dumps({**cbor2.loads(command().encode()), "i": "short"}),
    ],
)
def test_a_signed_but_malformed_payload_is_malformed(payload: bytes) -> None:
    data = cose.sign1(payload, kid=SIGNER.key_id, signing_key=SIGNER._secret)
    assert refused(data) is RejectedBecause.MALFORMED


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    with pytest.raises(CommandRejected) as caught:
        open_(data)
    assert caught.value.reason in (RejectedBecause.MALFORMED, RejectedBecause.BAD_SIGNATURE)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_flipping_any_byte_of_a_command_is_refused(data: st.DataObject) -> None:
    sealed = bytearray(SIGNER.seal(command()))
    at = data.draw(st.integers(0, len(sealed) - 1))
    sealed[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CommandRejected) as caught:
        open_(bytes(sealed))
    assert caught.value.reason in (RejectedBecause.MALFORMED, RejectedBecause.BAD_SIGNATURE)


# ---- args -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        {"on": math.inf},
        {"": 1},
        {"k": "x" * 257},
        {"k": "nul\x00"},
        {"k": "\ud800"},
        {"k": 2**64},
        {"k": b"bytes"},
        {"k": {1, 2}},
        [[[[["too deep"]]]]],
        list(range(33)),
        {f"k{i}": "x" * 200 for i in range(10)},  # over 1 KiB encoded
    ],
)
def test_args_must_be_small_and_json_like(args: object) -> None:
    with pytest.raises(ValueError):
        check_args(args)


def test_args_accept_json_values() -> None:
    assert check_args({"on": True, "n": None, "xs": (1, 2.5, "a")}) == {
        "on": True, "n": None, "xs": [1, 2.5, "a"],
    }
    assert check_args(None) is None
    assert len(cbor2.dumps(check_args({"k": "x" * 200}))) < MAX_ARGS_BYTES


# ---- the key ----------------------------------------------------------------------------------
def test_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "command.key"
    first = CommandSigner.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    again = CommandSigner.load_or_create(path)
    assert again.public_key == first.public_key
    assert again.key_id == first.key_id


def test_a_bad_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "command.key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError):
        CommandSigner.load_or_create(path)


def test_the_seed_never_shows(tmp_path: Path) -> None:
    path = tmp_path / "command.key"
    signer = CommandSigner.load_or_create(path)
    seed = path.read_bytes()
    for text in (repr(signer), str(signer)):
        assert seed.hex() not in text and signer.key_id in text
