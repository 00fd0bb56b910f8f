"""`msec demo`: one command starts everything; --duration stops it; a second run continues."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa

from msec.sdk import Device


def start_demo(data_dir: Path, duration: float) -> subprocess.Popen[str]:
    (data_dir / "demo.json").unlink(missing_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "msec", "demo", "--data-dir", str(data_dir), "--port", "0",
         "--duration", str(duration)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "demo did not start"
        time.sleep(0.1)
    time.sleep(0.2)  # written in one go, but give the writer a moment to close it
    return json.loads(path.read_text())


def get(url: str, token: str | None = None) -> object:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def readings(data_dir: Path) -> dict[str, tuple[int, int]]:
    engine = sa.create_engine(f"sqlite:///{data_dir / 'msec.db'}")
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "select provider, count(*), max(seq) from twin_readings group by provider")
        result = {p: (n, m) for p, n, m in rows}
    engine.dispose()
    return result


def test_demo_runs_everything_and_a_second_run_continues(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    process = start_demo(data_dir, 20)
    info = wait_for_file(data_dir / "demo.json", process)
    assert set(info) >= {"url", "mqtt", "tokens"}
    assert info["mqtt"]["host"] == "127.0.0.1" and info["mqtt"]["port"] > 0
    token = info["tokens"]["operator"]
    assert get(info["url"] + "/api/v1/health")["status"] == "ok"
    deadline = time.monotonic() + 30
    providers: list = []
    while time.monotonic() < deadline:
        everything = get(info["url"] + "/api/v1/providers", token)
        # The park's devices; the care homes' are checked in test_care_demo.py.
        providers = [p for p in everything if p["name"].startswith("llamas-")]
        if len(providers) == 7 and all(p["health"]["last_seen"] for p in providers):
            break
        time.sleep(0.5)
    assert len(providers) == 7, providers
    temperature = get(info["url"] + "/api/v1/providers/llamas-01/services/environment/"
                      "resources/temperature", token)
    assert temperature["unit"] == "°C" and -40 <= temperature["value"] <= 60
    # A device registered by the demo's own credentials can also post over HTTP.
    device = Device.load(data_dir / "devices" / "llamas-01.json")
    answer = device.post({"environment/noise": 41.5}, url=info["url"])
    assert answer["status"] == "stored"
    assert process.wait(60) == 0, process.stderr.read()
    first = readings(data_dir)
    assert len(first) == 7 and all(n >= 24 for n, _ in first.values())  # 2 h backfill

    process = start_demo(data_dir, 4)
    wait_for_file(data_dir / "demo.json", process)
    assert process.wait(60) == 0, process.stderr.read()
    second = readings(data_dir)
    for provider, (count, high) in first.items():
        assert second[provider][0] > count, provider  # new readings stored
        assert second[provider][1] > high  # sequence numbers continued upwards
    engine = sa.create_engine(f"sqlite:///{data_dir / 'msec.db'}")
    with engine.connect() as conn:
        events = conn.exec_driver_sql("select reason from guard_events").all()
    engine.dispose()
    assert events == []  # nothing in two runs looked like an attack
