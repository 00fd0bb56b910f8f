"""A home's contacts and the notifications of its alarms, on the installed app, against a real
SMTP server (aiosmtpd) and a real webhook receiver; restarts and crashes lose and repeat
nothing."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from care_site import care_web
from fastapi import FastAPI
from fastapi.testclient import TestClient

from msec.apps.care.alarms import SqlAlarms
from msec.apps.care.app import CareApp
from msec.apps.care.contacts import (
    MAX_CONTACTS,
    CareNotifications,
    ContactBook,
    ContactError,
)
from msec.apps.care.model import AlarmKind, AlarmRequest
from msec.apps.care.notify import Outbox, Recipient, verify_signature
from msec.companion.errors import CompanionError
from msec.companion.sql import records_table
from msec.platform import Platform, Settings

SECRET = "family-hook-secret-0123456789"
SECRET_NAME = "MSEC_CARE_WEBHOOK_FAMILY"
PASSWORD = "correct horse battery"
HOMES = ("home-0001", "home-0002")


# -- servers -----------------------------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.received: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"


class Hooks:
    """A webhook receiver in a thread; keeps (headers, body) of each POST."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/care?token=t0k3n"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    server = Hooks()
    yield server
    server.stop()


# -- the site ----------------------------------------------------------------------------------


@dataclass
class Site:
    platform: Platform
    app: FastAPI
    care: CareApp
    client: TestClient
    tokens: dict[str, str]

    @property
    def notifications(self) -> CareNotifications:
        return next(p for p in self.care.parts if isinstance(p, CareNotifications))

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, path: str, who: str) -> Any:
        return self.client.get(path, headers=self.headers(who))

    def post(self, path: str, who: str, body: Any = None) -> Any:
        return self.client.post(path, json=body, headers=self.headers(who))


def start_site(platform: Platform, tokens: dict[str, str]) -> Site:
    built = care_web(platform)
    return Site(platform, built.app, built.care, TestClient(built.app), tokens)


