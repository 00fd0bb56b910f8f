"""Who hears of a home's alarms: its contacts, and the dispatcher that notifies them.

**Contacts** (:class:`ContactBook`). A home has up to :data:`MAX_CONTACTS` contacts, each an
e-mail address or a webhook URL, with a name and a role (``caregiver``: a relative or
neighbour the person authorised; ``operator``: the tele-assistance provider's desk). Addresses
and names are personal data (the contacts' own), so they are stored **encrypted in the
companion store**: each contact is a companion subject of its own (``care-contact:<random>``)
with one logged record holding them, and the ``care_contacts`` table keeps only the home,
kind, role, the webhook's secret *name*, the subject and record ids and who added it when.
Removing a contact **erases its subject**: the data key is destroyed, the erasure logged (so
``msec verify`` still holds, which it would not if a record were simply deleted). When the
person is erased (``msec erase <home>``), her home's contacts are erased too: at once when
anything next reads them (routing an alarm, the API) and at the latest at the next
reconciliation (:meth:`ContactBook.prune`). A webhook is signed with the secret in the
environment variable ``secret_name``, which must start with :data:`WEBHOOK_SECRET_PREFIX`
(so that no contact can have deliveries signed with another of the platform's secrets) and
be set when the contact is added. Webhook URLs may not name a loopback, private, link-local
or otherwise non-public IP address, nor ``localhost``, nor carry credentials
(``[care] private_webhooks = true``, ``allow_private_webhooks`` here, lifts the address
rule). Names are not resolved here: the sender resolves them when sending and refuses a
name pointing at a non-public address (:class:`~msec.apps.care.notify.WebhookSender`).

**Notifications** (:class:`CareNotifications`). A subscriber on
:attr:`SqlAlarms.on_change <msec.apps.care.alarms.SqlAlarms.on_change>` routes each alarm
event to the home's contacts whose role hears of it (:data:`EVENTS_FOR`) and to the
operators' desk recipients given at start, through the durable outbox
(:class:`~msec.apps.care.notify.Outbox`); a :class:`~msec.apps.care.notify.NotifierThread`
sends what is due by e-mail (``[care.smtp]``; without a host, e-mail contacts are not routed)
and by signed webhook. Homes without contacts get nothing. A burst of changes (one
transaction of the alarm store: the morning checks of many homes due at once, an
escalation round) reads its homes' contacts in one batch (:meth:`ContactBook.list_many`)
and is queued in one outbox transaction (:meth:`~msec.apps.care.notify.Outbox.enqueue_many`),
not one of each per alarm: the store calls its subscribers in the thread that raised the
alarms, for a timer the care engine's, which waits meanwhile.

**Nothing lost, nothing twice.** An alarm change is committed before its deliveries are
enqueued, in another transaction: a crash in between would lose them. So :meth:`reconcile`
runs at start and then every :data:`RECONCILE_EVERY_S`: every active alarm without any
``raised`` delivery gets one (if it has recipients), and an alarm that was already notified
gets its missing ``escalated`` (current level, while still raised), ``acknowledged`` and
``resolved`` (resolved within :data:`RECONCILE_WINDOW_S`) deliveries. It checks per alarm and
event, never per recipient, so a restart sends nothing twice and a contact added later is not
told of old events; the outbox's unique key makes an enqueue racing the subscriber harmless.
Notes are not reconciled (they carry no text in notifications anyway).

What stays in clear: the outbox keeps each delivery's address and name (it must, to send
it) while the contact exists. Removing a contact, or erasing the person (which removes her
contacts), scrubs them from its deliveries (:meth:`Outbox.forget_recipients`) and gives up
those still pending.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import sqlalchemy as sa

from msec.apps.care.alarms import Alarm, SqlAlarms, alarms_table
from msec.apps.care.notify import (
    Notifier,
    NotifierThread,
    Outbox,
    Recipient,
    Sender,
    SmtpSender,
    WebhookSender,
    outbox_table,
)
from msec.companion.errors import CompanionError, UnknownSubject
from msec.companion.sql import SqlCompanion, records_table
from msec.crypto.envelope import NAME_RE
from msec.twin.engine import locked_transaction, rows_in

if TYPE_CHECKING:
    from fastapi import FastAPI

    from msec.platform.platform import Platform
    from msec.tlog.sql import SqlLog

__all__ = [
    "EVENTS_FOR",
    "KINDS",
    "MAX_CONTACTS",
    "ROLES",
    "WEBHOOK_SECRET_PREFIX",
    "CareNotifications",
    "Contact",
    "ContactBook",
    "ContactError",
    "DuplicateContact",
    "install_contacts",
]

_log = logging.getLogger(__name__)

KINDS: Final = ("email", "webhook")
ROLES: Final = ("caregiver", "operator")
#: Which alarm events each role is told of: caregivers the alarm, its escalations (nobody
#: took charge yet), that an operator took charge, and its end; operators every event.
EVENTS_FOR: Final[Mapping[str, frozenset[str]]] = {
    "caregiver": frozenset({"raised", "escalated", "acknowledged", "resolved"}),
    "operator": frozenset({"raised", "escalated", "acknowledged", "note", "resolved"}),
}
MAX_CONTACTS: Final = 20
WEBHOOK_SECRET_PREFIX: Final = "MSEC_CARE_WEBHOOK_"
RECORD_KIND: Final = "care_contact"
RECONCILE_EVERY_S: Final = 300.0
RECONCILE_WINDOW_S: Final = 86400.0
#: A change younger than this may still be on its way to the outbox: not reconciled yet.
SETTLE_S: Final = 10.0
_MAX_NAME: Final = 200
# The contact book's pg_advisory_xact_lock key: "MSECCONT" in ASCII.
_PG_LOCK_KEY: Final = 0x4D534543434F4E54

metadata = sa.MetaData()

contacts_table = sa.Table(
    "care_contacts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("home", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_name", sa.String(128)),
    # The contact's own companion subject (``care-contact:<random>``) and its one record,
    # holding {"address", "name"} encrypted; removing the contact erases the subject.
    sa.Column("subject", sa.String(80), nullable=False, unique=True),
    sa.Column("record_id", sa.String(80), nullable=False, unique=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.CheckConstraint("kind IN ('email', 'webhook')", name="ck_care_contacts_kind"),
    sa.CheckConstraint("role IN ('caregiver', 'operator')", name="ck_care_contacts_role"),
    sa.Index("ix_care_contacts_home", "home", "id"),
)


class ContactError(ValueError):
    """A contact that cannot be added; the message says which field and why."""


class DuplicateContact(ContactError):
    """The home already has a contact of this kind and address."""


@dataclass(frozen=True, slots=True)
class Contact:
    """One contact of a home, decrypted."""

    id: int
    home: str
    kind: str
    address: str
    name: str
    role: str
    secret_name: str | None
    created_at: float
    created_by: str

    def recipient(self) -> Recipient:
        kind: Any = self.kind
        return Recipient(kind, self.address, name=self.name, home=self.home, role=self.role,
                         secret_name=self.secret_name)  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "home": self.home,
            "kind": self.kind,
            "address": self.address,
            "name": self.name,
            "role": self.role,
            "secret_name": self.secret_name,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


def check_home(home: Any) -> str:
    """``home`` if it is a home name (``<home>-gw`` is a device name), else ``ContactError``."""
    if not isinstance(home, str) or not NAME_RE.match(f"{home}-gw") or len(home) > 60:
        raise ContactError("home is not a home name (lowercase letters, digits, - and _)")
    return home


class ContactBook:
    """The homes' contacts on the platform database and its companion store (records logged
    in ``log``, as the companion store's records must be for ``msec verify``).

    ``environ`` is where webhook secrets are looked up (default: the process environment).
    Safe to share between threads.
    """

    def __init__(
        self,
        engine: sa.Engine,
        companion: SqlCompanion,
        log: SqlLog,
        *,
        allow_private_webhooks: bool = False,
        environ: Mapping[str, str] | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.engine = engine
        #: Where deliveries to a removed contact are scrubbed (None: nowhere to scrub).
        self.outbox = outbox
        self.companion = companion
        self.log = log
        self.allow_private_webhooks = allow_private_webhooks
        self._environ = environ

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def add(
        self,
        home: str,
        kind: str,
        address: str,
        *,
        name: str = "",
        role: str = "caregiver",
        secret_name: str | None = None,
        by: str,
        at: float | None = None,
    ) -> Contact:
        """Add a contact to ``home``. ``ContactError`` naming the field for anything invalid
        (see the module docstring), ``DuplicateContact`` for a second contact with the same
        kind and address, ``ContactError`` past :data:`MAX_CONTACTS`."""
        check_home(home)
        recipient = self._recipient(home, kind, address, name, role, secret_name)
        now = time.time() if at is None else float(at)
        token = secrets.token_hex(16)
        subject, record_id = f"care-contact:{token}", f"care-contact/{token}"
        plaintext = json.dumps({"address": recipient.address, "name": recipient.name},
                               separators=(",", ":")).encode()  # fmt: skip
        same = _same_address(recipient.address, recipient.kind)
        # Outside the lock: reading may erase the contacts of an erased person.
        for other in self.list(home):
            if (other.kind, _same_address(other.address, other.kind)) == (kind, same):
                raise DuplicateContact(f"this home already has the {kind} contact {other.id}")
        c = contacts_table.c
        with locked_transaction(self.engine, _PG_LOCK_KEY) as conn:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(contacts_table).where(c.home == home)
            ).scalar_one()
            if count >= MAX_CONTACTS:
                raise ContactError(f"a home has at most {MAX_CONTACTS} contacts")
            # The person's subject exists from now on, so that her erasure can be seen.
            self.companion.subject(home, conn=conn)
            self.companion.put(subject, record_id, plaintext, kind=RECORD_KIND, log=self.log,
                               conn=conn)  # fmt: skip
            row = {
                "home": home,
                "kind": recipient.kind,
                "role": recipient.role,
                "secret_name": recipient.secret_name,
                "subject": subject,
                "record_id": record_id,
                "created_at": now,
                "created_by": str(by)[:200],
            }
            id_ = conn.execute(contacts_table.insert().values(**row).returning(c.id)).scalar_one()
        return Contact(int(id_), home, recipient.kind, recipient.address, recipient.name,
                       recipient.role, recipient.secret_name, now, row["created_by"])  # fmt: skip

    def _recipient(self, home: str, kind: Any, address: Any, name: Any, role: Any,
                   secret_name: Any) -> Recipient:  # fmt: skip
        if kind not in KINDS:
            raise ContactError(f"kind is one of {', '.join(KINDS)}")
        if role not in ROLES:
            raise ContactError(f"role is one of {', '.join(ROLES)}")
        if not isinstance(name, str) or len(name) > _MAX_NAME:
            raise ContactError(f"name is text of at most {_MAX_NAME} characters")
        if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in name):
            raise ContactError("name contains control characters or line breaks")
        if not isinstance(address, str) or not address:
            raise ContactError("address is required")
        if kind == "email" and secret_name is not None:
            raise ContactError("secret_name is only for webhooks")
        if kind == "webhook" and not (
            isinstance(secret_name, str) and secret_name.startswith(WEBHOOK_SECRET_PREFIX)
        ):
            raise ContactError(
                "a webhook needs secret_name: the name of an environment variable "
                f"{WEBHOOK_SECRET_PREFIX}<name> holding its signing secret"
            )
        try:
            recipient = Recipient(kind, address, name=" ".join(name.split()), home=home,
                                  role=role, secret_name=secret_name)  # fmt: skip
        except ValueError as exc:
            text = str(exc)
            raise ContactError(text if "secret_name" in text else f"address: {text}") from None
        if kind == "webhook":
            _check_webhook_target(address, self.allow_private_webhooks)
            environ = os.environ if self._environ is None else self._environ
            if not environ.get(secret_name):
                raise ContactError(f"secret_name: {secret_name} is not set on the platform")
        return recipient

    def list(self, home: str) -> list[Contact]:
        """The home's contacts, oldest first; none once the person was erased (their
        contacts are then erased too)."""
        return self.list_many([home]).get(home, [])

    def list_many(self, homes: Iterable[str]) -> dict[str, list[Contact]]:
        """:meth:`list` of many homes in a few queries, however many homes (those without
        contacts are absent). The contacts of an erased person are erased here, as
        :meth:`list` does; a home whose addresses cannot be decrypted is logged and left
        out, without hiding the others'."""
        c = contacts_table.c
        with self.engine.connect() as conn:
            rows = sorted(rows_in(conn, c.home, homes, contacts_table), key=lambda r: r.id)
        if not rows:
            return {}
        having = {row.home for row in rows}
        live = self.companion.live(having)
        for home in sorted(having - live):  # the person was erased: so are her contacts
            self.forget(home)
        rows = [row for row in rows if row.home in live]
        try:
            records = self.companion.get_many([row.record_id for row in rows])
        except CompanionError:
            records = {}
            for home in sorted(live):  # one unreadable home must not silence the others
                try:
                    records.update(
                        self.companion.get_many([r.record_id for r in rows if r.home == home])
                    )
                except CompanionError as exc:
                    _log.error("care contacts of %s unreadable: %s", home, exc)
        out: dict[str, list[Contact]] = {}
        for row in rows:
            found = records.get(row.record_id)
            if found is None:
                continue  # removed meanwhile, or unreadable
            data = json.loads(found[1])
            contact = Contact(int(row.id), row.home, row.kind, data["address"], data["name"],
                              row.role, row.secret_name, float(row.created_at),
                              row.created_by)  # fmt: skip
            out.setdefault(row.home, []).append(contact)
        return out

    def recipients(self, home: str) -> list[Recipient]:
        return [contact.recipient() for contact in self.list(home)]

    def remove(self, home: str, contact_id: int) -> bool:
        """Remove a contact of ``home``: its subject is erased (the address crypto-shredded,
        the erasure logged), then its row deleted. ``False`` if there is none."""
        c = contacts_table.c
        with self.engine.connect() as conn:
            subject = conn.execute(
                sa.select(c.subject).where(c.id == contact_id, c.home == home)
            ).scalar()
        if subject is None:
            return False
        gone = next((x for x in self.list(home) if x.id == contact_id), None)
        self._erase(subject, "care contact removed")
        if gone is not None and self.outbox is not None:
            self.outbox.forget_recipients(home, kind=gone.kind, address=gone.address)
        with locked_transaction(self.engine, _PG_LOCK_KEY) as conn:
            return bool(conn.execute(contacts_table.delete().where(c.id == contact_id)).rowcount)

    def forget(self, home: str) -> int:
        """Erase every contact of ``home`` (its person was erased); return how many."""
        c = contacts_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.id, c.subject).where(c.home == home)).all()
        for row in rows:
            self._erase(row.subject, "care home erased")
            with locked_transaction(self.engine, _PG_LOCK_KEY) as conn:
                conn.execute(contacts_table.delete().where(c.id == row.id))
        if rows and self.outbox is not None:
            self.outbox.forget_recipients(home)
        return len(rows)

    def prune(self) -> int:
        """Erase the contacts of every erased person (and forget rows a crash left without
        their record); return how many went."""
        c, r = contacts_table.c, records_table.c
        with self.engine.connect() as conn:
            homes = list(conn.execute(sa.select(c.home).distinct()).scalars())
        gone = 0
        for home in homes:
            try:
                self.companion.subject(home, create=False)
            except UnknownSubject:
                gone += self.forget(home)
        orphan = ~sa.exists().where(r.record_id == c.record_id)
        with locked_transaction(self.engine, _PG_LOCK_KEY) as conn:
            gone += int(conn.execute(contacts_table.delete().where(orphan)).rowcount or 0)
        return gone

    def _erase(self, subject: str, reason: str) -> None:
        with contextlib.suppress(UnknownSubject):  # erased already (a concurrent removal)
            self.companion.erase(subject, log=self.log, reason=reason)


