"""The care outbox and its senders against a real SMTP server (aiosmtpd) and a real HTTP server,
on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from msec.apps.care.alarms import Alarm, SqlAlarms
from msec.apps.care.model import AlarmKind
from msec.apps.care.notify import (
    Backoff,
    Delivery,
    DeliveryError,
    Notifier,
    NotifierThread,
    Outbox,
    Recipient,
    SmtpSender,
    UnknownDelivery,
    WebhookSender,
    outbox_table,
    verify_signature,
)
from msec.twin import make_engine

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC, 17:06 in Madrid
SECRET = "s3cret-hook-key-0123456789"
PORTAL = "https://care.example.org"
CARER = Recipient("email", "carer@example.org", name="Marta López", home="h1")


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailbox:
    """An aiosmtpd handler keeping what it receives: (mail from, rcpt tos, parsed message)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []
        self.raw: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(envelope.content)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


class SmtpServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.mailbox = Mailbox()
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class HookServer:
    """A webhook receiver in a thread, answering ``status``; keeps (path, headers, body)."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 204
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                hook.received.append((self.path, headers, body))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/hooks/care?token=abc"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.stop()


# -- stores ------------------------------------------------------------------------------------


@pytest.fixture
def alarms(engine: Engine) -> SqlAlarms:
    alarms = SqlAlarms(engine)
    alarms.create_schema()
    return alarms


@pytest.fixture
def outbox(engine: Engine) -> Outbox:
    outbox = Outbox(engine)
    outbox.create_schema()
    outbox.create_schema()  # idempotent
    return outbox


@pytest.fixture
def alarm(alarms: SqlAlarms) -> Alarm:
    alarm = alarms.raise_alarm(
        "h1", AlarmKind.INACTIVITY, "2025-06-15T12", at=T0, detail={"silent_s": 10_800}
    )
    assert alarm is not None
    return alarm


def webhook(url: str, **kw: Any) -> Recipient:
    return Recipient("webhook", url, name="Desk", role="operator", secret_name="HOOK_KEY", **kw)


def mailer(port: int) -> SmtpSender:
    return SmtpSender("127.0.0.1", port, "alarms@care.example.org", base_url=PORTAL + "/")


def hooks() -> WebhookSender:
    # The test receivers listen on 127.0.0.1: a private address, refused by default.
    return WebhookSender(secrets={"HOOK_KEY": SECRET}, allow_private=True)


class Recording:
    """A sender that records what it is given and fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.failing: Exception | None = None
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> None:
        if self.failing is not None:
            raise self.failing
        with self._lock:
            self.sent.append(delivery.id)


