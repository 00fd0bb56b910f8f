"""The Park Guide's own data on SQL: participants, visits, ratings, points, thresholds, notices.

:class:`SqlParkStore` keeps them in the platform database (SQLAlchemy Core, SQLite or
PostgreSQL, same behaviour) in the ``park_`` tables. What it guarantees:

* **Pseudonyms only.** A participant is known to other citizens by a random pseudonym
  ("Heron-4821"); nothing this store returns for the public (:meth:`~SqlParkStore.leaderboard`,
  :meth:`~SqlParkStore.trust_score`) carries a user id.
* **Leaving erases.** :meth:`~SqlParkStore.leave` deletes the participant, their visits and
  points, and strips their user id and comment from their ratings, in one transaction. The
  stars and flags stay (anonymous), so a device's trust score does not jump when one of its
  raters leaves.
* **One write at a time.** Every write is one transaction that takes the store's write lock
  first (SQLite ``BEGIN IMMEDIATE``, a transaction-level advisory lock on PostgreSQL), so
  "first visit of the day", "first rating of this reading" and "no notice open yet" are
  decided exactly even with several threads or processes. Safe to share between threads.
* **Time is a parameter.** Every method where time matters takes ``at`` (epoch seconds,
  default now), so that callers and tests decide what "now" is.

The store checks what it is given (:class:`InvalidRating`, :class:`InvalidThreshold`,
``ValueError``) but not that a stop, a device or a reading exists: the caller knows the park
and the twin. Database failures propagate as ``sqlalchemy.exc`` errors and leave nothing of
the call stored.
"""

from __future__ import annotations

import math
import re
import secrets
import time
import unicodedata
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, Literal

import sqlalchemy as sa

from msec.apps.park_guide.park import LANGUAGES, MEASUREMENTS
from msec.core.errors import MsecError
from msec.twin.engine import locked_transaction

__all__ = [
    "FLAGS",
    "MAX_COMMENT",
    "PRIOR_MEAN",
    "PRIOR_WEIGHT",
    "RATING_POINTS",
    "TRUST_WINDOW_S",
    "VISIT_POINTS",
    "InvalidRating",
    "InvalidThreshold",
    "LeaderboardEntry",
    "Notice",
    "Observation",
    "Participant",
    "Rating",
    "SqlParkStore",
    "Threshold",
    "TrustScore",
    "UnknownParticipant",
]

#: Points for the first visit of a stop on a (UTC) day.
VISIT_POINTS: Final = 10
#: Points for rating a reading (once per reading: changing the rating earns nothing).
RATING_POINTS: Final = 5
#: What a citizen can say is wrong with a reading. Stored as a bit mask, bit i = FLAGS[i]:
#: append new flags, never reorder.
FLAGS: Final = ("seems_wrong", "stale", "too_high", "too_low", "sensor_damaged")
#: Longest comment kept on a rating (characters, after stripping).
MAX_COMMENT: Final = 500
#: Ratings older than this (seconds) no longer count for a device's trust score.
TRUST_WINDOW_S: Final = 30 * 86_400.0
#: The trust score's prior: every device starts as if it had PRIOR_WEIGHT ratings of PRIOR_MEAN.
PRIOR_MEAN: Final = 4.0
PRIOR_WEIGHT: Final = 5

_DAY: Final = 86_400
_MAX_NAME: Final = 64
_MAX_USER: Final = 200
_MAX_FLAGS: Final = 5
_SLUG: Final = re.compile(r"[a-z0-9_]+")
_BIT: Final = {flag: 1 << i for i, flag in enumerate(FLAGS)}
# A rating with either of these says the device itself is wrong, not just one reading.
_DISTRUST: Final = _BIT["seems_wrong"] | _BIT["sensor_damaged"]
_PENALTY: Final = 0.5
# The store's pg_advisory_xact_lock key: "MSECPARK" in ASCII, unlikely to meet another's.
_PG_LOCK_KEY: Final = 0x4D5345435041524B