@pytest.fixture
def site(tmp_path: Path, mailbox: tuple[Mailbox, int],
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:  # fmt: skip
    monkeypatch.setenv(SECRET_NAME, SECRET)
    smtp = {"host": "127.0.0.1", "port": mailbox[1], "starttls": False,
            "sender": "alarms@care.example.org"}  # fmt: skip
    # The test's webhook receiver listens on 127.0.0.1, which is refused by default.
    care = {"smtp": smtp, "private_webhooks": True}
    platform = Platform.open(Settings.load(None, data_dir=tmp_path / "data", care=care))
    for home in HOMES:
        platform.add_device(f"{home}-gw", "care_gateway", subject=home)
    tokens = {}
    for name, role, subject in (("olga", "operator", None), ("carmen", "caregiver", None),
                                ("pablo", "citizen", None), ("nieves", "citizen", HOMES[0])):
        platform.principals.add_user(name, tenant="default", roles=[role], password=PASSWORD,
                                     subject=subject)  # fmt: skip
        tokens[name], _ = platform.principals.issue_token(f"user:{name}", ttl_s=600)
    current = start_site(platform, tokens)
    yield current
    current.care.stop()
    platform.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


CONTACTS = "/api/v1/care/homes/home-0001/contacts"


def add_family(site: Site, hooks: Hooks) -> None:
    mail = site.post(CONTACTS, "olga", {"kind": "email", "address": "marta@example.org",
                                        "name": "Marta López", "role": "caregiver"})  # fmt: skip
    assert mail.status_code == 201, mail.text
    hook = site.post(CONTACTS, "olga", {"kind": "webhook", "address": hooks.url,
                                        "name": "Family app",
                                        "secret_name": SECRET_NAME})  # fmt: skip
    assert hook.status_code == 201, hook.text


# -- notifications -----------------------------------------------------------------------------


def test_an_alarm_reaches_the_caregivers_and_a_restart_sends_nothing_twice(
    site: Site, mailbox: tuple[Mailbox, int], hooks: Hooks
) -> None:
    box = mailbox[0]
    add_family(site, hooks)
    alarms = site.care.alarms
    alarm = alarms.raise_alarm("home-0001", AlarmKind.INACTIVITY, "e1", detail={"silent_s": 3})
    assert alarm is not None
    quiet = alarms.raise_alarm("home-0002", AlarmKind.LOW_BATTERY, "b1", detail={})
    assert quiet is not None
    wait_for(lambda: len(box.received) == 1 and len(hooks.received) == 1)

    [(rcpt, message)] = box.received
    assert rcpt == ["marta@example.org"]
    assert message["Subject"] == (
        "[M-Sec Care] New alarm: No movement for a long time (home home-0001)"
    )
    assert "Hello Marta López," in message.get_content()
    [(headers, body)] = hooks.received
    assert headers["x-msec-event"] == "raised"
    assert verify_signature(SECRET, body, headers["x-msec-signature"])
    assert b'"home":"home-0001"' in body
    # A home without contacts: nobody is told.
    assert site.notifications.outbox.for_alarm(quiet.id) == []

    # An operator takes charge, then closes it: both are told.
    acked = site.post(f"/api/v1/care/alarms/{alarm.id}/acknowledge", "olga", {"note": "calling"})
    assert acked.status_code == 200
    wait_for(lambda: len(box.received) == 2 and len(hooks.received) == 2)
    assert box.received[1][1]["Subject"].strip().startswith("[M-Sec Care] Alarm taken in charge")
    assert hooks.received[1][0]["x-msec-event"] == "acknowledged"
    site.post(f"/api/v1/care/alarms/{alarm.id}/resolve", "olga", {"note": "she is fine"})
    wait_for(lambda: len(box.received) == 3 and len(hooks.received) == 3)
    assert box.received[2][1]["Subject"].strip().startswith("[M-Sec Care] Alarm resolved")
    outbox = site.notifications.outbox
    wait_for(lambda: outbox.counts() == {"pending": 0, "sent": 6, "failed": 0})

    # A restart (a new app on the same database) reconciles, and finds nothing missing.
    site.care.stop()
    again = start_site(site.platform, site.tokens)
    try:
        assert again.notifications.reconcile(time.time() + 60) == 0
        time.sleep(1.5)
        assert len(box.received) == 3 and len(hooks.received) == 3
        assert outbox.counts() == {"pending": 0, "sent": 6, "failed": 0}
        # The restarted app is subscribed: a new alarm is sent once.
        alarms = again.care.alarms
        assert alarms.raise_alarm("home-0001", AlarmKind.NIGHT_DOOR, "n1", detail={})
        wait_for(lambda: len(box.received) == 4 and len(hooks.received) == 4)
    finally:
        again.care.stop()
    site.care = again.care  # stopped again by the fixture: harmless


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_a_crash_between_an_alarm_change_and_its_notification_is_made_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, backend: str
) -> None:
    """The subscriber is not attached while the alarms change (the process died after the
    commit, before enqueueing); reconciling enqueues each lost event once. Contacts are
    added, listed and removed on both databases."""
    monkeypatch.setenv(SECRET_NAME, SECRET)
    database = {"url": request.getfixturevalue("pg_url")} if backend == "postgresql" else None
    platform = Platform.open(Settings.load(None, data_dir=tmp_path / "data", database=database))
    try:
        alarms = SqlAlarms(platform.engine)
        alarms.create_schema()
        outbox = Outbox(platform.engine)
        outbox.create_schema()
        book = ContactBook(platform.engine, platform.companion, platform.trust.log)
        book.create_schema()
        book.add("home-0001", "email", "marta@example.org", name="Marta", by="op")
        book.add("home-0001", "webhook", "https://hooks.example.org/care",
                 secret_name=SECRET_NAME, by="op")  # fmt: skip
        desk = Recipient("email", "desk@care.example.org", name="Desk", role="operator")
        care = CareNotifications(platform.engine, alarms, outbox, book, desk=[desk])

        def events(alarm_id: int) -> list[tuple[str, str]]:
            return sorted((d.event, d.recipient.address) for d in outbox.for_alarm(alarm_id))

        now = time.time()
        alarm = alarms.raise_alarm("home-0001", AlarmKind.INACTIVITY, "e1", at=now - 3600,
                                   detail={})  # fmt: skip
        assert alarm is not None
        lonely = alarms.raise_alarm("home-0002", AlarmKind.LOW_BATTERY, "b", at=now - 3600,
                                    detail={})  # fmt: skip
        assert lonely is not None
        fresh = alarms.raise_alarm("home-0001", AlarmKind.NIGHT_DOOR, "n", at=now - 2, detail={})
        assert fresh is not None
        assert care.reconcile(now) == 3 + 1  # home-0001: 2 contacts + desk; home-0002: desk
        assert events(alarm.id) == [
            ("raised", "desk@care.example.org"),
            ("raised", "https://hooks.example.org/care"),
            ("raised", "marta@example.org"),
        ]
        assert events(lonely.id) == [("raised", "desk@care.example.org")]
        assert events(fresh.id) == []  # seconds old: its subscriber may still be enqueueing
        assert care.reconcile(now) == 0  # nothing twice

        # A contact added since is not told of an alarm already notified.
        luis = book.add("home-0001", "email", "luis@example.org", name="Luis", by="op")
        assert care.reconcile(now) == 0
        with pytest.raises(ContactError, match="already has"):
            book.add("home-0001", "email", "Luis@Example.org", by="op")
        assert [c.name for c in book.list("home-0001")] == ["Marta", "", "Luis"]
        removed = book.add("home-0001", "email", "gone@example.org", by="op")
        assert book.remove("home-0001", removed.id) and not book.remove("home-0001", removed.id)
        assert luis.id in {c.id for c in book.list("home-0001")}

        alarms.escalate_due(at=now - 2000, after_s=900)  # level 1, lost too
        assert care.reconcile(now) == 4 + 1  # 3 contacts (with Luis) + desk; desk of home-0002
        alarms.acknowledge(alarm.id, by="user:olga", at=now - 1000)
        assert care.reconcile(now) == 4
        alarms.resolve(alarm.id, by="user:olga", at=now - 500)
        assert care.reconcile(now) == 4
        assert care.reconcile(now + 10) == 4  # the fresh alarm has settled: its raise
        assert care.reconcile(now + 10) == 0
        assert [e for e, _ in events(alarm.id)].count("escalated") == 4
        assert {e for e, _ in events(alarm.id)} == {"raised", "escalated", "acknowledged",
                                                   "resolved"}  # fmt: skip
        # Once attached, the subscriber does the work and reconciling finds nothing.
        care.start({})
        try:
            later = alarms.raise_alarm("home-0001", AlarmKind.APPLIANCE_ON, "a", detail={})
            assert later is not None and len(events(later.id)) == 4
            assert care.reconcile(time.time() + 60) == 0
        finally:
            care.stop()
    finally:
        platform.close()


