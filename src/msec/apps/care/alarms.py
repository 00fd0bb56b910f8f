"""Connected Care alarms on SQL: raised by the engine, handled by the operators, durable.

:class:`SqlAlarms` keeps every alarm and its whole history in the platform database
(SQLAlchemy Core, SQLite or PostgreSQL, same behaviour) in the ``care_alarms`` and
``care_alarm_events`` tables. What it guarantees:

* **One alarm per incident.** At most one *active* (raised or acknowledged) alarm per home and
  :class:`~msec.apps.care.model.AlarmKind`, and at most one alarm ever per (home, kind,
  episode): the engine names each incident by an episode (e.g. the hour the inactivity
  began), so re-evaluating after a restart never raises the same incident twice, even if an
  operator resolved it in between. Both rules are database constraints (a partial unique index
  and a unique key); :meth:`~SqlAlarms.raise_alarm` returns ``None`` when either holds.
* **A strict lifecycle.** ``raised`` -> ``acknowledged`` -> ``resolved`` (or ``raised`` ->
  ``resolved``); a resolved alarm never changes state again. Anything else is
  :class:`AlarmStateError`. Escalation (``level`` + 1) only happens to unacknowledged alarms,
  once per period.
* **A full history.** Every step (raised, escalated, acknowledged, note, resolved) is an
  event row with who and when, written in the same transaction as the change; notes are
  never edited or deleted.
* **One write at a time.** Every write is one transaction that takes the store's write lock
  first (SQLite ``BEGIN IMMEDIATE``, a transaction-level advisory lock on PostgreSQL), so a
  transition or an escalation happens exactly once even with several threads or processes.
  Safe to share between threads.
* **Subscribers hear of committed changes only.** Callbacks in :attr:`SqlAlarms.on_change`
  are called after the commit, in the calling thread; one that raises is logged and the
  others still run. A callback with a ``many(event, alarms)`` method hears what one
  transaction raised in one call (a burst of alarms then costs it one query, not one each).
* **Time is a parameter.** Every method where time matters takes ``at`` (epoch seconds,
  default now).

Database failures propagate as ``sqlalchemy.exc`` errors and leave nothing of the call stored.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from msec.apps.care.model import AlarmKind, AlarmRequest
from msec.core.errors import MsecError
from msec.twin.engine import locked_transaction

__all__ = [
    "EVENTS",
    "MAX_NOTE",
    "STATES",
    "Alarm",
    "AlarmEvent",
    "AlarmStateError",
    "ChangeCallback",
    "Note",
    "SqlAlarms",
    "UnknownAlarm",
    "kind_of",
]

_log = logging.getLogger(__name__)

AlarmState = Literal["raised", "acknowledged", "resolved"]
#: The states, in lifecycle order.
STATES: Final[tuple[AlarmState, ...]] = ("raised", "acknowledged", "resolved")
#: The event names of an alarm's history, also passed to the :attr:`SqlAlarms.on_change`
#: callbacks.
EVENTS: Final = ("raised", "escalated", "acknowledged", "note", "resolved")
#: Longest note (characters, after stripping).
MAX_NOTE: Final = 2000

_MAX_NAME: Final = 64  # home
_MAX_EPISODE: Final = 200
_MAX_USER: Final = 200  # who acknowledged, resolved, wrote a note
_MAX_TRIGGER: Final = 200
_MAX_DETAIL: Final = 16_384  # bytes of JSON
_CUSTOM_KIND: Final = re.compile(r"[a-z][a-z0-9_]{1,31}")
# The store's pg_advisory_xact_lock key: "MSECCARE" in ASCII, unlikely to meet another's.
_PG_LOCK_KEY: Final = 0x4D53454343415245

metadata = sa.MetaData()

alarms_table = sa.Table(
    "care_alarms",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("home", sa.String(_MAX_NAME), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("episode", sa.String(_MAX_EPISODE), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("raised_at", sa.Double, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON object
    sa.Column("trigger", sa.String(_MAX_TRIGGER)),
    sa.Column("acknowledged_at", sa.Double),
    sa.Column("acknowledged_by", sa.String(_MAX_USER)),
    sa.Column("resolved_at", sa.Double),
    sa.Column("resolved_by", sa.String(_MAX_USER)),
    sa.Column("false_positive", sa.Boolean, nullable=False),
    sa.CheckConstraint(
        "state IN ('raised', 'acknowledged', 'resolved')", name="ck_care_alarms_state"
    ),
    # One alarm ever per incident, whatever happened to the first.
    sa.UniqueConstraint("home", "kind", "episode", name="uq_care_alarms_episode"),
    # At most one active alarm per home and kind.
    sa.Index(
        "ux_care_alarms_active",
        "home",
        "kind",
        unique=True,
        sqlite_where=sa.text("state != 'resolved'"),
        postgresql_where=sa.text("state != 'resolved'"),
    ),
    sa.Index("ix_care_alarms_state", "state"),
    sa.Index("ix_care_alarms_raised_at", "raised_at"),
)

events_table = sa.Table(
    "care_alarm_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("alarm_id", sa.BigInteger, sa.ForeignKey("care_alarms.id"), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.String(_MAX_USER)),  # None: the engine (raised, escalated)
    sa.Column("level", sa.Integer, nullable=False),  # the alarm's level after the event
    sa.Column("text", sa.Text),  # a note, if the event carries one
    sa.Index("ix_care_alarm_events_alarm", "alarm_id", "id"),
)


class UnknownAlarm(MsecError, KeyError):
    """There is no alarm with this id."""


class AlarmStateError(MsecError):
    """The alarm is not in a state that allows this step (e.g. acknowledging a resolved alarm);
    the message says which state it is in."""


class Note(NamedTuple):
    at: float
    by: str
    text: str


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm as stored. ``level`` is 0 when raised and grows by one per escalation;
    ``trigger`` names the reading that raised it (``"<device>/<seq>"``), if known; ``notes``
    are every note written on it, oldest first (including those given when acknowledging or
    resolving)."""

    id: int
    home: str
    #: A built-in :class:`AlarmKind`, or the kind of a custom rule (plain text).
    kind: AlarmKind | str
    episode: str
    state: AlarmState
    level: int
    raised_at: float
    detail: dict[str, Any]
    trigger: str | None = None
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    false_positive: bool = False
    notes: tuple[Note, ...] = ()

    @property
    def active(self) -> bool:
        return self.state != "resolved"

    def as_dict(self, *, notes: bool = True) -> dict[str, Any]:
        """The alarm as JSON-ready values (``kind`` as its string value); without the notes'
        text if ``notes`` is false."""
        data: dict[str, Any] = {
            "id": self.id,
            "home": self.home,
            "kind": str(self.kind),
            "episode": self.episode,
            "state": self.state,
            "level": self.level,
            "raised_at": self.raised_at,
            "detail": self.detail,
            "trigger": self.trigger,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": self.resolved_at,
            "resolved_by": self.resolved_by,
            "false_positive": self.false_positive,
        }
        if notes:
            data["notes"] = [{"at": n.at, "by": n.by, "text": n.text} for n in self.notes]
        return data


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One step of an alarm's history. ``by`` is ``None`` for what the engine did (raised,
    escalated); ``level`` is the alarm's level after the step; ``text`` the note, if any."""

    id: int
    alarm_id: int
    event: str
    at: float
    by: str | None
    level: int
    text: str | None


