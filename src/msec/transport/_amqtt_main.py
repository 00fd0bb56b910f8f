"""Child-process entry point of the embedded broker: ``python -m msec.transport._amqtt_main``.

Reads a JSON config from argv[1]: ``{"host", "port", "password_file"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys


async def _main(config: dict[str, object]) -> None:
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{config['host']}:{config['port']}"}},
            "plugins": {
                "amqtt.plugins.authentication.FileAuthPlugin": {
                    "password_file": config["password_file"],
                },
            },
        }
    )
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    # amqtt logs every packet at INFO; keep the demo's console readable.
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    asyncio.run(_main(json.loads(sys.argv[1])))
