"""The sealed envelope a device sends: a CBOR payload inside COSE (see docs/device-sdk.md).

Payload (a CBOR map, signed, optionally encrypted)::

    {"d": device name, "q": sequence number of the first reading, "t": seal time (epoch s),
     "r": [[service, resource, value], [service, resource, value, time], ...]}

Reading *i* has sequence number ``q + i``; a reading without its own time was taken at ``t``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cbor2

from msec.core.errors import Rejected, RejectReason
from msec.core.models import Value
from msec.crypto import cose

#: Largest envelope accepted anywhere (MQTT payload or HTTP body).
MAX_ENVELOPE_BYTES = 64 * 1024
#: Most readings one envelope may carry.
MAX_READINGS = 1000

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MAX_SEQ = 2**63 - 1

RawReading = tuple[str, str, Value] | tuple[str, str, Value, float]


@dataclass(frozen=True, slots=True)
class Payload:
    """A decoded, shape-checked envelope payload."""

    device: str
    seq: int
    time: float
    readings: tuple[tuple[str, str, Value, float], ...]

    @property
    def last_seq(self) -> int:
        return self.seq + len(self.readings) - 1


def encode_payload(device: str, seq: int, time: float, readings: Sequence[RawReading]) -> bytes:
    """CBOR-encode a payload; the caller validates names and values (the platform re-checks)."""
    rows = [list(r) for r in readings]
    return cbor2.dumps({"d": device, "q": seq, "t": time, "r": rows})


def seal(
    payload: bytes,
    *,
    kid: str,
    signing_key: bytes | None = None,
    mac_key: bytes | None = None,
    enc_key: bytes | None = None,
) -> bytes:
    """Seal an encoded payload: optional Encrypt0 inside Sign1 (``signing_key``) or Mac0."""
    inner = cose.encrypt0(payload, kid=kid, key=enc_key) if enc_key is not None else payload
    if signing_key is not None:
        return cose.sign1(inner, kid=kid, signing_key=signing_key)
    if mac_key is not None:
        return cose.mac0(inner, kid=kid, mac_key=mac_key)
    raise ValueError("seal needs a signing_key or a mac_key")


def decode_payload(data: bytes) -> Payload:
    """Decode and shape-check a payload; raises :class:`Rejected` (``malformed``/``schema``)."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:
        raise Rejected(RejectReason.MALFORMED, f"payload not CBOR: {type(exc).__name__}") from None
    if not isinstance(obj, Mapping):
        raise Rejected(RejectReason.MALFORMED, "payload is not a CBOR map")
    device, seq, time, rows = obj.get("d"), obj.get("q"), obj.get("t"), obj.get("r")
    if not isinstance(device, str) or not NAME_RE.match(device):
        raise Rejected(RejectReason.MALFORMED, "payload 'd' is not a device name")
    if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
        raise Rejected(RejectReason.MALFORMED, "payload 'q' is not a sequence number")
    if not _is_time(time):
        raise Rejected(RejectReason.MALFORMED, "payload 't' is not a time")
    if not isinstance(rows, list | tuple) or not 0 < len(rows) <= MAX_READINGS:
        raise Rejected(RejectReason.MALFORMED, f"payload 'r' must hold 1..{MAX_READINGS} readings")
    if seq + len(rows) - 1 > _MAX_SEQ:
        raise Rejected(RejectReason.MALFORMED, "sequence numbers overflow")
    readings = []
    envelope_time = float(time)
    valid = _VALID_PAIRS
    for row in rows:
        if type(row) not in (list, tuple) or len(row) not in (3, 4):
            raise Rejected(
                RejectReason.MALFORMED, "a reading must be [service, resource, value(, time)]"
            )
        service, resource, value = row[0], row[1], row[2]
        # The same few names arrive millions of times: check each pair once (~2 µs saved).
        if (service, resource) not in valid:
            _check_names(service, resource)
        if type(value) not in _VALUE_TYPES:
            raise Rejected(
                RejectReason.SCHEMA, f"{service}/{resource}: value of type {type(value).__name__}"
            )
        if len(row) == 4:
            at = row[3]
            if not _is_time(at):
                raise Rejected(RejectReason.MALFORMED, f"{service}/{resource}: time is not a time")
            readings.append((service, resource, value, float(at)))
        else:
            readings.append((service, resource, value, envelope_time))
    return Payload(device, seq, envelope_time, tuple(readings))


_VALUE_TYPES = frozenset((float, int, bool, str))
_VALID_PAIRS: set[tuple[str, str]] = set()
_VALID_PAIRS_MAX = 10_000


def _check_names(service: object, resource: object) -> None:
    if not isinstance(service, str) or not NAME_RE.match(service):
        raise Rejected(RejectReason.SCHEMA, "reading service is not a valid name")
    if not isinstance(resource, str) or not NAME_RE.match(resource):
        raise Rejected(RejectReason.SCHEMA, "reading resource is not a valid name")
    if len(_VALID_PAIRS) < _VALID_PAIRS_MAX:  # bounded: hostile input cannot grow it forever
        _VALID_PAIRS.add((service, resource))


def _is_time(value: object) -> bool:
    return (
        type(value) in (int, float)
        and math.isfinite(value)  # type: ignore[arg-type]
        and 0 <= value < 2**40  # type: ignore[operator]
    )
