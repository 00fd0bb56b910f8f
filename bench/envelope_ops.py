"""Per-envelope costs on this machine: seal, verify, open (no broker, no storage).

    .venv/bin/python bench/envelope_ops.py

Prints operations per second for each algorithm the SDK offers, all measured in this run,
and the share of an envelope's ingest cost that signature verification takes. It explains
the ingest benchmark's figures: on a 2-core machine an Ed25519 verification is the largest
single cost of a message.
"""

from __future__ import annotations

import contextlib
import time

from msec.core.errors import Rejected
from msec.crypto import cose
from msec.crypto.envelope import decode_payload
from msec.sdk import Device

ROWS = [("environment", "temperature", 18.5), ("environment", "noise", 41.0)]


def rate(fn, seconds: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            fn()
        count += 100
    return count / (time.perf_counter() - start)


def main() -> None:
    results = {}
    for alg, encrypt in (("EdDSA", False), ("EdDSA", True), ("HMAC256", False)):
        device, record = Device.create("bench", "environment_station", alg=alg, encrypt=encrypt)
        data = device.seal(ROWS)
        label = f"{alg}{' + A256GCM' if encrypt else ''}"
        results[f"seal {label}"] = rate(lambda d=device: d.seal(ROWS))

        def open_envelope(data: bytes = data, record=record) -> None:  # type: ignore[no-untyped-def]
            outer = cose.parse_outer(data)
            if outer.tag == cose.TAG_SIGN1:
                cose.verify_sign1(outer, record.verify_key)
            else:
                cose.verify_mac0(outer, record.verify_key)
            payload = outer.payload
            if cose.is_encrypt0(payload):
                payload = cose.decrypt0(payload, kid="bench", key=record.enc_key)
            decode_payload(payload)

        results[f"open (parse + verify + decrypt + decode) {label}"] = rate(open_envelope)
        if alg == "EdDSA" and not encrypt:
            outer = cose.parse_outer(data)
            results["Ed25519 verify alone"] = rate(
                lambda o=outer, k=record.verify_key: cose.verify_sign1(o, k))
            tampered = bytearray(data)
            tampered[-1] ^= 1
            bad = cose.parse_outer(bytes(tampered))

            def refuse(o=bad, k=record.verify_key) -> None:  # type: ignore[no-untyped-def]
                with contextlib.suppress(Rejected):
                    cose.verify_sign1(o, k)

            results["Ed25519 refuse a forged signature"] = rate(refuse)
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:>10,.0f} /s  {1e6 / value:>7.1f} us")


if __name__ == "__main__":
    main()