# Animals and plants of Las Llamas park and its lagoon: pseudonyms are "<Name>-<4 digits>".
_PSEUDONYM_NAMES: Final = (
    "Heron", "Egret", "Duck", "Mallard", "Swan", "Coot", "Moorhen", "Grebe", "Kingfisher",
    "Cormorant", "Gull", "Robin", "Blackbird", "Sparrow", "Finch", "Wren", "Magpie", "Swift",
    "Warbler", "Dragonfly", "Butterfly", "Ladybird", "Squirrel", "Hedgehog", "Frog", "Toad",
    "Newt", "Turtle", "Oak", "Willow", "Alder", "Ash", "Poplar", "Magnolia", "Camellia",
    "Hydrangea", "Fern", "Reed", "Iris", "Lily", "Daisy", "Clover", "Poppy",
)  # fmt: skip

metadata = sa.MetaData()

participants_table = sa.Table(
    "park_participants",
    metadata,
    sa.Column("user_id", sa.String(_MAX_USER), primary_key=True),
    sa.Column("pseudonym", sa.String(32), nullable=False, unique=True),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("joined", sa.Double, nullable=False),
    sa.Column("points", sa.Integer, nullable=False),
    sa.Index("ix_park_participants_points", "points"),
)

# One row per participant, stop and UTC day: bounded however often a QR code is scanned.
visits_table = sa.Table(
    "park_visits",
    metadata,
    sa.Column("user_id", sa.String(_MAX_USER), primary_key=True),
    sa.Column("stop", sa.Integer, primary_key=True),
    sa.Column("day", sa.Integer, primary_key=True),  # UTC days since the epoch
    sa.Column("first_at", sa.Double, nullable=False),
    sa.Column("last_at", sa.Double, nullable=False),
    sa.Column("points", sa.Integer, nullable=False),
    sa.Index("ix_park_visits_last_at", "last_at"),
)

