"""The Park Guide's logic between the platform and its pages.

:class:`ParkGuide` knows the park (stops, devices), the guide's store (participants, ratings,
thresholds, notices) and the platform parts it uses: the twin for values, the consent store
for the informed-consent notice, the principal store for accounts, the companion store for
the only personal data a citizen gives (their e-mail address, encrypted and erasable), and
the access layer for who may read what. Pages call it; it never renders anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from msec.access.consent import NoticeConflict
from msec.access.model import Effect, Policy, Principal, Verb
from msec.apps.park_guide.notice import NOTICE_PURPOSE, NOTICE_VERSION, NOTICES
from msec.apps.park_guide.park import MEASUREMENTS, Park, Stop, measurement_of, verdict
from msec.apps.park_guide.store import FLAGS, Observation, SqlParkStore, TrustScore
from msec.companion.errors import UnknownSubject
from msec.core.kinds import UnknownKind, get_kind
from msec.core.models import ResourceValue
from msec.platform.checks import TamperChecks
from msec.web.sessions import normalise_email

if TYPE_CHECKING:
    from msec.platform.platform import Platform
    from msec.web.live import LiveFeed
    from msec.web.ui import WebUi

__all__ = ["ParkGuide", "RegistrationError", "ShownValue"]

log = logging.getLogger(__name__)

CITIZEN_ROLE: Final = "citizen"
#: The companion record kind holding a citizen's profile (their e-mail address).
PROFILE_KIND: Final = "park_guide.profile"
#: A device is flagged silent when it has sent nothing for this long.
SILENT_AFTER_S: Final = 300.0
_KPI_TTL_S: Final = 30.0
_SCORES_TTL_S: Final = 10.0
_SERIES_TTL_S: Final = 5.0
#: The trust score of a device nobody rated (see ``SqlParkStore.trust_score``).
PRIOR_SCORE: Final = 75.0


class RegistrationError(ValueError):
    """A sign-up form that cannot be accepted; ``field`` names the input, ``key`` the
    message id to show."""

    def __init__(self, field: str, key: str) -> None:
        super().__init__(key)
        self.field = field
        self.key = key


@dataclass(frozen=True, slots=True)
class ShownValue:
    """One measurement of a stop as the page shows it."""

    measurement: str
    provider: str
    service: str
    resource: str
    value: float
    unit: str
    timestamp: float
    seq: int | None
    verdict: str


class ParkGuide:
    """The guide of one park on one platform."""

    def __init__(self, platform: Platform, park: Park, store: SqlParkStore) -> None:
        self.platform = platform
        self.park = park
        self.store = store
        self.tenant = platform.settings.tenant
        self.checks = TamperChecks(platform.settings.data_dir)
        self._kpis: tuple[float, dict[str, object]] | None = None
        #: The live feed's in-memory snapshot of every latest value (set by ``install``):
        #: pages read values from it instead of the database.
        self.feed: LiveFeed | None = None
        self._scores: tuple[float, dict[str, TrustScore]] | None = None
        self._series: dict[tuple[str, float, str], tuple[float, dict[str, object]]] = {}

    # -- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Idempotent first-start work: the guide's tables, its consent notice in every
        language, and the policies that make the park's environmental data public."""
        self.store.create_schema()
        consent = self.platform.consent
        for lang, text in NOTICES.items():
            if consent.latest_notice(NOTICE_PURPOSE, lang) is not None:
                continue
            with contextlib.suppress(NoticeConflict):  # another process published it first
                consent.publish_notice(NOTICE_PURPOSE, NOTICE_VERSION, language=lang, **text)
        for device in self.park.devices():
            policy = Policy(
                f"park-guide-public-{device}", Effect.ALLOW,
                frozenset({Verb.DESCRIBE, Verb.GET, Verb.SUBSCRIBE}), device, priority=100,
                description="Park Guide: the park's environmental data is open to everyone",
            )  # fmt: skip
            self.platform.policies.ensure(policy, by="app:park_guide")

    # -- values ----------------------------------------------------------------------------------

    def shown(self, value: ResourceValue, stop: Stop) -> ShownValue | None:
        measurement = measurement_of(value.service, value.resource)
        if measurement is None or not isinstance(value.value, int | float):
            return None
        if isinstance(value.value, bool) or value.timestamp is None:
            return None
        number = float(value.value)
        return ShownValue(
            measurement, value.provider, value.service, value.resource, number,
            MEASUREMENTS[measurement][2], value.timestamp, value.seq,
            verdict(measurement, number, capacity=stop.capacity),
        )  # fmt: skip

    def values(self, stop: Stop, devices: Iterable[str] | None = None) -> dict[str, ShownValue]:
        """The freshest value of each measurement among the stop's devices (those of
        ``devices`` only, if given)."""
        best: dict[str, ShownValue] = {}
        names = stop.devices if devices is None else tuple(devices)
        if not names:
            return best
        for value in self._latest(names):
            shown = self.shown(value, stop)
            if shown is None:
                continue
            current = best.get(shown.measurement)
            if current is None or shown.timestamp > current.timestamp:
                best[shown.measurement] = shown
        return best

    def _latest(self, devices: tuple[str, ...]) -> list[ResourceValue]:
        feed = self.feed
        if feed is None or not feed.running:
            return self.platform.twin.latest_all(devices)
        wanted = set(devices)
        return [v for v in list(feed.values.values()) if v.provider in wanted]

    def trust(self, device: str) -> TrustScore:
        """The device's trust score, from a snapshot of all scores at most 10 s old (a
        citizen's own rating refreshes it at once: see :meth:`rate`)."""
        now = time.monotonic()
        if self._scores is None or now - self._scores[0] > _SCORES_TTL_S:
            self._scores = (now, self.store.trust_scores())
        score = self._scores[1].get(device)
        if score is None:
            return TrustScore(device, PRIOR_SCORE, 0, None, dict.fromkeys(FLAGS, 0))
        return score

    def trust_scores(self) -> dict[str, TrustScore]:
        return {d: self.trust(d) for d in self.park.devices()}

    def rate(self, user_id: str, shown: ShownValue, stars: int, flags: list[str],
             comment: str) -> None:  # fmt: skip
        self.store.rate(user_id, shown.provider, shown.service, shown.resource,
                        shown.seq if shown.seq is not None else -1, stars, flags, comment)
        self._scores = None

    def series(self, measurement: str, hours: float, lang: str) -> dict[str, object]:
        """Chart data of one measurement over the last ``hours``, one line per device that
        measures it, built at most once every 5 s per (measurement, period, language)."""
        key = (measurement, hours, lang)
        now = time.monotonic()
        cached = self._series.get(key)
        if cached is not None and now - cached[0] < _SERIES_TTL_S:
            return cached[1]
        service, resource, unit = MEASUREMENTS[measurement]
        since = time.time() - hours * 3600
        lines = []
        for stop in self.park.stops:
            for device in stop.devices:
                if not self.measures(device, service, resource):
                    continue
                values = self.platform.twin.history(device, service, resource, since=since,
                                                    limit=10_000)  # fmt: skip
                if values:
                    lines.append({"name": f"{stop.number}. {stop.text('name', lang)}",
                                  "points": [[v.timestamp, v.value] for v in values]})
        limits = [t.value for t in self.store.thresholds() if t.measurement == measurement]
        body: dict[str, object] = {"unit": unit, "series": lines,
                                   "threshold": limits[0] if limits else None}  # fmt: skip
        if len(self._series) > 100:
            self._series.clear()
        self._series[key] = (now, body)
        return body

    def measures(self, device: str, service: str, resource: str) -> bool:
        """Whether ``device``'s kind has this resource (unknown devices: no)."""
        kind = self._kinds().get(device)
        if kind is None:  # a device registered since: look again
            self._kind_cache = {}
            kind = self._kinds().get(device)
        if kind is None:
            return False
        try:
            return get_kind(kind).spec(service, resource) is not None
        except UnknownKind:
            return False

    def _kinds(self) -> dict[str, str]:
        if not self.__dict__.get("_kind_cache"):
            self._kind_cache = {p.name: p.kind for p in self.platform.twin.providers()}
        return self._kind_cache

    def observations(self, changes: Iterable[ResourceValue]) -> list[Observation]:
        out = []
        for value in changes:
            stop = self.park.stop_of_device(value.provider)
            shown = self.shown(value, stop) if stop is not None else None
            if stop is None or shown is None or shown.seq is None:
                continue
            out.append(Observation(shown.provider, stop.area, shown.measurement, shown.value,
                                   shown.timestamp, shown.seq))  # fmt: skip
        return out

    def on_changes(self, changes: list[ResourceValue]) -> None:
        """Live-feed listener: thresholds checked against every new value."""
        observations = self.observations(changes)
        if observations:
            for notice in self.store.evaluate(observations):
                log.info("notice %d: %s %s %s %s in %s", notice.id, notice.measurement,
                         notice.value, notice.op, notice.limit, notice.area)  # fmt: skip

    def check_now(self, feed: LiveFeed | None) -> None:
        """Evaluate the thresholds against every value known now (after one is added)."""
        values = list(feed.values.values()) if feed is not None else self.platform.twin.latest_all(
            self.park.devices()
        )
        self.on_changes(values)

    # -- accounts ------------------------------------------------------------------------------

    def register(self, ui: WebUi, email: str, password: str, repeat: str, accepted: bool,
                 lang: str) -> Principal:  # fmt: skip
        """Create a citizen account after informed consent; raises :class:`RegistrationError`.

        The account's name is random (``citizen-<hex>``); the e-mail address is stored only
        encrypted in the companion store (subject = the account) and as a keyed hash to log
        in with. The consent is recorded through the access layer (a signed-log leaf).
        """
        address = normalise_email(email)
        if address is None:
            raise RegistrationError("email", "register.error.email")
        if len(password) < 10 or len(password) > 1024:
            raise RegistrationError("password", "register.error.password")
        if password != repeat:
            raise RegistrationError("repeat", "register.error.repeat")
        if not accepted:
            raise RegistrationError("consent", "register.error.consent")
        if ui.emails.taken(address):
            raise RegistrationError("email", "register.error.taken")
        notice = self.platform.consent.latest_notice(NOTICE_PURPOSE, lang)
        if notice is None:
            raise RegistrationError("consent", "register.error.consent")
        name = f"citizen-{secrets.token_hex(8)}"
        principals = self.platform.principals
        principals.add_user(name, tenant=self.tenant, roles=[CITIZEN_ROLE], password=password,
                            subject=name)  # fmt: skip
        if not ui.emails.add(address, name):  # the same address registered a moment ago
            principals.disable_user(name)
            raise RegistrationError("email", "register.error.taken")
        profile = {"email": address, "language": lang, "registered": time.time()}
        self.platform.companion.put(
            name, "profile", json.dumps(profile).encode(), kind=PROFILE_KIND,
            log=self.platform.trust.log,
        )  # fmt: skip
        principal = principals.principal(f"user:{name}")
        assert principal is not None
        self.platform.consent.accept(principal.id, notice.id)
        self.store.join(principal.id, language=lang)
        return principal

    def consented(self, principal: Principal) -> bool:
        return self.platform.consent.has_consented(principal.id, NOTICE_PURPOSE)

    def accept_again(self, principal: Principal, lang: str) -> None:
        notice = self.platform.consent.latest_notice(NOTICE_PURPOSE, lang)
        if notice is not None:
            self.platform.consent.accept(principal.id, notice.id)
            self.store.join(principal.id, language=lang)

    def withdraw(self, principal: Principal) -> None:
        """Consent withdrawn: no more points or ratings; the account stays until deleted."""
        self.platform.consent.withdraw(principal.id, NOTICE_PURPOSE)

    def delete_account(self, ui: WebUi, principal: Principal) -> None:
        """Right to erasure: consent withdrawn, the guide's data removed (ratings kept only
        anonymised), the login e-mail's hash removed, the profile crypto-shredded in the
        companion store (an erasure leaf in the log), the account disabled and every
        session ended."""
        name = principal.id.partition(":")[2]
        self.platform.consent.withdraw(principal.id, NOTICE_PURPOSE)
        self.store.leave(principal.id)
        ui.emails.remove_user(name)
        with contextlib.suppress(UnknownSubject):  # no profile (an account made by hand)
            self.platform.erase_subject(name, reason="park guide account deleted")
        self.platform.principals.revoke_all(principal.id)
        self.platform.principals.disable_user(name)
        ui.sessions.delete_for(principal.id)
        ui.forget(principal.id)

    def export_account(self, principal: Principal) -> dict[str, object]:
        """Everything the guide and the platform hold about this citizen (portability)."""
        name = principal.id.partition(":")[2]
        try:
            profile: object = self.platform.companion.export(name)
        except UnknownSubject:
            profile = None
        participant = self.store.participant(principal.id)
        return {
            "account": name,
            "profile": profile,
            "participant": None if participant is None else {
                "pseudonym": participant.pseudonym,
                "joined": participant.joined,
                "language": participant.language,
                "points": self.store.points_of(principal.id),
            },
            "ratings": [
                {"provider": r.provider, "service": r.service, "resource": r.resource,
                 "seq": r.seq, "stars": r.stars, "flags": list(r.flags), "comment": r.comment,
                 "created": r.created}
                for r in self.store.ratings(limit=10_000) if r.user_id == principal.id
            ],
            "consent": [
                {"notice": a.notice_id, "accepted_at": a.accepted_at,
                 "withdrawn_at": a.withdrawn_at}
                for a in self.platform.consent.acceptances_of(principal.id)
            ],
        }  # fmt: skip

    # -- the municipality's board ---------------------------------------------------------------

    def device_health(self, now: float | None = None) -> list[dict[str, object]]:
        now = time.time() if now is None else now
        out = []
        known = {p.name: p for p in self.platform.twin.providers()}  # one query
        for name in self.park.devices():
            info = known.get(name)
            stop = self.park.stop_of_device(name)
            last = info.last_seen if info is not None else None
            out.append({
                "name": name,
                "kind": info.kind if info is not None else "?",
                "stop": stop.number if stop is not None else None,
                "area": stop.area if stop is not None else "",
                "battery": info.battery if info is not None else None,
                "rssi": info.rssi if info is not None else None,
                "last_seen": last,
                "silent": last is None or now - last > SILENT_AFTER_S,
            })  # fmt: skip
        return out

    def kpis(self) -> dict[str, object]:
        """The pilot's KPIs, cached for 30 s (the readings count reads the whole table)."""
        now = time.monotonic()
        if self._kpis is not None and now - self._kpis[0] < _KPI_TTL_S:
            return self._kpis[1]
        platform = self.platform
        checkpoint = platform.trust.log.latest_checkpoint()
        from msec.tlog import open_checkpoint

        size = open_checkpoint(checkpoint, [platform.trust.verifier]).size if checkpoint else 0
        with platform.engine.connect() as conn:
            verified = conn.exec_driver_sql(
                "SELECT count(*) FROM twin_readings WHERE leaf IS NOT NULL AND leaf < ?"
                if platform.engine.dialect.name == "sqlite"
                else "SELECT count(*) FROM twin_readings WHERE leaf IS NOT NULL AND leaf < %s",
                (size,),
            ).scalar_one()
        counters = platform.audit.counters()
        events = platform.events.counts()
        checks = self.checks.summary()
        values: dict[str, object] = {
            "participants": self.store.participant_count(),
            "active_7d": self.store.active_participants(time.time() - 7 * 86400),
            "ratings": self.store.rating_count(),
            "readings_verified": int(verified),
            "checkpoint_size": size,
            "tamper_checks_passed": checks["passed"],
            "tamper_checks_run": checks["runs"],
            "tamper_last_ok": checks["last_ok"],
            "unauthorised_attempts": int(counters.get("denied", 0))
            + sum(events.get(k, 0) for k in ("unauthorized", "login_failed", "csrf")),
        }
        self._kpis = (now, values)
        return values