class _Notifier(Notifier):
    """A :class:`Notifier` that also runs ``reconcile`` every ``every_s`` seconds."""

    def __init__(self, outbox: Outbox, senders: Mapping[str, Sender],
                 reconcile: Callable[[], int], every_s: float) -> None:  # fmt: skip
        super().__init__(outbox, senders)
        self._reconcile = reconcile
        self._every_s = every_s
        self._next = time.monotonic() + every_s

    def run_once(self, at: float | None = None) -> int:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self._every_s
            try:
                self._reconcile()
            except Exception:
                _log.exception("care notifications: reconciling failed; trying again later")
        return super().run_once(at)


class CareNotifications:
    """Alarm events routed to the homes' contacts and the operators' desk; see the module
    docstring. :meth:`start` subscribes, reconciles and starts sending; :meth:`stop` ends."""

    def __init__(
        self,
        engine: sa.Engine,
        alarms: SqlAlarms,
        outbox: Outbox,
        book: ContactBook,
        *,
        desk: Sequence[Recipient] = (),
        email: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.alarms = alarms
        self.outbox = outbox
        self.book = book
        self.desk = tuple(desk)
        self.email = email
        self.clock = clock
        self.thread: NotifierThread | None = None
        self._subscriber = outbox.subscriber(self.route, clock=clock, route_many=self.route_many)

    def route(self, event: str, alarm: Alarm) -> list[Recipient]:
        """Who hears of ``event`` of ``alarm``: the home's contacts and the desk, by role."""
        return self._hearing(event, self.book.recipients(alarm.home))

    def route_many(self, event: str, alarms: Sequence[Alarm]) -> dict[int, list[Recipient]]:
        """:meth:`route` of a burst of alarms, by alarm id: their homes' contacts are read
        in one batch (:meth:`ContactBook.list_many`)."""
        found = self.book.list_many({alarm.home for alarm in alarms})
        return {
            alarm.id: self._hearing(
                event, [c.recipient() for c in found.get(alarm.home, ())]
            )
            for alarm in alarms
        }

    def _hearing(self, event: str, contacts: Sequence[Recipient]) -> list[Recipient]:
        return [
            r
            for r in (*contacts, *self.desk)
            if event in EVENTS_FOR.get(r.role, ()) and (self.email or r.kind != "email")
        ]

    def reconcile(self, at: float | None = None) -> int:
        """Enqueue what a crash between an alarm change and its enqueueing lost (see the
        module docstring); return how many deliveries were added."""
        now = self.clock() if at is None else float(at)
        a, o = alarms_table.c, outbox_table.c
        recent = sa.or_(a.state != "resolved", a.resolved_at >= now - RECONCILE_WINDOW_S)
        columns = (a.id, a.home, a.state, a.level, a.raised_at, a.acknowledged_at, a.resolved_at)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*columns).where(recent).order_by(a.id)).all()
            if not self.desk:  # only the homes with contacts can have anyone to tell
                homes = set(conn.execute(sa.select(contacts_table.c.home).distinct()).scalars())
                rows = [row for row in rows if row.home in homes]
            have: dict[int, dict[str, set[int]]] = {}
            notified = rows_in(conn, o.alarm_id, [row.id for row in rows], o.alarm_id, o.event,
                               o.level, distinct=True)  # fmt: skip
            for alarm_id, event, level in notified:
                have.setdefault(int(alarm_id), {}).setdefault(event, set()).add(int(level))
        added = 0
        for row in rows:
            todo = _missing(row, have.get(int(row.id), {}), now - SETTLE_S)
            alarm = self.alarms.get(int(row.id)) if todo else None
            if alarm is None:
                continue
            for event in todo:
                recipients = self.route(event, alarm)
                if recipients:
                    added += len(self.outbox.enqueue(alarm, event, recipients, now))
        if added:
            _log.warning("care notifications: %d deliveries were missing and are queued", added)
        return added

    def maintain(self) -> int:
        """Erase the contacts of erased people, then :meth:`reconcile` (at start and every
        :data:`RECONCILE_EVERY_S`); return how many deliveries were added."""
        self.book.prune()
        return self.reconcile()

    def start(self, senders: Mapping[str, Sender], *, interval_s: float = 1.0) -> None:
        """Subscribe to the alarms, :meth:`maintain`, then send what is due every
        ``interval_s`` in a :class:`NotifierThread`."""
        self.outbox.create_schema()
        self.book.create_schema()
        if self._subscriber not in self.alarms.on_change:
            self.alarms.on_change.append(self._subscriber)  # before reconciling: no gap
        self.maintain()
        notifier = _Notifier(self.outbox, senders, self.maintain, RECONCILE_EVERY_S)
        self.thread = NotifierThread(notifier, interval_s=interval_s)
        self.thread.start()

    def stop(self) -> None:
        if self._subscriber in self.alarms.on_change:
            self.alarms.on_change.remove(self._subscriber)
        if self.thread is not None:
            self.thread.stop()


