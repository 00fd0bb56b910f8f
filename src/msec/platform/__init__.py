"""Settings and the Platform facade that wires each layer's backend."""

from msec.platform.platform import Platform
from msec.platform.settings import Settings

__all__ = ["Platform", "Settings"]