# -- the contacts and their API ----------------------------------------------------------------


def test_contacts_are_checked_and_hostile_input_refused(site: Site, hooks: Hooks) -> None:
    ok = {"kind": "email", "address": "marta@example.org", "name": "Marta", "role": "caregiver"}
    created = site.post(CONTACTS, "olga", ok)
    assert created.status_code == 201
    contact = created.json()
    assert contact["address"] == "marta@example.org" and contact["created_by"] == "user:olga"
    assert site.post(CONTACTS, "olga", {**ok, "address": "MARTA@example.org"}).status_code == 409
    hook = {"kind": "webhook", "address": "https://hooks.example.org/x",
            "secret_name": SECRET_NAME}  # fmt: skip
    book = site.notifications.book
    book.allow_private_webhooks = False
    bad: list[tuple[Any, str]] = [
        ({**ok, "kind": "sms"}, "kind"),
        ({**ok, "address": "m@example.org\r\nBcc: eve@evil.example"}, "address"),
        ({**ok, "address": "m@example.org, eve@evil.example"}, "address"),
        ({**ok, "address": "Marta <m@example.org>"}, "address"),
        ({**ok, "address": ""}, "address"),
        ({**ok, "name": "Marta\r\nBcc: eve@evil.example"}, "name"),
        ({**ok, "name": "x" * 201}, "name"),
        ({**ok, "role": "admin"}, "role"),
        ({**ok, "secret_name": SECRET_NAME}, "secret_name"),
        ({**ok, "kind": 5}, "kind"),
        ({**ok, "colour": "red"}, "colour"),
        ({"address": "a@example.org"}, "kind"),
        ({k: v for k, v in hook.items() if k != "secret_name"}, "secret_name"),
        ({**hook, "secret_name": "MSEC_CARE_SMTP_PASSWORD"}, "secret_name"),
        ({**hook, "secret_name": "MSEC_CARE_WEBHOOK_UNSET"}, "not set"),
        ({**hook, "secret_name": "MSEC_CARE_WEBHOOK_A B"}, "secret_name"),
        ({**hook, "address": "http://127.0.0.1:8080/x"}, "loopback"),
        ({**hook, "address": "http://10.1.2.3/x"}, "private"),
        ({**hook, "address": "http://[::1]/x"}, "loopback"),
        ({**hook, "address": "http://169.254.169.254/latest"}, "link-local"),
        ({**hook, "address": "http://localhost:9/x"}, "this machine"),
        ({**hook, "address": "https://user:pw@hooks.example.org/x"}, "credentials"),
        ({**hook, "address": "ftp://hooks.example.org/x"}, "address"),
        ({**hook, "address": "https://hooks.example.org/a b"}, "address"),
        (["a list"], "object"),
    ]
    for body, words in bad:
        answer = site.post(CONTACTS, "olga", body)
        assert answer.status_code == 422, (body, answer.text)
        assert words in answer.json()["detail"], (body, answer.json())
    headers = {**site.headers("olga"), "Content-Type": "application/json"}
    assert site.client.post(CONTACTS, content=b"{nope", headers=headers).status_code == 422
    huge = b'{"name": "' + b"x" * 9000 + b'"}'
    assert site.client.post(CONTACTS, content=huge, headers=headers).status_code == 413
    assert [c["id"] for c in site.get(CONTACTS, "olga").json()] == [contact["id"]]

    # At most MAX_CONTACTS per home.
    for n in range(MAX_CONTACTS - 1):
        assert site.post(CONTACTS, "olga", {**ok, "address": f"c{n}@example.org"}).status_code \
            == 201
    too_many = site.post(CONTACTS, "olga", {**ok, "address": "one.more@example.org"})
    assert too_many.status_code == 422 and "at most" in too_many.json()["detail"]
    with pytest.raises(ContactError):
        book.add("home-0001", "email", "x@example.org", by="op")


