"""Ingest: from a sealed envelope on a transport to durable readings in the twin."""

from msec.ingest.pipeline import REPLAY_WINDOW, Incoming, Ingestor, Outcome, Stats

__all__ = ["REPLAY_WINDOW", "Incoming", "Ingestor", "Outcome", "Stats"]
