"""Secrets kept in the data dir with mode 0600: the key-encryption key and demo accounts.

Nothing here is ever logged. Back the ``keys/`` folder up with the database: without
``kek.key`` the wrapped device keys cannot be read (see docs/operations.md). A KMS-backed
key store is a later addition behind the same two functions.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def key_encryption_key(data_dir: Path) -> bytes:
    """The 32-byte KEK in ``<data_dir>/keys/kek.key``, created on first use."""
    path = data_dir / "keys" / "kek.key"
    if not path.exists():
        _write_private(path, secrets.token_bytes(32))
    data = path.read_bytes()
    if len(data) != 32:
        raise ValueError(f"{path} is not a 32-byte key")
    return data


def platform_secrets(data_dir: Path) -> dict[str, str]:
    """Generated accounts of this installation (``keys/secrets.json``), created on first use.

    Keys: ``operator_token`` (API bearer token of the operator role), ``mqtt_ingest`` and
    ``mqtt_device`` (passwords of the embedded broker's two accounts).
    """
    path = data_dir / "keys" / "secrets.json"
    if not path.exists():
        values = {
            "operator_token": secrets.token_urlsafe(32),
            "mqtt_ingest": secrets.token_urlsafe(24),
            "mqtt_device": secrets.token_urlsafe(24),
        }
        _write_private(path, json.dumps(values, indent=2).encode())
    return json.loads(path.read_text())


def log_signer_key(data_dir: Path, origin: str) -> str:
    """The transparency log's secret note key (``keys/log.key``), created on first use.

    A C2SP signer key string ``PRIVATE+KEY+<origin>+<id>+<base64>``; the caller parses it.
    Raises ``ValueError`` if the stored key belongs to another origin: a log's key and
    origin never change (the checkpoints signed so far would no longer verify).
    """
    from msec.tlog import NoteSigner

    path = data_dir / "keys" / "log.key"
    if not path.exists():
        _write_private(path, NoteSigner.generate(origin).to_string().encode())
    skey = path.read_text().strip()
    name = skey.removeprefix("PRIVATE+KEY+").split("+", 1)[0]
    if name != origin:
        raise ValueError(
            f"{path} is the key of log {name!r}, not {origin!r}: the log origin cannot change"
        )
    return skey


def write_private_json(path: Path, data: object) -> None:
    """Replace ``path`` with ``data`` as JSON, mode 0600 from the start (written, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    _write_private(tmp, json.dumps(data, indent=2).encode())
    os.replace(tmp, path)


def web_key(data_dir: Path) -> bytes:
    """The web front end's 32-byte secret (``keys/web.key``), created on first use: the root
    of its CSRF tokens and of the keyed hashes that find a login e-mail without storing it."""
    path = data_dir / "keys" / "web.key"
    if not path.exists():
        _write_private(path, secrets.token_bytes(32))
    data = path.read_bytes()
    if len(data) != 32:
        raise ValueError(f"{path} is not a 32-byte key")
    return data
