"""A simulated smart plug: takes signed commands from the platform, reports its state.

The plug listens on ``msec/<tenant>/<name>/_cmd``, opens every message with its
:class:`~msec.sdk.command.CommandReceiver` (platform signature, this device, not expired, not
a replay) and applies ``{"on": true|false}`` sent to ``plug/switch``. Then it publishes its
new ``plug/switch`` and ``plug/power`` as one sealed envelope through
:meth:`msec.sdk.device.Device.publish`, which is how the platform learns that the command
took effect. Anything refused changes nothing and is counted by reason in :attr:`refused`.

Electrical values are a pure function of ``(seed, name, t)`` (:class:`SmoothNoise`): a load
of about ``load_w`` watts while on, 0 W while off, mains near 230 V and 50 Hz.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from msec.actuate.command import Command, CommandRejected
from msec.sdk.command import CommandReceiver
from msec.sdk.device import Device
from msec.sdk.sim.base import SmoothNoise

__all__ = ["SmartPlug"]

log = logging.getLogger(__name__)

SERVICE = "plug"
SWITCH = "switch"
#: Why a verified command was still not applied (beside CommandRejected's reasons).
UNSUPPORTED = "unsupported"
_MAX_W = 3680.0


class SmartPlug:
    """One simulated plug. :meth:`start` connects and listens; :meth:`stop` ends it.

    ``host``/``port``/``username``/``password``/``tls_ca`` are the broker account used to
    receive commands (default: the device's own endpoint); reports go through
    ``device.publish`` and its endpoint. The subscription is a clean session: commands sent
    while the plug is offline are not kept for it (the platform's command lifetime would
    make most of them stale anyway). :meth:`handle` may also be called directly, without a
    broker; ``report`` then replaces ``device.publish`` for the state reports.
    """

    def __init__(
        self,
        device: Device,
        receiver: CommandReceiver,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        tls_ca: str | None = None,
        load_w: float = 60.0,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        report: Callable[[list[tuple[str, str, float | bool]]], object] | None = None,
    ) -> None:
        if receiver.device_name != device.name:
            raise ValueError("the receiver belongs to another device")
        ep = device.endpoint
        self.device = device
        self.receiver = receiver
        self._broker = (
            host if host is not None else ep.mqtt_host,
            port if port is not None else ep.mqtt_port,
            username if username is not None else ep.mqtt_username,
            password if password is not None else ep.mqtt_password,
            tls_ca if tls_ca is not None else ep.mqtt_tls_ca,
        )
        self.load_w = min(max(load_w, 0.0), _MAX_W)
        self._noise = SmoothNoise(seed)
        self._clock = clock
        self._publish = report if report is not None else device.publish
        #: The relay: True when the socket is powered.
        self.on = False
        #: Commands applied.
        self.applied = 0
        #: Messages not applied, by reason (``bad_signature``, ``replay``, ..., ``unsupported``).
        self.refused: Counter[str] = Counter()
        #: State reports that the broker did not acknowledge.
        self.report_failures = 0
        self._handled = 0
        self._changed = threading.Condition()
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._subscribed = threading.Event()
        self._client: Any = None
        self._worker: threading.Thread | None = None

    @property
    def topic(self) -> str:
        """Where the plug listens for commands."""
        return f"msec/{self.device.tenant}/{self.device.name}/_cmd"

    # ---- state ---------------------------------------------------------------------------------
    def sample(self, t: float) -> list[tuple[str, str, float | bool]]:
        """The plug's readings at time ``t``: switch, power (W), voltage (V), frequency (Hz)."""
        name = self.device.name
        power = 0.0
        if self.on:
            power = self.load_w * (1.0 + 0.03 * self._noise.smooth(f"{name}/load", t, 30.0, 2))
        voltage = 230.0 + 3.0 * self._noise.smooth(f"{name}/voltage", t, 120.0, 2)
        frequency = 50.0 + 0.04 * self._noise.smooth(f"{name}/frequency", t, 60.0, 2)
        return [
            (SERVICE, SWITCH, self.on),
            (SERVICE, "power", round(min(max(power, 0.0), _MAX_W), 2)),
            (SERVICE, "voltage", round(voltage, 2)),
            (SERVICE, "frequency", round(frequency, 3)),
        ]

    def report(self, *, full: bool = False) -> bool:
        """Publish the current switch and power (``full``: voltage and frequency too);
        False if the broker did not acknowledge."""
        rows = self.sample(self._clock())
        try:
            self._publish(rows if full else rows[:2])
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            self.report_failures += 1
            log.warning("plug %s: state report not sent: %s", self.device.name, exc)
            return False
        return True

    # ---- commands ------------------------------------------------------------------------------
    def handle(self, data: bytes, now: float | None = None) -> Command | None:
        """Open one message; apply it if it is a valid ``plug/switch`` command, then report.

        Returns the applied command, or ``None`` when it was refused (counted in
        :attr:`refused`; the relay does not move).
        """
        try:
            command = self.receiver.open(data, now=self._clock() if now is None else now)
        except CommandRejected as exc:
            self._count(refused=exc.reason.value)
            log.warning("plug %s: command refused: %s", self.device.name, exc)
            return None
        on = command.args.get("on") if isinstance(command.args, dict) else None
        if (command.service, command.resource) != (SERVICE, SWITCH) or not isinstance(on, bool):
            self._count(refused=UNSUPPORTED)
            log.warning(
                "plug %s: unsupported command %s/%s",
                self.device.name,
                command.service,
                command.resource,
            )
            return None
        self.on = on
        log.info(
            "plug %s: switched %s by command %s",
            self.device.name,
            "on" if on else "off",
            command.id,
        )
        self.report()
        self._count(refused=None)
        return command

    def _count(self, *, refused: str | None) -> None:
        with self._changed:
            if refused is None:
                self.applied += 1
            else:
                self.refused[refused] += 1
            self._handled += 1
            self._changed.notify_all()

    @property
    def handled(self) -> int:
        """Messages handled so far, applied or refused."""
        return self._handled

    def wait_handled(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` messages were handled; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._handled >= count, timeout)

    # ---- running -------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe to the command topic (QoS 1) and return once the broker
        confirmed the subscription. Raises ``ConnectionError``/``TimeoutError``."""
        from msec.transport.mqtt import connect

        host, port, username, password, tls_ca = self._broker
        client = connect(
            host,
            port,
            client_id=f"plug-{self.device.name}-{secrets.token_hex(3)}",
            username=username,
            password=password,
            tls_ca=tls_ca,
            timeout=timeout,
        )
        subscribed = self._subscribed
        subscribed.clear()

        def on_subscribe(*_args: object) -> None:
            subscribed.set()

        def on_connect(c: Any, _u: object, _f: object, reason_code: Any, _p: object) -> None:
            if not reason_code.is_failure:  # a reconnect: subscribe again
                c.subscribe(self.topic, qos=1)

        def on_disconnect(*_args: object) -> None:
            subscribed.clear()

        def on_message(_c: Any, _u: object, message: Any) -> None:
            self._inbox.put(bytes(message.payload))

        client.on_message = on_message
        client.on_subscribe = on_subscribe
        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.subscribe(self.topic, qos=1)
        self._client = client
        self._worker = threading.Thread(
            target=self._run, name=f"plug-{self.device.name}", daemon=True
        )
        self._worker.start()
        if not subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"no SUBACK for {self.topic} within {timeout}s")

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        """Wait until the broker confirmed the subscription (again, after a reconnect: paho
        reconnects by itself); False on timeout. Commands published meanwhile are lost."""
        return self._subscribed.wait(timeout)

    def _run(self) -> None:
        while True:
            data = self._inbox.get()
            if data is None:
                return
            try:
                self.handle(data)
            except Exception:  # a simulator must keep running; the count shows the loss
                log.exception("plug %s: handling a command failed", self.device.name)
                self._count(refused="error")

    def stop(self) -> None:
        """Disconnect and stop handling; the device's own publishing connection too."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        if self._worker is not None:
            self._inbox.put(None)
            self._worker.join(10)
            self._worker = None
        self.device.close()
