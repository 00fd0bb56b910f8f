"""Small durable counters beside a credentials file (sequence numbers, highest command)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_int", "write_int"]


def read_int(path: Path) -> int:
    """The integer stored in ``path``, 0 if there is no file yet."""
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0


def write_int(path: Path, value: int) -> None:
    """Replace ``path`` with ``value`` durably: written, fsynced, then renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(str(value))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
