"""Running the whole platform: broker, ingest workers, HTTP API and (demo) simulators.

``msec demo`` and ``msec serve`` both use :class:`Runtime`; the demo adds the park
simulators and the embedded broker. Workers run as child processes (``msec worker``) and
are restarted if they die; each acknowledges only what is durable, so a restart loses
nothing.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

import uvicorn

from msec.access.model import Principal, PrincipalKind
from msec.access.service import AccessService
from msec.actuate.actuator import MqttCommandPublisher
from msec.anchor.anchorer import Anchorer
from msec.anchor.base import AnchorError
from msec.anchor.policy import AnchorPolicy
from msec.ingest.worker import BrokerAddress, spawn_worker, wait_until_subscribed
from msec.platform.checks import TamperChecks
from msec.platform.platform import Platform
from msec.platform.secrets import web_key
from msec.platform.settings import Settings
from msec.platform.tamper import audit_in_child
from msec.tlog import LogError
from msec.transport.broker import EmbeddedBroker, free_port, wait_for_port, write_password_file
from msec.web.app import create_app
from msec.web.live import LiveFeed
from msec.web.metrics import IngestCollector, make_registry
from msec.web.sessions import CsrfTokens, LoginEmails, SqlSessions
from msec.web.ui import WebUi

log = logging.getLogger(__name__)

#: Entry point group of the pilots' applications: ``name = "module:install"``, where
#: ``install(app, ui, platform, feed)`` adds the app's pages and returns its object; an app
#: that keeps time reads ``app.state.clock`` (see :attr:`Runtime.clock`).
APPS_GROUP: Final = "msec.apps"


class Runtime:
    """One running installation. ``start()``, then ``wait(duration)``, then ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        simulate: bool = False,
        sim_interval_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        settings = with_app_patterns(settings)
        self.settings = settings
        self.simulate = simulate
        #: The apps' clock, given to them as ``app.state.clock`` before they are installed:
        #: the wall clock, unless a benchmark runs them on simulated time.
        self.clock: Callable[[], float] = clock or time.time
        #: Seconds between two readings of each simulated device (None: the demo's 10 s).
        self.sim_interval_s = sim_interval_s
        self.platform = Platform.open(settings)
        self.run_dir = settings.data_dir / "run"
        self.broker: EmbeddedBroker | None = None
        self.mqtt_host = settings.mqtt.host
        self.mqtt_port = settings.mqtt.port
        self._workers: list[subprocess.Popen[bytes]] = []
        self._server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.url = ""
        self._tokens: dict[str, str] = {}
        self._commands_out: MqttCommandPublisher | None = None
        self.ui: WebUi | None = None
        self.feed: LiveFeed | None = None
        #: The installed apps (entry point group ``msec.apps``), by name, once started.
        self.apps: dict[str, Any] = {}
        self._simulated: list[str] = []

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.run_dir.glob("worker-*.json"):
            stale.unlink()
        secrets = self.platform.secrets
        mqtt = self.settings.mqtt
        if mqtt.broker == "embedded":
            password_file = self.run_dir / "broker-passwords"
            write_password_file(
                password_file,
                {
                    "ingest": secrets["mqtt_ingest"],
                    "device": secrets["mqtt_device"],
                },
            )
            self.broker = EmbeddedBroker(
                password_file, host=mqtt.host, port=mqtt.port, log_file=self.run_dir / "broker.log"
            )
            self.broker.start()
            self.mqtt_port = self.broker.port
            self._ingest_user, self._ingest_password = "ingest", secrets["mqtt_ingest"]
        else:
            self._ingest_user, self._ingest_password = mqtt.username, mqtt.password()
            wait_for_port(mqtt.host, mqtt.port, 10)
        self._worker_count = mqtt.workers
        if mqtt.broker == "embedded" and mqtt.workers > 1:
            # amqtt has no shared subscriptions: every worker would get every message.
            log.warning("the embedded broker supports one ingest worker; using 1")
            self._worker_count = 1
        for index in range(self._worker_count):
            self._workers.append(self._spawn_worker(index))
        self._wait_for_workers()
        self._tokens = {"operator": self.platform.secrets["operator_token"]}
        if self.simulate:
            # One account per role for trying the access layer (tokens in demo.json).
            self._tokens = self.platform.demo_accounts()
        self._start_http()
        if self.simulate:
            from msec.platform.demo import ParkFleet

            fleet = ParkFleet(
                self.platform,
                self.settings,
                self.mqtt_host,
                self.mqtt_port,
                "device",
                secrets["mqtt_device"],
                self._stop,
            )
            if self.sim_interval_s is not None:
                fleet.interval_s = self.sim_interval_s
            fleet.prepare()
            self._simulated = [device.name for device, _ in fleet.devices]
            self._threads.append(threading.Thread(target=fleet.run, name="simulators", daemon=True))
            if "care" in self.apps:  # Pilot 2's homes, when Connected Care is installed
                from msec.platform.care_demo import CareFleet

                homes = CareFleet(self.platform, self.settings, self.mqtt_host, self.mqtt_port,
                                  "device", secrets["mqtt_device"], self._stop)  # fmt: skip
                if self.sim_interval_s is not None:
                    homes.interval_s = self.sim_interval_s
                homes.prepare()
                self._threads.append(threading.Thread(target=homes.run, name="care-homes",
                                                      daemon=True))  # fmt: skip
        monitor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._threads.append(monitor)
        checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="checkpoints", daemon=True
        )
        self._threads.append(checkpointer)
        if self.settings.log.verify_every_s > 0:
            self._threads.append(
                threading.Thread(target=self._verify_loop, name="tamper-checks", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def wait_for_simulators(self, since: float, timeout: float = 60.0) -> None:
        """Block until every simulated device has a value measured after ``since`` (the
        backfilled history is older); ``TimeoutError`` naming the silent ones otherwise."""
        devices = set(self._simulated)
        deadline = time.monotonic() + timeout
        while True:
            fresh = {
                v.provider for v in self.platform.twin.latest_all(tuple(devices))
                if v.timestamp is not None and v.timestamp >= since
            }  # fmt: skip
            if fresh == devices:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no live values from {sorted(devices - fresh)} in {timeout} s")
            time.sleep(0.2)

    @property
    def park_guide(self) -> Any:
        """Pilot 1's guide (``msec.apps.park_guide``) when installed, else ``None``."""
        return self.apps.get("park_guide")

    def _spawn_worker(self, index: int) -> subprocess.Popen[bytes]:
        mqtt = self.settings.mqtt
        return spawn_worker(
            data_dir=self.settings.data_dir,
            database_url=self.settings.database_url,
            broker=BrokerAddress(
                self.mqtt_host,
                self.mqtt_port,
                self._ingest_user,
                self._ingest_password,
                str(mqtt.tls_ca) if mqtt.tls_ca else None,
            ),
            client_id=f"msec-ingest-{index}",
            topic=mqtt.topic,
            shared_group=mqtt.shared_group if mqtt.broker == "external" else None,
            batch_max=mqtt.batch_max,
            batch_wait_ms=mqtt.batch_wait_ms,
            log_path=self.run_dir / f"worker-{index}.log",
            settings_json=self.settings.model_dump_json(),
        )

    def _wait_for_workers(self) -> None:
        # Nothing may publish before the workers' sessions exist (see wait_until_subscribed).
        wait_until_subscribed(
            self.settings.data_dir,
            [(f"msec-ingest-{i}", w) for i, w in enumerate(self._workers)],
        )

    def _start_http(self) -> None:
        http = self.settings.http
        port = http.port or free_port(http.host)
        collector = IngestCollector(
            self.run_dir, lambda: self.platform.ingestor.stats, self.platform.events
        )
        operator = Principal(
            "service:operator", PrincipalKind.SERVICE, self.settings.tenant, frozenset({"operator"})
        )
        access = self.platform.access_service({self.platform.secrets["operator_token"]: operator})
        self.ui, self.feed = web_ui(self.platform, access)
        app = create_app(
            twin=self.platform.twin,
            events=self.platform.events,
            ingestor=self.platform.ingestor,
            access=access,
            principals=self.platform.principals,
            policies=self.platform.policies,
            actuator=self.platform.actuator(self._publisher()),
            registry=self.platform.registry,
            consent=self.platform.consent,
            metrics=make_registry(collector),
            health=self._health,
            trust=self.platform.trust,
            ui=self.ui,
        )
        app.state.clock = self.clock
        for entry in sorted(entry_points(group=APPS_GROUP), key=lambda e: e.name):
            # Apps depend on the platform, never the reverse: they are found, not imported.
            self.apps[entry.name] = entry.load()(app, self.ui, self.platform, self.feed)
        self.feed.start()
        config = uvicorn.Config(
            app, host=http.host, port=port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        thread.start()
        wait_for_port(http.host, port, 20)
        self.url = f"http://{http.host}:{port}"

    def _publisher(self) -> MqttCommandPublisher:
        """Commands go out through the broker with the workers' account (QoS 1)."""
        tls_ca = self.settings.mqtt.tls_ca
        self._commands_out = MqttCommandPublisher(
            self.mqtt_host,
            self.mqtt_port,
            self._ingest_user,
            self._ingest_password,
            str(tls_ca) if tls_ca else None,
            client_id="msec-commands",
        )
        return self._commands_out

    def _health(self) -> dict[str, object]:
        alive = sum(1 for w in self._workers if w.poll() is None)
        try:
            with self.platform.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            storage = "ok"
        except Exception as exc:  # health must answer, whatever the database does
            storage = f"error: {type(exc).__name__}"
        status = "ok" if storage == "ok" and alive == len(self._workers) else "degraded"
        return {
            "status": status,
            "storage": storage,
            "workers": alive,
            "workers_configured": len(self._workers),
            "database": self.platform.engine.dialect.name,
            "broker": self.settings.mqtt.broker,
        }

    def _supervise(self) -> None:
        """Restart workers that died, backing off (1 s doubling to 60 s) if they keep dying."""
        count = len(self._workers)
        started = [time.monotonic()] * count
        delays = [0.5] * count
        due: list[float | None] = [None] * count
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for index, worker in enumerate(self._workers):
                if worker.poll() is None or self._stop.is_set():
                    continue
                if due[index] is None:
                    # A worker that lived a minute was healthy: forget earlier failures.
                    lived = now - started[index]
                    delays[index] = 1.0 if lived > 60 else min(delays[index] * 2, 60.0)
                    due[index] = now + delays[index]
                    log.warning(
                        "ingest worker %d exited with %s; restarting in %.0f s (log: %s)",
                        index,
                        worker.returncode,
                        delays[index],
                        self.run_dir / f"worker-{index}.log",
                    )
                elif now >= due[index]:  # type: ignore[operator]
                    self._workers[index] = self._spawn_worker(index)
                    started[index], due[index] = now, None

    def _checkpoint_loop(self) -> None:
        """Sign a checkpoint whenever the log grew (every ``log.checkpoint_interval_s``).

        A rollback or inconsistency found on the way is a security event, once, and the
        log then signs nothing more until an operator has looked (``msec verify``).
        """
        trust = self.platform.trust
        interval = self.settings.log.checkpoint_interval_s
        signed = -1
        anchorer: Anchorer | None = None
        retry_at = 0.0
        while not self._stop.wait(interval):
            try:
                size = trust.log.size()
                if size != signed:
                    trust.checkpoint()
                    signed = size
                if self.settings.anchor.enabled:
                    if anchorer is None and time.monotonic() >= retry_at:
                        anchorer = self._anchorer()
                        retry_at = time.monotonic() + 30.0  # an unusable chain: log every 30 s
                    if anchorer is not None:
                        anchorer.run_once()  # never raises; failures are retried next time
            except LogError as exc:
                log.error("transparency log: %s; no more checkpoints are signed", exc)
                self.platform.events.warn("log_inconsistent", str(exc), source="checkpointer")
                return
            except Exception:  # the database may be down for a while: try again later
                log.exception("signing a checkpoint failed; retrying")

    def _verify_loop(self) -> None:
        """Check the whole log now and then, as ``msec verify`` does, and record the outcome
        (the tamper-check KPI); a failed check is also a security event. The check runs in a
        process of its own (:mod:`msec.platform.tamper`): minutes of hashing must not hold
        this process's interpreter lock."""
        checks = TamperChecks(self.settings.data_dir)
        delay = min(60.0, self.settings.log.verify_every_s)  # the first soon after start
        while not self._stop.wait(delay):
            delay = self.settings.log.verify_every_s
            try:
                report = audit_in_child(self.settings, self._stop)
            except Exception:  # the database may be away: try again next time
                log.exception("the periodic tamper check could not run")
                continue
            if report is None:  # stopping
                return
            if not report.ok:  # the security event first: whoever sees the record finds it
                log.error("tamper check FAILED: %d problems (run msec verify)",
                          len(report.problems))  # fmt: skip
                problems = f"{len(report.problems)} problems in the log"
                self.platform.events.warn("tampering", problems, source="tamper-check")
            checks.record(report, by="runtime")

    def _anchorer(self) -> Anchorer | None:
        """An anchorer on the configured chain, or ``None`` (logged) while it is unusable."""
        anchor = self.settings.anchor
        try:
            chain = self.platform.anchor_chain()
        except AnchorError as exc:
            log.error("anchoring is configured but unavailable (retrying): %s", exc)
            return None
        if chain is None:
            return None
        policy = AnchorPolicy(anchor.every_leaves, anchor.every_seconds)
        return Anchorer(chain, policy, self.platform.trust.signed_checkpoint)

    def write_demo_file(self) -> Path:
        """Where to reach this run: ``<data_dir>/demo.json`` for the demo, else
        ``<data_dir>/run/runtime.json``: URL, broker address and the accounts' API tokens
        (mode 0600)."""
        path = (
            self.settings.data_dir / "demo.json" if self.simulate else self.run_dir / "runtime.json"
        )
        data = {
            "url": self.url,
            "docs": f"{self.url}/docs",
            "mqtt": {
                "host": self.mqtt_host,
                "port": self.mqtt_port,
                "broker": self.settings.mqtt.broker,
            },
            "tokens": self._tokens,
            "database": self.platform.engine.dialect.name,
            "pid": os.getpid(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        return path

    def wait(self, duration: float | None = None) -> None:
        """Block until ``duration`` seconds passed, or until interrupted (Ctrl-C / SIGTERM)."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            self._stop.wait(min(left, 1.0) if left is not None else 1.0)

    def stop(self) -> None:
        """Stop simulators, API, workers (they finish their batch) and the broker."""
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for name, installed in self.apps.items():
            stop = getattr(installed, "stop", None)
            if callable(stop):
                try:
                    stop()
                except Exception:
                    log.exception("app %s did not stop cleanly", name)
        if self.feed is not None:
            self.feed.stop()  # ends the open pages' event streams, so the server can stop
        if self._server is not None:
            self._server.should_exit = True
        for worker in self._workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in self._workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if self._commands_out is not None:
            self._commands_out.close()
        if self.broker is not None:
            self.broker.stop()
        try:
            self.platform.trust.checkpoint()  # cover everything the workers stored last
        except Exception as exc:
            log.error("the final checkpoint was not signed: %s", exc)
        self.platform.close()


def web_ui(platform: Platform, access: AccessService) -> tuple[WebUi, LiveFeed]:
    """The page layer (sessions, CSRF, login e-mails) and the live feed of ``platform``."""
    http = platform.settings.http
    key = web_key(platform.settings.data_dir)
    sessions = SqlSessions(platform.engine, max_s=http.session_max_s, idle_s=http.session_idle_s)
    emails = LoginEmails(platform.engine, key)
    sessions.create_schema()
    emails.create_schema()
    ui = WebUi(
        access=access, events=platform.events, principals=platform.principals,
        sessions=sessions, csrf=CsrfTokens(key), emails=emails,
        secure_cookies=http.secure_cookies, public_url=http.public_url,
    )  # fmt: skip
    return ui, LiveFeed(platform.twin.latest_all)


def with_app_patterns(settings: Settings) -> Settings:
    """``settings`` with the installed apps' personal-data patterns (their module's
    ``SENSITIVE_RESOURCES``) added to ``[sensitive] resources``, before any worker starts."""
    extra: list[str] = []
    for entry in entry_points(group=APPS_GROUP):
        module = import_module(entry.value.partition(":")[0])
        extra += [p for p in getattr(module, "SENSITIVE_RESOURCES", ()) if p not in extra]
    known = settings.sensitive.resources
    added = [p for p in extra if p not in known]
    if not added:
        return settings
    sensitive = settings.sensitive.model_copy(update={"resources": [*known, *added]})
    return settings.model_copy(update={"sensitive": sensitive})
