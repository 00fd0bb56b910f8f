"""Run ``msec bench ingest`` over several configurations and print a Markdown table.

    .venv/bin/python bench/ingest_matrix.py                # the table in docs/benchmarks.md
    .venv/bin/python bench/ingest_matrix.py --quick        # 20k readings each, for a smoke run

Each row is one separate ``msec bench ingest --json`` run (its own broker, database and
workers); every figure in a row, raw path included, comes from that one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CONFIGS = [
    # (broker, database, workers, batch)
    ("mosquitto", "sqlite", 2, 1),
    ("mosquitto", "sqlite", 2, 2),
    ("mosquitto", "sqlite", 2, 3),
    ("mosquitto", "sqlite", 2, 5),
    ("mosquitto", "sqlite", 2, 20),
    ("mosquitto", "sqlite", 1, 2),
    ("mosquitto", "postgresql", 2, 2),
    ("embedded", "sqlite", 1, 2),
]

COLUMNS = ["broker", "database", "workers", "batch", "readings", "readings_per_s", "lost",
           "raw_per_s", "ratio", "p50_ms", "p99_ms", "half_rate_p50_ms", "half_rate_p99_ms",
           "half_rate_lost", "security_events"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 readings per run")
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    messages = 20_000 if args.quick else args.messages
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for broker, database, workers, batch in CONFIGS:
        # The embedded broker (amqtt) carries ~1/10 of Mosquitto: fewer readings keep it short.
        count = messages if broker == "mosquitto" else min(messages, 50_000)
        command = [sys.executable, "-m", "msec", "bench", "ingest", "--messages", str(count),
                   "--broker", broker, "--database", database, "--workers", str(workers),
                   "--batch", str(batch), "--json"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"| {broker} | {database} | {workers} | {batch} | failed: "
                  f"{done.stderr.strip().splitlines()[-1:]} |", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print("| " + " | ".join(str(result.get(c, "")) for c in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
    main()