ratings_table = sa.Table(
    "park_ratings",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("user_id", sa.String(_MAX_USER)),  # NULL once the rater has left
    sa.Column("provider", sa.String(_MAX_NAME), nullable=False),
    sa.Column("service", sa.String(_MAX_NAME), nullable=False),
    sa.Column("resource", sa.String(_MAX_NAME), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("stars", sa.SmallInteger, nullable=False),
    sa.Column("flags", sa.Integer, nullable=False),  # bit mask over FLAGS
    sa.Column("comment", sa.Text),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
    sa.Column("points", sa.Integer, nullable=False),
    # NULLs are distinct: anonymous ratings never collide.
    sa.UniqueConstraint("user_id", "provider", "service", "resource", "seq"),
    sa.Index("ix_park_ratings_provider_created", "provider", "created"),
    sa.Index("ix_park_ratings_created", "created"),
    sa.Index("ix_park_ratings_updated", "updated"),
)

thresholds_table = sa.Table(
    "park_thresholds",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("area", sa.String(_MAX_NAME), nullable=False),  # a stop's area, or "*"
    sa.Column("measurement", sa.String(16), nullable=False),
    sa.Column("op", sa.String(1), nullable=False),
    sa.Column("value", sa.Double, nullable=False),
    sa.Column("created_by", sa.String(_MAX_USER), nullable=False),
    sa.Column("created", sa.Double, nullable=False),
)

# Notices outlive their threshold (history), so threshold_id is no foreign key.
notices_table = sa.Table(
    "park_notices",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("threshold_id", sa.BigInteger, nullable=False),
    sa.Column("area", sa.String(_MAX_NAME), nullable=False),
    sa.Column("provider", sa.String(_MAX_NAME), nullable=False),
    sa.Column("measurement", sa.String(16), nullable=False),
    sa.Column("op", sa.String(1), nullable=False),
    sa.Column("limit", sa.Double, nullable=False),
    sa.Column("value", sa.Double, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("raised_at", sa.Double, nullable=False),
    sa.Column("cleared_at", sa.Double),
    sa.Column("acknowledged_by", sa.String(_MAX_USER)),
    sa.Column("acknowledged_at", sa.Double),
    # At most one open notice per threshold and device.
    sa.Index(
        "ux_park_notices_open",
        "threshold_id",
        "provider",
        unique=True,
        sqlite_where=sa.text("cleared_at IS NULL"),
        postgresql_where=sa.text("cleared_at IS NULL"),
    ),
)


class UnknownParticipant(MsecError, KeyError):
    """The user has not joined the guide (or has left it)."""


class InvalidRating(MsecError, ValueError):
    """A rating breaks a rule; the message says which, in words fit for the citizen."""


class InvalidThreshold(MsecError, ValueError):
    """A threshold breaks a rule; the message says which."""


@dataclass(frozen=True, slots=True)
class Participant:
    user_id: str
    pseudonym: str
    joined: float
    language: str


@dataclass(frozen=True, slots=True)
class Rating:
    """A citizen's rating of one reading. ``user_id`` is ``None`` once the rater has left;
    ``points_awarded`` is what the rating earned when first given (0 when it replaced one)."""

    id: int
    user_id: str | None
    provider: str
    service: str
    resource: str
    seq: int
    stars: int
    flags: tuple[str, ...]
    comment: str
    created: float
    points_awarded: int


@dataclass(frozen=True, slots=True)
class TrustScore:
    """How far citizens trust a device: ``score`` 0..100 (see :meth:`SqlParkStore.trust_score`),
    from ``ratings`` ratings of mean ``mean_stars`` (``None`` without any); ``flags`` counts
    the ratings carrying each of :data:`FLAGS` (every flag present, 0 if none)."""

    provider: str
    score: float
    ratings: int
    mean_stars: float | None
    flags: dict[str, int]


@dataclass(frozen=True, slots=True)
class LeaderboardEntry:
    rank: int
    pseudonym: str
    points: int


@dataclass(frozen=True, slots=True)
class Threshold:
    """Raise a notice when ``measurement`` in ``area`` (``"*"``: any) is ``op`` ``value``."""

    id: int
    area: str
    measurement: str
    op: Literal[">", "<"]
    value: float
    created_by: str
    created: float


@dataclass(frozen=True, slots=True)
class Observation:
    """One reading as :meth:`SqlParkStore.evaluate` sees it: a device's ``measurement`` (a key
    of :data:`~msec.apps.park_guide.park.MEASUREMENTS`) in ``area``."""

    provider: str
    area: str
    measurement: str
    value: float
    timestamp: float
    seq: int


@dataclass(frozen=True, slots=True)
class Notice:
    """A threshold crossed by one device: open until ``cleared_at`` is set.

    ``area`` is where it happened (never ``"*"``); ``limit`` the threshold's value when it
    was raised, ``value`` and ``seq`` the reading that crossed it."""

    id: int
    threshold_id: int
    area: str
    provider: str
    measurement: str
    op: str
    limit: float
    value: float
    seq: int
    raised_at: float
    cleared_at: float | None
    acknowledged_by: str | None
    acknowledged_at: float | None


class SqlParkStore:
    """The Park Guide's store on a SQLAlchemy engine (SQLite or PostgreSQL).

    Build the engine with :func:`msec.twin.make_engine` and call :meth:`create_schema` once.
    """

    def __init__(self, engine: sa.Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise MsecError(
                f"SqlParkStore supports sqlite and postgresql, not {engine.dialect.name!r}"
            )
        self._engine = engine

    def create_schema(self) -> None:
        """Create the ``park_`` tables and indexes if missing. Idempotent."""
        metadata.create_all(self._engine)

    def _writing(self) -> AbstractContextManager[sa.Connection]:
        """One write transaction holding the store's write lock from its start."""
        return locked_transaction(self._engine, _PG_LOCK_KEY)

    # -- participants -----------------------------------------------------------------------

    def join(self, user_id: str, *, language: str = "en", at: float | None = None) -> Participant:
        """Make ``user_id`` a participant with a fresh pseudonym, or return them as they are if
        they already are one (``language`` is then ignored: see :meth:`set_language`).

        ``ValueError`` for an empty or over-long user id or a language not in ``LANGUAGES``.
        """
        _check_user(user_id)
        _check_language(language)
        joined = _now(at)
        with self._writing() as conn:
            existing = _participant(conn, user_id)
            if existing is not None:
                return existing
            pseudonym = _fresh_pseudonym(conn)
            conn.execute(
                participants_table.insert().values(
                    user_id=user_id,
                    pseudonym=pseudonym,
                    language=language,
                    joined=joined,
                    points=0,
                )
            )
        return Participant(user_id, pseudonym, joined, language)

    def participant(self, user_id: str) -> Participant | None:
        """``user_id`` as a participant, or ``None`` if they have not joined."""
        with self._engine.connect() as conn:
            return _participant(conn, user_id)

    def set_language(self, user_id: str, language: str) -> None:
        """Change a participant's language. ``UnknownParticipant`` if they have not joined;
        ``ValueError`` for a language not in ``LANGUAGES``."""
        _check_language(language)
        with self._writing() as conn:
            result = conn.execute(
                participants_table.update()
                .where(participants_table.c.user_id == user_id)
                .values(language=language)
            )
            if result.rowcount == 0:
                raise UnknownParticipant(user_id)

    def leave(self, user_id: str) -> bool:
        """Forget ``user_id``: delete the participant, their visits and points; keep their
        ratings' stars and flags but drop the user id and comment. One transaction. False if
        they were not a participant (nothing changes then)."""
        with self._writing() as conn:
            p = participants_table.c
            if conn.execute(participants_table.delete().where(p.user_id == user_id)).rowcount == 0:
                return False
            conn.execute(visits_table.delete().where(visits_table.c.user_id == user_id))
            conn.execute(
                ratings_table.update()
                .where(ratings_table.c.user_id == user_id)
                .values(user_id=None, comment=None)
            )
        return True

    # -- visits and points ------------------------------------------------------------------

    def record_visit(self, user_id: str, stop: int, *, at: float | None = None) -> int:
        """Record that ``user_id`` is at stop number ``stop``; return the points awarded:
        :data:`VISIT_POINTS` for their first visit of that stop on that UTC day, else 0.

        ``UnknownParticipant`` if they have not joined; ``ValueError`` if ``stop`` is not an
        integer >= 1. Whether the stop exists is the caller's to check.
        """
        if type(stop) is not int or stop < 1:
            raise ValueError(f"stop must be an integer >= 1, not {stop!r}")
        now = _now(at)
        day = math.floor(now / _DAY)
        v = visits_table.c
        with self._writing() as conn:
            _require_participant(conn, user_id)
            key = (v.user_id == user_id) & (v.stop == stop) & (v.day == day)
            last = conn.execute(sa.select(v.last_at).where(key)).scalar()
            if last is not None:
                conn.execute(visits_table.update().where(key).values(last_at=max(last, now)))
                return 0
            conn.execute(
                visits_table.insert().values(
                    user_id=user_id,
                    stop=stop,
                    day=day,
                    first_at=now,
                    last_at=now,
                    points=VISIT_POINTS,
                )
            )
            _add_points(conn, user_id, VISIT_POINTS)
        return VISIT_POINTS

    def points_of(self, user_id: str) -> int:
        """The points ``user_id`` has earned (0 if they have not joined)."""
        p = participants_table.c
        with self._engine.connect() as conn:
            points = conn.execute(sa.select(p.points).where(p.user_id == user_id)).scalar()
        return int(points or 0)

    def leaderboard(self, limit: int = 10) -> list[LeaderboardEntry]:
        """The ``limit`` participants with most points (none with 0), by pseudonym only.

        Ties share a rank and the next rank skips (1, 2, 2, 4); within a tie, by pseudonym.
        """
        p = participants_table.c
        stmt = (
            sa.select(p.pseudonym, p.points)
            .where(p.points > 0)
            .order_by(p.points.desc(), p.pseudonym)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        entries: list[LeaderboardEntry] = []
        for position, (pseudonym, points) in enumerate(rows, start=1):
            tied = entries and entries[-1].points == points
            rank = entries[-1].rank if tied else position
            entries.append(LeaderboardEntry(rank, pseudonym, int(points)))
        return entries

    # -- ratings ----------------------------------------------------------------------------

    def rate(
        self,
        user_id: str,
        provider: str,
        service: str,
        resource: str,
        seq: int,
        stars: int,
        flags: Iterable[str] = (),
        comment: str = "",
        *,
        at: float | None = None,
    ) -> Rating:
        """Rate the reading ``seq`` of ``provider``'s ``service/resource``: 1 to 5 ``stars``,
        up to five of :data:`FLAGS`, an optional ``comment`` (at most :data:`MAX_COMMENT`
        characters once stripped; line breaks are kept as ``\\n``).

        A participant rates a reading once: rating it again replaces the stars, flags and
        comment and earns nothing; the first rating earns :data:`RATING_POINTS`. Returns the
        rating as stored (``created``: when it was first given).

        ``InvalidRating`` for any value breaking these rules (or a provider, service or
        resource that is empty or longer than 64 characters, a negative ``seq``);
        ``UnknownParticipant`` if ``user_id`` has not joined. Whether the reading exists is
        the caller's to check.
        """
        for label, name in (("provider", provider), ("service", service), ("resource", resource)):
            _check_name(name, label)
        if type(seq) is not int or not 0 <= seq < 2**63:
            raise InvalidRating("the reading's sequence number must be an integer >= 0")
        if type(stars) is not int or not 1 <= stars <= 5:
            raise InvalidRating("stars must be a whole number from 1 to 5")
        mask = _flag_mask(flags)
        text = _clean_comment(comment)
        now = _now(at)
        r = ratings_table.c
        with self._writing() as conn:
            _require_participant(conn, user_id)
            key = (
                (r.user_id == user_id)
                & (r.provider == provider)
                & (r.service == service)
                & (r.resource == resource)
                & (r.seq == seq)
            )
            found = conn.execute(sa.select(r.id, r.created).where(key)).first()
            if found is not None:
                conn.execute(
                    ratings_table.update()
                    .where(r.id == found.id)
                    .values(stars=stars, flags=mask, comment=text or None, updated=now)
                )
                id_, created, points = int(found.id), float(found.created), 0
            else:
                id_ = conn.execute(
                    ratings_table.insert()
                    .values(
                        user_id=user_id,
                        provider=provider,
                        service=service,
                        resource=resource,
                        seq=seq,
                        stars=stars,
                        flags=mask,
                        comment=text or None,
                        created=now,
                        updated=now,
                        points=RATING_POINTS,
                    )
                    .returning(r.id)
                ).scalar_one()
                _add_points(conn, user_id, RATING_POINTS)
                created, points = now, RATING_POINTS
        return Rating(
            int(id_), user_id, provider, service, resource, seq, stars, _flag_names(mask),
            text, created, points,
        )  # fmt: skip

    def ratings(self, provider: str | None = None, limit: int = 100) -> list[Rating]:
        """The latest ``limit`` ratings (of ``provider``, if given), newest first."""
        r = ratings_table.c
        stmt = (
            sa.select(
                r.id,
                r.user_id,
                r.provider,
                r.service,
                r.resource,
                r.seq,
                r.stars,
                r.flags,
                r.comment,
                r.created,
                r.points,
            )
            .order_by(r.created.desc(), r.id.desc())
            .limit(limit)
        )
        if provider is not None:
            stmt = stmt.where(r.provider == provider)
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            Rating(
                int(row.id),
                row.user_id,
                row.provider,
                row.service,
                row.resource,
                int(row.seq),
                int(row.stars),
                _flag_names(row.flags),
                row.comment or "",
                float(row.created),
                int(row.points),
            )
            for row in rows
        ]

    def trust_score(
        self, provider: str, *, at: float | None = None, window_s: float = TRUST_WINDOW_S
    ) -> TrustScore:
        """How far citizens trust ``provider``'s readings, from its ratings given in the
        ``window_s`` seconds up to ``at``.

        With ``n`` ratings of ``s`` stars in total, ``f`` of them flagged ``seems_wrong`` or
        ``sensor_damaged``::

            mean  = (PRIOR_MEAN * PRIOR_WEIGHT + s) / (PRIOR_WEIGHT + n)   # Bayesian average
            score = (mean - 1) / 4 * 100 * (1 - 0.5 * f / n)

        rounded to one decimal: 1 star maps to 0, 5 stars to 100, and a device flagged as
        wrong by every rater loses half its score. The prior (4 stars, worth 5 ratings) keeps
        one angry or one enthusiastic rating from swinging a device with few ratings; a device
        without ratings scores the prior, 75.0. Always within 0..100.
        """
        r = ratings_table.c
        with self._engine.connect() as conn:
            row = conn.execute(
                _aggregate().where(r.provider == provider, *_window(at, window_s))
            ).first()
        return _trust(provider, row)

    def trust_scores(
        self, *, at: float | None = None, window_s: float = TRUST_WINDOW_S
    ) -> dict[str, TrustScore]:
        """:meth:`trust_score` of every provider rated within the window, by provider."""
        r = ratings_table.c
        stmt = (
            _aggregate(r.provider)
            .where(*_window(at, window_s))
            .group_by(r.provider)
            .order_by(r.provider)
        )
        with self._engine.connect() as conn:
            return {row.provider: _trust(row.provider, row) for row in conn.execute(stmt)}

    # -- thresholds and notices -------------------------------------------------------------

    def add_threshold(
        self,
        area: str,
        measurement: str,
        op: Literal[">", "<"],
        value: float,
        *,
        by: str,
        at: float | None = None,
    ) -> Threshold:
        """Watch ``measurement`` in ``area`` (``"*"``: every area): a device whose reading is
        ``op`` ``value`` raises a notice (see :meth:`evaluate`). ``by`` is who set it.

        ``InvalidThreshold`` for an area that is neither ``"*"`` nor a slug, a measurement not
        in ``MEASUREMENTS``, an ``op`` other than ``">"``/``"<"``, a value that is not a finite
        number, or an empty ``by``.
        """
        if area != "*" and not (
            isinstance(area, str) and len(area) <= _MAX_NAME and _SLUG.fullmatch(area)
        ):
            raise InvalidThreshold(f"area must be '*' or an area slug, not {area!r}")
        if measurement not in MEASUREMENTS:
            raise InvalidThreshold(
                f"unknown measurement {measurement!r}: use {', '.join(MEASUREMENTS)}"
            )
        if op not in (">", "<"):
            raise InvalidThreshold(f"op must be '>' or '<', not {op!r}")
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise InvalidThreshold(f"the threshold value must be a finite number, not {value!r}")
        if not isinstance(by, str) or not by or len(by) > _MAX_USER:
            raise InvalidThreshold("who sets the threshold (by) is required")
        now = _now(at)
        row = {
            "area": area,
            "measurement": measurement,
            "op": op,
            "value": float(value),
            "created_by": by,
            "created": now,
        }
        with self._writing() as conn:
            id_ = conn.execute(
                thresholds_table.insert().values(**row).returning(thresholds_table.c.id)
            ).scalar_one()
        return Threshold(int(id_), **row)

    def thresholds(self) -> list[Threshold]:
        """Every threshold, oldest first."""
        with self._engine.connect() as conn:
            return _thresholds(conn)

    def remove_threshold(self, threshold_id: int, *, at: float | None = None) -> bool:
        """Delete a threshold and clear its open notices (at ``at``). False if there was none."""
        now = _now(at)
        n = notices_table.c
        with self._writing() as conn:
            deleted = conn.execute(
                thresholds_table.delete().where(thresholds_table.c.id == threshold_id)
            ).rowcount
            if not deleted:
                return False
            conn.execute(
                notices_table.update()
                .where(n.threshold_id == threshold_id, n.cleared_at.is_(None))
                .values(cleared_at=now)
            )
        return True

    def evaluate(self, values: Iterable[Observation], *, at: float | None = None) -> list[Notice]:
        """Check ``values`` (in order) against every threshold; return the notices raised.

        For each threshold of the observation's measurement whose area is the observation's
        or ``"*"``: a reading beyond it opens a notice for (threshold, provider) unless one is
        open already; a reading back within it clears the open one (``cleared_at = at``). A
        NaN value changes nothing. Only newly raised notices are returned; one transaction.
        """
        observations = list(values)
        now = _now(at)
        n = notices_table.c
        raised: list[Notice] = []
        with self._writing() as conn:
            thresholds = _thresholds(conn)
            open_rows = conn.execute(
                sa.select(n.id, n.threshold_id, n.provider).where(n.cleared_at.is_(None))
            )
            open_ids = {(row.threshold_id, row.provider): row.id for row in open_rows}
            for obs in observations:
                if math.isnan(obs.value):
                    continue
                for threshold in thresholds:
                    if threshold.measurement != obs.measurement or threshold.area not in (
                        "*",
                        obs.area,
                    ):
                        continue
                    key = (threshold.id, obs.provider)
                    if _crossed(threshold, obs.value):
                        if key not in open_ids:
                            notice = _raise(conn, threshold, obs, now)
                            open_ids[key] = notice.id
                            raised.append(notice)
                    elif key in open_ids:
                        conn.execute(
                            notices_table.update()
                            .where(n.id == open_ids.pop(key))
                            .values(cleared_at=now)
                        )
        return raised

    def notices(self, *, open_only: bool = False, limit: int = 100) -> list[Notice]:
        """The latest ``limit`` notices (only those not cleared, with ``open_only``), newest
        first."""
        n = notices_table.c
        stmt = sa.select(notices_table).order_by(n.id.desc()).limit(limit)
        if open_only:
            stmt = stmt.where(n.cleared_at.is_(None))
        with self._engine.connect() as conn:
            return [_notice(row) for row in conn.execute(stmt)]

    def acknowledge(self, notice_id: int, *, by: str, at: float | None = None) -> bool:
        """Mark a notice as seen by ``by``. False if there is no such notice or it already was
        acknowledged (the first acknowledgement stays). ``ValueError`` for an empty ``by``."""
        if not isinstance(by, str) or not by or len(by) > _MAX_USER:
            raise ValueError("who acknowledges the notice (by) is required")
        now = _now(at)
        n = notices_table.c
        with self._writing() as conn:
            result = conn.execute(
                notices_table.update()
                .where(n.id == notice_id, n.acknowledged_at.is_(None))
                .values(acknowledged_by=by, acknowledged_at=now)
            )
        return result.rowcount == 1

    # -- KPIs -------------------------------------------------------------------------------

    def participant_count(self) -> int:
        """Participants now (those who left are not counted)."""
        with self._engine.connect() as conn:
            stmt = sa.select(sa.func.count()).select_from(participants_table)
            return int(conn.execute(stmt).scalar_one())

    def active_participants(self, since: float) -> int:
        """Participants who visited a stop or rated (or re-rated) a reading at ``since`` or
        later."""
        v, r = visits_table.c, ratings_table.c
        active = sa.union(
            sa.select(v.user_id).where(v.last_at >= since),
            sa.select(r.user_id).where(r.updated >= since, r.user_id.is_not(None)),
        ).subquery()
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(active)).scalar_one())

    def rating_count(self, since: float | None = None) -> int:
        """Ratings given (at ``since`` or later, if given), including those of people who left;
        a replaced rating counts once."""
        r = ratings_table.c
        stmt = sa.select(sa.func.count()).select_from(ratings_table)
        if since is not None:
            stmt = stmt.where(r.created >= since)
        with self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())


