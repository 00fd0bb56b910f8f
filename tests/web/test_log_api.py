"""The transparency log over HTTP, checked with code independent of msec.tlog.

The checkpoint's signature is checked with PyNaCl on the raw C2SP note, and proofs with a
transcription of RFC 9162 §2.1.3.2 and §2.1.4.2 written here: what an outside auditor
would do with only the key, the checkpoint and the proofs.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msec.platform import Platform, Settings
from msec.sdk import Device
from msec.web.app import create_app

AUTH = {"Authorization": "Bearer tok"}
COSE = {"Content-Type": "application/cose"}


# ---- an outside auditor's code ---------------------------------------------------------------
def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def open_note(note: str, vkey: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a checkpoint note signed by ``vkey``; AssertionError if not."""
    name, key_id, key_b64 = vkey.strip().split("+", 2)
    raw = base64.b64decode(key_b64)
    assert raw[0] == 1  # Ed25519
    text, _, signatures = note.partition("\n\n")
    text += "\n"
    for line in signatures.splitlines():
        signer, blob = line.removeprefix("\u2014 ").split(" ")
        sig = base64.b64decode(blob)
        if signer == name and sig[:4].hex() == key_id:
            nacl.signing.VerifyKey(raw[1:]).verify(text.encode(), sig[4:])
            origin, size, root = text.splitlines()[:3]
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no signature by the log's key")