def test_only_operators_and_the_person_manage_contacts(site: Site) -> None:
    body = {"kind": "email", "address": "marta@example.org", "name": "Marta"}
    site.platform.consent.grant("home-0001", "user:carmen", scope="home-0001-*",
                                granted_by="user:home-0001")  # fmt: skip
    contact = site.post(CONTACTS, "olga", body).json()
    for who in ("carmen", "pablo"):  # a caregiver with a grant, and someone else
        assert site.get(CONTACTS, who).status_code == 403
        assert site.post(CONTACTS, who, {**body, "address": "eve@example.org"}).status_code \
            == 403
        assert site.client.delete(f"{CONTACTS}/{contact['id']}",
                                  headers=site.headers(who)).status_code == 403  # fmt: skip
    assert site.client.get(CONTACTS).status_code == 401
    # The person herself (the home's data subject) sees her contacts.
    assert [c["id"] for c in site.get(CONTACTS, "nieves").json()] == [contact["id"]]
    assert site.get("/api/v1/care/homes/home-0002/contacts", "nieves").status_code == 403
    for path in ("/api/v1/care/homes/home-0099/contacts", "/api/v1/care/homes/HOME/contacts",
                 "/api/v1/care/homes/a%0Ab/contacts"):  # fmt: skip
        assert site.get(path, "olga").status_code == 404
    for bad in ("999", "abc", "-1"):
        assert site.client.delete(f"{CONTACTS}/{bad}",
                                  headers=site.headers("olga")).status_code == 404  # fmt: skip
    # Another home's contact is not this home's.
    assert site.client.delete(f"/api/v1/care/homes/home-0002/contacts/{contact['id']}",
                              headers=site.headers("olga")).status_code == 404  # fmt: skip
    assert site.client.delete(f"{CONTACTS}/{contact['id']}",
                              headers=site.headers("olga")).status_code == 204  # fmt: skip
    assert site.get(CONTACTS, "olga").json() == []


