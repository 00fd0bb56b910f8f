"""``msec bench ingest``: signed readings through a real broker into durable storage.

One run measures, on the same broker and the same pre-sealed messages:

* ``raw_per_s``: readings/s the bare path carries: lean publisher -> broker -> the same
  number of plain subscribers (same MQTT client code as the workers, QoS 1, manual ack,
  no verification, no storage);
* ``readings_per_s``: readings/s verified (Ed25519), checked and durably stored by the
  ingest workers, from the first publish to the last commit;
* ``lost``: readings published minus readings stored;
* ``p50_ms`` / ``p99_ms``: publish -> durable latency per reading at full speed, and
  ``half_rate_p50_ms`` / ``half_rate_p99_ms`` when offered half of the measured maximum.

Messages are sealed before timing and sent by :class:`RawPublisher`, so the load generator
does not eat the cores the platform needs (see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from msec.bench.loadgen import RawPublisher
from msec.ingest.worker import (
    BrokerAddress,
    read_commit_logs,
    spawn_worker,
    wait_until_subscribed,
)
from msec.platform.platform import Platform
from msec.platform.settings import Settings
from msec.sdk.sim.park import PARK_DEVICES, ParkSimulator
from msec.transport.broker import EmbeddedBroker, write_password_file

DEVICES = 70


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Fleet:
    """The bench devices (registered for real) and their pre-sealed envelopes."""

    def __init__(self, platform: Platform, base: float) -> None:
        sim = ParkSimulator(seed=7)
        self.devices = []
        for i in range(DEVICES):
            template = PARK_DEVICES[i % len(PARK_DEVICES)]
            self.devices.append((platform.add_device(f"bench-{i:03d}", template.kind), template))
        self.samples = {t.name: sim.sample(t, base) for _, t in self.devices}
        self._next = 0

    def seal(
        self, readings: int, batch: int, base: float
    ) -> tuple[list[tuple[str, bytes]], list[list[tuple[str, int]]]]:
        """``readings`` readings in envelopes of ``batch``: (topic, bytes) and stored keys."""
        out: list[tuple[str, bytes]] = []
        keys: list[list[tuple[str, int]]] = []
        sent = 0
        while sent < readings:
            device, template = self.devices[self._next % DEVICES]
            self._next += 1
            pool = self.samples[template.name]
            n = min(batch, readings - sent)
            rows = [(*pool[(sent + j) % len(pool)][:3], base + j * 0.001) for j in range(n)]
            seq = device.next_seq
            out.append((device.topic(rows), device.seal(rows, at=base)))
            keys.append([(device.name, seq + j) for j in range(n)])
            sent += n
        return out, keys


def _raw_phase(
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    workers: int,
    shared: bool,
    packets: list[bytes],
    readings: int,
) -> float:
    """Readings/s through broker -> plain subscriber processes (same client, ack only)."""
    env = dict(os.environ, MSEC_WORKER_MQTT_PASSWORD=password or "")
    procs = []
    for k in range(workers):
        args = [
            sys.executable,
            "-m",
            "msec.bench.rawsub",
            host,
            str(port),
            f"raw-{k}-{os.getpid()}",
        ] + (["raw"] if shared else [])
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True))
    counts = [0] * workers

    def read(k: int) -> None:
        for line in procs[k].stdout:  # type: ignore[union-attr]
            if line.strip().isdigit():
                counts[k] = int(line)

    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    readers = [threading.Thread(target=read, args=(k,), daemon=True) for k in range(workers)]
    for t in readers:
        t.start()
    publisher = RawPublisher(
        host, port, client_id=f"rawgen-{os.getpid()}", username=user, password=password
    )
    start = time.perf_counter()
    publisher.publish_all(packets)
    deadline = time.monotonic() + 120
    while sum(counts) < len(packets) and time.monotonic() < deadline:
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    publisher.close()
    _stop_all(procs)
    return readings * (sum(counts) / len(packets)) / elapsed


def _start_workers(
    settings: Settings,
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    workers: int,
    shared: bool,
) -> list[subprocess.Popen]:
    return [
        spawn_worker(
            data_dir=settings.data_dir,
            database_url=settings.database_url,
            broker=BrokerAddress(host, port, user, password),
            client_id=f"bench-ingest-{k}",
            shared_group="msec" if shared else None,
            log_path=settings.data_dir / f"worker-{k}.log",
            commit_log=settings.data_dir / f"commits-{k}.log",
            batch_max=2000,
            batch_wait_ms=5,
        )
        for k in range(workers)
    ]


def _ingest_phase(
    platform: Platform,
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    packets: list[bytes],
    keys: list[list[tuple[str, int]]],
    rate: float | None,
    batch: int,
    already: int,
) -> dict[str, float]:
    """Publish ``packets``, wait until stored; returns rate, lost and latency figures."""
    readings = sum(len(k) for k in keys)
    publisher = RawPublisher(
        host, port, client_id=f"gen-{os.getpid()}-{already}", username=user, password=password
    )
    start = time.perf_counter()
    sent_at = publisher.publish_all(packets, rate=rate / batch if rate else None)
    deadline_idle = 30.0
    last, last_change = -1, time.monotonic()
    while True:
        stored = platform.twin.count_readings() - already
        if stored >= readings:
            break
        if stored != last:
            last, last_change = stored, time.monotonic()
        elif time.monotonic() - last_change > deadline_idle:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    publisher.close()
    # Commit times written by the workers after each durable commit (CommitLog).
    all_keys = [k for ks in keys for k in ks]
    logs = sorted(platform.settings.data_dir.glob("commits-*.log"))
    stored_at = read_commit_logs(logs)
    deadline = time.monotonic() + 5  # a worker logs its batch just after committing it
    while sum(1 for k in all_keys if k in stored_at) < stored and time.monotonic() < deadline:
        time.sleep(0.05)
        stored_at = read_commit_logs(logs)
    latencies = []
    for sent, ks in zip(sent_at, keys, strict=True):
        for key in ks:
            t = stored_at.get(key)
            if t is not None:
                latencies.append((t - sent) * 1000)
    return {
        "readings_per_s": stored / elapsed,
        "stored": stored,
        "lost": readings - stored,
        "p50_ms": _percentile(latencies, 0.5),
        "p99_ms": _percentile(latencies, 0.99),
        "elapsed_s": elapsed,
    }


def run_ingest_bench(
    *,
    messages: int,
    broker: Literal["embedded", "mosquitto"],
    workers: int,
    batch: int,
    rate: float | None,
    database: Literal["sqlite", "postgresql"],
    progress: Any = None,
) -> dict[str, Any]:
    """Run the benchmark in a temporary directory; returns the figures as a dict."""

    def say(text: str) -> None:
        if progress is not None:
            progress.print(text)

    if broker == "embedded" and workers > 1:
        say("amqtt has no shared subscriptions: using 1 worker")
        workers = 1
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="msec-bench-")))
        user, password = "ingest", os.urandom(12).hex()
        if broker == "mosquitto":
            from msec.testing.services import mosquitto_server

            handle = stack.enter_context(
                mosquitto_server(tmp / "mosquitto", users={user: password})
            )
            host, port = handle.host, handle.port
        else:
            (tmp / "broker").mkdir()
            write_password_file(tmp / "broker" / "passwd", {user: password})
            embedded = EmbeddedBroker(tmp / "broker" / "passwd")
            embedded.start()
            stack.callback(embedded.stop)
            host, port = embedded.host, embedded.port
        url = ""
        if database == "postgresql":
            from msec.testing.services import postgres_server

            pg = stack.enter_context(postgres_server(tmp / "pg"))
            url = pg.url
        settings = Settings.load(None, data_dir=tmp / "data", database={"url": url})
        platform = Platform.open(settings)
        stack.callback(platform.close)

        say(f"sealing {messages} readings in envelopes of {batch}…")
        base = time.time()
        fleet = _Fleet(platform, base)
        sealed, keys = fleet.seal(messages, batch, base)
        packets = RawPublisher.encode(sealed)
        shared = broker == "mosquitto"

        say(f"raw path: {len(packets)} messages through {broker} to {workers} plain subscriber(s)…")
        raw_per_s = _raw_phase(host, port, user, password, workers, shared, packets, messages)

        procs = _start_workers(settings, host, port, user, password, workers, shared)
        stack.callback(_stop_all, procs)
        wait_until_subscribed(
            settings.data_dir, [(f"bench-ingest-{k}", p) for k, p in enumerate(procs)]
        )
        say(f"ingest: {messages} readings through {workers} worker(s)…")
        full = _ingest_phase(platform, host, port, user, password, packets, keys, rate, batch, 0)

        result: dict[str, Any] = {
            "readings_per_s": round(full["readings_per_s"], 1),
            "lost": full["lost"],
            "p50_ms": round(full["p50_ms"], 1),
            "p99_ms": round(full["p99_ms"], 1),
            "raw_per_s": round(raw_per_s, 1),
            "ratio": round(full["readings_per_s"] / raw_per_s, 3) if raw_per_s else None,
            "messages": len(packets),
            "readings": messages,
            "batch": batch,
            "workers": workers,
            "broker": broker,
            "database": database,
            "signature": "Ed25519",
            "qos": 1,
            "elapsed_s": round(full["elapsed_s"], 2),
        }
        if rate is None:
            half = full["readings_per_s"] / 2
            count = min(messages, max(int(half * 10), batch))  # about ten seconds of load
            say(f"half rate: {count} readings offered at {half:.0f}/s…")
            sealed2, keys2 = fleet.seal(count, batch, time.time())
            packets2 = RawPublisher.encode(sealed2)
            half_run = _ingest_phase(
                platform, host, port, user, password, packets2, keys2, half, batch, full["stored"]
            )
            result.update(
                {
                    "half_rate_offered_per_s": round(half, 1),
                    "half_rate_per_s": round(half_run["readings_per_s"], 1),
                    "half_rate_lost": half_run["lost"],
                    "half_rate_p50_ms": round(half_run["p50_ms"], 1),
                    "half_rate_p99_ms": round(half_run["p99_ms"], 1),
                }
            )
        result["security_events"] = sum(platform.events.counts().values())
        result["workers_died"] = sum(1 for p in procs if p.poll() is not None)
        return result


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
