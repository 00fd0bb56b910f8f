"""Scoring alarms against the simulator's ground truth: missed incidents, false positives.

An incident is **missed** unless every alarm kind it expects was raised for its home between
its start and ``start + detect_within_s``. An alarm is a **false positive** unless some
incident of its home expects its kind and the alarm came within that incident's window.
Used by the ground-truth tests and by ``msec bench care``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from msec.apps.care.model import AlarmKind, Incident

__all__ = ["Score", "score"]


@dataclass
class Score:
    incidents: int = 0
    alarms: int = 0
    missed: list[tuple[Incident, AlarmKind]] = field(default_factory=list)
    false_positives: list[tuple[str, AlarmKind, float]] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)  # alarm time - incident start, s


def score(incidents: Iterable[Incident], alarms: Iterable[tuple[str, AlarmKind, float]]) -> Score:
    """Match ``alarms`` ((home, kind, at)) to ``incidents``."""
    result = Score()
    by_home: dict[str, list[Incident]] = defaultdict(list)
    for incident in incidents:
        by_home[incident.home].append(incident)
        result.incidents += 1
    raised: dict[str, list[tuple[AlarmKind, float]]] = defaultdict(list)
    for home, kind, at in alarms:
        raised[home].append((kind, at))
        result.alarms += 1
        explained = any(
            kind in i.expects and i.start <= at <= i.start + i.detect_within_s
            for i in by_home.get(home, ())
        )
        if not explained:
            result.false_positives.append((home, kind, at))
    for home, incidents_of in by_home.items():
        for incident in incidents_of:
            for kind in incident.expects:
                hits = [at for k, at in raised.get(home, ())
                        if k == kind and incident.start <= at <= incident.start
                        + incident.detect_within_s]  # fmt: skip
                if hits:
                    result.delays.append(min(hits) - incident.start)
                else:
                    result.missed.append((incident, kind))
    return result
