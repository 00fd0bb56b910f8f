"""The running platform's periodic tamper check, in a process of its own.

A full audit (:meth:`msec.tlog.trust.TrustLog.verify`, what ``msec verify`` runs) reads and
hashes every leaf: about 70 µs a leaf, so minutes of CPU once the log holds millions of
readings. Run in the server's process it would hold the interpreter lock that long, and the
API, the apps' engines and the checkpointer would wait behind it. :func:`audit_in_child`
runs it in a fresh (``spawn``) process that opens the installation read-only, as ``msec
verify`` does, at a lower CPU priority (``nice``), spending at most ``[log] verify_share``
of the wall time reading (:class:`~msec.tlog.audit.Pace`), and hands the report back.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

from msec.platform.settings import Settings
from msec.tlog.audit import AuditReport, Pace

__all__ = ["TamperCheckFailed", "audit_in_child"]

log = logging.getLogger(__name__)

#: How much lower the check's CPU priority is than the server's.
NICE = 10


class TamperCheckFailed(RuntimeError):
    """The check could not run (the database away, the process killed): not tampering."""


def audit_in_child(
    settings: Settings, stop: threading.Event | None = None, *, nice: int = NICE
) -> AuditReport | None:
    """The audit of the installation ``settings`` describes, computed in a child process.

    ``None`` when ``stop`` was set meanwhile (the child is then terminated). Raises
    :class:`TamperCheckFailed` when the audit could not be run.
    """
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_audit, args=(settings, send, nice), name="msec-tamper-check", daemon=True
    )
    child.start()
    send.close()
    try:
        while True:
            if receive.poll(0.2):
                try:
                    outcome, value = receive.recv()
                except EOFError:  # it died without a word
                    child.join(5)
                    raise TamperCheckFailed(
                        f"the check's process ended (exit code {child.exitcode})"
                    ) from None
                if outcome == "report":
                    return value  # type: ignore[no-any-return]
                raise TamperCheckFailed(str(value))
            if stop is not None and stop.is_set():
                return None
            if not child.is_alive() and not receive.poll():
                raise TamperCheckFailed(f"the check's process ended (exit code {child.exitcode})")
    finally:
        receive.close()
        if child.is_alive():
            child.terminate()
        child.join(5)


def _audit(settings: Settings, send: Connection, nice: int) -> None:
    """In the child: open the installation without changing it, audit, send the report."""
    from msec.platform.platform import Platform

    with contextlib.suppress(OSError):
        os.nice(nice)
    result: tuple[str, Any]
    try:
        platform = Platform.open(settings, create=False)
        try:
            pace = Pace(share=settings.log.verify_share)
            result = ("report", platform.trust.verify(pace=pace))
        finally:
            platform.close()
    except Exception as exc:
        result = ("error", f"{type(exc).__name__}: {exc}")
    send.send(result)
    send.close()
