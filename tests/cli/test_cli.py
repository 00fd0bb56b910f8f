"""``msec device ...`` through typer's CliRunner, then the credentials file it writes in use."""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from msec.cli.main import app
from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.sdk import Device

KIND = "environment_station"
GOOD = [("environment", "temperature", 18.5)]

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def msec(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def add(name: str, out: Path, data_dir: Path, *extra: str, kind: str = KIND):
    return msec("device", "add", name, "--kind", kind, "--out", out, "--data-dir", data_dir,
                *extra)


def listed(data_dir: Path) -> dict[str, dict]:
    result = msec("device", "list", "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {row["name"]: row for row in rows}


def message(result) -> str:
    """What the command said, with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_add_writes_a_private_credentials_file_and_registers(tmp_path: Path,
                                                             data_dir: Path) -> None:
    out = tmp_path / "creds" / "station-1.json"
    result = add("station-1", out, data_dir)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    creds = json.loads(out.read_text())
    assert creds["name"] == "station-1" and creds["kind"] == KIND and creds["alg"] == "EdDSA"
    secret = base64.b64decode(creds["secret_key"])
    assert len(secret) == 64  # libsodium layout: seed then public key
    assert "enc_key" not in creds
    with sqlite3.connect(data_dir / "msec.db") as db:
        (verify_key,) = db.execute(
            "SELECT verify_key FROM registry_devices WHERE name = ?", ("station-1",)
        ).fetchone()
    assert bytes(verify_key) == secret[32:]  # the platform keeps only the public key
    assert listed(data_dir) == {"station-1": {
        "name": "station-1", "kind": KIND, "tenant": "default", "alg": "EdDSA",
        "encrypted": False, "revoked": False,
    }}


def test_duplicate_name_is_refused(tmp_path: Path, data_dir: Path) -> None:
    assert add("station-1", tmp_path / "a.json", data_dir).exit_code == 0
    result = add("station-1", tmp_path / "b.json", data_dir)
    assert result.exit_code == 2
    assert not (tmp_path / "b.json").exists()
    text = message(result)
    assert "station-1" in text and "already" in text.lower(), text


def test_unknown_kind_is_refused(tmp_path: Path, data_dir: Path) -> None:
    result = add("station-1", tmp_path / "a.json", data_dir, kind="toaster")
    assert result.exit_code == 2
    text = message(result)
    assert "unknown device kind 'toaster'" in text and KIND in text, text
    assert not (tmp_path / "a.json").exists()
    assert listed(data_dir) == {}


def test_existing_out_file_is_never_overwritten(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "precious.json"
    out.write_text("do not touch")
    result = add("station-1", out, data_dir)
    assert result.exit_code == 2
    assert "refusing to overwrite" in message(result)
    assert out.read_text() == "do not touch"
    assert listed(data_dir) == {}  # nothing registered without its credentials


def test_bad_alg_and_bad_name_are_refused(tmp_path: Path, data_dir: Path) -> None:
    result = add("station-1", tmp_path / "a.json", data_dir, "--alg", "RSA")
    assert result.exit_code == 2 and "EdDSA or HMAC256" in message(result)
    result = add("Bad Name/..", tmp_path / "b.json", data_dir)
    assert result.exit_code == 2 and "device name" in message(result)
    assert listed(data_dir) == {}


def test_hmac_and_encrypt_keys_are_stored_wrapped(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "mac.json"
    result = add("mac-1", out, data_dir, "--alg", "HMAC256", "--encrypt")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    creds = json.loads(out.read_text())
    assert creds["alg"] == "HMAC256" and "secret_key" not in creds
    mac_key = base64.b64decode(creds["mac_key"])
    enc_key = base64.b64decode(creds["enc_key"])
    assert len(mac_key) == 32 and len(enc_key) == 32
    assert listed(data_dir)["mac-1"]["encrypted"] is True

    with sqlite3.connect(data_dir / "msec.db") as db:
        stored_mac, stored_enc = db.execute(
            "SELECT verify_key, enc_key FROM registry_devices WHERE name = ?", ("mac-1",)
        ).fetchone()
    for raw, stored in ((mac_key, bytes(stored_mac)), (enc_key, bytes(stored_enc))):
        assert stored != raw and raw not in stored
        assert len(stored) == 12 + 32 + 16  # nonce + AES-GCM ciphertext + tag

    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    try:
        record = platform.registry.get("mac-1")
        assert record.verify_key == mac_key and record.enc_key == enc_key  # unwrapped by the KEK
    finally:
        platform.close()


def test_revoke(tmp_path: Path, data_dir: Path) -> None:
    assert add("station-1", tmp_path / "a.json", data_dir).exit_code == 0
    assert add("station-2", tmp_path / "b.json", data_dir).exit_code == 0
    result = msec("device", "revoke", "station-1", "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    rows = listed(data_dir)
    assert rows["station-1"]["revoked"] is True and rows["station-2"]["revoked"] is False

    result = msec("device", "revoke", "nobody", "--data-dir", data_dir)
    assert result.exit_code == 2
    assert "no device 'nobody'" in message(result)


@pytest.mark.parametrize("extra", [(), ("--alg", "HMAC256", "--encrypt")],
                         ids=["eddsa", "hmac-encrypted"])
def test_the_credentials_file_seals_what_the_platform_accepts(tmp_path: Path, data_dir: Path,
                                                              extra: tuple[str, ...]) -> None:
    out = tmp_path / "dev.json"
    assert add("station-1", out, data_dir, *extra).exit_code == 0
    device = Device.load(out)
    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    try:
        outcome = platform.ingestor.process([Incoming(device.seal(GOOD), device.topic(GOOD))])[0]
        assert outcome.ok and outcome.stored == 1, outcome
        latest = platform.twin.latest("station-1", "environment", "temperature")
        assert latest is not None and latest.value == 18.5
    finally:
        platform.close()


def test_loading_twice_never_reuses_a_sequence_number(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "dev.json"
    assert add("station-1", out, data_dir).exit_code == 0
    first = Device.load(out)
    sealed = [first.seal(GOOD) for _ in range(3)]
    used_by_first = first.next_seq - 1
    # A restart while the first process may still have sealed more than it sent.
    second = Device.load(out)
    assert second.next_seq > used_by_first
    sealed += [second.seal(GOOD) for _ in range(3)]
    third = Device.load(out)
    assert third.next_seq > second.next_seq - 1
    sealed.append(third.seal(GOOD))

    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    try:
        outcomes = platform.ingestor.process(
            [Incoming(data, first.topic(GOOD)) for data in sealed])
        assert [o.stored for o in outcomes] == [1] * 7, outcomes  # no replay among them
        seqs = [v.seq for v in platform.twin.history("station-1", "environment", "temperature")]
        assert len(seqs) == 7 and len(set(seqs)) == 7
        assert seqs[:3] == [1, 2, 3]
        assert min(seqs[3:6]) > max(seqs[:3]) and seqs[6] > max(seqs[3:6])
    finally:
        platform.close()
