"""The running platform's tamper check, run in a child process (``msec.platform.tamper``)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.platform.checks import TamperChecks
from msec.platform.runtime import Runtime
from msec.platform.tamper import TamperCheckFailed, audit_in_child


def installation(data_dir: Path, readings: int = 200) -> Settings:
    settings = Settings.load(None, data_dir=data_dir)
    platform = Platform.open(settings)
    try:
        device = platform.add_device("llamas-t", "environment_station")
        batch = [
            Incoming(device.seal([("environment", "temperature", 10.0 + i % 20)]), None, "test")
            for i in range(readings)
        ]
        assert all(o.ok for o in platform.ingestor.process(batch))
        platform.trust.checkpoint()
    finally:
        platform.close()
    return settings


def tamper(data_dir: Path) -> None:
    conn = sqlite3.connect(data_dir / "msec.db")
    try:
        conn.execute("UPDATE twin_readings SET value_num = 99.5 WHERE seq = 7")
        conn.commit()
    finally:
        conn.close()


def test_the_child_audits_the_installation(tmp_path: Path) -> None:
    settings = installation(tmp_path / "data")
    report = audit_in_child(settings)
    assert report is not None and report.ok
    assert report.size > 200 and report.by_kind["reading"] == 200
    tamper(settings.data_dir)
    report = audit_in_child(settings)
    assert report is not None and not report.ok
    assert any(p.what == "modified" for p in report.problems), report.problems


def test_a_check_that_cannot_run_is_an_error_not_tampering(tmp_path: Path) -> None:
    with pytest.raises(TamperCheckFailed, match=r"MsecError|data"):
        audit_in_child(Settings.load(None, data_dir=tmp_path / "nothing-here"))


def test_stopping_ends_the_child(tmp_path: Path) -> None:
    settings = installation(tmp_path / "data", readings=10)
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    assert audit_in_child(settings, stop) is None
    assert time.monotonic() - started < 10


def test_the_runtime_records_its_checks_and_warns_of_tampering(tmp_path: Path) -> None:
    settings = installation(tmp_path / "data")
    settings = settings.model_copy(
        update={"log": settings.log.model_copy(update={"verify_every_s": 1.0})}
    )
    runtime = Runtime(settings)
    thread = threading.Thread(target=runtime._verify_loop, daemon=True)
    thread.start()
    checks = TamperChecks(settings.data_dir)
    try:
        deadline = time.monotonic() + 60
        while not checks.history() and time.monotonic() < deadline:
            time.sleep(0.2)
        [first, *_] = checks.history()
        assert first.ok and first.by == "runtime" and first.size > 200
        tamper(settings.data_dir)
        while not any(not c.ok for c in checks.history()) and time.monotonic() < deadline:
            time.sleep(0.2)
        failed = [c for c in checks.history() if not c.ok]
        assert failed and failed[0].problems >= 1
        events = runtime.platform.events.query(limit=100)
        assert any(e.reason == "tampering" and e.source == "tamper-check" for e in events)
    finally:
        runtime._stop.set()
        thread.join(30)
        runtime.platform.close()
    assert not thread.is_alive()
