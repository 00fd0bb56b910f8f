"""Key-encryption keys: the key file, key ids, and the key ring that picks a KEK by id."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from msec.companion import CompanionError, FileKeyWrapper, KeyRing


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "companion.key"
    first = FileKeyWrapper(path)
    assert path.stat().st_size == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = FileKeyWrapper(path)
    assert again.key_id == first.key_id and len(first.key_id) == 16
    blob = first.wrap(b"k" * 32, b"aad")
    assert again.unwrap(blob, b"aad") == b"k" * 32


def test_repr_shows_no_key_material(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    wrapper = FileKeyWrapper(path)
    key = path.read_bytes()
    for text in (repr(wrapper), repr(KeyRing(wrapper))):
        assert key.hex() not in text and repr(key) not in text
        assert wrapper.key_id in text


def test_missing_or_malformed_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CompanionError, match="does not exist"):
        FileKeyWrapper(tmp_path / "absent.key", create=False)
    short = tmp_path / "short.key"
    short.write_bytes(os.urandom(16))
    with pytest.raises(CompanionError, match="not a 32-byte key"):
        FileKeyWrapper(short)


def test_unwrap_needs_the_same_key_and_associated_data(tmp_path: Path) -> None:
    wrapper = FileKeyWrapper(tmp_path / "a.key")
    blob = wrapper.wrap(b"k" * 32, b"subject-1")
    with pytest.raises(CompanionError, match="altered or moved"):
        wrapper.unwrap(blob, b"subject-2")
    with pytest.raises(CompanionError, match="altered or moved"):
        wrapper.unwrap(blob[:-1] + bytes([blob[-1] ^ 1]), b"subject-1")
    with pytest.raises(CompanionError):
        FileKeyWrapper(tmp_path / "b.key").unwrap(blob, b"subject-1")
    with pytest.raises(CompanionError):
        wrapper.unwrap(b"short", b"subject-1")


def test_key_ring_picks_the_kek_by_id(tmp_path: Path) -> None:
    old, new = FileKeyWrapper(tmp_path / "old.key"), FileKeyWrapper(tmp_path / "new.key")
    ring = KeyRing(old)
    key_id, blob = ring.wrap(b"d" * 32, b"aad")
    assert key_id == old.key_id
    ring.use(new)
    assert ring.current is new and ring.key_ids == (new.key_id, old.key_id)
    assert ring.unwrap(key_id, blob, b"aad") == b"d" * 32
    with pytest.raises(CompanionError, match=f"{old.key_id}, which is not loaded"):
        KeyRing(new).unwrap(key_id, blob, b"aad")
