"""The ``msec`` command line: demo, serve, worker, device, verify, log, bench."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from msec.cli.access import policy_app, token_app, user_app
from msec.cli.trust import companion_app, erase, export, log_app, verify
from msec.platform.settings import Settings

app = typer.Typer(help="M-Sec open platform.", no_args_is_help=True, add_completion=False)
device_app = typer.Typer(help="Register and manage devices.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)
app.add_typer(device_app, name="device")
app.add_typer(bench_app, name="bench")
app.add_typer(log_app, name="log")
app.add_typer(companion_app, name="companion")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(policy_app, name="policy")
app.command("verify")(verify)
app.command("export")(export)
app.command("erase")(erase)
console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file.", exists=True, dir_okay=False),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where data and keys live.")]


def _settings(config: Path | None, data_dir: Path | None, **overrides: object) -> Settings:
    return Settings.load(config, data_dir=data_dir, **overrides)


def _run(runtime_settings: Settings, *, simulate: bool, duration: float | None) -> None:
    from msec.platform.runtime import Runtime

    runtime = Runtime(runtime_settings, simulate=simulate)
    signal.signal(signal.SIGTERM, lambda *_: runtime._stop.set())
    try:
        runtime.start()
        path = runtime.write_demo_file()
        console.print(
            f"[bold green]M-Sec platform running[/] at {runtime.url}  (API docs: "
            f"{runtime.url}/docs)"
        )
        console.print(
            f"MQTT broker: {runtime.mqtt_host}:{runtime.mqtt_port} "
            f"({runtime_settings.mqtt.broker}); accounts and tokens in {path}"
        )
        print(runtime.url, flush=True)
        runtime.wait(duration)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping…")
        runtime.stop()


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Data directory.")] = Path(
        "msec-data"
    ),
    port: Annotated[int, typer.Option("--port", help="HTTP port (0: any free).")] = 8080,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop cleanly after this many seconds.")
    ] = None,
) -> None:
    """Run every part on embedded defaults with Pilot 1's simulated park devices."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.load(None, data_dir=data_dir)
    settings.http.port = port
    _run(settings, simulate=True, duration=duration)


