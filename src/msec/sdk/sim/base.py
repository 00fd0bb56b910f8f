"""What every pilot's simulator shares: where a simulated device stands, and seeded smooth noise.

A simulator is a pure function of ``(seed, device, t)``: no hidden state, so a sample can be
taken again, out of order or from another process and come out the same.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class SimDevice:
    """One simulated device: its provider name, its kind, and where it stands.

    ``name`` is the provider name the device publishes under (lowercase, ``-`` and ``_``
    allowed); ``kind`` names a registered :class:`msec.core.kinds.DeviceKind`; ``area`` is the
    spot of its pilot site it describes (the simulator's own vocabulary, lowercase snake_case).
    """

    name: str
    kind: str
    area: str
    latitude: float
    longitude: float
    description: str


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class SmoothNoise:
    """Deterministic noise that is a pure function of ``(seed, key, t)``.

    The same seed gives the same values on every machine and every run (keys are hashed
    with BLAKE2b, not Python's randomised ``hash``). :meth:`smooth` is continuous in ``t``
    with a bounded slope, so consecutive samples stay close; :meth:`uniform` gives one
    independent draw per ``(key, slot)`` for discrete events (an outing, a spike, a swap).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._keys: dict[str, int] = {}
        # The knots last used per (key, period, octave): samples close in time share them.
        self._knots: dict[tuple[str, float, int], tuple[int, float, float]] = {}

    def _key(self, key: str) -> int:
        h = self._keys.get(key)
        if h is None:
            digest = hashlib.blake2b(f"{self.seed}\x00{key}".encode(), digest_size=8).digest()
            h = self._keys[key] = int.from_bytes(digest, "little")
        return h

    def uniform(self, key: str, slot: int) -> float:
        """An independent draw in ``[0, 1)`` for ``key`` and integer ``slot``."""
        return (_mix(self._key(key) ^ (slot & _MASK)) >> 11) * (1.0 / (1 << 53))

    def smooth(self, key: str, t: float, period: float, octaves: int = 1) -> float:
        """Smooth noise in ``[-1, 1]`` that wanders on a time scale of ``period`` seconds.

        Values are drawn at knots ``period`` apart and joined by smoothstep, so the slope is
        at most ``3 / period`` per second. Each further octave halves the period and the
        amplitude (finer detail); the sum is scaled back into ``[-1, 1]``.
        """
        total = 0.0
        weight = 1.0
        norm = 0.0
        for octave in range(octaves):
            x = t / period
            k = math.floor(x)
            memo = (key, period, octave)
            knots = self._knots.get(memo)
            if knots is None or knots[0] != k:
                name = f"{key}#{octave}"
                knots = self._knots[memo] = (k, self.uniform(name, k), self.uniform(name, k + 1))
            _, a, b = knots
            u = x - k
            u = u * u * (3.0 - 2.0 * u)
            total += weight * (2.0 * (a + (b - a) * u) - 1.0)
            norm += weight
            weight *= 0.5
            period *= 0.5
        return total / norm
