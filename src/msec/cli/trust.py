"""``msec verify``, ``log``, ``export``, ``erase``, ``companion``: the trust layer's commands."""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from msec.core.errors import MsecError
from msec.platform.checks import TamperChecks
from msec.platform.settings import Settings

log_app = typer.Typer(help="The transparency log: its key and checkpoints.", no_args_is_help=True)
console = Console(stderr=True)

EXIT_INTACT, EXIT_TAMPERED, EXIT_ERROR = 0, 1, 2

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file.", exists=True, dir_okay=False),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where data and keys live.")]


def _open(config: Path | None, data_dir: Path | None) -> Any:
    """The installation, opened without creating anything; exit 2 if it cannot be."""
    from msec.platform.platform import Platform

    try:
        return Platform.open(Settings.load(config, data_dir=data_dir), create=False)
    except (MsecError, OSError, ValueError) as exc:
        _fail(f"cannot open the installation: {exc}")


def verify(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON report on stdout.")
    ] = False,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            "--witness",
            help="Extra witness checkpoint file(s) to check against (besides the configured one).",
            dir_okay=False,
        ),
    ] = None,
    no_chain: Annotated[
        bool, typer.Option("--no-chain", help="Do not read the anchors from the chain.")
    ] = False,
    update_witness: Annotated[
        Path | None,
        typer.Option(
            "--update-witness",
            help="When intact, write the newest checkpoint to this file (your own witness).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Recompute every leaf from storage and check the whole log and its checkpoints.

    Exit 0 when intact, 1 when anything was modified, deleted, inserted, reordered or rolled
    back (each problem named), 2 on usage or I/O errors.
    """
    from msec.tlog.audit import ExternalCheckpoint

    platform = _open(config, data_dir)
    try:
        trust = platform.trust
        external: list[ExternalCheckpoint] = []
        for path in [trust.witness_file, *(witness or [])]:
            try:
                note = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                if path != trust.witness_file:
                    _fail(f"no witness file {path}")
                continue
            except (OSError, UnicodeDecodeError) as exc:
                _fail(f"cannot read the witness file {path}: {exc}")
            external.append(ExternalCheckpoint(f"witness {path}", note=note))
        if not no_chain:
            try:
                chain = platform.anchor_chain()
                if chain is not None:
                    external += trust.anchored(chain)
            except MsecError as exc:
                _fail(f"cannot read the anchors ({exc}); --no-chain skips them")
        interactive = sys.stderr.isatty() and not as_json
        progress = (
            Progress(
                TextColumn("verifying"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,} leaves"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            if interactive
            else None
        )
        with progress or nullcontext():
            task = progress.add_task("verify", total=None) if progress else None

            def advance(done: int, total: int) -> None:
                if progress is not None and task is not None:
                    progress.update(task, completed=done, total=total)

            try:
                report = trust.verify(external=external, progress=advance)
            except Exception as exc:  # a database error: I/O, not tampering
                _fail(f"reading the database failed: {type(exc).__name__}: {exc}")
        try:
            TamperChecks(platform.settings.data_dir).record(report, by="cli")
        except OSError as exc:  # a read-only data dir: the check itself still counts
            print(f"note: the check was not recorded: {exc}", file=sys.stderr)
        if report.ok and update_witness is not None:
            note = trust.log.latest_checkpoint()
            if note is not None:
                trust.write_witness(note, update_witness)
    finally:
        platform.close()
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        _print_report(report)
    raise typer.Exit(EXIT_INTACT if report.ok else EXIT_TAMPERED)


def _print_report(report: Any) -> None:
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(report.by_kind.items())) or "none"
    console.print(
        f"{report.size:,} leaves ({kinds}); {report.tiles:,} tiles; "
        f"{report.checkpoints} checkpoints; {report.external} external checkpoints; "
        f"{report.erased} erased records; {report.elapsed_s:.1f} s"
    )
    if report.ok:
        console.print("[bold green]intact[/]: every leaf, tile and checkpoint matches storage")
        return
    for problem in report.problems:
        where = []
        if problem.index is not None:
            where.append(f"leaf {problem.index}")
        if problem.ref is not None:
            where.append(problem.ref)
        place = f" ({', '.join(where)})" if where else ""
        console.print(f"[bold red]{problem.what}[/]{place}: {problem.detail}")
    for what, count in report.suppressed.items():
        console.print(f"[bold red]{what}[/]: {count} more not listed")
    console.print("[bold red]NOT intact[/]")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(EXIT_ERROR)


@log_app.command("key")
def log_key(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Print the log's verifier key (C2SP note format ``<name>+<hex id>+<base64>``)."""
    platform = _open(config, data_dir)
    try:
        print(platform.trust.verifier_key())
    finally:
        platform.close()


@log_app.command("checkpoint")
def log_checkpoint(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Print the newest signed checkpoint (signing one if the log grew since)."""
    from msec.tlog import LogError

    platform = _open(config, data_dir)
    try:
        sys.stdout.write(platform.trust.latest())
    except LogError as exc:
        _fail(str(exc))
    finally:
        platform.close()


companion_app = typer.Typer(
    help="The companion store of sensitive subjects' records.", no_args_is_help=True
)


def export(
    subject: Annotated[str, typer.Argument(help="The subject's name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here (mode 0600), not stdout.")
    ] = None,
) -> None:
    """Write everything stored about SUBJECT as JSON (data portability)."""
    from msec.companion import CompanionError

    platform = _open(config, data_dir)
    try:
        data = platform.export_subject(subject)
    except CompanionError as exc:
        _fail(str(exc))
    finally:
        platform.close()
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _fail(f"{out} exists: refusing to overwrite it")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    console.print(f"exported {len(data.get('records', []))} records of {subject} to {out}")


def erase(
    subject: Annotated[str, typer.Argument(help="The subject's name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (stored in clear: no personal data).")
    ] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase SUBJECT: destroy its data key, delete its records, log the erasure."""
    from msec.companion import CompanionError

    if not yes and not typer.confirm(f"Erase every record of {subject!r}? This cannot be undone"):
        raise typer.Exit(EXIT_ERROR)
    platform = _open(config, data_dir)
    try:
        erasure = platform.erase_subject(subject, reason=reason)
    except CompanionError as exc:
        _fail(str(exc))
    finally:
        platform.close()
    console.print(
        f"erased {erasure.record_count} records of {subject}; erasure logged at leaf "
        f"{erasure.leaf_index} (subject id {erasure.subject_id})"
    )


@companion_app.command("rotate-kek")
def rotate_kek(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    destroy_old: Annotated[
        bool, typer.Option("--destroy-old", help="Delete the old key file afterwards.")
    ] = False,
) -> None:
    """Re-wrap every subject's data key under a new key-encryption key file."""
    platform = _open(config, data_dir)
    try:
        count = platform.rotate_companion_kek(destroy_old=destroy_old)
    finally:
        platform.close()
    console.print(f"re-wrapped {count} data keys under a new keys/companion.kek")
