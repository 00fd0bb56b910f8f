"""The Platform facade: wires the configured backends of every layer together."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from msec.access.audit import AUDIT_LEAF, SqlAudit
from msec.access.builtin import BUILTIN_POLICIES
from msec.access.consent import SqlConsent
from msec.access.engine import PolicyEngine, ResourceInfo
from msec.access.model import ROLES, Principal, Verb
from msec.access.policies import PolicySync, SqlPolicies
from msec.access.principals import SqlPrincipals
from msec.access.ratelimit import RateLimiter
from msec.access.service import AccessService
from msec.actuate.actuator import Actuator, Publish
from msec.actuate.command import CommandSigner
from msec.actuate.sql import SqlCommands
from msec.anchor.base import AnchorChain
from msec.companion import FileKeyWrapper, KeyRing, SqlCompanion
from msec.companion import leaf_sources as companion_sources
from msec.core.errors import MsecError
from msec.core.sensitive import SensitiveResources
from msec.guard.sql import SqlEventLog
from msec.ingest.pipeline import Ingestor
from msec.platform.secrets import (
    key_encryption_key,
    log_signer_key,
    platform_secrets,
    write_private_json,
)
from msec.platform.settings import Settings
from msec.platform.trust import TrustLog, leaf_sources
from msec.registry.base import Algorithm, DeviceRecord
from msec.registry.sql import SqlRegistry
from msec.sdk.device import Device, Endpoint
from msec.tlog import NoteSigner, SqlLog
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
    trust: TrustLog
    companion: SqlCompanion
    principals: SqlPrincipals
    audit: SqlAudit
    consent: SqlConsent
    policies: SqlPolicies
    commands: SqlCommands
    command_signer: CommandSigner

    @classmethod
    def open(cls, settings: Settings, *, create: bool = True) -> Platform:
        """Open the installation, creating its data dir, keys and tables where missing.

        With ``create=False`` (auditing) nothing is created or changed: a missing data
        dir, SQLite database or key raises :class:`MsecError`.
        """
        data_dir = settings.data_dir
        if not create:
            _require_existing(settings)
        elif not data_dir.exists():
            # Readings, keys and logs are nobody else's business on a shared host.
            data_dir.mkdir(parents=True, mode=0o700)
        engine = make_engine(settings.database_url)
        log = SqlLog(engine)
        registry = SqlRegistry(engine, kek=key_encryption_key(data_dir), log=log)
        twin = SqlTwin(engine, log=log)
        events = SqlEventLog(engine, log=log)
        companion = SqlCompanion(engine, companion_keyring(data_dir, create=create))
        principals = SqlPrincipals(engine, log=log)
        audit = SqlAudit(engine, log=log)
        consent = SqlConsent(engine, log=log)
        policies = SqlPolicies(engine, log=log)
        commands = SqlCommands(engine)
        stores = (
            log, registry, twin, events, companion, principals, audit, consent, policies, commands
        )  # fmt: skip
        if create:
            for part in stores:
                part.create_schema()
        signer = NoteSigner.from_string(log_signer_key(data_dir, settings.log_origin))
        more = {
            **registry.leaf_sources(),
            **companion_sources(),
            **principals.leaf_sources(),
            **consent.leaf_sources(),
            **policies.leaf_sources(),
            AUDIT_LEAF: audit,
        }
        sources = leaf_sources(twin, events, *more.items())
        derived = [twin.derived_problems]
        trust = TrustLog(engine, log, signer, settings.witness_file, sources, derived)
        sensitive = SensitiveResources(settings.sensitive.resources)
        ingestor = Ingestor(registry, twin, events, sensitive=sensitive, companion=companion)
        secrets = platform_secrets(settings.data_dir)
        return cls(
            settings,
            engine,
            registry,
            twin,
            events,
            ingestor,
            secrets,
            trust,
            companion,
            principals,
            audit,
            consent,
            policies,
            commands,
            _command_signer(data_dir / "keys" / "command.key", create=create),
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
        subject: str | None = None,
    ) -> Device:
        """Register a new device and return its identity (saved to ``out`` if given).

        ``subject`` names the person whose data the device records: its readings of
        sensitive resources are stored encrypted under that subject (erasable with it).

        Raises ``DuplicateDevice`` if the name is taken, ``UnknownKind`` for a bad kind.
        """
        device, record = Device.create(
            name,
            kind,
            tenant=self.settings.tenant,
            alg=alg,
            encrypt=encrypt,
            endpoint=endpoint,
            command_key=self.command_signer.public_key,
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
            subject=subject,
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

    def export_subject(self, name: str) -> dict[str, object]:
        """Everything stored about subject ``name`` (portability); ``UnknownSubject`` if none."""
        return self.companion.export(name)

    def erase_subject(self, name: str, *, reason: str = "") -> object:
        """Crypto-shred subject ``name`` and log the erasure (see ``SqlCompanion.erase``)."""
        erasure = self.companion.erase(name, log=self.trust.log, reason=reason)
        self.trust.checkpoint()
        return erasure

    def rotate_companion_kek(self, *, destroy_old: bool = False) -> int:
        """Re-wrap every subject's data key under a new key file; see :func:`rotate_kek`."""
        return rotate_kek(self.companion, self.settings.data_dir, destroy_old=destroy_old)

    def access_service(self, static_tokens: Mapping[str, Principal] | None = None) -> AccessService:
        """The enforcement point of this installation's API (see ``msec.access.service``):
        built-in policies, tokens from the principal store, consent grants from the consent
        store, the twin and registry for each provider's tenant and data subject."""

        def consent(principal: Principal, provider: str, verb: Verb) -> bool:
            return self.consent.allows(principal.id, provider, str(verb)) is not None

        def resources_many(providers: Iterable[str]) -> dict[str, ResourceInfo | None]:
            wanted = list(providers)
            tenants = self.twin.tenants(wanted)
            subjects = self.registry.subjects(tenants)
            found: dict[str, ResourceInfo | None] = dict.fromkeys(wanted)
            for provider, tenant in tenants.items():
                subject = subjects.get(provider)
                # A device that records a person holds personal data on every resource.
                found[provider] = ResourceInfo(tenant, subject, sensitive=subject is not None)
            return found

        def resources(provider: str) -> ResourceInfo | None:
            return resources_many([provider])[provider]

        http = self.settings.http
        engine = PolicyEngine(BUILTIN_POLICIES, consent=consent)
        sync = PolicySync(engine, self.policies, builtin=BUILTIN_POLICIES)
        sync.refresh(force=True)
        return AccessService(
            engine,
            tokens=self.principals,
            audit=self.audit,
            events=self.events,
            resources=resources,
            resources_many=resources_many,
            sensitive=self.ingestor.sensitive,
            static_tokens=static_tokens,
            limiter=RateLimiter(http.rate_per_s, http.rate_burst),
            sync=sync,
        )

    def demo_accounts(self, *, ttl_s: float = 7 * 86400) -> dict[str, str]:
        """One demo user per role (``demo-<role>``, tenant of the settings), each with a
        fresh API token (earlier ones revoked); returns ``{role: token}``.

        Their passwords are generated once and kept in ``keys/demo-accounts.json`` (0600),
        for trying the OAuth2 password flow. For demonstrations only.
        """
        path = self.settings.data_dir / "keys" / "demo-accounts.json"
        passwords: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        tokens: dict[str, str] = {}
        for role in sorted(ROLES):
            name = f"demo-{role}"
            if self.principals.get_user(name) is None:
                passwords[name] = secrets.token_urlsafe(18)
                self.principals.add_user(
                    name, tenant=self.settings.tenant, roles=[role], password=passwords[name]
                )
            self.principals.revoke_all(f"user:{name}")
            tokens[role], _ = self.principals.issue_token(
                f"user:{name}", ttl_s=ttl_s, label="msec demo"
            )
        write_private_json(path, passwords)
        return tokens

    def actuator(self, publish: Publish) -> Actuator:
        """Signed commands to devices, sent with ``publish`` (the broker's QoS 1 publish)."""
        return Actuator(self.command_signer, self.commands, publish)

    def anchor_chain(self) -> AnchorChain | None:
        """The ``[anchor]`` chain, connected and checked (deployed on first use); ``None``
        when anchoring is off. Raises ``AnchorError`` when the chain cannot be used."""
        if not self.settings.anchor.enabled:
            return None
        from msec.anchor.client import connect

        return connect(self.settings.anchor, contract_file=self.settings.anchor_contract_file)

    def close(self) -> None:
        self.engine.dispose()


