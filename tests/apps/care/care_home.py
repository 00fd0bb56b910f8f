"""A home fed to the alarm engine in simulated time (Europe/Madrid): the test helpers of the
engine and rule tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from msec.apps.care.engine import CareEngine
from msec.apps.care.model import AlarmKind, SensorEvent

MADRID = ZoneInfo("Europe/Madrid")
HOME = "home-0001"
ROLE = {
    "motion": ("motion", "detected"),
    "door": ("contact", "open"),
    "bed": ("bed", "occupied"),
    "plug": ("plug", "power"),
    "gw": ("gateway", "uptime"),
}


def at(text: str) -> float:
    """Local Madrid time ``YYYY-MM-DD HH:MM`` as Unix seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=MADRID).timestamp()


class Sink:
    """The alarm store's two rules: one active per (home, kind), one per episode."""

    def __init__(self) -> None:
        self.alarms: list[dict[str, Any]] = []
        self.episodes: set[tuple[str, str, str]] = set()

    def raise_alarm(self, home: str, kind: AlarmKind, episode: str, *, at: float,
                    detail: dict[str, Any], trigger: str | None = None) -> bool:  # fmt: skip
        if (home, kind, episode) in self.episodes:
            return False
        if any(a["home"] == home and a["kind"] == kind and not a["resolved"]
               for a in self.alarms):  # fmt: skip
            return False
        self.episodes.add((home, kind, episode))
        self.alarms.append(
            {
                "home": home,
                "kind": kind,
                "episode": episode,
                "at": at,
                "detail": detail,
                "trigger": trigger,
                "resolved": False,
            }
        )
        return True

    def kinds(self) -> list[AlarmKind]:
        return [a["kind"] for a in self.alarms]

    def resolve_all(self) -> None:
        for a in self.alarms:
            a["resolved"] = True


class Home:
    """Feeds one home's events in time order, with heartbeats of every device."""

    def __init__(self, engine: CareEngine, home: str = HOME) -> None:
        self.engine, self.home, self.seq = engine, home, 0
        self.state: dict[str, Any] = {"motion": False, "door": False, "bed": False,
                                      "plug": 0.0, "gw": 0}  # fmt: skip
        self.silent: set[str] = set()
        self.t = 0.0
        #: Whether the person moves about (a motion event with every heartbeat).
        self.moving = False

    def send(
        self, role: str, value: Any, t: float, resource: tuple[str, str] | None = None
    ) -> None:
        self.seq += 1
        service, res = resource or ROLE[role]
        self.engine.observe(SensorEvent(self.home, role, f"{self.home}-{role}", service, res,
                                        value, t, self.seq))  # fmt: skip
        if resource is None:
            # A PIR's "detected" ends after its hold time: heartbeats report no motion.
            self.state[role] = False if role == "motion" else value

    def report(self, role: str, resource: tuple[str, str], value: Any, t: float) -> None:
        """Heartbeats up to ``t``, then one reading of another resource (battery, ...)."""
        self.advance(t)
        self.send(role, value, t, resource)

    def set(self, role: str, value: Any, t: float) -> None:
        self.advance(t)
        self.send(role, value, t)

    def advance(self, until: float, step: float = 540.0) -> None:
        """Heartbeats of every device (not silent ones) every ``step`` s up to ``until``."""
        t = self.t
        while t + step <= until:
            t += step
            for role, value in self.state.items():
                if role not in self.silent:
                    moves = role == "motion" and self.moving
                    self.send(role, True if moves else value, t)
        self.t = max(self.t, until)
        self.engine.tick(until)


def start_day(home: Home, day: str = "2026-03-02") -> None:
    """In bed overnight, up at 07:30 with motion."""
    home.t = at(f"{day} 06:00")
    home.set("bed", True, at(f"{day} 06:00"))
    home.set("bed", False, at(f"{day} 07:30"))
    home.set("motion", True, at(f"{day} 07:31"))
    home.set("motion", False, at(f"{day} 07:32"))
    home.moving = True
