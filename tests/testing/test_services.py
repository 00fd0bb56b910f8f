"""The real-service launchers start working services and never leave one running."""

from __future__ import annotations

import queue
import socket
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
import sqlalchemy
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from msec.testing.services import (
    MosquittoHandle,
    PostgresHandle,
    ServiceUnavailable,
    mosquitto_server,
    postgres_server,
)

TIMEOUT_S = 10


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as a libpq URI psycopg accepts."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def test_url_reaches_msec_database_as_unprivileged_role(postgres: PostgresHandle) -> None:
    with psycopg.connect(_libpq(postgres.url)) as conn:
        row = conn.execute(
            "select 1, current_database(), current_user, rolsuper"
            " from pg_roles where rolname = current_user"
        ).fetchone()
        fsync = conn.execute("show fsync").fetchone()
    assert row == (1, "msec", postgres.user, False)
    assert fsync == ("on",)
    assert postgres.url.startswith(f"postgresql+psycopg://{postgres.user}:")
    assert f"@127.0.0.1:{postgres.port}/msec" in postgres.url


def test_wrong_password_is_refused(postgres: PostgresHandle) -> None:
    bad = postgres.url.replace(postgres.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_libpq(bad)).close()


def test_pg_url_is_a_fresh_database_that_sqlalchemy_can_use(pg_url: str) -> None:
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar() == 1
            tables = conn.execute(
                sqlalchemy.text("select count(*) from pg_tables where schemaname = 'public'")
            ).scalar()
            assert tables == 0
            conn.execute(sqlalchemy.text("create table owned_by_test (id int primary key)"))
    finally:
        engine.dispose()


def test_create_database_gives_a_separate_database(postgres: PostgresHandle, pg_url: str) -> None:
    with psycopg.connect(_libpq(pg_url), autocommit=True) as conn:
        conn.execute("create table only_here (id int)")

    second = postgres.create_database("second_database")
    try:
        with psycopg.connect(_libpq(second)) as conn:
            name, found = conn.execute(
                "select current_database(), to_regclass('public.only_here') is not null"
            ).fetchone() or (None, None)
        assert (name, found) == ("second_database", False)
    finally:
        postgres.drop_database("second_database")


@pytest.mark.parametrize("name", ["", "Upper", "has-dash", "1starts_with_digit", "x" * 64])
def test_create_database_rejects_names_that_are_not_plain_identifiers(
    postgres: PostgresHandle, name: str
) -> None:
    with pytest.raises(ValueError, match="not a lower-case SQL identifier"):
        postgres.create_database(name)


@pytest.mark.integration
def test_postgres_server_stops_when_the_block_exits(tmp_path: Path) -> None:
    with postgres_server(tmp_path / "pg") as handle:
        port, pid_file = handle.port, handle.data_dir / "postmaster.pid"
        assert _accepts_connections(handle.host, port)
        assert pid_file.exists()
    assert not _accepts_connections("127.0.0.1", port)
    assert not pid_file.exists()


def test_postgres_server_without_binaries_is_unavailable(tmp_path: Path) -> None:
    with (
        pytest.raises(ServiceUnavailable, match="PostgreSQL server binaries"),
        postgres_server(tmp_path / "pg", bin_dir=tmp_path / "no-bin"),
    ):
        pass


# --------------------------------------------------------------------------------------------
# Mosquitto
# --------------------------------------------------------------------------------------------


class _Client:
    """A paho-mqtt 2 client driven synchronously: each step waits for the broker's answer."""

    def __init__(
        self,
        broker: MosquittoHandle,
        user: str | None,
        *,
        password: str | None = None,
        client_id: str = "",
        clean_session: bool = True,
    ) -> None:
        self.broker = broker
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        if user is not None:
            self.paho.username_pw_set(user, password or broker.users[user])
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()
        self._subscribed = threading.Event()
        self._disconnected = threading.Event()
        self.paho.on_connect = self._on_connect
        self.paho.on_message = lambda _c, _u, message: self.messages.put(message)
        self.paho.on_subscribe = lambda *_args: self._subscribed.set()
        self.paho.on_disconnect = lambda *_args: self._disconnected.set()

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        self._connected.put((reason, bool(flags.session_present)))

    def connect(self) -> tuple[ReasonCode, bool]:
        """Connect and return the CONNACK reason and whether the broker kept a session."""
        self.paho.connect(self.broker.host, self.broker.port)
        self.paho.loop_start()
        return self._connected.get(timeout=TIMEOUT_S)

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.paho.subscribe(topic, qos=1)
        assert self._subscribed.wait(TIMEOUT_S)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.paho.publish(topic, payload, qos=1)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published()

    def close(self) -> None:
        if self.paho.is_connected():
            self._disconnected.clear()
            self.paho.disconnect()
            self._disconnected.wait(TIMEOUT_S)
        self.paho.loop_stop()


