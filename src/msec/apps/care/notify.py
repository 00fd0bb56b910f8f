"""Connected Care notifications that are not lost: a durable outbox, its senders, a notifier.

A change to an alarm (see :class:`~msec.apps.care.alarms.SqlAlarms`) becomes one
:class:`Delivery` per :class:`Recipient` in the ``care_outbox`` table (:meth:`Outbox.enqueue`);
a :class:`Notifier` (run by a :class:`NotifierThread`) hands what is due to the
:class:`Sender` for the recipient's kind: :class:`SmtpSender` for e-mail, :class:`WebhookSender`
for signed HTTP POSTs. What it guarantees:

* **Durable.** A delivery is a row from :meth:`Outbox.enqueue` until it is sent or given up;
  new objects on the same database (a restart) deliver whatever was pending.
* **At least once.** :meth:`Outbox.due` leases what it returns for ``lease_s`` seconds, so
  several notifiers (threads or processes) do not send the same delivery at the same time;
  a notifier that dies mid-send leaves it to be sent again once the lease ends. Webhook
  receivers deduplicate on ``X-MSec-Delivery``.
* **Retried, then kept.** A failed attempt is retried after 5 s, doubling to at most 1 h
  (:class:`Backoff`); after 20 attempts the delivery stays in the table as ``failed``, with
  its last error, for the operators to see (:meth:`Outbox.failed`) and, once the cause is
  fixed, to :meth:`~Outbox.retry`.
* **Enqueueing twice is harmless.** A delivery is unique per alarm, event, level and recipient
  (a note: per note), so a caller that is unsure whether it enqueued may enqueue again.
* **A snapshot is sent.** The payload is the alarm as it was when the event was enqueued
  (without its notes' text, which stay behind the portal's login), so a late retry still says
  what happened then.

The gap it does not close: a process that dies between committing an alarm change and
enqueueing its deliveries (in the :attr:`~msec.apps.care.alarms.SqlAlarms.on_change`
callback) loses them; enqueue again for the active alarms on start to be sure.

``httpx`` (for :class:`WebhookSender`) is imported only when a webhook is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from msec.apps.care.alarms import EVENTS, Alarm, ChangeCallback
from msec.apps.care.model import AlarmKind
from msec.core.errors import MsecError
from msec.twin.engine import rows_in

__all__ = [
    "KIND_WORDS",
    "Backoff",
    "Delivery",
    "DeliveryError",
    "Notifier",
    "NotifierThread",
    "Outbox",
    "Recipient",
    "Sender",
    "SmtpSender",
    "UnknownDelivery",
    "WebhookSender",
    "signature",
    "verify_signature",
]

_log = logging.getLogger(__name__)

RecipientKind = Literal["email", "webhook"]
#: ``route_many(event, alarms)``: each alarm's recipients, by alarm id.
RouteMany = Callable[[str, Sequence[Alarm]], Mapping[int, Iterable["Recipient"]]]
DeliveryState = Literal["pending", "sent", "failed"]

#: Each alarm kind in words, as the mails say it: (short title, one sentence).
KIND_WORDS: Final[dict[AlarmKind, tuple[str, str]]] = {
    AlarmKind.INACTIVITY: (
        "No movement for a long time",
        "No movement was detected at home for hours during the day: the person may have "
        "fallen or be unwell.",
    ),
    AlarmKind.NIGHT_DOOR: (
        "Front door opened at night",
        "The front door opened at night while the bed was empty.",
    ),
    AlarmKind.OUT_OF_BED: (
        "Out of bed at night",
        "The person got out of bed at night and has not come back for a long time.",
    ),
    AlarmKind.APPLIANCE_ON: (
        "Appliance left on",
        "An appliance has been drawing power for hours.",
    ),
    AlarmKind.NO_MORNING_ACTIVITY: (
        "No activity this morning",
        "No movement was detected during the morning: the person may not have got up.",
    ),
    AlarmKind.DEVICE_OFFLINE: (
        "A sensor is not reporting",
        "A sensor in the home has sent nothing for too long.",
    ),
    AlarmKind.LOW_BATTERY: (
        "A sensor's battery is low",
        "A sensor's battery is running low and needs replacing.",
    ),
}


def kind_words(kind: str, detail: Any = None) -> tuple[str, str]:
    """(title, sentence) of an alarm kind; a custom rule's alarm is told by its label."""
    try:
        return KIND_WORDS[AlarmKind(kind)]
    except ValueError:
        label = detail.get("rule") if isinstance(detail, dict) else None
        title = _one_line(str(label or kind), 120)
        return title, f'The alert rule "{title}" was triggered.'


