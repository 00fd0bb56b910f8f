"""Platform settings: a TOML file, overridden by ``MSEC_*`` environment variables.

Example (``msec serve --config msec.toml``)::

    data_dir = "/var/lib/msec"
    [database]
    url = "postgresql+psycopg://msec:secret@db.example/msec"
    [mqtt]
    broker = "external"          # "embedded" (amqtt child process) or "external" (Mosquitto)
    host = "mqtt.example"
    port = 1883
    username = "ingest"
    password_env = "MSEC_MQTT_PASSWORD"   # the password itself never sits in the file
    workers = 2                   # ingest processes sharing $share/msec/msec/#
    tls_ca = "/etc/msec/mqtt-ca.pem"      # optional: TLS to the broker, verified against this CA
    [http]
    host = "0.0.0.0"
    port = 8080

Nested values can be set from the environment with ``__``: ``MSEC_DATABASE__URL=...``;
values in the file win over the environment. Unknown keys are refused, so a typo in a
key name fails at start instead of being silently ignored.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from msec.anchor.settings import AnchorSettings


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: SQLAlchemy URL; empty means SQLite at ``<data_dir>/msec.db``.
    url: str = ""


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    broker: Literal["embedded", "external"] = "embedded"
    host: str = "127.0.0.1"
    #: 0 with the embedded broker: pick a free port (written to ``demo.json``).
    port: int = 0
    username: str = "ingest"
    #: Name of the environment variable holding the ingest account's password
    #: (external broker). The embedded broker's accounts are generated in the data dir.
    password_env: str = "MSEC_MQTT_PASSWORD"
    topic: str = "msec/#"
    #: Shared subscription group of the ingest workers on an external broker
    #: (``$share/<group>/<topic>``), so that several workers split the messages.
    shared_group: str = "msec"
    #: CA certificate file: connect to the external broker over TLS and verify it.
    tls_ca: Path | None = None
    workers: int = Field(1, ge=1, le=64)
    batch_max: int = Field(1000, ge=1, le=20000)
    batch_wait_ms: int = Field(20, ge=1, le=5000)

    def password(self) -> str | None:
        return os.environ.get(self.password_env)


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8080
    #: Per-principal rate limit of the API (anonymous callers: per client address): this
    #: many requests a second on average, bursts of ``rate_burst``; past it, 429.
    rate_per_s: float = Field(50.0, gt=0)
    rate_burst: int = Field(200, ge=1)
    #: The address people reach the site at (``https://park.example.org``), used in the
    #: printed QR codes; empty means the address of the request.
    public_url: str = ""
    #: ``Secure`` on the session cookie: ``auto`` sets it when the request came over HTTPS
    #: (behind a proxy: ``X-Forwarded-Proto``); ``always`` for a site served only over HTTPS.
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    #: A web session ends this long after login, or after this long without a request.
    session_max_s: float = Field(7 * 86400.0, gt=0)
    session_idle_s: float = Field(86400.0, gt=0)


class LogSettings(BaseModel):
    """The transparency log (``[log]``): where checkpoints are signed and witnessed."""

    model_config = ConfigDict(extra="forbid")

    #: The log's origin line and key name (C2SP); empty means ``msec.local/<tenant>``.
    origin: str = ""
    #: How often a new checkpoint is signed while the log grows.
    checkpoint_interval_s: float = Field(1.0, gt=0, le=3600)
    #: A file holding the newest checkpoint this installation signed or verified. The log
    #: refuses to sign, and ``msec verify`` fails, if the database is behind it (a rollback).
    #: Empty means ``<data_dir>/witness/checkpoint``; put it on other storage than the
    #: database (another disk or host) so that restoring an old database cannot touch it.
    witness_file: Path | None = None
    #: A running platform checks its whole log this often (as ``msec verify`` does) and
    #: records the outcome (``<data_dir>/verify/history.jsonl``); 0 turns it off.
    verify_every_s: float = Field(3600.0, ge=0)
    #: The share of wall time that check may spend reading and hashing; it leaves the
    #: database alone for the rest, so that SQLite can start its WAL over meanwhile.
    verify_share: float = Field(0.5, gt=0, le=1)


class SensitiveSettings(BaseModel):
    """Resources holding personal data (``[sensitive]``), stored in the companion store."""

    model_config = ConfigDict(extra="forbid")

    #: ``provider/service/resource`` patterns (``*``, ``?``), e.g. ``["home-*/*/*"]``: their
    #: readings are encrypted under the device's subject (else the device's name), kept out
    #: of the twin, and erased with the subject (``msec erase``).
    resources: list[str] = Field(default_factory=list)


class ParkSettings(BaseModel):
    """Pilot 1, the Park Guide (``[park]``)."""

    model_config = ConfigDict(extra="forbid")

    #: A TOML file with the park's stops (see docs/pilots/park-guide.md); empty means the
    #: demo's Las Llamas park.
    file: Path | None = None


class CareSmtpSettings(BaseModel):
    """Where Connected Care sends its e-mails (``[care.smtp]``); no host means no e-mail."""

    model_config = ConfigDict(extra="forbid")

    host: str = ""
    port: int = Field(587, ge=1, le=65535)
    #: The From address of the notifications.
    sender: str = "care@localhost"
    #: Upgrade the connection with STARTTLS (required for a login).
    starttls: bool = True
    username: str = ""
    #: Name of the environment variable holding the SMTP password (never the password).
    password_env: str = "MSEC_CARE_SMTP_PASSWORD"


class CareSettingsFile(BaseModel):
    """Pilot 2, Connected Care (``[care]``)."""

    model_config = ConfigDict(extra="forbid")

    #: A TOML file of alert definitions (generic settings and custom rules; see
    #: docs/pilots/connected-care.md); empty means the built-in definitions.
    alerts: Path | None = None
    #: How often an anonymised dataset per sensor type is published (0: never).
    dataset_every_s: float = Field(86400.0, ge=0)
    #: The operators' desk: e-mail addresses told of every home's alarms (needs SMTP).
    desk: list[str] = Field(default_factory=list)
    #: Let webhooks reach loopback, private and link-local addresses (an in-house receiver
    #: on the provider's own network). Off: refused when added and, after resolving the
    #: name, when sent.
    private_webhooks: bool = False
    smtp: CareSmtpSettings = CareSmtpSettings()


class Settings(BaseSettings):
    """Everything ``msec serve`` and ``msec demo`` need; see the module docstring."""

    model_config = SettingsConfigDict(env_prefix="MSEC_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path("msec-data")
    tenant: str = "default"
    database: DatabaseSettings = DatabaseSettings()
    mqtt: MqttSettings = MqttSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    anchor: AnchorSettings = AnchorSettings()
    sensitive: SensitiveSettings = SensitiveSettings()
    park: ParkSettings = ParkSettings()
    care: CareSettingsFile = CareSettingsFile()

    @property
    def log_origin(self) -> str:
        return self.log.origin or f"msec.local/{self.tenant}"

    @property
    def anchor_contract_file(self) -> Path:
        return self.anchor.contract_file or self.data_dir / "anchor" / "contract"

    @property
    def witness_file(self) -> Path:
        return self.log.witness_file or self.data_dir / "witness" / "checkpoint"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'msec.db').resolve()}"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: object) -> Settings:
        """Settings from a TOML file (if given), then the environment, then ``overrides``."""
        values: dict[str, object] = {}
        if path is not None:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
