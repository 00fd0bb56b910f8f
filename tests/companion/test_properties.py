"""Properties over arbitrary plaintexts: every byte string round-trips, every bit is sealed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from msec.companion import CompanionError, FileKeyWrapper, SqlCompanion
from msec.companion.sql import records_table
from msec.twin import make_engine

_ids = itertools.count()


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('companion') / 'msec.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def store(sqlite_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> SqlCompanion:
    keys: Path = tmp_path_factory.mktemp("keys")
    store = SqlCompanion(sqlite_engine, FileKeyWrapper(keys / "companion.key"))
    store.create_schema()
    return store


@settings(max_examples=60, deadline=None)
@given(
    plaintext=st.binary(max_size=3000),
    name=st.text(
        st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=20,
    ),
)
def test_any_bytes_round_trip(store: SqlCompanion, plaintext: bytes, name: str) -> None:
    record_id = f"r-{next(_ids)}"
    store.put(name, record_id, plaintext, kind="reading", content_type="application/octet-stream")
    assert store.get(record_id)[1] == plaintext


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=300), data=st.data())
def test_any_flipped_bit_of_nonce_or_ciphertext_fails(
    store: SqlCompanion, sqlite_engine: Engine, plaintext: bytes, data: st.DataObject
) -> None:
    record_id = f"f-{next(_ids)}"
    store.put("flipper", record_id, plaintext, kind="reading")
    r = records_table.c
    with sqlite_engine.connect() as conn:
        nonce, ciphertext = conn.execute(
            select(r.nonce, r.ciphertext).where(r.record_id == record_id)
        ).one()
    sealed = bytearray(nonce + ciphertext)
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1), label="bit")
    sealed[bit // 8] ^= 1 << (bit % 8)
    with sqlite_engine.begin() as conn:
        conn.execute(
            update(records_table)
            .where(r.record_id == record_id)
            .values(nonce=bytes(sealed[:12]), ciphertext=bytes(sealed[12:]))
        )
    with pytest.raises(CompanionError, match="fails authentication"):
        store.get(record_id)
