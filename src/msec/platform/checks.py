"""The history of tamper checks (``msec verify`` runs), for operators and the pilots' KPIs.

Each run of ``msec verify`` (and each periodic check of a running platform, ``[log]
verify_every_s``) appends one JSON line to ``<data_dir>/verify/history.jsonl``: when, whether
the log was intact, its size and how many problems were found. The file is outside the
database on purpose: a verification opens the database read-only, and an attacker who
rewrites the database cannot also rewrite what earlier checks found without touching a
second file (keep a copy elsewhere to make that a second system).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

__all__ = ["CheckRecord", "TamperChecks"]

#: Lines kept when the file is compacted (about a year of hourly checks).
_KEEP: Final = 10_000


@dataclass(frozen=True, slots=True)
class CheckRecord:
    at: float
    ok: bool
    size: int
    problems: int
    elapsed_s: float
    by: str  # "cli" or "runtime"


class TamperChecks:
    """Appends and reads ``<data_dir>/verify/history.jsonl``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "verify" / "history.jsonl"

    def record(self, report: object, *, by: str, at: float | None = None) -> CheckRecord:
        """Append the outcome of one audit (an ``AuditReport``)."""
        entry = CheckRecord(
            time.time() if at is None else at,
            bool(getattr(report, "ok")),  # noqa: B009 - any report-shaped object
            int(getattr(report, "size", 0)),
            len(getattr(report, "problems", ())) + sum(getattr(report, "suppressed", {}).values()),
            round(float(getattr(report, "elapsed_s", 0.0)), 3),
            by,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = json.dumps(asdict(entry), separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line)
        return entry

    def history(self) -> list[CheckRecord]:
        """Every recorded check, oldest first; unreadable lines are skipped."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out: list[CheckRecord] = []
        for line in lines[-_KEEP:]:
            try:
                data = json.loads(line)
                out.append(CheckRecord(
                    float(data["at"]), bool(data["ok"]), int(data["size"]),
                    int(data["problems"]), float(data["elapsed_s"]), str(data["by"]),
                ))  # fmt: skip
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def summary(self) -> dict[str, object]:
        """``{"runs", "passed", "failed", "last_at", "last_ok"}`` over the history."""
        runs = self.history()
        passed = sum(1 for r in runs if r.ok)
        last = runs[-1] if runs else None
        return {
            "runs": len(runs),
            "passed": passed,
            "failed": len(runs) - passed,
            "last_at": last.at if last else None,
            "last_ok": last.ok if last else None,
        }