def companion_keyring(data_dir: Path, *, create: bool = True) -> KeyRing:
    """The companion store's KEKs: ``keys/companion.kek`` (current) and any older
    ``keys/companion-*.kek`` kept until every data key is re-wrapped (see rotation)."""
    keys = data_dir / "keys"
    current = FileKeyWrapper(keys / "companion.kek", create=create)
    older = [FileKeyWrapper(path, create=False) for path in sorted(keys.glob("companion-*.kek"))]
    return KeyRing(current, *older)


def rotate_kek(companion: SqlCompanion, data_dir: Path, *, destroy_old: bool = False) -> int:
    """Rotate the companion KEK: new key file, every data key re-wrapped, then the swap.

    Crash-safe: the new key is written as ``companion-next.kek`` first (loaded by
    :func:`companion_keyring` whatever happens next), the data keys are re-wrapped in one
    transaction, and only then the files are renamed (the old one to
    ``companion-<key id>.kek``). With ``destroy_old`` the old file is deleted: destroy its
    backups too, and nothing ever wrapped under it can be unwrapped again.
    """
    keys = data_dir / "keys"
    staged = keys / "companion-next.kek"
    new = FileKeyWrapper(staged, create=True)
    count = companion.rotate(new)
    current = keys / "companion.kek"
    old_id = FileKeyWrapper(current, create=False).key_id
    retired = keys / f"companion-{old_id}.kek"
    current.replace(retired)
    staged.replace(current)
    if destroy_old:
        retired.unlink()
    return count


def _command_signer(path: Path, *, create: bool) -> CommandSigner:
    """The platform's command key; a throwaway one when opening read-only without one (it
    then signs nothing: auditing never sends commands)."""
    if create or path.exists():
        return CommandSigner.load_or_create(path)
    return CommandSigner.generate()


def _require_existing(settings: Settings) -> None:
    data_dir = settings.data_dir
    for path in (data_dir, data_dir / "keys" / "kek.key", data_dir / "keys" / "log.key"):
        if not path.exists():
            raise MsecError(f"{path} does not exist: is {data_dir} an msec data directory?")
    url = sa.engine.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise MsecError(f"no database at {url.database}")
