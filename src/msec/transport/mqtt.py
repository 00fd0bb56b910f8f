"""MQTT over paho-mqtt 2: a connected client for devices, a manual-ack subscriber for ingest.

paho is imported only here. Errors from paho become ``ConnectionError`` / ``TimeoutError``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True, slots=True)
class Message:
    """One received PUBLISH; ``mid`` is what :meth:`MqttSubscriber.ack` needs."""

    topic: str
    payload: bytes
    mid: int
    dup: bool
    received: float


def _client(client_id: str, clean_session: bool, manual_ack: bool = False) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=paho.MQTTv311,
        manual_ack=manual_ack,
    )
    # Let many QoS 1 messages be in flight: the default of 20 caps throughput.
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def _connect(client: paho.Client, host: str, port: int, timeout: float) -> None:
    connected = threading.Event()
    result: dict[str, object] = {}

    def on_connect(_c, _u, _flags, reason_code, _props) -> None:  # type: ignore[no-untyped-def]
        result["rc"] = reason_code
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ValueError) as exc:  # ssl errors are OSErrors
        raise ConnectionError(f"cannot reach MQTT broker {host}:{port}: {exc}") from None
    client.loop_start()
    if not connected.wait(timeout):
        client.loop_stop()
        raise TimeoutError(f"MQTT broker {host}:{port} did not answer CONNECT in {timeout}s")
    rc = result["rc"]
    if getattr(rc, "is_failure", False):
        client.loop_stop()
        client.disconnect()
        raise ConnectionError(f"MQTT broker {host}:{port} refused the connection: {rc}")


def _tls(client: paho.Client, tls_ca: str | None) -> None:
    if tls_ca:
        # Verify the broker's certificate against this CA and its host name.
        client.tls_set(ca_certs=str(tls_ca))


def connect(
    host: str,
    port: int,
    *,
    client_id: str = "",
    username: str | None = None,
    password: str | None = None,
    tls_ca: str | None = None,
    timeout: float = 10.0,
) -> paho.Client:
    """A connected paho client with its network loop running (call ``loop_stop`` to end).

    With ``tls_ca`` the connection is TLS, and the broker must present a certificate
    signed by that CA for ``host``.
    """
    client = _client(client_id, clean_session=True)
    _tls(client, tls_ca)
    if username is not None:
        client.username_pw_set(username, password)
    _connect(client, host, port, timeout)
    return client


class MqttSubscriber:
    """A persistent-session subscriber whose messages are acknowledged by the caller.

    The broker keeps delivering to the session after a disconnect (``clean_session``
    False), and re-sends every message not yet acknowledged with :meth:`ack`, so a
    consumer that acks only after storing loses nothing when it crashes. With a
    ``shared_group`` the subscription is ``$share/<group>/<topic>`` (Mosquitto) and the
    broker spreads messages over all subscribers of the group.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: Sequence[str],
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        shared_group: str | None = None,
        persistent: bool = True,
        tls_ca: str | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._topics = [f"$share/{shared_group}/{t}" if shared_group else t for t in topics]
        self._client = _client(client_id, clean_session=not persistent, manual_ack=True)
        self._client.max_inflight_messages_set(65535)
        _tls(self._client, tls_ca)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._queue: deque[Message] = deque()
        self._ready = threading.Condition()
        self._client.on_message = self._on_message
        self._client.on_connect = None
        self.connected = False

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe (QoS 1) and start receiving in paho's network thread."""
        _connect(self._client, self._host, self._port, timeout)

        def resubscribe(client, _u, _f, reason_code, _p) -> None:  # type: ignore[no-untyped-def]
            self.connected = not reason_code.is_failure
            if self.connected:
                client.subscribe([(t, 1) for t in self._topics])

        self._client.on_connect = resubscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.subscribe([(t, 1) for t in self._topics])
        self.connected = True

    def _on_disconnect(self, *_args: object) -> None:
        self.connected = False

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        message = Message(msg.topic, msg.payload, msg.mid, bool(msg.dup), time.time())
        with self._ready:
            self._queue.append(message)
            if len(self._queue) == 1:
                self._ready.notify()

    def take(self, max_messages: int, wait: float) -> list[Message]:
        """Up to ``max_messages`` received messages; waits at most ``wait`` s for the first."""
        with self._ready:
            if not self._queue:
                self._ready.wait(wait)
            queue = self._queue
            count = min(len(queue), max_messages)
            return [queue.popleft() for _ in range(count)]

    def backlog(self) -> int:
        """Messages received but not yet taken."""
        return len(self._queue)

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge (PUBACK) messages whose content is durable."""
        for message in messages:
            self._client.ack(message.mid, 1)

    def stop(self) -> None:
        """Disconnect; unacknowledged messages stay with the broker for the next session."""
        self._client.disconnect()
        self._client.loop_stop()