def test_qos1_message_flows_between_password_users(mosquitto: MosquittoHandle) -> None:
    subscriber, publisher = _Client(mosquitto, "ingest"), _Client(mosquitto, "device")
    try:
        assert not subscriber.connect()[0].is_failure
        subscriber.subscribe("msec/readings/#")
        assert not publisher.connect()[0].is_failure
        publisher.publish("msec/readings/dev-1", b"reading")

        message = subscriber.messages.get(timeout=TIMEOUT_S)
        assert (message.topic, message.payload, message.qos) == (
            "msec/readings/dev-1",
            b"reading",
            1,
        )
    finally:
        subscriber.close()
        publisher.close()


@pytest.mark.parametrize(
    ("user", "password"), [("device", "wrong-password"), ("nobody", "x"), (None, None)]
)
def test_bad_credentials_are_refused(
    mosquitto: MosquittoHandle, user: str | None, password: str | None
) -> None:
    client = _Client(mosquitto, user, password=password)
    try:
        reason, _ = client.connect()
        assert reason.is_failure
    finally:
        client.close()


@pytest.mark.integration
def test_without_users_anonymous_clients_are_allowed(tmp_path: Path) -> None:
    with mosquitto_server(tmp_path / "mq", persistence=False) as broker:
        client = _Client(broker, None)
        try:
            assert not client.connect()[0].is_failure
        finally:
            client.close()


def test_generated_config_keeps_base_options_and_binds_loopback_only(
    mosquitto: MosquittoHandle,
) -> None:
    config = mosquitto.config_path.read_text().splitlines()
    assert "max_queued_messages 0" in config
    assert "message_size_limit 65536" in config
    assert "allow_anonymous false" in config
    assert [line for line in config if line.startswith("listener")] == [
        f"listener {mosquitto.port} 127.0.0.1"
    ]
    assert not any("/var/lib/mosquitto" in line for line in config)


def test_stop_and_start_keep_the_port(mosquitto: MosquittoHandle) -> None:
    port, first_pid = mosquitto.port, mosquitto.pid
    mosquitto.stop()
    assert mosquitto.pid is None
    assert not _accepts_connections(mosquitto.host, port)

    mosquitto.start()
    assert mosquitto.port == port
    assert mosquitto.pid not in (None, first_pid)
    client = _Client(mosquitto, "device")
    try:
        assert not client.connect()[0].is_failure
    finally:
        client.close()

    with pytest.raises(RuntimeError, match="already running"):
        mosquitto.start()


def test_queued_qos1_message_survives_graceful_restart(mosquitto: MosquittoHandle) -> None:
    subscriber = _Client(mosquitto, "ingest", client_id="msec-test-ingest", clean_session=False)
    assert not subscriber.connect()[0].is_failure
    subscriber.subscribe("msec/readings/#")
    subscriber.close()

    publisher = _Client(mosquitto, "device")
    publisher.connect()
    publisher.publish("msec/readings/dev-1", b"queued while offline")
    publisher.close()

    mosquitto.stop(graceful=True)
    mosquitto.start()

    returning = _Client(mosquitto, "ingest", client_id="msec-test-ingest", clean_session=False)
    try:
        reason, session_present = returning.connect()
        assert not reason.is_failure
        assert session_present
        message = returning.messages.get(timeout=TIMEOUT_S)
        assert (message.topic, message.payload) == ("msec/readings/dev-1", b"queued while offline")
    finally:
        returning.close()


def test_mosquitto_server_without_binary_is_unavailable(tmp_path: Path) -> None:
    with (
        pytest.raises(ServiceUnavailable, match="mosquitto broker not found"),
        mosquitto_server(tmp_path / "mq", binary=tmp_path / "no-mosquitto"),
    ):
        pass
