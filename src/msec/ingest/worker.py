"""An ingest worker process: MQTT subscriber -> :class:`Ingestor` -> acknowledgement.

Run as ``msec worker``. Several workers share the load through an MQTT shared
subscription (``$share/<group>/msec/#`` on Mosquitto). Each message is acknowledged only
after the batch that contains it is durable, and the session is persistent, so a worker
killed at any moment loses nothing: the broker re-sends what was not acknowledged.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from msec.core.models import Reading
from msec.ingest.pipeline import Incoming, Ingestor
from msec.transport.mqtt import MqttSubscriber

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the receive -> durable latency histogram.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class BrokerAddress:
    """Where a worker finds the broker, and as whom it logs in."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls_ca: str | None = None


class WorkerStats:
    """Counters of one worker, written to ``<run_dir>/worker-<id>.json`` for /metrics."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.backlog = 0
        self._last_write = 0.0

    def observe(self, seconds: float, count: int) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += count
                break
        else:
            self.buckets[-1] += count
        self.latency_sum += seconds * count
        self.latency_count += count

    def flush(self, ingestor: Ingestor, *, force: bool = False) -> None:
        now = time.time()
        if self.path is None or (not force and now - self._last_write < 1.0):
            return
        self._last_write = now
        stats = ingestor.stats
        data = {
            "pid": os.getpid(),
            "updated": now,
            "accepted": stats.accepted,
            "duplicates": stats.duplicates,
            "rejected": stats.rejected,
            "latency_buckets": list(LATENCY_BUCKETS),
            "latency_counts": self.buckets,
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "backlog": self.backlog,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)


class CommitLog:
    """Appends ``<time> <provider>:<seq> ...`` lines, one per durable batch (benchmarks).

    The time is taken after the commit returned, so ``time - publish time`` is the full
    publish -> durable latency of each reading.
    """

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", buffering=1 << 16)  # noqa: SIM115

    def __call__(self, readings: Sequence[Reading]) -> None:
        keys = " ".join(f"{r.provider}:{r.seq}" for r in readings)
        self._file.write(f"{time.time():.6f} {keys}\n")
        self._file.flush()


def read_commit_logs(paths: Sequence[Path]) -> dict[tuple[str, int], float]:
    """``(provider, seq) -> commit time`` from the logs of :class:`CommitLog`."""
    found: dict[tuple[str, int], float] = {}
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            at, *keys = line.split(" ")
            when = float(at)
            for key in keys:
                provider, _, seq = key.rpartition(":")
                found[(provider, int(seq))] = when
    return found


def run_worker(
    ingestor: Ingestor,
    broker: BrokerAddress,
    *,
    client_id: str,
    topic: str = "msec/#",
    shared_group: str | None = None,
    batch_max: int = 1000,
    batch_wait: float = 0.02,
    stop: threading.Event | None = None,
    stats_path: Path | None = None,
) -> None:
    """Receive, check, store and acknowledge until ``stop`` is set (or SIGTERM in main thread)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    subscriber = MqttSubscriber(
        broker.host,
        broker.port,
        [topic],
        client_id=client_id,
        username=broker.username,
        password=broker.password,
        shared_group=shared_group,
        tls_ca=broker.tls_ca,
    )
    subscriber.start()
    stats = WorkerStats(stats_path)
    stats.flush(ingestor, force=True)  # doubles as the "subscribed, ready" signal
    log.info(
        "ingest worker %s subscribed to %s on %s:%s",
        client_id,
        f"$share/{shared_group}/{topic}" if shared_group else topic,
        broker.host,
        broker.port,
    )
    try:
        while not stop.is_set():
            messages = subscriber.take(batch_max, 0.2)
            if not messages:
                stats.backlog = 0
                stats.flush(ingestor)
                continue
            # Give the batch a moment to fill when traffic is light: fewer, larger commits.
            if len(messages) < batch_max and batch_wait > 0:
                time.sleep(batch_wait)
                messages += subscriber.take(batch_max - len(messages), 0)
            batch = [Incoming(m.payload, m.topic, m.topic, m.dup, m.received) for m in messages]
            ingestor.process(batch)  # raises if storage fails: then nothing is acknowledged
            subscriber.ack(messages)
            done = time.time()
            oldest = min(m.received for m in messages)
            stats.observe(done - oldest, len(messages))
            stats.backlog = subscriber.backlog()
            stats.flush(ingestor)
    finally:
        stats.flush(ingestor, force=True)
        subscriber.stop()


def spawn_worker(
    *,
    data_dir: Path,
    database_url: str,
    broker: BrokerAddress,
    client_id: str,
    topic: str = "msec/#",
    shared_group: str | None = None,
    batch_max: int = 1000,
    batch_wait_ms: int = 20,
    log_path: Path | None = None,
    commit_log: Path | None = None,
    settings_json: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``msec worker`` as a child process (the password travels in its environment).

    ``settings_json`` (``Settings.model_dump_json()``) gives the worker the installation's
    settings (log origin, sensitive resources); without it the worker uses the defaults.
    """
    args = [
        sys.executable,
        "-m",
        "msec",
        "worker",
        "--data-dir",
        str(data_dir),
        "--database-url",
        database_url,
        "--mqtt-host",
        broker.host,
        "--mqtt-port",
        str(broker.port),
        "--mqtt-username",
        broker.username or "",
        "--client-id",
        client_id,
        "--topic",
        topic,
        "--batch-max",
        str(batch_max),
        "--batch-wait-ms",
        str(batch_wait_ms),
    ]
    if shared_group:
        args += ["--shared-group", shared_group]
    if broker.tls_ca:
        args += ["--mqtt-tls-ca", str(broker.tls_ca)]
    if commit_log:
        args += ["--commit-log", str(commit_log)]
    # Never on the command line, which every local user can read with ps.
    env = dict(os.environ, MSEC_WORKER_MQTT_PASSWORD=broker.password or "")
    if settings_json is not None:
        env["MSEC_WORKER_SETTINGS"] = settings_json
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(args, env=env, stdout=out, stderr=out)


def ready_file(data_dir: Path, client_id: str) -> Path:
    """The stats file a worker writes as soon as it has subscribed (its "ready" signal)."""
    return data_dir / "run" / f"worker-{client_id}.json"


def wait_until_subscribed(
    data_dir: Path,
    workers: Sequence[tuple[str, subprocess.Popen[bytes]]],
    timeout: float = 60.0,
) -> None:
    """Block until every ``(client_id, process)`` worker has subscribed.

    A broker keeps messages only for sessions that exist: whatever is published before
    the first worker subscribed to a brand-new broker is acknowledged to the device and
    then dropped. Callers remove stale ready files before spawning. Raises
    ``RuntimeError`` if a worker exits first, ``TimeoutError`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    for client_id, process in workers:
        path = ready_file(data_dir, client_id)
        while not path.exists():
            if process.poll() is not None:
                raise RuntimeError(f"ingest worker {client_id} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest worker {client_id} did not subscribe in {timeout}s")
            time.sleep(0.05)
