"""The digital twin: providers, their resources' latest values, and history."""

from msec.twin.base import ProviderInfo, Twin
from msec.twin.engine import make_engine
from msec.twin.sql import SqlTwin, UnknownProvider

__all__ = ["ProviderInfo", "SqlTwin", "Twin", "UnknownProvider", "make_engine"]
