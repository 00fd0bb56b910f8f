"""Envelope cryptography: COSE Sign1 / Mac0 / Encrypt0 and key generation."""

from msec.crypto.cose import (
    Outer,
    decrypt0,
    encrypt0,
    is_encrypt0,
    mac0,
    parse_outer,
    sign1,
    verify_mac0,
    verify_sign1,
)
from msec.crypto.keys import new_ed25519, new_symmetric_key

__all__ = [
    "Outer",
    "decrypt0",
    "encrypt0",
    "is_encrypt0",
    "mac0",
    "new_ed25519",
    "new_symmetric_key",
    "parse_outer",
    "sign1",
    "verify_mac0",
    "verify_sign1",
]
