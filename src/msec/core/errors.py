"""Errors shared by all layers."""

from __future__ import annotations

from enum import StrEnum


class MsecError(Exception):
    """Base class of every error the platform raises on purpose."""


class RejectReason(StrEnum):
    """Why an incoming message was refused; each becomes a security event."""

    BAD_SIGNATURE = "bad_signature"
    REPLAY = "replay"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED_DEVICE = "revoked_device"
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    OUT_OF_RANGE = "out_of_range"
    SCHEMA = "schema"
    DECRYPT_FAILED = "decrypt_failed"
    BAD_TIMESTAMP = "bad_timestamp"
    TOPIC_MISMATCH = "topic_mismatch"


class Rejected(MsecError):
    """A message failed a check; ``reason`` names which, ``detail`` says what was seen.

    ``detail`` never contains key material or plaintext of an encrypted payload.
    """

    def __init__(self, reason: RejectReason, detail: str, *, device: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.device = device