_MAX_EMAIL: Final = 254
_MAX_URL: Final = 1000
_MAX_NAME: Final = 200
_MAX_ERROR: Final = 500
_SECRET_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_ROLE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Deliberately narrow: no spaces, quotes, brackets or separators, so an address can never
# carry a second address or a header into a mail.
_EMAIL: Final = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
# The outbox's pg_advisory_xact_lock key: "MSECOUTB" in ASCII, unlikely to meet another's.
_PG_LOCK_KEY: Final = 0x4D5345434F555442


class DeliveryError(MsecError):
    """A sender could not deliver; the message says why in words safe to store and show
    (never a secret). The notifier retries later."""


class UnknownDelivery(MsecError, KeyError):
    """There is no delivery with this id."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who hears of an alarm: an ``email`` address or a ``webhook`` URL (``address``).

    ``name`` is how to greet them (any text: it is made safe for headers when sent), ``home``
    the home they care for (``None``: all, e.g. an operators' desk), ``role`` what they are
    (``"caregiver"``, ``"operator"``...). A webhook needs ``secret_name``: the name of the
    secret its payloads are signed with (an environment variable unless the
    :class:`WebhookSender` is given its secrets); the secret itself is never stored.

    ``ValueError`` for an address that is not a plain e-mail address or an http(s) URL, an
    over-long name, a role that is not a lowercase word, or a missing or malformed
    ``secret_name`` on a webhook (or one on an e-mail recipient).
    """

    kind: RecipientKind
    address: str
    name: str = ""
    home: str | None = None
    role: str = "caregiver"
    secret_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "email":
            _check_email(self.address)
            if self.secret_name is not None:
                raise ValueError("an e-mail recipient has no secret_name")
        elif self.kind == "webhook":
            _check_url(self.address)
            if not isinstance(self.secret_name, str) or not _SECRET_NAME.fullmatch(
                self.secret_name
            ):
                raise ValueError("a webhook needs a secret_name (letters, digits and _)")
        else:
            raise ValueError(f"a recipient is 'email' or 'webhook', not {self.kind!r}")
        if not isinstance(self.name, str) or len(self.name) > _MAX_NAME:
            raise ValueError(f"a recipient's name is at most {_MAX_NAME} characters")
        if self.home is not None and (
            not isinstance(self.home, str) or not 0 < len(self.home) <= 64
        ):
            raise ValueError("a recipient's home is 1 to 64 characters")
        if not isinstance(self.role, str) or not _ROLE.fullmatch(self.role):
            raise ValueError(f"a recipient's role is a lowercase word, not {self.role!r}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try a failed delivery again: ``first_s`` after the first failure, doubling
    after each, at most ``max_s``; after ``max_attempts`` failed attempts, give up."""

    first_s: float = 5.0
    max_s: float = 3600.0
    max_attempts: int = 20

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
        return min(self.first_s * 2.0 ** min(max(attempts - 1, 0), 64), self.max_s)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification of one alarm event to one recipient.

    ``payload`` is what is sent: ``{"event": ..., "alarm": {...}}`` (the alarm as it was).
    ``state`` is ``pending`` (``next_try_at`` says when it is due), ``sent`` (``sent_at``) or
    ``failed`` (given up; ``last_error`` says why). ``attempts`` counts the tries made.
    """

    id: int
    alarm_id: int
    event: str
    recipient: Recipient
    payload: dict[str, Any]
    state: DeliveryState
    attempts: int
    created_at: float
    next_try_at: float | None
    sent_at: float | None
    last_error: str | None


metadata = sa.MetaData()

outbox_table = sa.Table(
    "care_outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    # No foreign key: the outbox may live without the alarm tables (and outlives nothing).
    sa.Column("alarm_id", sa.BigInteger, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # the note's number for "note", else 0
    sa.Column("home", sa.String(64), nullable=False),
    sa.Column("recipient_kind", sa.String(8), nullable=False),
    sa.Column("address", sa.String(_MAX_URL), nullable=False),
    sa.Column("recipient_name", sa.String(_MAX_NAME), nullable=False),
    sa.Column("recipient_home", sa.String(64)),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("secret_name", sa.String(128)),
    sa.Column("payload", sa.Text, nullable=False),  # JSON, exactly the webhook body
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("next_try_at", sa.Double),  # NULL once sent or given up
    sa.Column("sent_at", sa.Double),
    sa.Column("last_error", sa.String(_MAX_ERROR)),
    sa.CheckConstraint("state IN ('pending', 'sent', 'failed')", name="ck_care_outbox_state"),
    sa.UniqueConstraint(
        "alarm_id", "event", "level", "seq", "recipient_kind", "address", name="uq_care_outbox_once"
    ),
    sa.Index("ix_care_outbox_due", "state", "next_try_at"),
)


#: The domain of the addresses that replace erased ones (RFC 2606: never resolves).
_ERASED_HOST: Final = "erased.invalid"


class _Subscriber:
    """:meth:`Outbox.subscriber`: one change at a time, or a batch (``many``)."""

    def __init__(
        self,
        outbox: Outbox,
        route: Callable[[str, Alarm], Iterable[Recipient]],
        clock: Callable[[], float],
        route_many: RouteMany | None,
    ) -> None:
        self.outbox, self.route, self.clock, self.route_many = outbox, route, clock, route_many

    def __call__(self, event: str, alarm: Alarm) -> None:
        recipients = list(self.route(event, alarm))
        if recipients:
            self.outbox.enqueue(alarm, event, recipients, self.clock())

    def many(self, event: str, alarms: Sequence[Alarm]) -> None:
        if self.route_many is not None and len(alarms) > 1:
            try:
                routes = self.route_many(event, alarms)
                batch = [(a, list(routes.get(a.id, ()))) for a in alarms]
                self.outbox.enqueue_many(event, [(a, r) for a, r in batch if r], self.clock())
                return
            except Exception:  # committed already: try them one by one
                _log.exception("care alarms: enqueueing a batch of %d failed", len(alarms))
        for alarm in alarms:
            try:
                self(event, alarm)
            except Exception:  # committed already: the others must still be told
                _log.exception("care alarm %s: enqueueing %s failed", alarm.id, event)


class Outbox:
    """The durable queue of deliveries on a SQLAlchemy engine (SQLite or PostgreSQL).

    Call :meth:`create_schema` once. Every write is one transaction under the outbox's write
    lock (as :class:`~msec.apps.care.alarms.SqlAlarms`); safe to share between threads and to
    use from several processes.
    """

    def __init__(self, engine: sa.Engine, *, backoff: Backoff | None = None) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise MsecError(f"Outbox supports sqlite and postgresql, not {engine.dialect.name!r}")
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self.backoff = backoff or Backoff()

    def create_schema(self) -> None:
        """Create the ``care_outbox`` table if missing. Idempotent."""
        metadata.create_all(self._engine)

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        with self._engine.begin() as conn:
            if self._sqlite:
                # Addresses are personal data: what a write frees (an updated row, a page
                # split) is zeroed, so a scrub leaves no stale copy (as the companion store).
                conn.exec_driver_sql("PRAGMA secure_delete=ON")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            yield conn

    def enqueue(
        self, alarm: Alarm, event: str, recipients: Iterable[Recipient], at: float | None = None
    ) -> list[Delivery]:
        """Queue ``event`` (one of :data:`~msec.apps.care.alarms.EVENTS`) of ``alarm`` for each
        recipient, due at ``at``; return the new deliveries (those enqueued before are left
        as they are and not returned). ``ValueError`` for an unknown event."""
        return self.enqueue_many(event, [(alarm, list(recipients))], at)

    def enqueue_many(
        self,
        event: str,
        batch: Sequence[tuple[Alarm, Sequence[Recipient]]],
        at: float | None = None,
    ) -> list[Delivery]:
        """:meth:`enqueue` of ``event`` for many alarms, each with its recipients, in one
        transaction (a burst of alarms is one write, not one per alarm)."""
        if event not in EVENTS:
            raise ValueError(f"unknown alarm event {event!r}: use {', '.join(EVENTS)}")
        now = _now(at)
        dialect = sqlite if self._sqlite else postgresql
        if not any(recipients for _, recipients in batch):
            return []
        rows = []
        for alarm, recipients in batch:
            payload = _canonical_json({"event": event, "alarm": alarm.as_dict(notes=False)})
            seq = len(alarm.notes) if event == "note" else 0
            rows.extend(
                {
                    "alarm_id": alarm.id,
                    "event": event,
                    "level": alarm.level,
                    "seq": seq,
                    "home": alarm.home,
                    "recipient_kind": recipient.kind,
                    "address": recipient.address,
                    "recipient_name": recipient.name,
                    "recipient_home": recipient.home,
                    "role": recipient.role,
                    "secret_name": recipient.secret_name,
                    "payload": payload.decode(),
                    "state": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "next_try_at": now,
                }
                for recipient in recipients
            )
        # Many rows in few statements (SQLAlchemy's "insertmanyvalues"); those enqueued
        # before are skipped, and only the new ones' ids come back.
        stmt = dialect.insert(outbox_table).on_conflict_do_nothing().returning(outbox_table.c.id)
        with self._writing() as conn:
            ids = [int(id_) for id_ in conn.execute(stmt, rows).scalars()]
            new = sorted(rows_in(conn, outbox_table.c.id, ids, outbox_table), key=lambda r: r.id)
        return [_delivery(row) for row in new]

    def subscriber(
        self,
        route: Callable[[str, Alarm], Iterable[Recipient]],
        *,
        clock: Callable[[], float] = time.time,
        route_many: RouteMany | None = None,
    ) -> ChangeCallback:
        """A callback for :attr:`SqlAlarms.on_change <msec.apps.care.alarms.SqlAlarms.on_change>`
        that enqueues each change for the recipients ``route(event, alarm)`` names (none:
        nothing is sent), due at ``clock()``. ``route_many(event, alarms)``: the recipients
        of a burst of alarms at once, by alarm id; the burst is then enqueued in one
        transaction (if that fails, one alarm at a time)."""
        return _Subscriber(self, route, clock, route_many)

    def due(
        self, at: float | None = None, limit: int = 50, *, lease_s: float = 60.0
    ) -> list[Delivery]:
        """Claim up to ``limit`` pending deliveries due at ``at``, oldest due first: they are
        not due again for ``lease_s`` seconds, time for the caller to send them and call
        :meth:`mark_sent` or :meth:`mark_failed`."""
        now = _now(at)
        o = outbox_table.c
        stmt = (
            sa.select(outbox_table)
            .where(o.state == "pending", o.next_try_at <= now)
            .order_by(o.next_try_at, o.id)
            .limit(limit)
        )
        # Called every second: look before taking the write lock, usually for nothing.
        with self._engine.connect() as conn:
            if conn.execute(stmt.limit(1)).first() is None:
                return []
        with self._writing() as conn:
            rows = conn.execute(stmt).all()
            if rows:
                conn.execute(
                    outbox_table.update()
                    .where(o.id.in_([row.id for row in rows]))
                    .values(next_try_at=now + lease_s)
                )
        return [_delivery(row) for row in rows]

    def forget_recipients(
        self, home: str, *, kind: str | None = None, address: str | None = None,
        at: float | None = None,
    ) -> int:  # fmt: skip
        """Scrub the deliveries to the contacts of ``home`` (only the one of ``kind`` at
        ``address`` when given): their address and name are replaced, and those still
        pending are given up (``failed``, "contact removed"). For a removed contact or an
        erased person: the outbox keeps no address of theirs. Returns how many rows."""
        o = outbox_table.c
        where = [o.recipient_home == home, ~o.address.contains(_ERASED_HOST)]
        if kind is not None:
            where.append(o.recipient_kind == kind)
        if address is not None:
            where.append(o.address == address)
        with self._writing() as conn:
            rows = conn.execute(sa.select(o.id, o.state, o.recipient_kind).where(*where)).all()
            for row in rows:
                # Still a valid address of its kind (the row stays readable), on a reserved
                # domain that never resolves, unique per row (the outbox's key holds).
                address = (
                    f"erased-{row.id}@{_ERASED_HOST}"
                    if row.recipient_kind == "email"
                    else f"https://{_ERASED_HOST}/{row.id}"
                )
                values: dict[str, Any] = {"address": address, "recipient_name": ""}
                if row.state == "pending":
                    values |= {"state": "failed", "next_try_at": None,
                               "last_error": "contact removed"}  # fmt: skip
                conn.execute(outbox_table.update().where(o.id == row.id).values(**values))
        if rows:
            self._flush_files()
        return len(rows)

    def _flush_files(self) -> None:
        """After a scrub: the old rows out of the database files too (SQLite: the WAL is
        checkpointed and truncated; PostgreSQL: ``VACUUM care_outbox`` prunes dead tuples,
        which PostgreSQL does not promise to overwrite). Logged, not raised, if it fails."""
        try:
            if self._sqlite:
                with self._engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                autocommit = self._engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
                with autocommit as conn:
                    conn.exec_driver_sql("VACUUM care_outbox")
        except sa.exc.DBAPIError as exc:
            _log.warning("care outbox: clean-up after a scrub failed: %s", type(exc).__name__)

    def mark_sent(self, delivery_id: int, *, at: float | None = None) -> None:
        """Record that the delivery was sent (one more attempt). ``UnknownDelivery`` if there
        is none."""
        now = _now(at)
        o = outbox_table.c
        with self._writing() as conn:
            done = conn.execute(
                outbox_table.update()
                .where(o.id == delivery_id)
                .values(state="sent", sent_at=now, next_try_at=None, attempts=o.attempts + 1)
            ).rowcount
        if not done:
            raise UnknownDelivery(delivery_id)

    def mark_failed(self, delivery_id: int, *, error: str, at: float | None = None) -> Delivery:
        """Record a failed attempt and why (``error``, kept to 500 characters): the delivery
        is due again after :attr:`backoff`'s delay, or, at its last attempt, ``failed`` for
        good. Return it as it is now. ``UnknownDelivery`` if there is none."""
        now = _now(at)
        o = outbox_table.c
        with self._writing() as conn:
            row = conn.execute(sa.select(outbox_table).where(o.id == delivery_id)).first()
            if row is None:
                raise UnknownDelivery(delivery_id)
            attempts = int(row.attempts) + 1
            values: dict[str, Any] = {"attempts": attempts, "last_error": _one_line(error, 500)}
            if attempts >= self.backoff.max_attempts:
                values |= {"state": "failed", "next_try_at": None}
            else:
                values["next_try_at"] = now + self.backoff.delay(attempts)
            conn.execute(outbox_table.update().where(o.id == delivery_id).values(**values))
            row = conn.execute(sa.select(outbox_table).where(o.id == delivery_id)).one()
        return _delivery(row)

    def retry(self, delivery_id: int, *, at: float | None = None) -> Delivery:
        """Give a delivery that failed for good a fresh start (attempts from 0), due at ``at``;
        for the operators, once the cause is fixed. A pending or sent delivery is returned
        unchanged. ``UnknownDelivery`` if there is none."""
        now = _now(at)
        o = outbox_table.c
        with self._writing() as conn:
            conn.execute(
                outbox_table.update()
                .where(o.id == delivery_id, o.state == "failed")
                .values(state="pending", attempts=0, next_try_at=now)
            )
            row = conn.execute(sa.select(outbox_table).where(o.id == delivery_id)).first()
        if row is None:
            raise UnknownDelivery(delivery_id)
        return _delivery(row)

    def get(self, delivery_id: int) -> Delivery | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(outbox_table).where(outbox_table.c.id == delivery_id)
            ).first()
        return None if row is None else _delivery(row)

    def pending(self, limit: int = 100) -> list[Delivery]:
        """Deliveries not yet sent nor given up, the soonest due first."""
        o = outbox_table.c
        return self._list(o.state == "pending", (o.next_try_at, o.id), limit)

    def failed(self, limit: int = 100) -> list[Delivery]:
        """Deliveries given up, the latest first: for the operators to see."""
        o = outbox_table.c
        return self._list(o.state == "failed", (o.created_at.desc(), o.id.desc()), limit)

    def for_alarm(self, alarm_id: int) -> list[Delivery]:
        """Every delivery of the alarm's events, oldest first."""
        o = outbox_table.c
        return self._list(o.alarm_id == alarm_id, (o.id,), None)

    def counts(self) -> dict[DeliveryState, int]:
        """How many deliveries are in each state (every state present)."""
        o = outbox_table.c
        counts: dict[DeliveryState, int] = {"pending": 0, "sent": 0, "failed": 0}
        with self._engine.connect() as conn:
            for state, n in conn.execute(sa.select(o.state, sa.func.count()).group_by(o.state)):
                counts[state] = int(n)
        return counts

    def _list(
        self, where: sa.ColumnElement[bool], order: tuple[Any, ...], limit: int | None
    ) -> list[Delivery]:
        stmt = sa.select(outbox_table).where(where).order_by(*order).limit(limit)
        with self._engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(stmt)]


