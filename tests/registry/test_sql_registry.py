"""The device registry: public keys as they are, shared secrets wrapped under the KEK."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from msec.registry import DeviceRecord, DuplicateDevice, SqlRegistry
from msec.registry.sql import KeyStoreError
from msec.twin import make_engine


def registry(path: Path, kek: bytes) -> SqlRegistry:
    reg = SqlRegistry(make_engine(f"sqlite:///{path}"), kek=kek)
    reg.create_schema()
    return reg


def test_round_trip_duplicate_and_revoke(tmp_path: Path) -> None:
    reg = registry(tmp_path / "r.db", os.urandom(32))
    record = DeviceRecord("gw-1", "environment_station", "default", "EdDSA", b"p" * 32,
                          enc_key=b"e" * 32, latitude=43.47, longitude=-3.80)
    stored = reg.add(record)
    assert stored.verify_key == b"p" * 32 and stored.enc_key == b"e" * 32
    assert stored.created > 0 and not stored.revoked
    with pytest.raises(DuplicateDevice, match="already registered"):
        reg.add(record)
    assert reg.revoke("gw-1") and reg.get("gw-1").revoked
    assert not reg.revoke("nobody") and reg.get("nobody") is None
    assert [r.name for r in reg.all()] == ["gw-1"]


def test_secrets_are_wrapped_and_a_wrong_kek_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    mac_key, enc_key = os.urandom(32), os.urandom(32)
    reg = registry(path, os.urandom(32))
    reg.add(DeviceRecord("mac-1", "environment_station", "default", "HMAC256", mac_key,
                         enc_key=enc_key))
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        raw = conn.exec_driver_sql("select verify_key, enc_key from registry_devices").one()
    assert mac_key not in bytes(raw[0]) and enc_key not in bytes(raw[1])
    assert reg.get("mac-1").verify_key == mac_key
    with pytest.raises(KeyStoreError, match=r"kek\.key"):
        registry(path, os.urandom(32)).get("mac-1")


def test_kek_must_be_32_bytes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        registry(tmp_path / "r.db", b"short")


def test_subjects_of_many_devices_in_batches(tmp_path: Path) -> None:
    reg = registry(tmp_path / "r.db", os.urandom(32))
    for name, subject in (("a-home-gw", "maria"), ("b-park", None), ("zz-home-gw", "kenji")):
        reg.add(DeviceRecord(name, "environment_station", "default", "HMAC256", b"k" * 32,
                             subject=subject))  # fmt: skip
    asked = [f"absent-{i:04d}" for i in range(1200)] + ["a-home-gw", "b-park", "zz-home-gw"]
    assert reg.subjects(asked) == {"a-home-gw": "maria", "b-park": None, "zz-home-gw": "kenji"}
    assert reg.subjects([]) == {}
