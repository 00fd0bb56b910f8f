"""Device registry on SQLAlchemy (SQLite or PostgreSQL); secrets wrapped under a KEK."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import cbor2
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from msec.core.errors import MsecError
from msec.registry.base import DeviceRecord, DuplicateDevice
from msec.tlog import SqlLog, leaf_hash
from msec.tlog.sql import write_transaction
from msec.twin.engine import rows_in

metadata = sa.MetaData()


class KeyStoreError(MsecError):
    """Wrapped device keys cannot be read: wrong key-encryption key, or tampering."""


devices = sa.Table(
    "registry_devices",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("verify_key", sa.LargeBinary, nullable=False),
    sa.Column("enc_key", sa.LargeBinary, nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("latitude", sa.Float, nullable=True),
    sa.Column("longitude", sa.Float, nullable=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("subject", sa.Text, nullable=True),
    # The transparency log: the registration's leaf, and the revocation's (with its time).
    sa.Column("leaf", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("revocation_leaf", sa.BigInteger, nullable=True),
)

DEVICE_LEAF: Final = "device"
"""Log leaf kind of a device registration; its ref is the device name."""
REVOCATION_LEAF: Final = "revocation"
"""Log leaf kind of a device revocation; its ref is the device name."""
_REGISTERED: Final = (
    "name", "kind", "tenant", "alg", "verify_key", "enc_key", "description", "latitude",
    "longitude", "created", "subject",
)  # fmt: skip
_NEW_COLUMNS: Final = (
    ("subject", "TEXT"),
    ("leaf", "BIGINT"),
    ("revoked_at", "DOUBLE PRECISION"),
    ("revocation_leaf", "BIGINT"),
)


def device_leaf_data(row: Mapping[str, Any]) -> bytes:
    """Leaf data of a registration: canonical CBOR of the row as registered (keys as stored:
    public keys in clear, shared keys wrapped). Revocation is a leaf of its own."""
    values = [row[name] for name in _REGISTERED]
    values[4] = bytes(values[4])
    values[5] = None if values[5] is None else bytes(values[5])
    return cbor2.dumps(["msec.registry.device/1", *values], canonical=True)


def revocation_leaf_data(name: str, revoked_at: float) -> bytes:
    """Leaf data of a revocation: canonical CBOR ``["msec.registry.revocation/1", name, at]``."""
    return cbor2.dumps(["msec.registry.revocation/1", name, float(revoked_at)], canonical=True)


class SqlRegistry:
    """:class:`~msec.registry.base.DeviceRegistry` in the platform database.

    Shared MAC keys and encryption keys are stored AES-256-GCM-wrapped under ``kek`` (the
    platform key file), bound to the device name; public keys are stored as they are. A
    database dump alone therefore does not let anyone forge HMAC devices or read payloads.
    """

    def __init__(self, engine: sa.Engine, *, kek: bytes, log: SqlLog | None = None) -> None:
        if len(kek) != 32:
            raise ValueError("the key-encryption key must be 32 bytes")
        self._engine = engine
        self._aead = AESGCM(kek)
        #: With a log, every registration and revocation is a leaf of it (same transaction).
        self.log = log

    def create_schema(self) -> None:
        """Create the table if missing (and the columns of databases made before them)."""
        metadata.create_all(self._engine)
        for name, sql_type in _NEW_COLUMNS:
            columns = {c["name"] for c in sa.inspect(self._engine).get_columns(devices.name)}
            if name in columns:
                continue
            try:
                with self._engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {devices.name} ADD COLUMN {name} {sql_type}")
            except sa.exc.DBAPIError:
                columns = {c["name"] for c in sa.inspect(self._engine).get_columns(devices.name)}
                if name not in columns:
                    raise


    def add(self, record: DeviceRecord) -> DeviceRecord:
        created = record.created or time.time()
        verify_key = record.verify_key
        if record.alg == "HMAC256":
            verify_key = self._wrap(record.name, b"mac", verify_key)
        enc_key = self._wrap(record.name, b"enc", record.enc_key) if record.enc_key else None
        row = {
            "name": record.name,
            "kind": record.kind,
            "tenant": record.tenant,
            "alg": record.alg,
            "verify_key": verify_key,
            "enc_key": enc_key,
            "revoked": record.revoked,
            "description": record.description,
            "latitude": record.latitude,
            "longitude": record.longitude,
            "created": created,
            "subject": record.subject,
        }
        try:
            with write_transaction(self._engine, self.log) as (conn, first):
                row["leaf"] = first
                conn.execute(devices.insert().values(**row))
                if self.log is not None:
                    entry = (leaf_hash(device_leaf_data(row)), DEVICE_LEAF, record.name)
                    self.log.append([entry], conn=conn)
        except sa.exc.IntegrityError:
            raise DuplicateDevice(record.name) from None
        return self.get(record.name)  # type: ignore[return-value]

    def get(self, name: str) -> DeviceRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(devices.select().where(devices.c.name == name)).first()
        return self._record(row) if row else None

    def subjects(self, names: Iterable[str]) -> dict[str, str | None]:
        """``{device: data subject or None}`` for those of ``names`` that are registered, in
        a few queries and without unwrapping any key (the access layer's batched lookup)."""
        d = devices.c
        with self._engine.connect() as conn:
            return dict(tuple(row) for row in rows_in(conn, d.name, names, d.name, d.subject))

    def all(self) -> list[DeviceRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(devices.select().order_by(devices.c.name)).all()
        return [self._record(r) for r in rows]

    def version(self) -> tuple[int, int]:
        """What changes whenever a device is added or revoked: (devices, revocations), both
        only ever growing. Ingest processes compare it now and then and keep their cached
        records while it holds (one cheap query instead of one per message)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(sa.func.count(), sa.func.count(devices.c.revoked_at))
            ).one()
        return int(row[0]), int(row[1])

    def revoke(self, name: str) -> bool:
        """Revoke ``name`` (once: revoking again changes nothing); False if unknown."""
        with write_transaction(self._engine, self.log) as (conn, first):
            now = time.time()
            result = conn.execute(
                devices.update()
                .where(devices.c.name == name, devices.c.revoked.is_(False))
                .values(revoked=True, revoked_at=now, revocation_leaf=first)
            )
            if result.rowcount and self.log is not None:
                entry = (leaf_hash(revocation_leaf_data(name, now)), REVOCATION_LEAF, name)
                self.log.append([entry], conn=conn)
            if result.rowcount:
                return True
            found = conn.execute(sa.select(devices.c.name).where(devices.c.name == name))
            return found.first() is not None

    # -- verification support (msec verify) ------------------------------------------------

    def leaf_sources(self) -> dict[str, Any]:
        """The auditor's sources of ``device`` and ``revocation`` leaves."""
        return {DEVICE_LEAF: _DeviceLeaves(), REVOCATION_LEAF: _RevocationLeaves()}

    def _record(self, row: sa.Row) -> DeviceRecord:
        verify_key = bytes(row.verify_key)
        if row.alg == "HMAC256":
            verify_key = self._unwrap(row.name, b"mac", verify_key)
        enc_key = self._unwrap(row.name, b"enc", bytes(row.enc_key)) if row.enc_key else None
        return DeviceRecord(
            name=row.name,
            kind=row.kind,
            tenant=row.tenant,
            alg=row.alg,
            verify_key=verify_key,
            enc_key=enc_key,
            revoked=bool(row.revoked),
            description=row.description or "",
            latitude=row.latitude,
            longitude=row.longitude,
            created=row.created,
            subject=row.subject,
        )

    def _wrap(self, name: str, purpose: bytes, secret: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret, purpose + b":" + name.encode())

    def _unwrap(self, name: str, purpose: bytes, blob: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], purpose + b":" + name.encode())
        except InvalidTag:
            raise KeyStoreError(
                f"cannot unwrap the keys of device {name!r}: the key file (keys/kek.key) is "
                "not the one they were wrapped with, or the row was altered"
            ) from None


class _DeviceLeaves:
    """Registrations as the auditor sees them (ref: device name)."""

    def leaf_data(self, conn: sa.Connection, refs: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        names = sorted(set(refs))
        for start in range(0, len(names), 500):
            query = devices.select().where(devices.c.name.in_(names[start : start + 500]))
            for row in conn.execute(query):
                found[row.name] = device_leaf_data(row._mapping)
        return found

    def leaf_index(self, conn: sa.Connection, ref: str) -> int | None:
        found = conn.execute(sa.select(devices.c.leaf).where(devices.c.name == ref)).scalar()
        return None if found is None else int(found)

    def count_in(self, conn: sa.Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(devices)).scalar_one())

    def refs_in(self, conn: sa.Connection) -> Iterator[str]:
        for (name,) in conn.execute(sa.select(devices.c.name)):
            yield name


class _RevocationLeaves:
    """Revocations as the auditor sees them (ref: device name). A revoked device whose
    revocation is undone (``revoked`` set back) no longer matches its leaf."""

    def leaf_data(self, conn: sa.Connection, refs: Sequence[str]) -> dict[str, bytes]:
        c = devices.c
        found: dict[str, bytes] = {}
        names = sorted(set(refs))
        for start in range(0, len(names), 500):
            query = sa.select(c.name, c.revoked_at).where(
                c.name.in_(names[start : start + 500]), c.revoked.is_(True)
            )
            for name, revoked_at in conn.execute(query):
                if revoked_at is not None:
                    found[name] = revocation_leaf_data(name, revoked_at)
        return found

    def leaf_index(self, conn: sa.Connection, ref: str) -> int | None:
        c = devices.c
        found = conn.execute(sa.select(c.revocation_leaf).where(c.name == ref)).scalar()
        return None if found is None else int(found)

    def count_in(self, conn: sa.Connection) -> int:
        c = devices.c
        query = sa.select(sa.func.count()).select_from(devices)
        return int(conn.execute(query.where(c.revoked.is_(True))).scalar_one())

    def refs_in(self, conn: sa.Connection) -> Iterator[str]:
        for (name,) in conn.execute(sa.select(devices.c.name).where(devices.c.revoked.is_(True))):
            yield name