def test_addresses_are_stored_encrypted_and_erased_with_the_person(site: Site) -> None:
    platform = site.platform
    book = site.notifications.book
    kept = book.add("home-0001", "email", "marta.lopez@example.org", name="Marta López",
                    by="op")  # fmt: skip
    gone = book.add("home-0001", "email", "luis.garcia@example.org", name="Luis", by="op")
    other = book.add("home-0002", "email", "ana@example.org", name="Ana", by="op")
    assert book.remove("home-0001", gone.id)
    assert not book.remove("home-0001", gone.id)

    def stored() -> bytes:
        with platform.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return b"".join(path.read_bytes() for path in platform.settings.data_dir.glob("msec.db*"))

    with platform.engine.connect() as conn:
        kinds = conn.execute(sa.select(records_table.c.kind)).scalars().all()
    assert kinds == ["care_contact", "care_contact"]  # the removed contact's record is erased
    raw = stored()
    for secret in (b"marta.lopez@example.org", "Marta López".encode(), b"luis.garcia"):
        assert secret not in raw
    assert [c.address for c in book.list("home-0001")] == [kept.address]
    # Removing a contact, adding one: the log still verifies (records logged, erasures too).
    platform.trust.checkpoint()
    report = platform.trust.verify()
    assert report.ok, report.problems
    # The person is erased: her home's contacts go with her, nobody is told any more.
    platform.erase_subject("home-0001")
    assert site.notifications.route("raised", _alarm(site, "home-0001")) == []
    assert book.list("home-0001") == []
    assert book.prune() == 0  # done already, when routing
    assert [c.address for c in book.list("home-0002")] == [other.address]
    with platform.engine.connect() as conn:
        assert conn.execute(sa.select(records_table.c.kind)).scalars().all() == ["care_contact"]
    platform.trust.checkpoint()
    report = platform.trust.verify()
    assert report.ok, report.problems
    # Also when nothing reads them: at the next maintenance round.
    platform.erase_subject("home-0002")
    assert site.notifications.maintain() == 0
    with platform.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(records_table)).scalar() == 0
    # A contact added after an erasure, before anything read the erased ones: they go first.
    book.add("home-0003", "email", "old@example.org", by="op")
    platform.erase_subject("home-0003")
    new = book.add("home-0003", "email", "new@example.org", by="op")
    assert [c.id for c in book.list("home-0003")] == [new.id]


def test_deliveries_keep_no_address_of_a_removed_contact_or_an_erased_person(
    site: Site,
) -> None:
    platform, book = site.platform, site.notifications.book
    outbox = site.notifications.outbox
    site.care.stop()  # no sending meanwhile: what is queued stays pending
    luis = book.add("home-0001", "email", "luis.garcia@example.org", name="Luis", by="op")
    book.add("home-0001", "webhook", "https://hooks.example.org/family", name="Family app",
             secret_name=SECRET_NAME, by="op")  # fmt: skip
    ana = book.add("home-0002", "email", "ana@example.org", name="Ana", by="op")
    later = time.time() + 3600
    for home in ("home-0001", "home-0002"):
        alarm = _alarm(site, home)
        outbox.enqueue(alarm, "raised", book.recipients(home), at=later)
        outbox.mark_sent(outbox.enqueue(alarm, "resolved", book.recipients(home), at=later)[0].id)
    assert outbox.counts() == {"pending": 4, "sent": 2, "failed": 0}

    assert book.remove("home-0001", luis.id)
    rows = {d.recipient.address: d for a in (1, 2, 3, 4) for d in outbox.for_alarm(a)}
    assert "luis.garcia@example.org" not in rows
    erased = [d for d in rows.values() if "erased.invalid" in d.recipient.address]
    assert len(erased) == 2 and all(d.recipient.name == "" for d in erased)
    assert {d.state for d in erased} == {"failed", "sent"}  # pending ones are given up
    assert [d.last_error for d in erased if d.state == "failed"] == ["contact removed"]
    assert outbox.counts() == {"pending": 3, "sent": 2, "failed": 1}

    platform.erase_subject("home-0001")  # her other contact goes with her, at next reading
    assert book.prune() == 1
    addresses = [d.recipient.address for a in (1, 2, 3, 4) for d in outbox.for_alarm(a)]
    assert "https://hooks.example.org/family" not in addresses
    assert addresses.count(ana.address) == 2  # another home's contact: untouched
    assert outbox.forget_recipients("home-0001") == 0  # scrubbed once
    with platform.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = b"".join(p.read_bytes() for p in platform.settings.data_dir.glob("msec.db*"))
    assert b"luis.garcia@example.org" not in raw and b"hooks.example.org/family" not in raw


def _alarm(site: Site, home: str) -> Any:
    alarm = site.care.alarms.raise_alarm(home, AlarmKind.LOW_BATTERY, "x", detail={})
    assert alarm is not None
    return alarm


def raised_of(outbox: Outbox, alarm: Any) -> list[Any]:
    """The alarm's "raised" deliveries (the engine's thread may escalate it meanwhile, and
    caregivers hear of that too)."""
    return [d for d in outbox.for_alarm(alarm.id) if d.event == "raised"]


