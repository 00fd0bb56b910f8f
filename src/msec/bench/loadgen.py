"""A lean MQTT 3.1.1 QoS 1 publisher for benchmarks.

A paho publisher costs ~100 µs of CPU per message, which on a 2-core machine steals the
cores from the platform being measured. This generator writes pre-encoded PUBLISH packets
to a socket in large chunks and counts PUBACKs in a thread, so nearly all CPU goes to the
broker and the subscribers. It is a test tool, not a device client (devices use paho).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Sequence


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def encode_connect(
    client_id: str,
    username: str | None,
    password: str | None,
    clean: bool = True,
    keepalive: int = 60,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _string(password.encode())
    variable = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def encode_publish(topic: str, payload: bytes, packet_id: int) -> bytes:
    """A QoS 1 PUBLISH packet."""
    body = _string(topic.encode()) + struct.pack("!H", packet_id) + payload
    return b"\x32" + _remaining_length(len(body)) + body


class RawPublisher:
    """Publishes pre-sealed envelopes at QoS 1 as fast as allowed, counting PUBACKs."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._sock = socket.create_connection((host, port), timeout=10)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(encode_connect(client_id, username, password))
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the load generator: {connack!r}")
        self._sock.settimeout(None)
        self.acked = 0
        self._ack_cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def _read_acks(self) -> None:
        pending = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            pending += data
            # PUBACK is exactly 4 bytes: 0x40 0x02 id id.
            usable = len(pending) - len(pending) % 4
            count = usable // 4
            pending = pending[usable:]
            with self._ack_cond:
                self.acked += count
                self._ack_cond.notify_all()

    @staticmethod
    def encode(messages: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Pre-encode ``(topic, payload)`` pairs as PUBLISH packets (do this before timing)."""
        return [encode_publish(t, p, i % 65535 + 1) for i, (t, p) in enumerate(messages)]

    def publish_all(
        self,
        packets: Sequence[bytes],
        *,
        rate: float | None = None,
        max_inflight: int = 20000,
        chunk: int = 200,
    ) -> list[float]:
        """Publish every message; returns the send time of each (for latency).

        ``rate`` limits messages per second (None: as fast as the broker acks).
        """
        sent_at = [0.0] * len(packets)
        start = time.perf_counter()
        base_acked = self.acked
        for offset in range(0, len(packets), chunk):
            part = packets[offset : offset + chunk]
            with self._ack_cond:
                while offset - (self.acked - base_acked) > max_inflight:
                    self._ack_cond.wait(1.0)
            if rate:
                due = start + offset / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            now = time.time()
            for i in range(len(part)):
                sent_at[offset + i] = now
            self._sock.sendall(b"".join(part))
        return sent_at

    def wait_acked(self, count: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._ack_cond:
            while self.acked < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ack_cond.wait(left)
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        self._sock.close()
