"""The ingest pipeline: open envelopes, check them, store readings, report rejections.

Transport-independent: MQTT workers and ``POST /api/v1/ingest`` both call
:meth:`Ingestor.process` with a batch of :class:`Incoming` messages and acknowledge each
message only after it returns, i.e. once its readings (or its security event) are durable.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection

from msec.actuate.actuator import COMMAND_TOPIC_SUFFIX
from msec.companion import NewRecord, SqlCompanion, StoredRecord
from msec.core.errors import Rejected, RejectReason
from msec.core.kinds import DeviceKind, UnknownKind, get_kind
from msec.core.models import Reading, SecurityEvent
from msec.core.sensitive import SensitiveResources
from msec.crypto import cose
from msec.crypto.envelope import MAX_ENVELOPE_BYTES, decode_payload
from msec.guard.base import EventLog
from msec.registry.base import DeviceRecord, DeviceRegistry
from msec.twin.base import Twin

#: A device's sequence numbers may arrive out of order by at most this much;
#: anything older than (highest stored - window) is a replay.
REPLAY_WINDOW = 65536
#: A reading may not claim to be from further in the future than this (clock skew).
MAX_FUTURE_S = 300.0
#: An envelope already stored less than this long ago is a retransmission (a device's
#: QoS 1 retry after a lost PUBACK, an HTTP retry after a timeout): acknowledged as a
#: duplicate, nothing stored twice, no security event. Older repeats are replays.
RETRY_GRACE_S = 60.0
_DEVICE_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message as it arrived: where from (topic or HTTP), the bytes, and redelivery flag.

    ``topic`` is the MQTT topic or ``None`` for HTTP; ``redelivered`` is MQTT's DUP flag
    (a broker re-sending after a lost acknowledgement, not a device re-sending).
    """

    data: bytes
    topic: str | None = None
    source: str = ""
    redelivered: bool = False
    received: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: ``stored`` readings, ``duplicates``, or a rejection."""

    stored: int = 0
    duplicates: int = 0
    rejected: Rejected | None = None

    @property
    def ok(self) -> bool:
        return self.rejected is None


@dataclass
class Stats:
    """Counters a metrics exporter reads; updated by :meth:`Ingestor.process`."""

    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Ingestor:
    """Checks and stores batches of sealed envelopes. Thread-safe (one batch at a time).

    Checks, in order: size, COSE shape, known and non-revoked device, signature or MAC,
    topic matches the signer, decryption, payload shape, replay window, then per reading
    schema and physical range per the device's kind and timestamp; then one durable write
    of every good reading and one durable write of every security event of the batch.
    An envelope whose readings are all stored already is a duplicate (acknowledged, not
    stored again) when the broker flags a redelivery or it was stored within
    ``retry_grace`` seconds, and a ``replay`` otherwise.
    """

    def __init__(
        self,
        registry: DeviceRegistry,
        twin: Twin,
        events: EventLog,
        *,
        clock: Callable[[], float] = time.time,
        registry_ttl: float = 5.0,
        registry_check_s: float = 1.0,
        retry_grace: float = RETRY_GRACE_S,
        on_stored: Callable[[Sequence[Reading]], None] | None = None,
        sensitive: SensitiveResources | None = None,
        companion: SqlCompanion | None = None,
    ) -> None:
        if sensitive and companion is None:
            raise ValueError("sensitive resources need a companion store")
        self._registry = registry
        #: Readings of these resources go to ``companion``, encrypted under their subject.
        self.sensitive = sensitive or SensitiveResources()
        self._companion = companion
        self._twin = twin
        self._events = events
        self._clock = clock
        self._ttl = registry_ttl
        #: A registry with ``version()`` (SqlRegistry) is asked this often whether anything
        #: changed; cached records are kept while nothing did (``registry_ttl`` is then
        #: unused). Revocations and new devices take effect within this delay.
        self._check_s = registry_check_s
        self._version_of: Callable[[], object] | None = getattr(registry, "version", None)
        self._version: object = None
        self._checked = -math.inf
        self._retry_grace = retry_grace
        self._devices: dict[str, tuple[float, DeviceRecord | None]] = {}
        self._high: dict[str, int] = {}
        self._providers: set[str] = set()
        self._kinds: dict[str, DeviceKind] = {}
        self._lock = threading.Lock()
        #: Called with the readings of each batch once they are durable (metrics, tests,
        #: the benchmark's commit log). It runs on the ingest path: keep it cheap.
        self.on_stored = on_stored
        self.stats = Stats()

    # ---- public ---------------------------------------------------------------------
    def process(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """Check and store a batch; returns one :class:`Outcome` per message, in order.

        Never raises for bad input: every rejection is returned and recorded as a
        security event. Storage errors (database down) do raise, and then nothing of the
        batch may be acknowledged.
        """
        with self._lock:
            return self._process(batch)

    # ---- internals ------------------------------------------------------------------
    def _process(self, batch: Sequence[Incoming]) -> list[Outcome]:
        now = self._clock()
        opened: list[tuple[int, list[Reading]] | Rejected | None] = []
        readings: list[Reading] = []
        for message in batch:
            if message.topic is not None and message.topic.endswith(COMMAND_TOPIC_SUFFIX):
                # The platform's own commands to devices share the topic tree: not readings.
                opened.append(None)
                continue
            try:
                found = self._open(message, now)
            except Rejected as exc:
                opened.append(exc)
                continue
            opened.append((len(readings), found))
            readings.extend(found)

        stored = self._store(readings, now) if readings else []
        new_keys = {(r.provider, r.seq) for r in stored}
        for reading in stored:
            if reading.seq > self._high.get(reading.provider, -1):
                self._high[reading.provider] = reading.seq

        outcomes: list[Outcome] = []
        events: list[SecurityEvent] = []
        for message, result in zip(batch, opened, strict=True):
            if result is None:
                outcomes.append(Outcome())
                continue
            if isinstance(result, Rejected):
                outcomes.append(Outcome(rejected=result))
                events.append(self._event(result, message, now))
                continue
            _, found = result
            new = 0
            for r in found:
                # Consume each key once, so the same envelope twice in a batch counts once.
                if (r.provider, r.seq) in new_keys:
                    new_keys.discard((r.provider, r.seq))
                    new += 1
            dups = len(found) - new
            if new == 0 and not message.redelivered and not self._recent(found, now):
                # Every reading was stored a while ago and the broker did not flag a
                # redelivery: someone sent an old signed envelope again.
                rejection = Rejected(
                    RejectReason.REPLAY,
                    f"sequence {found[0].seq} was stored before",
                    device=found[0].provider,
                )
                outcomes.append(Outcome(duplicates=dups, rejected=rejection))
                events.append(self._event(rejection, message, now))
                continue
            outcomes.append(Outcome(stored=new, duplicates=dups))
        if events:
            self._events.record(events)

        stats = self.stats
        stats.accepted += len(stored)
        stats.duplicates += len(readings) - len(stored)
        for event in events:
            stats.rejected[event.reason] = stats.rejected.get(event.reason, 0) + 1
        if stored and self.on_stored is not None:
            self.on_stored(stored)
        return outcomes

    def _store(self, readings: list[Reading], now: float) -> list[Reading]:
        """Write the batch durably: sensitive readings to the companion store, the rest to
        the twin, one transaction; return the readings that were new."""
        is_sensitive = self.sensitive
        if not is_sensitive:
            return self._twin.write(readings)
        plain: list[Reading] = []
        private: list[Reading] = []
        for r in readings:
            (private if is_sensitive(r.provider, r.service, r.resource) else plain).append(r)
        if not private:
            return self._twin.write(plain)
        companion = self._companion
        assert companion is not None
        records = [self._record(r, now) for r in private]
        kept: list[StoredRecord] = []

        def store_private(conn: Connection) -> None:
            kept.extend(
                companion.put_many(records, log=self._twin.log, skip_existing=True, conn=conn)
            )

        stored = self._twin.write(plain, also=store_private)
        new_ids = {record.record_id for record in kept}
        return stored + [r for r in private if f"{r.provider}/{r.seq}" in new_ids]

    def _record(self, reading: Reading, now: float) -> NewRecord:
        device = self._device(reading.provider, now)
        subject = (device.subject if device is not None else None) or reading.provider
        content = {
            "provider": reading.provider,
            "service": reading.service,
            "resource": reading.resource,
            "value": reading.value,
            "timestamp": reading.timestamp,
            "seq": reading.seq,
        }
        return NewRecord(
            subject,
            f"{reading.provider}/{reading.seq}",
            json.dumps(content, separators=(",", ":")).encode(),
            kind="reading",
        )

    def _recent(self, readings: Sequence[Reading], now: float) -> bool:
        """Whether these (already stored) readings were stored within the retry grace."""
        if self._retry_grace <= 0:
            return False
        keys = [(r.provider, r.seq) for r in readings]
        when = self._twin.stored_at(keys)
        if self._companion is not None and self.sensitive and len(when) < len(keys):
            # Sensitive readings are stored as companion records "<provider>/<seq>".
            created = self._companion.created_at([f"{p}/{seq}" for p, seq in keys])
            for ref, at in created.items():
                provider, _, seq = ref.rpartition("/")
                when[(provider, int(seq))] = at
        return bool(when) and all(
            now - when.get((r.provider, r.seq), 0.0) < self._retry_grace for r in readings
        )

    def _event(self, rejection: Rejected, message: Incoming, now: float) -> SecurityEvent:
        return SecurityEvent(
            reason=rejection.reason.value,
            detail=rejection.detail,
            source=message.source or (message.topic or "")[:200],
            device=rejection.device,
            timestamp=now,
        )

    def _device(self, name: str, now: float) -> DeviceRecord | None:
        if self._version_of is not None:
            if not 0 <= now - self._checked < self._check_s:
                version = self._version_of()
                if version != self._version:
                    self._devices.clear()
                    self._version = version
                self._checked = now
            cached = self._devices.get(name)
            if cached is not None:
                return cached[1]
        else:
            cached = self._devices.get(name)
            if cached is not None and now - cached[0] < self._ttl:
                return cached[1]
        record = self._registry.get(name)
        if len(self._devices) >= _DEVICE_CACHE_MAX:
            # Forged kids are unbounded: never let them grow the cache without limit.
            self._devices.clear()
        self._devices[name] = (now, record)
        return record

    def _open(self, message: Incoming, now: float) -> list[Reading]:
        data = message.data
        if len(data) > MAX_ENVELOPE_BYTES:
            raise Rejected(RejectReason.OVERSIZED, f"{len(data)} bytes, limit {MAX_ENVELOPE_BYTES}")
        outer = cose.parse_outer(data)
        device = self._device(outer.kid, now)
        if device is None:
            raise Rejected(
                RejectReason.UNKNOWN_DEVICE, f"no device {outer.kid!r}", device=outer.kid[:64]
            )
        if device.revoked:
            raise Rejected(RejectReason.REVOKED_DEVICE, "device is revoked", device=device.name)
        if outer.tag == cose.TAG_SIGN1:
            if device.alg != "EdDSA":
                raise Rejected(
                    RejectReason.BAD_SIGNATURE,
                    "device signs with HMAC, not Ed25519",
                    device=device.name,
                )
            cose.verify_sign1(outer, device.verify_key)
        else:
            if device.alg != "HMAC256":
                raise Rejected(
                    RejectReason.BAD_SIGNATURE,
                    "device signs with Ed25519, not HMAC",
                    device=device.name,
                )
            cose.verify_mac0(outer, device.verify_key)
        # From here on the content is authentic: it really comes from this device.
        if message.topic is not None:
            _check_topic(message.topic, device)
        payload = outer.payload
        if cose.is_encrypt0(payload):
            payload = cose.decrypt0(payload, kid=device.name, key=device.enc_key)
        elif device.enc_key is not None:
            raise Rejected(
                RejectReason.DECRYPT_FAILED,
                "device is configured for encryption but sent plaintext",
                device=device.name,
            )
        try:
            body = decode_payload(payload)
        except Rejected as exc:
            exc.device = device.name
            raise
        if body.device != device.name:
            raise Rejected(
                RejectReason.MALFORMED, "payload names another device", device=device.name
            )
        kind = self._kinds.get(device.kind) or self._kinds.setdefault(device.kind, _kind(device))
        if message.topic is not None and not message.topic.endswith("/_batch"):
            _check_single_topic(message.topic, body.readings)
        if body.seq <= self._high_water(device.name) - REPLAY_WINDOW:
            raise Rejected(
                RejectReason.REPLAY,
                f"sequence {body.seq} is older than the replay window",
                device=device.name,
            )
        limit = now + MAX_FUTURE_S
        out = []
        for i, (service, resource, value, at) in enumerate(body.readings):
            spec = kind.spec(service, resource)
            if spec is None:
                raise Rejected(
                    RejectReason.SCHEMA,
                    f"kind {kind.name} has no resource {service}/{resource}",
                    device=device.name,
                )
            try:
                checked = spec.check(value)
            except Rejected as exc:
                exc.device = device.name
                raise
            if at > limit:
                raise Rejected(
                    RejectReason.BAD_TIMESTAMP,
                    f"{service}/{resource} time is {at - now:.0f}s in the future",
                    device=device.name,
                )
            out.append(Reading(device.name, service, resource, checked, at, body.seq + i))
        self._ensure_provider(device)
        return out

    def _high_water(self, name: str) -> int:
        """Highest stored sequence number of the device (-1: none), cached per process.

        Other workers may store higher numbers meanwhile; a stale value only makes the
        window check more lenient, and the database's (device, seq) key still refuses
        exact repeats.
        """
        high = self._high.get(name)
        if high is None:
            seq = self._twin.max_seq(name)
            high = self._high[name] = -1 if seq is None else seq
        return high

    def _ensure_provider(self, device: DeviceRecord) -> None:
        if device.name in self._providers:
            return
        self._twin.ensure_provider(
            device.name,
            kind=device.kind,
            tenant=device.tenant,
            description=device.description,
            latitude=device.latitude,
            longitude=device.longitude,
        )
        self._providers.add(device.name)


def _kind(device: DeviceRecord) -> DeviceKind:
    try:
        return get_kind(device.kind)
    except UnknownKind:
        raise Rejected(
            RejectReason.SCHEMA, f"device kind {device.kind!r} is not known", device=device.name
        ) from None


def _check_topic(topic: str, device: DeviceRecord) -> None:
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "msec" or parts[1] != device.tenant or parts[2] != device.name:
        raise Rejected(
            RejectReason.TOPIC_MISMATCH,
            f"topic {topic[:120]!r} is not msec/{device.tenant}/{device.name}/...",
            device=device.name,
        )


def _check_single_topic(topic: str, readings: Sequence[tuple[str, str, object, float]]) -> None:
    parts = topic.split("/")
    if len(parts) != 5 or len(readings) != 1 or (parts[3], parts[4]) != readings[0][:2]:
        raise Rejected(
            RejectReason.TOPIC_MISMATCH, f"topic {topic[:120]!r} does not name the signed resource"
        )