# -- senders ----------------------------------------------------------------------------------


class Sender(Protocol):
    """Delivers one notification to its recipient, or raises :class:`DeliveryError` saying why
    it could not (in words safe to store: never a secret). Returning means it was accepted."""

    def send(self, delivery: Delivery) -> None: ...


class SmtpSender:
    """E-mail through an SMTP server: plain text, the alarm in words and a link to it in the
    portal (``base_url`` + ``/care/alarms/{id}``), times in ``timezone``.

    ``starttls`` upgrades the connection (certificate checked) before anything is sent; a
    ``username`` logs in with the password in the environment variable ``password_env``, and
    needs ``starttls`` (credentials never travel in clear). The password is read when sending,
    never stored nor logged. ``ValueError`` for a malformed ``sender`` address or a login
    without TLS or without ``password_env``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        base_url: str = "",
        starttls: bool = False,
        username: str | None = None,
        password_env: str | None = None,
        timeout: float = 10,
        timezone: str = "Europe/Madrid",
        from_name: str = "M-Sec Connected Care",
    ) -> None:
        _check_email(sender)
        if username is not None and not starttls:
            raise ValueError("an SMTP login needs starttls: the password would travel in clear")
        if username is not None and not password_env:
            raise ValueError("an SMTP login needs password_env (the password's variable)")
        self.host = host
        self.port = port
        self.sender = sender
        self.base_url = base_url.rstrip("/")
        self.starttls = starttls
        self.username = username
        self.password_env = password_env
        self.timeout = timeout
        self.zone = ZoneInfo(timezone)
        self.from_name = _one_line(from_name, _MAX_NAME)

    def compose(self, delivery: Delivery) -> EmailMessage:
        """The mail for ``delivery``. Names and the home are reduced to one line of printable
        text, so nothing a recipient is called can add a header or a recipient."""
        alarm = delivery.payload["alarm"]
        title, sentence = kind_words(str(alarm["kind"]), alarm.get("detail"))
        home = _one_line(str(alarm["home"]), 64)
        level = int(alarm["level"])
        headline = _headline(delivery.event, level, bool(alarm.get("false_positive")))
        raised = datetime.fromtimestamp(float(alarm["raised_at"]), self.zone)
        name = _one_line(delivery.recipient.name, _MAX_NAME)

        msg = EmailMessage()
        msg["Subject"] = f"[M-Sec Care] {headline}: {title} (home {home})"
        msg["From"] = Address(display_name=self.from_name, addr_spec=self.sender)
        msg["To"] = Address(display_name=name, addr_spec=delivery.recipient.address)
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid("care", domain=self.sender.rpartition("@")[2])
        # RFC 3834: no out-of-office replies to an alarm.
        msg["Auto-Submitted"] = "auto-generated"
        lines = [
            f"Hello {name}," if name else "Hello,",
            "",
            f"{headline}: {title}.",
            sentence,
            "",
            f"Home:    {home}",
            f"Raised:  {raised:%Y-%m-%d %H:%M} ({raised.tzname()})",
            f"Level:   {level} ({_level_words(level, str(alarm['state']))})",
            f"State:   {alarm['state']}",
            "",
            "See the alarm and what the operators did in the portal:",
            f"{self.base_url}/care/alarms/{int(alarm['id'])}",
            "",
            f"You receive this message as {delivery.recipient.role} of this home.",
            "-- ",
            "M-Sec Connected Care",
        ]
        body = "\n".join(lines) + "\n"
        # Quoted-printable keeps a non-ASCII body 7-bit clean for any relay (no 8BITMIME needed).
        msg.set_content(body, cte="7bit" if body.isascii() else "quoted-printable")
        return msg

    def send(self, delivery: Delivery) -> None:
        """Send the mail to the recipient's address alone (the envelope names it, not the
        headers). ``DeliveryError`` if the server cannot be reached or refuses it."""
        if delivery.recipient.kind != "email":
            raise DeliveryError(f"SmtpSender sends e-mail, not {delivery.recipient.kind}")
        msg = self.compose(delivery)
        password = None
        if self.username is not None:
            password = os.environ.get(self.password_env or "")
            if not password:
                raise DeliveryError(f"the SMTP password variable {self.password_env} is not set")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None and password is not None:
                    smtp.login(self.username, password)
                smtp.send_message(msg, from_addr=self.sender, to_addrs=[delivery.recipient.address])
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise DeliveryError(f"SMTP {exc.smtp_code}: {_one_line(text, 200)}") from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError("SMTP: the recipient was refused") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP: {type(exc).__name__}: {_one_line(str(exc), 200)}") from None


class WebhookSender:
    """Signed HTTP POSTs: the body is the delivery's payload as compact JSON with sorted keys,
    ``X-MSec-Signature: sha256=<hex HMAC-SHA256 of the body>`` under the recipient's secret
    (see :func:`verify_signature`), ``X-MSec-Delivery: <outbox id>`` (the same for every retry:
    receivers deduplicate on it) and ``X-MSec-Event``.

    ``secrets`` maps a recipient's ``secret_name`` to its secret; by default the environment,
    read when sending. A 2xx answer is success; any other answer (redirects are not followed),
    a timeout or a connection error is a :class:`DeliveryError`, and the notifier retries.

    Unless ``allow_private``, the host name is resolved when sending and refused if any of
    its addresses is not a public one (loopback, private, link-local, ...), and the request
    goes to the address that was checked (the URL's name stays in ``Host`` and, for https,
    in the TLS server name and certificate check): a public name pointing at an internal
    service, or re-pointed between the check and the connection, reaches nothing.
    ``resolve`` (tests) replaces the system resolver (host, port -> addresses), and
    ``transport`` (tests) httpx's network transport.
    """

    def __init__(
        self,
        timeout: float = 5,
        *,
        secrets: Mapping[str, str] | None = None,
        allow_private: bool = False,
        resolve: Callable[[str, int], list[str]] | None = None,
        transport: Any = None,
    ) -> None:
        self.timeout = timeout
        self._secrets = secrets
        self.allow_private = allow_private
        self._resolve = resolve or _resolve
        self._transport = transport  # an httpx transport (tests); None: the network

    def send(self, delivery: Delivery) -> None:
        import httpx  # only the webhook needs it

        recipient = delivery.recipient
        if recipient.kind != "webhook":
            raise DeliveryError(f"WebhookSender posts webhooks, not {recipient.kind}")
        secrets = os.environ if self._secrets is None else self._secrets
        secret = secrets.get(recipient.secret_name or "")
        if not secret:
            raise DeliveryError(f"the webhook secret {recipient.secret_name} is not set")
        body = _canonical_json(delivery.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "msec-care-notifier",
            "X-MSec-Delivery": str(delivery.id),
            "X-MSec-Event": delivery.event,
            "X-MSec-Signature": signature(secret, body),
        }
        url = httpx.URL(recipient.address)
        target: httpx.URL | str = recipient.address
        extensions: dict[str, Any] = {}
        if not self.allow_private:
            ip = self._public_address(url)
            target = url.copy_with(host=ip)
            headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = url.host
        try:
            with httpx.Client(
                timeout=self.timeout, follow_redirects=False, transport=self._transport
            ) as client:
                response = client.post(
                    target, content=body, headers=headers, extensions=extensions
                )
        except httpx.HTTPError as exc:
            # The URL may hold a token: keep it out of what is stored.
            text = str(exc).replace(recipient.address, "<url>")
            raise DeliveryError(f"webhook: {type(exc).__name__}: {_one_line(text, 200)}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"webhook: HTTP {response.status_code}")


    def _public_address(self, url: Any) -> str:
        """The address to connect to for ``url``'s host, checked to be a public one."""
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = [host] if _is_ip(host) else self._resolve(host, port)
        except OSError:
            raise DeliveryError("webhook: the host name does not resolve") from None
        if not addresses:
            raise DeliveryError("webhook: the host name does not resolve")
        for address in addresses:
            if not ipaddress.ip_address(address).is_global:
                raise DeliveryError(
                    "webhook: the host resolves to a loopback, private or link-local address"
                )
        return addresses[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in the resolver's order."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in found))


def signature(secret: str, body: bytes) -> str:
    """The ``X-MSec-Signature`` value of ``body`` under ``secret``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """Whether ``header`` (an ``X-MSec-Signature`` value) signs ``body`` under ``secret``;
    for receivers, in constant time. Check the raw body, before parsing it."""
    return hmac.compare_digest(signature(secret, body).encode(), header.encode())


# -- the notifier -----------------------------------------------------------------------------


class Notifier:
    """Delivers what the outbox has due, each through the sender for its recipient's kind
    (``senders``: ``{"email": SmtpSender(...), "webhook": WebhookSender()}``)."""

    def __init__(
        self,
        outbox: Outbox,
        senders: Mapping[str, Sender],
        *,
        batch: int = 50,
        lease_s: float = 60.0,
    ) -> None:
        self.outbox = outbox
        self.senders = dict(senders)
        self.batch = batch
        self.lease_s = lease_s

    def run_once(self, at: float | None = None) -> int:
        """Send every delivery due at ``at`` (default now), up to ``batch``; return how many
        were sent. Never raises: a failed delivery is recorded for a retry, and a database
        error is logged (what was claimed is due again once its lease ends)."""
        try:
            deliveries = self.outbox.due(at, self.batch, lease_s=self.lease_s)
        except Exception:
            _log.exception("care notifier: cannot read the outbox")
            return 0
        sent = 0
        for delivery in deliveries:
            error = self._send(delivery)
            try:
                if error is None:
                    self.outbox.mark_sent(delivery.id, at=at)
                    sent += 1
                else:
                    after = self.outbox.mark_failed(delivery.id, error=error, at=at)
                    _log.warning(
                        "care notifier: delivery %s (alarm %s, %s) failed, attempt %s%s: %s",
                        delivery.id, delivery.alarm_id, delivery.recipient.kind, after.attempts,
                        ", given up" if after.state == "failed" else "", error,
                    )  # fmt: skip
            except Exception:
                # Not recorded: it is due again once its lease ends (at least once).
                _log.exception("care notifier: cannot record delivery %s", delivery.id)
        return sent

    def _send(self, delivery: Delivery) -> str | None:
        """``None`` if sent, else why not."""
        sender = self.senders.get(delivery.recipient.kind)
        if sender is None:
            return f"no sender for {delivery.recipient.kind} recipients"
        try:
            sender.send(delivery)
        except DeliveryError as exc:
            return str(exc)
        except Exception as exc:
            _log.exception("care notifier: the %s sender failed", delivery.recipient.kind)
            return f"unexpected {type(exc).__name__}"
        return None


class NotifierThread(threading.Thread):
    """Runs :meth:`Notifier.run_once` every ``interval_s`` seconds (daemon) until :meth:`stop`."""

    def __init__(self, notifier: Notifier, *, interval_s: float = 1.0) -> None:
        super().__init__(name="care-notifier", daemon=True)
        self.notifier = notifier
        self.interval_s = interval_s
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.notifier.run_once()
            self._stopping.wait(self.interval_s)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop after the current round; wait for it up to ``timeout`` seconds."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)


# -- helpers ----------------------------------------------------------------------------------


def _now(at: float | None) -> float:
    return time.time() if at is None else float(at)


def _canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _one_line(text: str, max_len: int) -> str:
    """``text`` as one line of printable characters: every control, line or paragraph
    separator becomes a space, runs of spaces one space."""
    cleaned = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") else ch for ch in text
    )
    return " ".join(cleaned.split())[:max_len]


def _check_email(address: Any) -> None:
    if not isinstance(address, str) or len(address) > _MAX_EMAIL or not _EMAIL.fullmatch(address):
        raise ValueError(f"not a plain e-mail address: {address!r}")


def _check_url(url: Any) -> None:
    if not isinstance(url, str) or not 0 < len(url) <= _MAX_URL:
        raise ValueError(f"a webhook URL is 1 to {_MAX_URL} characters")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cs") for ch in url):
        raise ValueError("a webhook URL has no spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a webhook URL is http:// or https:// with a host")


def _headline(event: str, level: int, false_positive: bool) -> str:
    if event == "escalated":
        return f"Alarm still unattended (level {level})"
    if event == "acknowledged":
        return "Alarm taken in charge"
    if event == "note":
        return "New note on an alarm"
    if event == "resolved":
        return "False alarm, resolved" if false_positive else "Alarm resolved"
    return "New alarm"


def _level_words(level: int, state: str) -> str:
    if level == 0:
        return "first notice"
    words = f"escalated {level} time{'s' if level > 1 else ''}"
    return f"{words}: nobody has taken charge yet" if state == "raised" else words


def _delivery(row: Any) -> Delivery:
    recipient = Recipient(
        kind=row.recipient_kind,
        address=row.address,
        name=row.recipient_name,
        home=row.recipient_home,
        role=row.role,
        secret_name=row.secret_name,
    )
    return Delivery(
        id=int(row.id),
        alarm_id=int(row.alarm_id),
        event=row.event,
        recipient=recipient,
        payload=json.loads(row.payload),
        state=row.state,
        attempts=int(row.attempts),
        created_at=float(row.created_at),
        next_try_at=row.next_try_at,
        sent_at=row.sent_at,
        last_error=row.last_error,
    )