# -- recipients and backoff --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"kind": "sms", "address": "+34600000000"},
        {"kind": "email", "address": "carer@example.org\r\nBcc: eve@evil.example"},
        {"kind": "email", "address": "carer@example.org, eve@evil.example"},
        {"kind": "email", "address": "Carer <carer@example.org>"},
        {"kind": "email", "address": "no-at-sign"},
        {"kind": "email", "address": "a@b", "secret_name": "HOOK_KEY"},
        {"kind": "email", "address": "a@b", "role": "Care Giver"},
        {"kind": "email", "address": "a@b", "name": "x" * 201},
        {"kind": "webhook", "address": "https://hooks.example.org/x"},  # no secret_name
        {"kind": "webhook", "address": "https://hooks.example.org/x", "secret_name": "A B"},
        {"kind": "webhook", "address": "ftp://hooks.example.org/x", "secret_name": "K"},
        {"kind": "webhook", "address": "https:///nohost", "secret_name": "K"},
        {"kind": "webhook", "address": "https://h.example.org/a b", "secret_name": "K"},
    ],
)
def test_recipients_are_checked(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Recipient(**kw)


def test_backoff_doubles_from_5_s_to_1_h() -> None:
    delays = [Backoff().delay(n) for n in range(1, 21)]
    assert delays[:6] == [5, 10, 20, 40, 80, 160]
    assert delays[9] == 2560
    assert delays[10:] == [3600] * 10
    assert Backoff().max_attempts == 20


# -- the outbox --------------------------------------------------------------------------------


def test_enqueue_is_idempotent_and_due_leases(outbox: Outbox, alarm: Alarm) -> None:
    hook_recipient = webhook("https://hooks.example.org/care")
    created = outbox.enqueue(alarm, "raised", [CARER, hook_recipient], T0)
    assert [d.recipient for d in created] == [CARER, hook_recipient]
    first = created[0]
    assert (first.state, first.attempts, first.next_try_at, first.event) == (
        "pending",
        0,
        T0,
        "raised",
    )
    assert first.payload["event"] == "raised"
    assert first.payload["alarm"]["id"] == alarm.id
    assert "notes" not in first.payload["alarm"]
    # Enqueueing the same event again adds nothing.
    assert outbox.enqueue(alarm, "raised", [CARER, hook_recipient], T0 + 5) == []
    assert outbox.counts() == {"pending": 2, "sent": 0, "failed": 0}
    with pytest.raises(ValueError):
        outbox.enqueue(alarm, "exploded", [CARER], T0)

    assert outbox.due(T0 - 1) == []
    claimed = outbox.due(T0, lease_s=60)
    assert [d.id for d in claimed] == [d.id for d in created]
    # Leased: not due again until the lease ends.
    assert outbox.due(T0 + 59) == []
    outbox.mark_sent(created[0].id, at=T0 + 1)
    assert [d.id for d in outbox.due(T0 + 60)] == [created[1].id]
    sent = outbox.get(created[0].id)
    assert sent is not None
    assert (sent.state, sent.sent_at, sent.attempts, sent.next_try_at) == ("sent", T0 + 1, 1, None)
    assert [d.id for d in outbox.for_alarm(alarm.id)] == [d.id for d in created]
    with pytest.raises(UnknownDelivery):
        outbox.mark_sent(10_000)
    with pytest.raises(UnknownDelivery):
        outbox.mark_failed(10_000, error="x")
    # In one batch with new ones: only the new ones are added and returned.
    later = webhook("https://hooks.example.org/later")
    added = outbox.enqueue_many("raised", [(alarm, [CARER, later, hook_recipient])], T0 + 70)
    assert [d.recipient for d in added] == [later]
    assert outbox.counts() == {"pending": 2, "sent": 1, "failed": 0}


def test_escalations_and_notes_are_new_deliveries(
    outbox: Outbox, alarms: SqlAlarms, alarm: Alarm
) -> None:
    outbox.enqueue(alarm, "raised", [CARER], T0)
    (escalated,) = alarms.escalate_due(at=T0 + 900, after_s=900)
    assert len(outbox.enqueue(escalated, "escalated", [CARER], T0 + 900)) == 1
    noted = alarms.add_note(alarm.id, by="op:ana", text="one", at=T0 + 950)
    assert len(outbox.enqueue(noted, "note", [CARER], T0 + 950)) == 1
    noted = alarms.add_note(alarm.id, by="op:ana", text="two", at=T0 + 960)
    assert len(outbox.enqueue(noted, "note", [CARER], T0 + 960)) == 1
    assert outbox.enqueue(noted, "note", [CARER], T0 + 960) == []
    assert [d.event for d in outbox.pending()] == ["raised", "escalated", "note", "note"]


def test_failures_back_off_then_give_up_and_stay_visible(engine: Engine, alarm: Alarm) -> None:
    outbox = Outbox(engine, backoff=Backoff(max_attempts=4))
    outbox.create_schema()
    (delivery,) = outbox.enqueue(alarm, "raised", [CARER], T0)
    after = outbox.mark_failed(delivery.id, error="SMTP: refused", at=T0)
    assert (after.state, after.attempts, after.next_try_at) == ("pending", 1, T0 + 5)
    assert after.last_error == "SMTP: refused"
    after = outbox.mark_failed(delivery.id, error="again\nand again", at=T0 + 5)
    assert (after.attempts, after.next_try_at, after.last_error) == (2, T0 + 15, "again and again")
    outbox.mark_failed(delivery.id, error="x", at=T0 + 15)
    after = outbox.mark_failed(delivery.id, error="x" * 900, at=T0 + 35)
    assert (after.state, after.attempts, after.next_try_at) == ("failed", 4, None)
    assert len(after.last_error or "") == 500
    assert outbox.due(T0 + 10**9) == []
    assert [d.id for d in outbox.failed()] == [delivery.id]
    # The operators fixed the cause: it starts again.
    again = outbox.retry(delivery.id, at=T0 + 100)
    assert (again.state, again.attempts, again.next_try_at) == ("pending", 0, T0 + 100)
    assert [d.id for d in outbox.due(T0 + 100)] == [delivery.id]
    with pytest.raises(UnknownDelivery):
        outbox.retry(10_000)


# -- e-mail ------------------------------------------------------------------------------------


def test_the_mail_arrives_in_words(outbox: Outbox, alarm: Alarm, smtp: SmtpServer) -> None:
    (delivery,) = outbox.enqueue(alarm, "raised", [CARER], T0)
    assert Notifier(outbox, {"email": mailer(smtp.port)}).run_once(T0) == 1

    ((mail_from, rcpt_tos, message),) = smtp.mailbox.received
    assert mail_from == "alarms@care.example.org"
    assert rcpt_tos == ["carer@example.org"]
    assert message["Subject"] == "[M-Sec Care] New alarm: No movement for a long time (home h1)"
    assert message["To"].addresses[0].display_name == "Marta López"
    assert message["To"].addresses[0].addr_spec == "carer@example.org"
    assert message["From"].addresses[0].addr_spec == "alarms@care.example.org"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content().replace("\r\n", "\n")
    assert "Hello Marta López," in body
    assert "may have fallen" in body
    assert "Home:    h1" in body
    assert "Raised:  2025-06-15 17:06 (CEST)" in body
    assert "Level:   0 (first notice)" in body
    assert f"{PORTAL}/care/alarms/{alarm.id}\n" in body
    assert "caregiver" in body
    sent = outbox.get(delivery.id)
    assert sent is not None and sent.state == "sent" and sent.sent_at == T0


def test_an_escalation_mail_says_nobody_took_charge(
    outbox: Outbox, alarms: SqlAlarms, alarm: Alarm, smtp: SmtpServer
) -> None:
    alarms.escalate_due(at=T0 + 900, after_s=900)
    (escalated,) = alarms.escalate_due(at=T0 + 1800, after_s=900)
    outbox.enqueue(escalated, "escalated", [CARER], T0 + 1800)
    Notifier(outbox, {"email": mailer(smtp.port)}).run_once(T0 + 1800)
    ((_, _, message),) = smtp.mailbox.received
    assert message["Subject"].startswith("[M-Sec Care] Alarm still unattended (level 2)")
    assert "2 (escalated 2 times: nobody has taken charge yet)" in message.get_content()


def test_hostile_names_cannot_inject_headers(outbox: Outbox, smtp: SmtpServer) -> None:
    # An alarm as the store would never make it, to try the sender alone.
    hostile = Alarm(
        id=7, home="h1\r\nBcc: eve@evil.example", kind=AlarmKind.NIGHT_DOOR, episode="e",
        state="raised", level=0, raised_at=T0, detail={},
    )  # fmt: skip
    name = "Eve\r\nBcc: eve@evil.example\r\nSubject: free money\n\nbody"
    recipient = Recipient("email", "carer@example.org", name=name)
    outbox.enqueue(hostile, "raised", [recipient], T0)
    assert Notifier(outbox, {"email": mailer(smtp.port)}).run_once(T0) == 1

    ((_, rcpt_tos, message),) = smtp.mailbox.received
    assert rcpt_tos == ["carer@example.org"]
    headers = smtp.mailbox.raw[0].split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    assert [h for h in headers if h.startswith(b"bcc")] == []
    assert len([h for h in headers if h.startswith(b"subject:")]) == 1
    assert message["Bcc"] is None
    assert len(message.get_all("Subject")) == 1
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    assert message["Subject"].endswith("(home h1 Bcc: eve@evil.example)")
    (to,) = message["To"].addresses
    assert to.addr_spec == "carer@example.org"
    assert to.display_name == "Eve Bcc: eve@evil.example Subject: free money body"


def test_smtp_down_is_retried_then_delivered(outbox: Outbox, alarm: Alarm) -> None:
    port = free_port()  # nothing listens there yet
    (delivery,) = outbox.enqueue(alarm, "raised", [CARER], T0)
    notifier = Notifier(outbox, {"email": mailer(port)})
    assert notifier.run_once(T0) == 0
    failed = outbox.get(delivery.id)
    assert failed is not None
    assert (failed.state, failed.attempts, failed.next_try_at) == ("pending", 1, T0 + 5)
    assert (failed.last_error or "").startswith("SMTP: ConnectionRefusedError")
    assert notifier.run_once(T0 + 4) == 0  # not due yet: no attempt
    assert outbox.get(delivery.id).attempts == 1  # type: ignore[union-attr]
    server = SmtpServer(port)
    try:
        assert notifier.run_once(T0 + 5) == 1
        assert len(server.mailbox.received) == 1
    finally:
        server.stop()
    assert outbox.get(delivery.id).state == "sent"  # type: ignore[union-attr]


def test_smtp_login_rules(monkeypatch: pytest.MonkeyPatch, alarm: Alarm) -> None:
    with pytest.raises(ValueError, match="starttls"):
        SmtpSender("smtp.example.org", 25, "a@example.org", username="u", password_env="P")
    with pytest.raises(ValueError, match="password_env"):
        SmtpSender("smtp.example.org", 587, "a@example.org", username="u", starttls=True)
    with pytest.raises(ValueError):
        SmtpSender("smtp.example.org", 25, "a@example.org\r\nBcc: e@evil.example")
    sender = SmtpSender(
        "127.0.0.1", free_port(), "a@example.org", starttls=True, username="u",
        password_env="MSEC_TEST_SMTP_PASSWORD",
    )  # fmt: skip
    monkeypatch.delenv("MSEC_TEST_SMTP_PASSWORD", raising=False)
    delivery = Delivery(1, alarm.id, "raised", CARER, {"event": "raised", "alarm": alarm.as_dict()},
                        "pending", 0, T0, T0, None, None)  # fmt: skip
    with pytest.raises(DeliveryError, match="MSEC_TEST_SMTP_PASSWORD is not set"):
        sender.send(delivery)


# -- webhooks ----------------------------------------------------------------------------------


def test_the_webhook_is_signed(outbox: Outbox, alarm: Alarm, hook: HookServer) -> None:
    (delivery,) = outbox.enqueue(alarm, "raised", [webhook(hook.url)], T0)
    assert Notifier(outbox, {"webhook": hooks()}).run_once(T0) == 1

    ((path, headers, body),) = hook.received
    assert path == "/hooks/care?token=abc"
    assert headers["content-type"] == "application/json"
    assert headers["x-msec-delivery"] == str(delivery.id)
    assert headers["x-msec-event"] == "raised"
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-msec-signature"] == f"sha256={expected}"
    assert verify_signature(SECRET, body, headers["x-msec-signature"])
    assert not verify_signature("another secret", body, headers["x-msec-signature"])
    assert not verify_signature(SECRET, body + b" ", headers["x-msec-signature"])
    payload = json.loads(body)
    assert set(payload) == {"event", "alarm"}
    assert payload["event"] == "raised"
    assert payload["alarm"]["id"] == alarm.id
    assert payload["alarm"]["kind"] == "inactivity"
    assert payload["alarm"]["home"] == "h1"
    assert payload["alarm"]["detail"] == {"silent_s": 10_800}
    assert outbox.get(delivery.id).state == "sent"  # type: ignore[union-attr]


def test_webhook_errors_are_retried_with_the_same_delivery_id(
    outbox: Outbox, alarm: Alarm, hook: HookServer
) -> None:
    (delivery,) = outbox.enqueue(alarm, "raised", [webhook(hook.url)], T0)
    notifier = Notifier(outbox, {"webhook": hooks()})
    hook.status = 500
    assert notifier.run_once(T0) == 0
    assert outbox.get(delivery.id).last_error == "webhook: HTTP 500"  # type: ignore[union-attr]
    hook.status = 302  # redirects are not followed
    assert notifier.run_once(T0 + 5) == 0
    hook.status = 200
    assert notifier.run_once(T0 + 14) == 0  # second backoff: 10 s
    assert notifier.run_once(T0 + 15) == 1
    assert [h["x-msec-delivery"] for _, h, _ in hook.received] == [str(delivery.id)] * 3
    # Every retry sends the same bytes.
    assert len({body for _, _, body in hook.received}) == 1


def test_webhook_down_is_retried_then_delivered(outbox: Outbox, alarm: Alarm) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook?token=t0ps3cret"
    (delivery,) = outbox.enqueue(alarm, "raised", [webhook(url)], T0)
    notifier = Notifier(outbox, {"webhook": hooks()})
    assert notifier.run_once(T0) == 0
    failed = outbox.get(delivery.id)
    assert failed is not None
    assert (failed.attempts, failed.next_try_at) == (1, T0 + 5)
    assert (failed.last_error or "").startswith("webhook: ConnectError")
    assert "t0ps3cret" not in (failed.last_error or "")
    server = HookServer(port)
    try:
        assert notifier.run_once(T0 + 5) == 1
        assert len(server.received) == 1
    finally:
        server.stop()


def test_a_missing_secret_is_an_error(outbox: Outbox, alarm: Alarm, hook: HookServer) -> None:
    (delivery,) = outbox.enqueue(alarm, "raised", [webhook(hook.url)], T0)
    Notifier(outbox, {"webhook": WebhookSender(secrets={})}).run_once(T0)
    assert hook.received == []
    assert outbox.get(delivery.id).last_error == "the webhook secret HOOK_KEY is not set"  # type: ignore[union-attr]


def test_the_secret_comes_from_the_environment_by_default(
    outbox: Outbox, alarm: Alarm, hook: HookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_KEY", SECRET)
    outbox.enqueue(alarm, "raised", [webhook(hook.url)], T0)
    sender = WebhookSender(allow_private=True)
    assert Notifier(outbox, {"webhook": sender}).run_once(T0) == 1
    ((_, headers, body),) = hook.received
    assert verify_signature(SECRET, body, headers["x-msec-signature"])


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("https://hooks.example.org/x", ["10.0.0.8"]),
        ("https://hooks.example.org/x", ["93.184.216.34", "127.0.0.1"]),  # any of them
        ("https://hooks.example.org/x", ["169.254.169.254"]),  # a cloud metadata service
        ("https://hooks.example.org/x", ["::1"]),
        ("https://hooks.example.org/x", ["::ffff:10.0.0.1"]),
        ("http://127.0.0.1:9/x", []),  # an address in the URL (added before the rule)
        ("https://hooks.example.org/x", []),  # does not resolve
    ],
)
def test_a_name_resolving_to_an_internal_address_is_not_posted_to(
    outbox: Outbox, alarm: Alarm, url: str, resolved: list[str]
) -> None:
    posted: list[httpx.Request] = []
    sender = WebhookSender(
        secrets={"HOOK_KEY": SECRET},
        resolve=lambda host, port: resolved,
        transport=httpx.MockTransport(lambda r: posted.append(r) or httpx.Response(200)),
    )
    (delivery,) = outbox.enqueue(alarm, "raised", [webhook(url)], T0)
    Notifier(outbox, {"webhook": sender}).run_once(T0)
    assert posted == []
    error = outbox.get(delivery.id).last_error  # type: ignore[union-attr]
    assert error is not None and error.startswith("webhook: the host"), error
    assert "hooks.example.org" not in error and "127.0.0.1" not in error


