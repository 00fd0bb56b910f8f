"""The Platform facade: wires the configured backends of every layer together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from msec.guard.sql import SqlEventLog
from msec.ingest.pipeline import Ingestor
from msec.platform.secrets import key_encryption_key, platform_secrets
from msec.platform.settings import Settings
from msec.registry.base import Algorithm, DeviceRecord
from msec.registry.sql import SqlRegistry
from msec.sdk.device import Device, Endpoint
from msec.twin.engine import make_engine
from msec.twin.sql import SqlTwin


@dataclass
class Platform:
    """The storage-side platform of one installation: registry, twin, events, ingest.

    Create with :meth:`open`; it creates missing tables. Close with :meth:`close`.
    """

    settings: Settings
    engine: sa.Engine
    registry: SqlRegistry
    twin: SqlTwin
    events: SqlEventLog
    ingestor: Ingestor
    secrets: dict[str, str]

    @classmethod
    def open(cls, settings: Settings) -> Platform:
        if not settings.data_dir.exists():
            # Readings, keys and logs are nobody else's business on a shared host.
            settings.data_dir.mkdir(parents=True, mode=0o700)
        engine = make_engine(settings.database_url)
        registry = SqlRegistry(engine, kek=key_encryption_key(settings.data_dir))
        twin = SqlTwin(engine)
        events = SqlEventLog(engine)
        for part in (registry, twin, events):
            part.create_schema()
        ingestor = Ingestor(registry, twin, events)
        return cls(
            settings, engine, registry, twin, events, ingestor, platform_secrets(settings.data_dir)
        )

    def add_device(
        self,
        name: str,
        kind: str,
        *,
        alg: Algorithm = "EdDSA",
        encrypt: bool = False,
        endpoint: Endpoint | None = None,
        out: Path | None = None,
        description: str = "",
        latitude: float | None = None,
        longitude: float | None = None,
    ) -> Device:
        """Register a new device and return its identity (saved to ``out`` if given).

        Raises ``DuplicateDevice`` if the name is taken, ``UnknownKind`` for a bad kind.
        """
        device, record = Device.create(
            name, kind, tenant=self.settings.tenant, alg=alg, encrypt=encrypt, endpoint=endpoint
        )
        record = DeviceRecord(
            record.name,
            record.kind,
            record.tenant,
            record.alg,
            record.verify_key,
            record.enc_key,
            description=description,
            latitude=latitude,
            longitude=longitude,
        )
        if out is not None and out.exists():
            raise FileExistsError(f"{out} exists: refusing to overwrite a credentials file")
        self.registry.add(record)
        self.twin.ensure_provider(
            name,
            kind=kind,
            tenant=record.tenant,
            description=description,
            latitude=latitude,
            longitude=longitude,
        )
        if out is not None:
            device.save(out)
        return device

    def close(self) -> None:
        self.engine.dispose()