#: Called with (event name, the alarm after the change) once the change is committed.
ChangeCallback = Callable[[str, Alarm], None]


class SqlAlarms:
    """The alarm store on a SQLAlchemy engine (SQLite or PostgreSQL).

    Build the engine with :func:`msec.twin.make_engine` and call :meth:`create_schema` once.
    Append callbacks to :attr:`on_change` to hear of every committed change.
    """

    def __init__(self, engine: sa.Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise MsecError(
                f"SqlAlarms supports sqlite and postgresql, not {engine.dialect.name!r}"
            )
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self.on_change: list[ChangeCallback] = []

    def create_schema(self) -> None:
        """Create the ``care_alarms`` and ``care_alarm_events`` tables if missing. Idempotent."""
        metadata.create_all(self._engine)

    def _writing(self) -> AbstractContextManager[sa.Connection]:
        """One write transaction holding the store's write lock from its start."""
        return locked_transaction(self._engine, _PG_LOCK_KEY)

    def _emit(self, event: str, alarms: Iterable[Alarm]) -> None:
        alarms = list(alarms)
        if not alarms:
            return
        for callback in list(self.on_change):
            many = getattr(callback, "many", None)
            if many is not None:
                try:
                    many(event, alarms)
                except Exception:
                    _log.exception("care alarms: an on_change callback failed (%s x%d)",
                                   event, len(alarms))  # fmt: skip
                continue
            for alarm in alarms:
                try:
                    callback(event, alarm)
                except Exception:
                    # The change is committed: a broken subscriber must not undo the caller's
                    # success nor starve the other subscribers.
                    _log.exception(
                        "care alarm %s: an on_change callback failed (%s)", alarm.id, event
                    )

    # -- lifecycle --------------------------------------------------------------------------

    def raise_alarm(
        self,
        home: str,
        kind: AlarmKind | str,
        episode: str,
        *,
        at: float | None = None,
        detail: dict[str, Any] | None = None,
        trigger: str | None = None,
    ) -> Alarm | None:
        """Raise a ``kind`` alarm for ``home`` for the incident ``episode``; return it, or
        ``None`` if ``home`` already has an active ``kind`` alarm or this episode already
        raised one (active or not). Then :attr:`on_change` hears ``"raised"``.

        ``detail`` is what the engine saw (a JSON object of at most 16 KiB; a NaN or infinite
        number in it is stored as ``null``); ``trigger`` the reading that triggered it.

        ``ValueError`` for an unknown kind, an empty, over-long or control-character home,
        episode or trigger, or a detail that is not a JSON object.
        """
        [alarm] = self._insert([self._row(home, kind, episode, at, detail, trigger)])
        return alarm

    def raise_alarms(self, requests: Iterable[AlarmRequest]) -> list[Alarm | None]:
        """Raise several alarms in ONE write transaction (what the engine raised at one
        moment: a burst of timers due together must not queue one transaction per alarm
        behind the ingest writers). Returns, in order, what :meth:`raise_alarm` would
        return for each. A request :meth:`raise_alarm` would refuse with ``ValueError`` is
        logged and gets ``None``: it must not hold back the others. A database failure
        stores none of them (and propagates)."""
        rows: list[dict[str, Any] | None] = []
        for r in requests:
            try:
                rows.append(self._row(r.home, r.kind, r.episode, r.at, r.detail, r.trigger))
            except ValueError as exc:
                _log.error("care alarm for %r not raised: %s", r.home, exc)
                rows.append(None)
        return self._insert(rows)

    def _row(
        self,
        home: str,
        kind: AlarmKind | str,
        episode: str,
        at: float | None,
        detail: dict[str, Any] | None,
        trigger: str | None,
    ) -> dict[str, Any]:
        """The checked ``care_alarms`` row of a new alarm (``ValueError`` if unfit)."""
        kind = _kind(kind)
        _check_name(home, "home", _MAX_NAME)
        _check_name(episode, "episode", _MAX_EPISODE)
        if trigger is not None:
            _check_name(trigger, "trigger", _MAX_TRIGGER)
        return {
            "home": home,
            "kind": str(kind),
            "episode": episode,
            "state": "raised",
            "level": 0,
            "raised_at": _now(at),
            "detail": _detail_json({} if detail is None else detail),
            "trigger": trigger,
            "false_positive": False,
        }

    def _insert(self, rows: list[dict[str, Any] | None]) -> list[Alarm | None]:
        """Store the new alarms (``None``: skipped) in one transaction, then tell the
        subscribers; ``None`` for each one the uniqueness rules refused."""
        dialect = sqlite if self._sqlite else postgresql
        # One statement compiled once, its values bound per row. No conflict target: DO
        # NOTHING covers both uniqueness rules (the partial index too).
        insert = dialect.insert(alarms_table).on_conflict_do_nothing()
        insert = insert.returning(alarms_table.c.id)
        ids: list[int | None] = []
        events: list[dict[str, Any]] = []
        if any(row is not None for row in rows):
            with self._writing() as conn:
                for row in rows:
                    id_ = None if row is None else conn.execute(insert, row).scalar()
                    if row is not None and id_ is not None:
                        events.append(_event_row(id_, "raised", row["raised_at"], None, 0))
                    ids.append(id_)
                if events:
                    conn.execute(events_table.insert(), events)
                stored = {a.id: a for a in _load_many(conn, [i for i in ids if i is not None])}
        else:
            ids, stored = [None] * len(rows), {}
        self._emit("raised", stored.values())
        return [None if i is None else stored[i] for i in ids]

    def acknowledge(
        self, alarm_id: int, *, by: str, at: float | None = None, note: str | None = None
    ) -> Alarm:
        """An operator (``by``) takes charge of a raised alarm: it stops escalating. An
        optional ``note`` joins its notes (an empty one is ignored). Then :attr:`on_change`
        hears ``"acknowledged"``.

        ``UnknownAlarm`` if there is none; ``AlarmStateError`` unless it is ``raised``;
        ``ValueError`` for an empty ``by`` or a note breaking the rules of :meth:`add_note`.
        """
        _check_name(by, "by", _MAX_USER)
        text = _clean_note(note, required=False)
        now = _now(at)
        a = alarms_table.c
        with self._writing() as conn:
            current = _state(conn, alarm_id)
            if current != "raised":
                raise AlarmStateError(
                    f"alarm {alarm_id} is {current}: only a raised alarm can be acknowledged"
                )
            conn.execute(
                alarms_table.update()
                .where(a.id == alarm_id)
                .values(state="acknowledged", acknowledged_at=now, acknowledged_by=by)
            )
            level = _level(conn, alarm_id)
            _add_event(conn, alarm_id, "acknowledged", now, by, level, text)
            alarm = _load(conn, alarm_id)
        self._emit("acknowledged", [alarm])
        return alarm

    def resolve(
        self,
        alarm_id: int,
        *,
        by: str,
        at: float | None = None,
        note: str | None = None,
        false_positive: bool = False,
    ) -> Alarm:
        """Close a raised or acknowledged alarm; ``false_positive`` says nothing was wrong
        (for the engine's statistics). An optional ``note`` joins its notes. Then
        :attr:`on_change` hears ``"resolved"``. The same (home, kind, episode) can never be
        raised again; a new episode can.

        ``UnknownAlarm`` if there is none; ``AlarmStateError`` if it already is resolved;
        ``ValueError`` for an empty ``by``, a ``false_positive`` that is not a bool or a note
        breaking the rules of :meth:`add_note`.
        """
        _check_name(by, "by", _MAX_USER)
        if not isinstance(false_positive, bool):
            raise ValueError("false_positive must be True or False")
        text = _clean_note(note, required=False)
        now = _now(at)
        a = alarms_table.c
        with self._writing() as conn:
            current = _state(conn, alarm_id)
            if current == "resolved":
                raise AlarmStateError(f"alarm {alarm_id} is already resolved")
            conn.execute(
                alarms_table.update()
                .where(a.id == alarm_id)
                .values(
                    state="resolved",
                    resolved_at=now,
                    resolved_by=by,
                    false_positive=false_positive,
                )
            )
            level = _level(conn, alarm_id)
            _add_event(conn, alarm_id, "resolved", now, by, level, text)
            alarm = _load(conn, alarm_id)
        self._emit("resolved", [alarm])
        return alarm

    def add_note(self, alarm_id: int, *, by: str, text: str, at: float | None = None) -> Alarm:
        """Append a note to an alarm, in any state (a resolved alarm takes follow-up notes; its
        state never changes). Then :attr:`on_change` hears ``"note"``.

        The note is free text of at most :data:`MAX_NOTE` characters once stripped, line
        breaks kept as ``\\n``. ``ValueError`` for an empty ``by``, an empty or over-long text
        or one with control characters other than newline and tab; ``UnknownAlarm`` if there
        is no such alarm.
        """
        _check_name(by, "by", _MAX_USER)
        clean = _clean_note(text, required=True)
        now = _now(at)
        with self._writing() as conn:
            _state(conn, alarm_id)
            _add_event(conn, alarm_id, "note", now, by, _level(conn, alarm_id), clean)
            alarm = _load(conn, alarm_id)
        self._emit("note", [alarm])
        return alarm

    def escalate_due(
        self,
        *,
        at: float | None = None,
        after_s: float,
        homes: Collection[str] | None = None,
        exclude: Collection[str] = (),
    ) -> list[Alarm]:
        """Escalate every alarm still ``raised`` (nobody acknowledged it) for which
        ``raised_at + after_s * (level + 1) <= at``: its level grows by one. Return them,
        oldest first; :attr:`on_change` hears ``"escalated"`` for each. Only the alarms of
        ``homes`` if given, and none of ``exclude`` (people with their own delay).

        Each level is reached once, however many callers run it at the same time. One call
        raises a level by one at most: after a long outage, successive calls catch up one
        level each. ``ValueError`` unless ``after_s`` is a positive finite number.
        """
        if (
            not isinstance(after_s, int | float)
            or isinstance(after_s, bool)
            or not math.isfinite(after_s)
            or after_s <= 0
        ):
            raise ValueError(f"after_s must be a positive number of seconds, not {after_s!r}")
        now = _now(at)
        a = alarms_table.c
        due = sa.select(a.id, a.level).where(
            a.state == "raised",
            a.raised_at + sa.literal(float(after_s), sa.Double) * (a.level + 1) <= now,
        )
        if homes is not None:
            due = due.where(a.home.in_(list(homes)))
        if exclude:
            due = due.where(a.home.not_in(list(exclude)))
        # Callers tick often (the care service several times a second): look before taking
        # the write lock, which almost every tick would take for nothing.
        with self._engine.connect() as conn:
            if conn.execute(due.limit(1)).first() is None:
                return []
        with self._writing() as conn:
            rows = conn.execute(due.order_by(a.raised_at, a.id)).all()
            for row in rows:
                conn.execute(
                    alarms_table.update().where(a.id == row.id).values(level=row.level + 1)
                )
                _add_event(conn, row.id, "escalated", now, None, row.level + 1)
            escalated = _load_many(conn, [row.id for row in rows])
        self._emit("escalated", escalated)
        return escalated

    # -- queries ----------------------------------------------------------------------------

    def get(self, alarm_id: int) -> Alarm | None:
        """The alarm, or ``None`` if there is none with this id."""
        with self._engine.connect() as conn:
            found = _load_many(conn, [alarm_id])
        return found[0] if found else None

    def active(self, home: str | None = None, kind: AlarmKind | str | None = None) -> list[Alarm]:
        """The active alarms (of ``home``, of ``kind``, if given): the raised ones first, then
        the acknowledged ones, newest first within each. ``ValueError`` for an unknown kind."""
        a = alarms_table.c
        stmt = sa.select(a.id).where(a.state != "resolved")
        if home is not None:
            stmt = stmt.where(a.home == home)
        if kind is not None:
            stmt = stmt.where(a.kind == str(_kind(kind)))
        stmt = stmt.order_by(
            sa.case((a.state == "raised", 0), else_=1), a.raised_at.desc(), a.id.desc()
        )
        with self._engine.connect() as conn:
            return _load_many(conn, list(conn.execute(stmt).scalars()))

    def history(
        self, home: str | None = None, *, since: float | None = None, limit: int = 100
    ) -> list[Alarm]:
        """The latest ``limit`` alarms in any state (of ``home``, raised at ``since`` or
        later, if given), newest first."""
        a = alarms_table.c
        stmt = sa.select(a.id).order_by(a.raised_at.desc(), a.id.desc()).limit(limit)
        if home is not None:
            stmt = stmt.where(a.home == home)
        if since is not None:
            stmt = stmt.where(a.raised_at >= since)
        with self._engine.connect() as conn:
            return _load_many(conn, list(conn.execute(stmt).scalars()))

    def counts(self) -> dict[str, dict[AlarmKind | str, int]]:
        """How many alarms there are by state, then by kind; every state and every built-in
        kind is present (0 if none), custom rules' kinds when they have alarms."""
        a = alarms_table.c
        stmt = sa.select(a.state, a.kind, sa.func.count()).group_by(a.state, a.kind)
        counts: dict[str, dict[AlarmKind | str, int]] = {
            state: dict.fromkeys(AlarmKind, 0) for state in STATES
        }
        with self._engine.connect() as conn:
            for state, kind, n in conn.execute(stmt):
                counts[state][kind_of(kind)] = int(n)
        return counts

    def version(self) -> tuple[int, int]:
        """Changes whenever an alarm is raised or changes (live pages poll it)."""
        with self._engine.connect() as conn:
            count, newest = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(events_table.c.id), 0))
            ).one()
        return int(count), int(newest)

    def events(self, alarm_id: int) -> list[AlarmEvent]:
        """The alarm's history, oldest first (empty if there is no such alarm)."""
        e = events_table.c
        stmt = sa.select(events_table).where(e.alarm_id == alarm_id).order_by(e.id)
        with self._engine.connect() as conn:
            return [_event(row) for row in conn.execute(stmt)]