def root_from_inclusion(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _h(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def check_consistency(first: int, second: int, r1: bytes, r2: bytes, path: list[bytes]) -> None:
    """RFC 9162 §2.1.4.2."""
    if first == second:
        assert not path and r1 == r2
        return
    if first & (first - 1) == 0:
        path = [r1, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        assert sn != 0
        if fn & 1 or fn == sn:
            fr = _h(b"\x01" + c + fr)
            sr = _h(b"\x01" + c + sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _h(b"\x01" + sr + c)
        fn >>= 1
        sn >>= 1
    assert fr == r1 and sr == r2 and sn == 0


# ---- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    yield p
    p.close()


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    p = platform
    app = create_app(
        twin=p.twin, events=p.events, ingestor=p.ingestor, tokens={"tok": "operator"},
        trust=p.trust,
    )
    with TestClient(app) as c:
        yield c


@pytest.fixture
def device(platform: Platform) -> Device:
    return platform.add_device("llamas-log", "environment_station")


def ingest(client: TestClient, device: Device, n: int) -> None:
    for i in range(n):
        envelope = device.seal([("environment", "temperature", 10.0 + i)])
        response = client.post("/api/v1/ingest", content=envelope, headers=COSE)
        assert response.status_code == 200, response.text


def b64(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


# ---- the routes ----------------------------------------------------------------------------------
def test_checkpoint_and_inclusion_proofs_verify_with_outside_code(
    client: TestClient, device: Device
) -> None:
    ingest(client, device, 21)
    vkey = client.get("/api/v1/log/key").text
    note = client.get("/api/v1/log/checkpoint").text
    origin, size, root = open_note(note, vkey)
    assert origin == "msec.local/default" and size == 22  # the device's registration first
    for index in range(size):
        proof = client.get("/api/v1/log/proof/inclusion", params={"index": index}).json()
        assert proof["size"] == size
        leaf = base64.b64decode(proof["leaf_hash"])
        assert root_from_inclusion(index, size, leaf, b64(proof["hashes"])) == root


def test_consistency_between_two_checkpoints(client: TestClient, device: Device) -> None:
    vkey = client.get("/api/v1/log/key").text
    ingest(client, device, 5)
    _, first, r1 = open_note(client.get("/api/v1/log/checkpoint").text, vkey)
    ingest(client, device, 13)
    _, second, r2 = open_note(client.get("/api/v1/log/checkpoint").text, vkey)
    assert (first, second) == (6, 19)  # the device's registration, then the readings
    proof = client.get("/api/v1/log/proof/consistency", params={"first": 6, "second": 19})
    check_consistency(first, second, r1, r2, b64(proof.json()["hashes"]))
    with pytest.raises(AssertionError):
        check_consistency(first, second, r1, _h(b"other"), b64(proof.json()["hashes"]))


def test_a_records_proof_leads_from_its_bytes_to_the_signed_checkpoint(
    client: TestClient, device: Device, platform: Platform
) -> None:
    ingest(client, device, 7)
    response = client.get(
        "/api/v1/log/proof/record", params={"kind": "reading", "ref": f"{device.name}/5"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    proof = response.json()
    data = base64.b64decode(proof["leaf_data"])
    leaf = _h(b"\x00" + data)
    assert base64.b64decode(proof["leaf_hash"]) == leaf
    _, size, root = open_note(proof["checkpoint"], client.get("/api/v1/log/key").text)
    assert size == proof["size"] == 8
    assert root_from_inclusion(proof["index"], size, leaf, b64(proof["hashes"])) == root
    assert b"llamas-log" in data  # the leaf data names what it logs
    missing = client.get(
        "/api/v1/log/proof/record", params={"kind": "reading", "ref": "nobody/1"}, headers=AUTH
    )
    assert missing.status_code == 404


def test_entries_list_kind_and_ref(client: TestClient, device: Device) -> None:
    ingest(client, device, 3)
    client.get("/api/v1/providers")  # unauthorised: a security event, so a leaf too
    entries = client.get("/api/v1/log/entries", params={"start": 0, "end": 10}, headers=AUTH)
    kinds = [(e["index"], e["kind"], e["ref"]) for e in entries.json()["entries"]]
    # The registration first; sequence numbers start at 1.
    assert kinds[:4] == [(0, "device", "llamas-log"), (1, "reading", "llamas-log/1"),
                         (2, "reading", "llamas-log/2"), (3, "reading", "llamas-log/3")]
    assert kinds[4][1] == "event"


BAD = ["-1", "1.5", "0x10", "", " 1", "1e3", "99999999999999999999999", "abc", "\uff11"]


@pytest.mark.parametrize("value", BAD)
def test_malformed_proof_parameters_are_400(client: TestClient, device: Device,
                                            value: str) -> None:
    ingest(client, device, 4)
    for url, names in (
        ("/api/v1/log/proof/inclusion", ("index", "size")),
        ("/api/v1/log/proof/consistency", ("first", "second")),
        ("/api/v1/log/entries", ("start", "end")),
    ):
        for name in names:
            params = {"index": "0", "size": "4", "first": "1", "second": "4", "start": "0"}
            params[name] = value
            response = client.get(url, params=params, headers=AUTH)
            assert response.status_code == 400, (url, name, value, response.text)
            assert "detail" in response.json()


@pytest.mark.parametrize("params", [
    {"index": "5", "size": "5"}, {"index": "0", "size": "6"}, {"index": "0", "size": "0"},
    {"size": "4"}, {},
])
def test_out_of_range_inclusion_is_400(client: TestClient, device: Device,
                                       params: dict[str, str]) -> None:
    ingest(client, device, 4)
    assert client.get("/api/v1/log/proof/inclusion", params=params).status_code == 400


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    url=st.sampled_from(["/api/v1/log/proof/inclusion", "/api/v1/log/proof/consistency",
                         "/api/v1/log/entries", "/api/v1/log/proof/record"]),
    params=st.dictionaries(
        st.sampled_from(["index", "size", "first", "second", "start", "end", "kind", "ref"]),
        st.one_of(st.text(max_size=30), st.integers(-10, 2**70).map(str)),
    ),
)
def test_fuzzed_proof_requests_never_fail_with_5xx(client: TestClient, url: str,
                                                   params: dict[str, str]) -> None:
    response = client.get(url, params=params, headers=AUTH)
    assert response.status_code in (200, 400, 404), (url, params, response.text)