@app.command()
def serve(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", exists=True, dir_okay=False, help="TOML settings file."),
    ],
    duration: Annotated[float | None, typer.Option("--duration")] = None,
) -> None:
    """Run the platform (no simulators) against the services the settings name."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _run(Settings.load(config), simulate=False, duration=duration)


@app.command(hidden=True)
def worker(
    data_dir: Annotated[Path, typer.Option("--data-dir")],
    database_url: Annotated[str, typer.Option("--database-url")],
    mqtt_host: Annotated[str, typer.Option("--mqtt-host")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option("--mqtt-port")] = 1883,
    mqtt_username: Annotated[str, typer.Option("--mqtt-username")] = "",
    client_id: Annotated[str, typer.Option("--client-id")] = "msec-ingest-0",
    topic: Annotated[str, typer.Option("--topic")] = "msec/#",
    shared_group: Annotated[str | None, typer.Option("--shared-group")] = None,
    batch_max: Annotated[int, typer.Option("--batch-max")] = 1000,
    batch_wait_ms: Annotated[int, typer.Option("--batch-wait-ms")] = 20,
    mqtt_tls_ca: Annotated[str | None, typer.Option("--mqtt-tls-ca")] = None,
    commit_log: Annotated[Path | None, typer.Option("--commit-log", hidden=True)] = None,
) -> None:
    """One ingest worker process (started by serve/demo; password in MSEC_WORKER_MQTT_PASSWORD)."""
    from msec.ingest.worker import BrokerAddress, CommitLog, run_worker
    from msec.platform.platform import Platform

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    inherited = os.environ.pop("MSEC_WORKER_SETTINGS", None)
    if inherited:
        settings = Settings.model_validate_json(inherited)
    else:
        settings = Settings.load(None, data_dir=data_dir, database={"url": database_url})
    platform = Platform.open(settings)
    if commit_log is not None:
        platform.ingestor.on_stored = CommitLog(commit_log)
    broker = BrokerAddress(
        mqtt_host,
        mqtt_port,
        mqtt_username or None,
        os.environ.get("MSEC_WORKER_MQTT_PASSWORD") or None,
        mqtt_tls_ca,
    )
    try:
        run_worker(
            platform.ingestor,
            broker,
            client_id=client_id,
            topic=topic,
            shared_group=shared_group,
            batch_max=batch_max,
            batch_wait=batch_wait_ms / 1000,
            stats_path=settings.data_dir / "run" / f"worker-{client_id}.json",
        )
    finally:
        platform.close()


@device_app.command("add")
def device_add(
    name: Annotated[str, typer.Argument(help="Device (provider) name: a-z 0-9 _ -")],
    kind: Annotated[str, typer.Option("--kind", help="Device kind, e.g. environment_station.")],
    out: Annotated[Path, typer.Option("--out", help="Credentials file to write (0600).")],
    alg: Annotated[str, typer.Option("--alg", help="EdDSA (Ed25519) or HMAC256.")] = "EdDSA",
    encrypt: Annotated[
        bool, typer.Option("--encrypt/--no-encrypt", help="End-to-end AES-256-GCM payloads.")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    mqtt_host: Annotated[
        str, typer.Option("--mqtt-host", help="Broker the device uses.")
    ] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option("--mqtt-port")] = 1883,
    mqtt_username: Annotated[
        str | None, typer.Option("--mqtt-username", help="Broker account of the device.")
    ] = None,
    mqtt_password_env: Annotated[
        str | None,
        typer.Option(
            "--mqtt-password-env",
            help="Name of an environment variable holding the broker password (kept out of "
            "the shell history).",
        ),
    ] = None,
    mqtt_tls_ca: Annotated[
        str | None, typer.Option("--mqtt-tls-ca", help="CA certificate file: TLS to the broker.")
    ] = None,
    http_url: Annotated[
        str | None, typer.Option("--http-url", help="Platform URL for POST /api/v1/ingest.")
    ] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    latitude: Annotated[float | None, typer.Option("--latitude", min=-90, max=90)] = None,
    longitude: Annotated[float | None, typer.Option("--longitude", min=-180, max=180)] = None,
    subject: Annotated[
        str | None,
        typer.Option("--subject", help="Person whose data it records (sensitive readings)."),
    ] = None,
) -> None:
    """Register a device and write its credentials file (the platform keeps the public key)."""
    from msec.core.kinds import UnknownKind
    from msec.platform.platform import Platform
    from msec.registry.base import DuplicateDevice
    from msec.sdk.device import Endpoint

    if alg not in ("EdDSA", "HMAC256"):
        raise typer.BadParameter("use EdDSA or HMAC256", param_hint="--alg")
    platform = Platform.open(_settings(config, data_dir))
    try:
        password = None
        if mqtt_password_env:
            password = os.environ.get(mqtt_password_env)
            if password is None:
                raise ValueError(f"environment variable {mqtt_password_env} is not set")
        endpoint = Endpoint(
            mqtt_host, mqtt_port, mqtt_username, password, mqtt_tls_ca, http_url=http_url
        )
        platform.add_device(
            name,
            kind,
            alg=alg,
            encrypt=encrypt,  # type: ignore[arg-type]
            endpoint=endpoint,
            out=out,
            description=description,
            subject=subject,
            latitude=latitude,
            longitude=longitude,
        )
    except (DuplicateDevice, UnknownKind, FileExistsError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        platform.close()
    console.print(
        f"registered [bold]{name}[/] ({kind}, {alg}{', encrypted' if encrypt else ''});"
        f" credentials in {out}"
    )


@device_app.command("list")
def device_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List registered devices as JSON lines."""
    from msec.platform.platform import Platform

    platform = Platform.open(_settings(config, data_dir))
    for record in platform.registry.all():
        print(
            json.dumps(
                {
                    "name": record.name,
                    "kind": record.kind,
                    "tenant": record.tenant,
                    "alg": record.alg,
                    "encrypted": record.enc_key is not None,
                    "revoked": record.revoked,
                }
            )
        )
    platform.close()


@device_app.command("revoke")
def device_revoke(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Refuse a device's messages from now on (within the ingest cache TTL, 5 s)."""
    from msec.platform.platform import Platform

    platform = Platform.open(_settings(config, data_dir))
    found = platform.registry.revoke(name)
    platform.close()
    if not found:
        console.print(f"[red]error:[/] no device {name!r}")
        raise typer.Exit(2)
    console.print(f"revoked {name}")


@bench_app.command("ingest")
def bench_ingest(
    messages: Annotated[int, typer.Option("--messages", help="Readings to send.")] = 200_000,
    broker: Annotated[str, typer.Option("--broker", help="embedded or mosquitto")] = "mosquitto",
    workers: Annotated[int, typer.Option("--workers", min=1, max=16)] = 2,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            min=1,
            max=1000,
            help="Readings per envelope (a gateway's batch; 1 = one reading per message).",
        ),
    ] = 2,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Readings/s to offer (default: as fast as possible)."),
    ] = None,
    database: Annotated[str, typer.Option("--database", help="sqlite or postgresql")] = "sqlite",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Drive signed readings through a real broker into durable storage; print figures."""
    from msec.bench.ingest import run_ingest_bench

    if broker not in ("embedded", "mosquitto"):
        raise typer.BadParameter("embedded or mosquitto", param_hint="--broker")
    if database not in ("sqlite", "postgresql"):
        raise typer.BadParameter("sqlite or postgresql", param_hint="--database")
    result = run_ingest_bench(
        messages=messages,
        broker=broker,  # type: ignore[arg-type]
        workers=workers,
        batch=batch,
        rate=rate,
        database=database,
        progress=None if as_json else console,
    )
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            console.print(f"{key:>22}: {value}")


@bench_app.command("log")
def bench_log(
    leaves: Annotated[int, typer.Option("--leaves", min=1, help="Entries to append.")] = 200_000,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Entries per append.")] = 5_000,
    verify_records: Annotated[
        int | None,
        typer.Option("--verify-records", min=1, help="Readings for verify_s (default: --leaves)."),
    ] = None,
    peer: Annotated[bool, typer.Option("--peer/--no-peer", help="Also run pymerkle.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Durable log appends, proofs and a full verify, beside pymerkle's SqliteTree."""
    from msec.bench.log import run_log_bench

    result = run_log_bench(leaves=leaves, batch=batch, verify_records=verify_records, peer=peer)
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            console.print(f"{key:>26}: {value}")


