"""A plain subscriber process for the raw path: receive, acknowledge, count. No processing.

``python -m msec.bench.rawsub HOST PORT CLIENT_ID [GROUP]`` (password in
``MSEC_WORKER_MQTT_PASSWORD``, user ``ingest``). Prints ``ready`` once subscribed, then its
running count whenever it changes, every 10 ms at most; stops on SIGTERM. It uses the same
:class:`MqttSubscriber` as the ingest workers and runs in its own process like them, so
the raw and secured figures differ only by the verification and storage work.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from msec.transport.mqtt import MqttSubscriber


def main(argv: list[str]) -> None:
    host, port, client_id = argv[0], int(argv[1]), argv[2]
    group = argv[3] if len(argv) > 3 else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sub = MqttSubscriber(host, port, ["msec/#"], client_id=client_id, username="ingest",
                         password=os.environ.get("MSEC_WORKER_MQTT_PASSWORD"),
                         shared_group=group, persistent=False)
    sub.start()
    print("ready", flush=True)
    count, reported, last = 0, 0, 0.0
    while not stop.is_set():
        messages = sub.take(5000, 0.05)
        sub.ack(messages)
        count += len(messages)
        now = time.monotonic()
        if count != reported and now - last > 0.01:
            print(count, flush=True)
            reported, last = count, now
    print(count, flush=True)
    sub.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