# -- helpers ----------------------------------------------------------------------------------


def _now(at: float | None) -> float:
    return time.time() if at is None else float(at)


def _check_user(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id or len(user_id) > _MAX_USER:
        raise ValueError(f"a user id is 1 to {_MAX_USER} characters")


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}: use {', '.join(LANGUAGES)}")


def _check_name(name: Any, label: str) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise InvalidRating(f"the {label} must be 1 to {_MAX_NAME} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise InvalidRating(f"the {label} contains control characters")


def _flag_mask(flags: Iterable[str]) -> int:
    if isinstance(flags, str | bytes):
        raise InvalidRating("flags must be a list of flag names, not one string")
    mask = 0
    for count, flag in enumerate(flags, start=1):
        if count > _MAX_FLAGS:
            raise InvalidRating(f"at most {_MAX_FLAGS} flags")
        bit = _BIT.get(flag) if isinstance(flag, str) else None
        if bit is None:
            raise InvalidRating(f"unknown flag {flag!r}: use {', '.join(FLAGS)}")
        mask |= bit
    return mask


def _flag_names(mask: int) -> tuple[str, ...]:
    return tuple(flag for flag, bit in _BIT.items() if mask & bit)


def _clean_comment(comment: str) -> str:
    if not isinstance(comment, str):
        raise InvalidRating("the comment must be text")
    # Browsers send a textarea's line breaks as CRLF: keep them, as plain newlines.
    text = comment.replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > MAX_COMMENT:
        raise InvalidRating(f"the comment is longer than {MAX_COMMENT} characters")
    for ch in text:
        if ch not in "\n\t" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise InvalidRating("the comment contains control characters")
    return text


def _participant(conn: sa.Connection, user_id: str) -> Participant | None:
    p = participants_table.c
    row = conn.execute(
        sa.select(p.user_id, p.pseudonym, p.joined, p.language).where(p.user_id == user_id)
    ).first()
    return (
        None if row is None else Participant(row.user_id, row.pseudonym, row.joined, row.language)
    )


def _require_participant(conn: sa.Connection, user_id: str) -> None:
    p = participants_table.c
    if conn.execute(sa.select(p.user_id).where(p.user_id == user_id)).first() is None:
        raise UnknownParticipant(user_id)


def _fresh_pseudonym(conn: sa.Connection) -> str:
    p = participants_table.c
    for attempt in range(20):
        # 430,000 four-digit pseudonyms; should they run short, six digits (43 million).
        digits = 4 if attempt < 10 else 6
        name = secrets.choice(_PSEUDONYM_NAMES)
        pseudonym = f"{name}-{secrets.randbelow(10**digits):0{digits}d}"
        if conn.execute(sa.select(p.user_id).where(p.pseudonym == pseudonym)).first() is None:
            return pseudonym
    raise MsecError("no free pseudonym found")  # pragma: no cover: ~0 chance below 10^7 users


def _add_points(conn: sa.Connection, user_id: str, points: int) -> None:
    p = participants_table.c
    conn.execute(
        participants_table.update().where(p.user_id == user_id).values(points=p.points + points)
    )


def _window(at: float | None, window_s: float) -> tuple[sa.ColumnElement[bool], ...]:
    now = _now(at)
    created = ratings_table.c.created
    return (created > now - window_s, created <= now)


def _aggregate(*columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
    r = ratings_table.c

    def count_where(mask: int) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((r.flags.op("&")(mask) != 0, 1), else_=0)), 0)

    return sa.select(
        *columns,
        sa.func.count().label("n"),
        sa.func.coalesce(sa.func.sum(r.stars), 0).label("stars"),
        count_where(_DISTRUST).label("distrusted"),
        *(count_where(bit).label(f"flag_{flag}") for flag, bit in _BIT.items()),
    )