# -- helpers ----------------------------------------------------------------------------------


def _now(at: float | None) -> float:
    if at is None:
        return time.time()
    now = float(at)
    if not math.isfinite(now):
        raise ValueError(f"at must be a finite time, not {at!r}")
    return now


def kind_of(kind: str) -> AlarmKind | str:
    """The built-in :class:`AlarmKind` named ``kind``, else ``kind`` (a custom rule's)."""
    try:
        return AlarmKind(kind)
    except ValueError:
        return kind


def _kind(kind: AlarmKind | str) -> AlarmKind | str:
    """A built-in kind, or a custom rule's kind (a lowercase name, 2 to 32 characters)."""
    if isinstance(kind, str) and _CUSTOM_KIND.fullmatch(kind):
        return kind_of(kind)
    raise ValueError(
        f"unknown alarm kind {kind!r}: use {', '.join(k.value for k in AlarmKind)} or a rule's"
    )


def _check_name(value: Any, label: str, max_len: int) -> None:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ValueError(f"{label} must be 1 to {max_len} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValueError(f"{label} contains control characters")


def _clean_note(text: str | None, *, required: bool) -> str | None:
    if text is None and not required:
        return None
    if not isinstance(text, str):
        raise ValueError("a note must be text")
    # Browsers send a textarea's line breaks as CRLF: keep them, as plain newlines.
    clean = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not clean:
        if required:
            raise ValueError("the note is empty")
        return None
    if len(clean) > MAX_NOTE:
        raise ValueError(f"the note is longer than {MAX_NOTE} characters")
    for ch in clean:
        if ch not in "\n\t" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError("the note contains control characters")
    return clean


def _detail_json(detail: Any) -> str:
    if not isinstance(detail, dict):
        raise ValueError("detail must be a JSON object (a dict)")
    try:
        text = json.dumps(_finite(detail), allow_nan=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"detail is not JSON: {exc}") from None
    if len(text.encode()) > _MAX_DETAIL:
        raise ValueError(f"detail is larger than {_MAX_DETAIL} bytes of JSON")
    return text


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``: a sensor's odd reading in the
    detail must not stop the alarm being raised, and JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _state(conn: sa.Connection, alarm_id: int) -> AlarmState:
    a = alarms_table.c
    state = conn.execute(sa.select(a.state).where(a.id == alarm_id)).scalar()
    if state is None:
        raise UnknownAlarm(alarm_id)
    return state  # type: ignore[no-any-return]


def _level(conn: sa.Connection, alarm_id: int) -> int:
    a = alarms_table.c
    return int(conn.execute(sa.select(a.level).where(a.id == alarm_id)).scalar_one())


def _add_event(
    conn: sa.Connection,
    alarm_id: int,
    event: str,
    at: float,
    by: str | None,
    level: int,
    text: str | None = None,
) -> None:
    conn.execute(events_table.insert(), _event_row(alarm_id, event, at, by, level, text))


def _event_row(
    alarm_id: int, event: str, at: float, by: str | None, level: int, text: str | None = None
) -> dict[str, Any]:
    return {"alarm_id": alarm_id, "event": event, "at": at, "actor": by, "level": level,
            "text": text}  # fmt: skip


def _load(conn: sa.Connection, alarm_id: int) -> Alarm:
    return _load_many(conn, [alarm_id])[0]


def _load_many(conn: sa.Connection, ids: list[int]) -> list[Alarm]:
    """The alarms with these ids, in this order (missing ones left out), with their notes."""
    if not ids:
        return []
    a, e = alarms_table.c, events_table.c
    rows = {row.id: row for row in conn.execute(sa.select(alarms_table).where(a.id.in_(ids)))}
    notes: dict[int, list[Note]] = {id_: [] for id_ in rows}
    for row in conn.execute(
        sa.select(e.alarm_id, e.at, e.actor, e.text)
        .where(e.alarm_id.in_(ids), e.text.is_not(None))
        .order_by(e.id)
    ):
        notes[row.alarm_id].append(Note(float(row.at), row.actor or "", row.text))
    return [_alarm(rows[id_], notes[id_]) for id_ in ids if id_ in rows]


def _event(row: Any) -> AlarmEvent:
    return AlarmEvent(
        int(row.id), int(row.alarm_id), row.event, float(row.at), row.actor, int(row.level),
        row.text,
    )  # fmt: skip


def _alarm(row: Any, notes: list[Note]) -> Alarm:
    return Alarm(
        id=int(row.id),
        home=row.home,
        kind=kind_of(row.kind),
        episode=row.episode,
        state=row.state,
        level=int(row.level),
        raised_at=float(row.raised_at),
        detail=json.loads(row.detail),
        trigger=row.trigger,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        false_positive=bool(row.false_positive),
        notes=tuple(notes),
    )
