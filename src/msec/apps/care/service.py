"""Running the alarm engine on a platform: the event feed, the clock, and restarts.

**Where events come from.** Every reading the platform stores is a leaf of its transparency
log, in commit order: a twin reading (``reading``, ref ``<device>/<seq>``) or, for personal
data such as a home's sensors, an encrypted companion record (``record``, ref
``<subject id>/<device>/<seq>``). :class:`CareFeed` tails the log from a cursor, keeps the
care devices' readings (``<home>-<role>`` names, :func:`~msec.apps.care.model.split_device`)
and decrypts the private ones. The log is the one ordered, durable change feed of the
platform, whichever process stored the reading.

**Restarts.** :class:`CareService` saves the engine's snapshot together with the cursor it
corresponds to (one row, one transaction) every few seconds and at stop. After a crash it
restores the snapshot and replays the log from that cursor: readings seen before the crash
are recognised (per device and resource sequence numbers) and alarms raised before it are
not raised again (one alarm per home, kind and episode in the alarm store), while timers
that came due while it was down fire at once. So a restart neither loses nor duplicates an
alarm.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import cbor2
import sqlalchemy as sa

from msec.apps.care.engine import CareEngine
from msec.apps.care.model import CareSettings, SensorEvent, split_device
from msec.apps.care.rules import Definitions
from msec.companion.base import split_record_ref
from msec.companion.errors import CompanionError
from msec.tlog.sql import MAX_ENTRIES_PER_READ

if TYPE_CHECKING:
    from msec.apps.care.alarms import SqlAlarms
    from msec.platform.platform import Platform

__all__ = ["CareFeed", "CareService"]

log = logging.getLogger(__name__)

metadata = sa.MetaData()
state_table = sa.Table(
    "care_engine_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("cursor", sa.BigInteger, nullable=False),
    sa.Column("snapshot", sa.Text, nullable=False),
    sa.Column("saved_at", sa.Double, nullable=False),
)

#: The snapshot is saved this often at least, and less often when saving takes long (at
#: 10,000 homes a snapshot is ~6 MB): the time spent saving stays under 1/SAVE_SHARE. A
#: restart replays the log from the last snapshot's cursor, so this only bounds the replay.
SAVE_EVERY_S: Final = 5.0
SAVE_SHARE: Final = 50.0
POLL_S: Final = 0.1


class CareFeed:
    """The care devices' readings in log order, from ``cursor`` on."""

    def __init__(self, platform: Platform, cursor: int = 0) -> None:
        self.platform = platform
        self.cursor = cursor

    def poll(self, limit: int = MAX_ENTRIES_PER_READ) -> list[SensorEvent]:
        """The next care readings (at most ``limit`` log entries read); advances the cursor."""
        log_ = self.platform.trust.log
        entries = log_.entries(self.cursor, self.cursor + limit)
        if not entries:
            return []
        plain: list[str] = []
        private: list[str] = []
        for entry in entries:
            if entry.kind == "reading":
                if split_device(entry.ref.rpartition("/")[0]) is not None:
                    plain.append(entry.ref)
            elif entry.kind == "record":
                parts = split_record_ref(entry.ref)
                if parts is not None and split_device(parts[1].rpartition("/")[0]) is not None:
                    private.append(parts[1])
        events = self._plain(plain) + self._private(private)
        events.sort(key=lambda e: (e.t, e.seq))
        self.cursor = entries[-1].index + 1
        return events

    def _plain(self, refs: list[str]) -> list[SensorEvent]:
        if not refs:
            return []
        source = self.platform.trust.sources["reading"]
        with self.platform.engine.connect() as conn:
            data = source.leaf_data(conn, refs)
        out = []
        for ref in refs:
            blob = data.get(ref)
            if not isinstance(blob, bytes):
                continue
            _tag, device, seq, service, resource, kind, num, text, t, _stored = cbor2.loads(blob)
            value: Any = text if text is not None else num
            if kind == "b":
                value = bool(num)
            event = _event(device, service, resource, value, t, seq)
            if event is not None:
                out.append(event)
        return out

    def _private(self, record_ids: list[str]) -> list[SensorEvent]:
        if not record_ids:
            return []
        try:
            records = self.platform.companion.get_many(record_ids)
        except CompanionError:  # one bad record must not stop the others: read one by one
            records = {}
            for record_id in record_ids:
                try:
                    records[record_id] = self.platform.companion.get(record_id)
                except CompanionError as exc:
                    log.error("care: record %s unreadable: %s", record_id, exc)
        out = []
        for record_id in record_ids:
            found = records.get(record_id)
            if found is None:  # erased since: nothing to alarm about
                continue
            try:
                c = json.loads(found[1])
                event = _event(c["provider"], c["service"], c["resource"], c["value"],
                               float(c["timestamp"]), int(c["seq"]))  # fmt: skip
            except (ValueError, KeyError, TypeError):
                log.error("care: record %s is not a reading", record_id)
                continue
            if event is not None:
                out.append(event)
        return out