def _trust(provider: str, row: Any) -> TrustScore:
    n = int(row.n) if row is not None else 0
    flags = {flag: int(getattr(row, f"flag_{flag}")) if n else 0 for flag in FLAGS}
    if n == 0:
        return TrustScore(provider, _score(0, 0, 0), 0, None, flags)
    stars = int(row.stars)
    return TrustScore(provider, _score(n, stars, int(row.distrusted)), n, stars / n, flags)


def _score(n: int, stars: int, distrusted: int) -> float:
    mean = (PRIOR_MEAN * PRIOR_WEIGHT + stars) / (PRIOR_WEIGHT + n)
    score = (mean - 1) / 4 * 100
    if n:
        score *= 1 - _PENALTY * distrusted / n
    return round(score, 1)


def _thresholds(conn: sa.Connection) -> list[Threshold]:
    t = thresholds_table.c
    rows = conn.execute(sa.select(thresholds_table).order_by(t.id))
    return [
        Threshold(
            int(row.id),
            row.area,
            row.measurement,
            row.op,
            float(row.value),
            row.created_by,
            float(row.created),
        )
        for row in rows
    ]


def _crossed(threshold: Threshold, value: float) -> bool:
    return value > threshold.value if threshold.op == ">" else value < threshold.value


def _raise(conn: sa.Connection, threshold: Threshold, obs: Observation, now: float) -> Notice:
    row = {
        "threshold_id": threshold.id,
        "area": obs.area,
        "provider": obs.provider,
        "measurement": obs.measurement,
        "op": threshold.op,
        "limit": threshold.value,
        "value": float(obs.value),
        "seq": int(obs.seq),
        "raised_at": now,
    }
    id_ = conn.execute(
        notices_table.insert().values(**row).returning(notices_table.c.id)
    ).scalar_one()
    return Notice(int(id_), **row, cleared_at=None, acknowledged_by=None, acknowledged_at=None)


def _notice(row: Any) -> Notice:
    return Notice(
        int(row.id), int(row.threshold_id), row.area, row.provider, row.measurement, row.op,
        float(row.limit), float(row.value), int(row.seq), float(row.raised_at), row.cleared_at,
        row.acknowledged_by, row.acknowledged_at,
    )  # fmt: skip
