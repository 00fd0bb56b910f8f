"""Key generation for devices."""

from __future__ import annotations

import os

import nacl.bindings


def new_ed25519() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair: ``(public key, 32 bytes; secret key, 64 bytes)`` (libsodium)."""
    public, secret = nacl.bindings.crypto_sign_keypair()
    return public, secret


def new_symmetric_key() -> bytes:
    """A fresh 256-bit key for HMAC-SHA256 or AES-256-GCM."""
    return os.urandom(32)