def senders_from_settings(platform: Platform) -> dict[str, Sender]:
    """Webhooks always; e-mail when ``[care.smtp] host`` is set. ``ValueError`` naming
    ``[care.smtp]`` for a sender address or login that cannot work."""
    private = platform.settings.care.private_webhooks
    found: dict[str, Sender] = {"webhook": WebhookSender(allow_private=private)}
    smtp = platform.settings.care.smtp
    if not smtp.host:
        _log.warning("care: [care.smtp] has no host: e-mail contacts are not notified")
        return found
    try:
        found["email"] = SmtpSender(
            smtp.host, smtp.port, smtp.sender,
            base_url=platform.settings.http.public_url, starttls=smtp.starttls,
            username=smtp.username or None,
            password_env=smtp.password_env if smtp.username else None,
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"[care.smtp]: {exc}") from None
    return found


def install_contacts(
    app: FastAPI, platform: Platform, alarms: SqlAlarms, *, desk: Iterable[Recipient] = ()
) -> CareNotifications:
    """The contacts' table and API, and the notifications started (stop them at stop).
    ``desk``: the operators' recipients, told of every home's alarms."""
    from msec.apps.care.contacts_api import add_contacts_api

    outbox = Outbox(platform.engine)
    book = ContactBook(platform.engine, platform.companion, platform.trust.log, outbox=outbox,
                       allow_private_webhooks=platform.settings.care.private_webhooks)  # fmt: skip
    book.create_schema()
    senders = senders_from_settings(platform)
    notifications = CareNotifications(platform.engine, alarms, outbox, book, desk=list(desk),
                                      email="email" in senders)  # fmt: skip
    add_contacts_api(app, book, platform.registry)
    notifications.start(senders)
    return notifications


