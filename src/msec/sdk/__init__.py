"""Device SDK: identities, sealing readings as COSE, publishing them."""

from msec.sdk.device import Device, Endpoint

__all__ = ["Device", "Endpoint"]