def _event(device: str, service: str, resource: str, value: Any, t: float,
           seq: int) -> SensorEvent | None:  # fmt: skip
    parts = split_device(device)
    if parts is None or not isinstance(value, bool | int | float):
        return None
    home, role = parts
    return SensorEvent(home, role, device, service, resource, value, float(t), int(seq))


class CareService:
    """The engine fed from the log, ticked by ``clock``, saved every :data:`SAVE_EVERY_S` (or
    less often, see :data:`SAVE_SHARE`)."""

    def __init__(
        self,
        platform: Platform,
        alarms: SqlAlarms,
        settings: CareSettings | None = None,
        *,
        definitions: Definitions | None = None,
        clock: Callable[[], float] = time.time,
        escalate: bool = True,
    ) -> None:
        self.platform = platform
        self.alarms = alarms
        self.engine = CareEngine(alarms, settings, definitions)
        self.clock = clock
        self.escalate = escalate
        self.feed = CareFeed(platform)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved = 0.0
        self._save_every = SAVE_EVERY_S
        self.events_seen = 0

    def create_schema(self) -> None:
        metadata.create_all(self.platform.engine)

    def load(self) -> None:
        """Restore the last saved snapshot and its cursor (nothing saved: from the start)."""
        with self.platform.engine.connect() as conn:
            row = conn.execute(sa.select(state_table).where(state_table.c.id == 1)).first()
        if row is not None:
            self.engine.restore(json.loads(row.snapshot))
            self.feed.cursor = int(row.cursor)

    def save(self) -> None:
        """The snapshot and the cursor it corresponds to, in one transaction."""
        started = time.monotonic()
        snapshot = self.engine.snapshot_json()
        values = {"cursor": self.feed.cursor, "snapshot": snapshot, "saved_at": time.time()}
        with self.platform.engine.begin() as conn:
            updated = conn.execute(
                state_table.update().where(state_table.c.id == 1).values(**values)
            ).rowcount
            if not updated:
                conn.execute(state_table.insert().values(id=1, **values))
        self._saved = time.monotonic()
        # The engine waits while it is saved: at most 1/SAVE_SHARE of its time.
        self._save_every = max(SAVE_EVERY_S, SAVE_SHARE * (self._saved - started))

    def step(self) -> int:
        """Catch up with the log, then fire the timers due by the clock; returns events seen.

        Events are applied before the clock moves on: after a restart the readings stored
        while the engine was down are replayed in order first, so no timer fires on a state
        that those readings would have changed.
        """
        seen = 0
        target = self.platform.trust.log.size()  # what was stored when this step began
        while self.feed.cursor < target:
            events = self.feed.poll()
            with self.engine.batch():  # what these readings raise: one write
                for event in events:
                    self.engine.observe(event)
            seen += len(events)
        now = self.clock()
        self.engine.tick(now)
        if self.escalate:
            self._escalate(now)
        self.events_seen += seen
        return seen

    def _escalate(self, now: float) -> None:
        """Unacknowledged alarms go up a level after the generic delay, or the person's."""
        generic = self.engine.settings.escalate_after_s
        own: dict[float, list[str]] = {}
        for home, delay in self.engine.escalation_delays().items():
            if delay != generic:
                own.setdefault(delay, []).append(home)
        exclude = [home for homes in own.values() for home in homes]
        self.alarms.escalate_due(at=now, after_s=generic, exclude=exclude)
        for delay, homes in own.items():
            self.alarms.escalate_due(at=now, after_s=delay, homes=homes)

    def start(self, prepare: Callable[[], None] | None = None) -> None:
        """Restore the saved state, call ``prepare`` (e.g. apply the people's stored settings
        over the snapshot's), then run the engine in a thread."""
        self.create_schema()
        self.load()
        if prepare is not None:
            prepare()
        self._thread = threading.Thread(target=self._run, name="care-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.step()
                if time.monotonic() - self._saved >= self._save_every:
                    self.save()
            except Exception:  # the database may be away: carry on from the same cursor
                log.exception("care engine step failed; retrying")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            self.save()
        except Exception:
            log.exception("care engine: the final snapshot was not saved")
