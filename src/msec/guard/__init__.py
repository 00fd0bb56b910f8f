"""Security events: everything the platform refused or found suspicious."""

from msec.guard.base import EventLog
from msec.guard.sql import MAX_DETAIL, SqlEventLog

__all__ = ["MAX_DETAIL", "EventLog", "SqlEventLog"]