# -- helpers ----------------------------------------------------------------------------------


def _missing(alarm: Any, sent: Mapping[str, set[int]], settled: float) -> list[str]:
    """The events of ``alarm`` (an :class:`Alarm` or a ``care_alarms`` row) to enqueue
    again, given the levels each event was enqueued at (``sent``); changes after ``settled``
    are left to the subscriber."""
    todo: list[str] = []
    active = alarm.state != "resolved"
    if active and "raised" not in sent and alarm.raised_at <= settled:
        todo.append("raised")
    if not (sent or todo):
        return []  # nobody was told of it: nothing else to tell
    escalated = sent.get("escalated", set())
    if alarm.state == "raised" and alarm.level > 0 and alarm.level not in escalated:
        todo.append("escalated")
    acked = alarm.acknowledged_at
    if active and acked is not None and acked <= settled and "acknowledged" not in sent:
        todo.append("acknowledged")
    resolved = alarm.resolved_at
    if resolved is not None and resolved <= settled and "resolved" not in sent:
        todo.append("resolved")
    return todo


def _same_address(address: str, kind: str) -> str:
    return address.lower() if kind == "email" else address


def _check_webhook_target(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ContactError("address: a webhook URL carries no credentials (it is signed)")
    if allow_private:
        return
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise ContactError("address: a webhook may not point at this machine")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: not resolved here
    if not ip.is_global:
        raise ContactError(
            "address: a webhook may not point at a loopback, private or link-local address"
        )