def test_the_request_goes_to_the_address_that_was_checked(outbox: Outbox, alarm: Alarm) -> None:
    posted: list[httpx.Request] = []
    sender = WebhookSender(
        secrets={"HOOK_KEY": SECRET},
        resolve=lambda host, port: ["93.184.216.34", "2606:2800:220:1::"],
        transport=httpx.MockTransport(lambda r: posted.append(r) or httpx.Response(204)),
    )
    outbox.enqueue(alarm, "raised", [webhook("https://hooks.example.org:8443/in?t=1")], T0)
    assert Notifier(outbox, {"webhook": sender}).run_once(T0) == 1
    [request] = posted
    assert str(request.url) == "https://93.184.216.34:8443/in?t=1"
    assert request.headers["host"] == "hooks.example.org:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.org"
    assert verify_signature(SECRET, request.content, request.headers["x-msec-signature"])


# -- the notifier ------------------------------------------------------------------------------


def test_give_up_after_20_attempts(
    outbox: Outbox, alarm: Alarm, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    (delivery,) = outbox.enqueue(alarm, "raised", [webhook(url)], T0)
    notifier = Notifier(outbox, {"webhook": hooks()})
    at = T0
    with caplog.at_level(logging.WARNING):
        for attempt in range(1, 21):
            assert notifier.run_once(at) == 0
            current = outbox.get(delivery.id)
            assert current is not None and current.attempts == attempt
            if attempt < 20:
                assert current.next_try_at == at + min(5 * 2 ** (attempt - 1), 3600)
                at = current.next_try_at
    assert (current.state, current.next_try_at) == ("failed", None)
    assert notifier.run_once(at + 10**6) == 0
    assert outbox.get(delivery.id).attempts == 20  # type: ignore[union-attr]
    assert [d.id for d in outbox.failed()] == [delivery.id]
    assert "given up" in caplog.text
    assert SECRET not in caplog.text


def test_the_outbox_survives_a_restart(engine: Engine, alarm: Alarm, hook: HookServer) -> None:
    outbox = Outbox(engine)
    outbox.create_schema()
    outbox.enqueue(alarm, "raised", [webhook(hook.url), CARER], T0)
    Notifier(outbox, {"webhook": hooks()}).run_once(T0)  # no mail sender yet: the mail fails
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()

    # A new process: new engine, new objects, same database.
    fresh = make_engine(url)
    try:
        smtp = SmtpServer()
        try:
            outbox2 = Outbox(fresh)
            pending = outbox2.pending()
            assert [d.recipient for d in pending] == [CARER]
            notifier = Notifier(outbox2, {"webhook": hooks(), "email": mailer(smtp.port)})
            assert notifier.run_once(T0 + 5) == 1
            assert len(smtp.mailbox.received) == 1
        finally:
            smtp.stop()
        assert outbox2.counts() == {"pending": 0, "sent": 2, "failed": 0}
        assert len(hook.received) == 1
    finally:
        fresh.dispose()


def test_run_once_never_raises(
    engine: Engine, outbox: Outbox, alarm: Alarm, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Recording()
    broken.failing = RuntimeError("boom with details")
    outbox.enqueue(alarm, "raised", [CARER, webhook("https://hooks.example.org/x")], T0)
    with caplog.at_level(logging.ERROR):
        assert Notifier(outbox, {"email": broken}).run_once(T0) == 0
    errors = {d.recipient.kind: d.last_error for d in outbox.pending()}
    assert errors == {
        "email": "unexpected RuntimeError",
        "webhook": "no sender for webhook recipients",
    }
    # The database is gone: logged, not raised.
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {outbox_table.name}"))
    assert Notifier(outbox, {"email": broken}).run_once(T0 + 100) == 0
    assert "cannot read the outbox" in caplog.text


def test_concurrent_notifiers_send_each_delivery_once(outbox: Outbox, alarms: SqlAlarms) -> None:
    for i in range(20):
        alarm = alarms.raise_alarm(f"h{i}", AlarmKind.LOW_BATTERY, "e", at=T0)
        assert alarm is not None
        outbox.enqueue(alarm, "raised", [CARER], T0)
    sender = Recording()
    notifiers = [Notifier(outbox, {"email": sender}, batch=3) for _ in range(4)]
    start = threading.Barrier(4)

    def drain(notifier: Notifier) -> int:
        start.wait()
        return sum(notifier.run_once(T0) for _ in range(10))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(pool.map(drain, notifiers)) == 20
    assert sorted(sender.sent) == sorted(set(sender.sent))
    assert len(sender.sent) == 20


def test_alarm_changes_reach_the_recipients(
    outbox: Outbox, alarms: SqlAlarms, hook: HookServer
) -> None:
    desk = webhook(hook.url)

    def route(event: str, alarm: Alarm) -> list[Recipient]:
        return [desk] if event != "note" else []

    alarms.on_change.append(outbox.subscriber(route, clock=lambda: T0 + 2000))
    alarm = alarms.raise_alarm("h1", AlarmKind.OUT_OF_BED, "night-1", at=T0)
    assert alarm is not None
    alarms.escalate_due(at=T0 + 900, after_s=900)
    alarms.add_note(alarm.id, by="op:ana", text="private", at=T0 + 950)
    alarms.acknowledge(alarm.id, by="op:ana", at=T0 + 1000)
    alarms.resolve(alarm.id, by="op:ana", at=T0 + 1100, false_positive=True)
    assert Notifier(outbox, {"webhook": hooks()}).run_once(T0 + 2000) == 4
    payloads = [json.loads(body) for _, _, body in hook.received]
    assert [(p["event"], p["alarm"]["state"], p["alarm"]["level"]) for p in payloads] == [
        ("raised", "raised", 0),
        ("escalated", "raised", 1),
        ("acknowledged", "acknowledged", 1),
        ("resolved", "resolved", 1),
    ]
    assert payloads[-1]["alarm"]["false_positive"] is True
    assert all("private" not in body.decode() for _, _, body in hook.received)


def test_the_thread_delivers_until_stopped(outbox: Outbox, alarm: Alarm, hook: HookServer) -> None:
    thread = NotifierThread(Notifier(outbox, {"webhook": hooks()}), interval_s=0.05)
    thread.start()
    try:
        outbox.enqueue(alarm, "raised", [webhook(hook.url)])  # due now
        deadline = time.monotonic() + 10
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(hook.received) == 1
    finally:
        thread.stop()
    assert not thread.is_alive()
