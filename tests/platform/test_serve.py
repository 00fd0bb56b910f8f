"""`msec serve --config FILE` against a real Mosquitto and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from msec.platform import Platform, Settings
from msec.sdk import Endpoint
from msec.testing.services import MosquittoHandle


def test_serve_runs_against_mosquitto_and_postgresql(
    tmp_path: Path, mosquitto: MosquittoHandle, pg_url: str
) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "msec.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n'
        f'[database]\nurl = "{pg_url}"\n'
        f'[mqtt]\nbroker = "external"\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        'username = "ingest"\nworkers = 2\n'
        '[http]\nport = 0\n'
    )
    # Register the device first, with the same settings (as an operator would).
    platform = Platform.open(Settings.load(config))
    device = platform.add_device(
        "gw-7", "crowd_counter",
        endpoint=Endpoint(mosquitto.host, mosquitto.port, "device", mosquitto.users["device"]),
    )
    platform.close()
    env = dict(os.environ, MSEC_MQTT_PASSWORD=mosquitto.users["ingest"])
    process = subprocess.Popen(
        [sys.executable, "-m", "msec", "serve", "--config", str(config), "--duration", "40"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        runtime = data_dir / "run" / "runtime.json"
        deadline = time.monotonic() + 60
        while not runtime.exists():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.2)
        info = json.loads(runtime.read_text())
        assert not (data_dir / "demo.json").exists()
        assert info["database"] == "postgresql" and info["mqtt"]["broker"] == "external"
        for people in (12, 30, 18):
            device.publish({"crowd/count": people})
        device.close()
        request = urllib.request.Request(
            info["url"] + "/api/v1/providers/gw-7/services/crowd/resources/count",
            headers={"Authorization": f"Bearer {info['tokens']['operator']}"},
        )
        deadline = time.monotonic() + 20
        value = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    value = json.loads(response.read())["value"]
                if value == 18:
                    break
            except urllib.error.HTTPError:
                pass
            time.sleep(0.2)
        assert value == 18 and type(value) is int
        with urllib.request.urlopen(info["url"] + "/api/v1/health", timeout=5) as response:
            health = json.loads(response.read())
        assert health["status"] == "ok" and health["workers"] == 2
        assert health["database"] == "postgresql"
    finally:
        process.terminate()
        assert process.wait(30) == 0, process.stderr.read()
