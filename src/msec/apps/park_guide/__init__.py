"""Pilot 1, the Park Guide: Las Llamas park's stops, citizens' ratings, points and notices.

:mod:`~msec.apps.park_guide.park` holds the park's layout and the verdicts shown to
citizens; :mod:`~msec.apps.park_guide.store` the guide's own data (participants, visits,
ratings, trust scores, thresholds and notices) on the platform database.
"""

from msec.apps.park_guide.park import (
    LANGUAGES,
    MEASUREMENTS,
    Park,
    ParkConfigError,
    Stop,
    Verdict,
    default_park,
    load_park,
    measurement_of,
    verdict,
)
from msec.apps.park_guide.store import (
    FLAGS,
    RATING_POINTS,
    VISIT_POINTS,
    InvalidRating,
    InvalidThreshold,
    LeaderboardEntry,
    Notice,
    Observation,
    Participant,
    Rating,
    SqlParkStore,
    Threshold,
    TrustScore,
    UnknownParticipant,
)

__all__ = [
    "FLAGS",
    "LANGUAGES",
    "MEASUREMENTS",
    "RATING_POINTS",
    "VISIT_POINTS",
    "InvalidRating",
    "InvalidThreshold",
    "LeaderboardEntry",
    "Notice",
    "Observation",
    "Park",
    "ParkConfigError",
    "Participant",
    "Rating",
    "SqlParkStore",
    "Stop",
    "Threshold",
    "TrustScore",
    "UnknownParticipant",
    "Verdict",
    "default_park",
    "load_park",
    "measurement_of",
    "verdict",
]