@bench_app.command("access")
def bench_access(
    policies: Annotated[
        int, typer.Option("--policies", min=0, help="Policies over 10,000 providers.")
    ] = 100_000,
    decisions: Annotated[int, typer.Option("--decisions", min=1)] = 200_000,
    casbin_seconds: Annotated[
        float, typer.Option("--casbin-seconds", min=0.1, help="Time given to casbin.")
    ] = 20.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Policy decisions per second and their p99, beside casbin on the same workload."""
    from msec.bench.access import run_access_bench

    result = run_access_bench(policies=policies, decisions=decisions, casbin_seconds=casbin_seconds)
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            console.print(f"{key:>24}: {value}")


@bench_app.command("web")
def bench_web(
    users: Annotated[int, typer.Option("--users", min=1, help="Concurrent virtual users.")] = 50,
    duration: Annotated[
        float, typer.Option("--duration", min=1.0, help="Seconds measured, after the warm-up.")
    ] = 30.0,
    think_ms: Annotated[
        float,
        typer.Option(
            "--think-ms",
            min=0.0,
            help="Mean think time between page views (exponential; 0: closed loop, saturation).",
        ),
    ] = 1000.0,
    live_pages: Annotated[
        int, typer.Option("--live-pages", min=0, help="Stop pages holding a live stream open.")
    ] = 5,
    warmup: Annotated[float, typer.Option("--warmup", min=0.0, help="Seconds not measured.")] = 5.0,
    sim_interval: Annotated[float | None, typer.Option("--sim-interval", hidden=True)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Page latency and requests/s of citizens' and officers' pages with the demo's simulators
    running, and how fast live values reach an open page."""
    from msec.bench.web import run_web_bench

    result = run_web_bench(
        users=users,
        duration_s=duration,
        think_ms=think_ms,
        live_pages=live_pages,
        warmup_s=warmup,
        sim_interval_s=sim_interval,
        progress=None if as_json else console,
    )
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key == "pages":
                for page, figures in value.items():
                    console.print(f"{page:>30}: {figures['count']} requests, "
                                  f"p95 {figures['p95_ms']} ms")  # fmt: skip
            else:
                console.print(f"{key:>30}: {value}")


@bench_app.command("care")
def bench_care(
    homes: Annotated[int, typer.Option("--homes", min=1, help="Homes (five devices each).")] = 200,
    speed: Annotated[
        float, typer.Option("--speed", min=0.01, help="Simulated seconds per real second.")
    ] = 60.0,
    hours: Annotated[
        float,
        typer.Option(
            "--hours",
            min=1.0,
            max=24.0,
            help="Simulated span (all 7 incident kinds fit from 4.7 h on).",
        ),
    ] = 5.0,
    restart: Annotated[
        bool, typer.Option("--restart", help="Restart the platform in the middle of the run.")
    ] = False,
    incident_share: Annotated[
        float,
        typer.Option("--incident-share", min=0.0, max=1.0, help="Share of homes with an incident."),
    ] = 0.2,
    publishers: Annotated[
        int, typer.Option("--publishers", min=1, max=32, help="Device publisher processes.")
    ] = 2,
    broker: Annotated[str, typer.Option("--broker", help="mosquitto or embedded")] = "mosquitto",
    workers: Annotated[int, typer.Option("--workers", min=1, max=16)] = 2,
    database: Annotated[str, typer.Option("--database", help="sqlite or postgresql")] = "sqlite",
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="An empty database to use instead (SQLAlchemy URL)."),
    ] = None,
    poll_ms: Annotated[
        float, typer.Option("--poll-ms", min=1.0, help="How often the API is polled.")
    ] = 50.0,
    seed: Annotated[int, typer.Option("--seed", help="The simulator's seed.")] = 1,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Run in this new directory and leave it (for a look after)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Connected Care homes on simulated time through devices, MQTT, ingest, the companion
    store, the log and the alarm engine to the API: missed and false alarms, latency, loss."""
    from msec.bench.care import run_care_bench

    if broker not in ("embedded", "mosquitto"):
        raise typer.BadParameter("embedded or mosquitto", param_hint="--broker")
    if database not in ("sqlite", "postgresql"):
        raise typer.BadParameter("sqlite or postgresql", param_hint="--database")
    if restart and broker != "mosquitto":
        raise typer.BadParameter("--restart needs --broker mosquitto", param_hint="--restart")
    result = run_care_bench(
        homes=homes,
        speed=speed,
        hours=hours,
        restart=restart,
        incident_share=incident_share,
        publishers=publishers,
        broker=broker,
        workers=workers,
        database=database,
        database_url=database_url,
        poll_ms=poll_ms,
        seed=seed,
        keep=keep,
        progress=None if as_json else console,
    )
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            console.print(f"{key:>26}: {value}")
