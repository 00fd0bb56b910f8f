"""Device registry on SQLAlchemy (SQLite or PostgreSQL); secrets wrapped under a KEK."""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from msec.core.errors import MsecError
from msec.registry.base import DeviceRecord, DuplicateDevice

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
)


class SqlRegistry:
    """:class:`~msec.registry.base.DeviceRegistry` in the platform database.

    Shared MAC keys and encryption keys are stored AES-256-GCM-wrapped under ``kek`` (the
    platform key file), bound to the device name; public keys are stored as they are. A
    database dump alone therefore does not let anyone forge HMAC devices or read payloads.
    """

    def __init__(self, engine: sa.Engine, *, kek: bytes) -> None:
        if len(kek) != 32:
            raise ValueError("the key-encryption key must be 32 bytes")
        self._engine = engine
        self._aead = AESGCM(kek)

    def create_schema(self) -> None:
        """Create the table if missing (and ``subject`` on databases made before it)."""
        metadata.create_all(self._engine)
        columns = {c["name"] for c in sa.inspect(self._engine).get_columns(devices.name)}
        if "subject" not in columns:
            try:
                with self._engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {devices.name} ADD COLUMN subject TEXT")
            except sa.exc.DBAPIError:
                columns = {c["name"] for c in sa.inspect(self._engine).get_columns(devices.name)}
                if "subject" not in columns:
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
            with self._engine.begin() as conn:
                conn.execute(devices.insert().values(**row))
        except sa.exc.IntegrityError:
            raise DuplicateDevice(record.name) from None
        return self.get(record.name)  # type: ignore[return-value]

    def get(self, name: str) -> DeviceRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(devices.select().where(devices.c.name == name)).first()
        return self._record(row) if row else None

    def all(self) -> list[DeviceRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(devices.select().order_by(devices.c.name)).all()
        return [self._record(r) for r in rows]

    def revoke(self, name: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                devices.update().where(devices.c.name == name).values(revoked=True)
            )
        return result.rowcount > 0

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