def test_a_burst_of_alarms_is_routed_and_queued_in_one_batch(
    site: Site, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_family(site, hooks)
    notifications = site.notifications
    book, outbox = notifications.book, notifications.outbox
    family = [f"home-9{i:03d}" for i in range(30)]  # one e-mail contact each
    for home in family:
        book.add(home, "email", f"family.{home}@example.org", name="Family", by="op")
    site.platform.erase_subject(family[-1])  # her contacts must not hear of her home
    quiet = [f"home-8{i:03d}" for i in range(10)]  # nobody to tell
    routed: list[str] = []
    route = notifications.route
    monkeypatch.setattr(notifications._subscriber, "route",
                        lambda event, alarm: routed.append(alarm.home) or route(event, alarm))
    listed: list[str] = []
    one_home = book.list
    monkeypatch.setattr(book, "list", lambda home: listed.append(home) or one_home(home))
    batches: list[int] = []  # alarms per enqueue_many of "raised": one transaction each
    enqueue_many = outbox.enqueue_many

    def counted(event: str, batch: Any, at: Any = None) -> Any:
        if event == "raised":  # (the engine's thread may escalate them meanwhile)
            batches.append(len(batch))
        return enqueue_many(event, batch, at)

    monkeypatch.setattr(outbox, "enqueue_many", counted)

    homes = ["home-0001", *family, *quiet]
    now = time.time()
    raised = site.care.alarms.raise_alarms(
        [AlarmRequest(home, AlarmKind.NO_MORNING_ACTIVITY, "2026-03-02", now) for home in homes]
    )
    assert all(raised)
    # One batch: the 30 homes with someone to tell (the erased person's and the quiet homes'
    # alarms have nobody), not one lookup and one write per alarm.
    assert routed == [] and listed == [] and batches == [30]
    told = {a.home: sorted(d.recipient.kind for d in raised_of(outbox, a)) for a in raised if a}
    assert told["home-0001"] == ["email", "webhook"]
    assert all(told[home] == ["email"] for home in family[:-1])
    assert told[family[-1]] == [] and book.list(family[-1]) == []  # erased with the person
    assert all(told[home] == [] for home in quiet)
    first = raised[1]
    assert first is not None
    [delivery] = raised_of(outbox, first)
    assert delivery.recipient.address == "family.home-9000@example.org"

    # One alarm alone is routed one at a time, as before.
    alone = site.care.alarms.raise_alarm("home-9000", AlarmKind.LOW_BATTERY, "b", detail={})
    assert alone is not None and routed == ["home-9000"] and batches == [30, 1]
    assert [d.recipient.kind for d in raised_of(outbox, alone)] == ["email"]


def test_a_burst_that_cannot_be_routed_at_once_is_routed_one_alarm_at_a_time(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifications = site.notifications
    book, outbox = notifications.book, notifications.outbox
    homes = [f"home-9{i:03d}" for i in range(5)]
    contacts = {home: book.add(home, "email", f"f.{home}@example.org", by="op") for home in homes}
    # One home's address cannot be decrypted (a key withdrawn, a damaged record): the
    # batch leaves it out and logs it; the other homes are still told.
    with site.platform.engine.connect() as conn:
        record_of = dict(conn.execute(sa.text("SELECT id, record_id FROM care_contacts")).all())
    bad = record_of[contacts[homes[0]].id]
    get_many = book.companion.get_many

    def damaged(record_ids: Any) -> Any:
        if bad in record_ids:
            raise CompanionError("cannot decrypt")
        return get_many(record_ids)

    monkeypatch.setattr(book.companion, "get_many", damaged)
    raised = site.care.alarms.raise_alarms(
        [AlarmRequest(home, AlarmKind.INACTIVITY, "e", time.time()) for home in homes]
    )
    told = {a.home: len(raised_of(outbox, a)) for a in raised if a}
    assert told == {homes[0]: 0, **{home: 1 for home in homes[1:]}}

    # The batch fails as a whole (the outbox refuses it): each alarm is enqueued on its own.
    monkeypatch.setattr(book.companion, "get_many", get_many)
    enqueue_many = outbox.enqueue_many

    def no_batches(event: str, batch: Any, at: Any = None) -> Any:
        if len(batch) > 1:
            raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))
        return enqueue_many(event, batch, at)

    monkeypatch.setattr(outbox, "enqueue_many", no_batches)
    again = site.care.alarms.raise_alarms(
        [AlarmRequest(home, AlarmKind.NIGHT_DOOR, "n", time.time()) for home in homes]
    )
    assert all(len(raised_of(outbox, a)) == 1 for a in again if a)
