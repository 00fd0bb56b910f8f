"""The people Connected Care looks after: personal data, alarm configuration, persisted.

One person is one **home** (``home-0007``), which is also their data subject. What the portal
keeps about them:

* **personal data** (name, address, phone, birth year, notes): a :class:`Profile`, stored
  *only* encrypted in the companion store under the person's subject (a new record per
  change, with its log leaf; erased with the person by ``msec erase <home>``). The SQL table
  holds nothing but the id of the latest record;
* **their alarm configuration**: overrides of any :class:`~msec.apps.care.model.CareSettings`
  field, the alarm kinds switched off for them, and their custom rules' parameters, in the
  ``care_people`` table (SQLAlchemy Core, SQLite and PostgreSQL alike);
* the installation's **generic settings** changed from the portal (``care_generic``, one row),
  over the built-in defaults and the alert definition file.

:class:`SqlPeople` is the store; :class:`CarePeople` keeps the alarm engine in step with it:
:meth:`CarePeople.apply` at start (every stored person, after the engine restored its
snapshot), and every change through :meth:`CarePeople.configure` and
:meth:`CarePeople.set_generic`, which ask the engine first (its ``ValueError`` names the
setting) and store only what it accepted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from msec.apps.care.model import CareSettings, split_device
from msec.companion.errors import CompanionError, UnknownRecord
from msec.core.errors import MsecError

if TYPE_CHECKING:
    from msec.apps.care.engine import CareEngine
    from msec.companion.sql import SqlCompanion
    from msec.tlog.sql import SqlLog

__all__ = [
    "PROFILE_KIND",
    "CarePeople",
    "DuplicatePerson",
    "Person",
    "Profile",
    "ProfileError",
    "SqlPeople",
    "UnknownPerson",
    "check_home",
]

log = logging.getLogger(__name__)

#: The companion record kind of a person's personal data.
PROFILE_KIND: Final = "care_profile"
#: A home id: the prefix of its devices' names (``<home>-motion`` must stay a device name).
HOME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
#: Names the portal's own pages take (``/care/homes/new``).
_RESERVED: Final = frozenset({"new"})
_PHONE_RE: Final = re.compile(r"[0-9+() .-]*")
#: Longest text of each personal data field (characters).
LIMITS: Final = {"name": 200, "address": 300, "phone": 40, "notes": 2000}
_MAX_USER: Final = 200

metadata = sa.MetaData()

people_table = sa.Table(
    "care_people",
    metadata,
    sa.Column("home", sa.String(64), primary_key=True),
    # The companion record holding the personal data (never the data itself).
    sa.Column("profile_record", sa.String(200)),
    sa.Column("profile_version", sa.Integer, nullable=False),
    sa.Column("settings", sa.Text, nullable=False),  # JSON: CareSettings overrides
    sa.Column("disabled", sa.Text, nullable=False),  # JSON: alarm kinds switched off
    sa.Column("rules", sa.Text, nullable=False),  # JSON: {rule kind: {param: value}}
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
    sa.Column("updated_by", sa.String(_MAX_USER), nullable=False),
)

generic_table = sa.Table(
    "care_generic",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("settings", sa.Text, nullable=False),  # JSON: CareSettings overrides
    sa.Column("updated", sa.Double, nullable=False),
    sa.Column("updated_by", sa.String(_MAX_USER), nullable=False),
)


class UnknownPerson(MsecError, KeyError):
    """There is no person with this home id."""


class DuplicatePerson(MsecError):
    """A person with this home id exists already."""


class ProfileError(MsecError, ValueError):
    """Personal data that cannot be stored: ``field`` names the field, ``message`` is the id
    of the message to show (``care.error.<...>``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_home(home: str) -> str:
    """``home`` if it can name a person: ``ValueError`` otherwise (it must be the prefix of its
    devices' names, and not itself look like a device of another home)."""
    if (
        not isinstance(home, str)
        or not HOME_RE.fullmatch(home)
        or split_device(home)
        or home in _RESERVED
    ):
        raise ValueError("a home id is 1-40 of a-z 0-9 _ - and does not end with a device role")
    return home


@dataclass(frozen=True, slots=True)
class Profile:
    """A person's personal data (all of it optional but the name)."""

    name: str
    address: str = ""
    phone: str = ""
    birth_year: int | None = None
    notes: str = ""

    @classmethod
    def parse(cls, form: Mapping[str, Any], *, now: float | None = None) -> Profile:
        """From a form's text fields; :class:`ProfileError` for the first unusable one."""
        values = {name: _clean(form.get(name), name) for name in LIMITS}
        if not values["name"]:
            raise ProfileError("name", "care.error.required")
        if not _PHONE_RE.fullmatch(values["phone"]):
            raise ProfileError("phone", "care.error.phone")
        year_text = str(form.get("birth_year") or "").strip()
        year = None
        if year_text:
            this_year = time.gmtime(time.time() if now is None else now).tm_year
            if not year_text.isdigit() or not 1900 <= int(year_text) <= this_year:
                raise ProfileError("birth_year", "care.error.birth_year")
            year = int(year_text)
        return cls(values["name"], values["address"], values["phone"], year, values["notes"])

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self) | {"v": 1}, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Profile:
        raw = json.loads(data)
        year = raw.get("birth_year")
        return cls(str(raw.get("name", "")), str(raw.get("address", "")),
                   str(raw.get("phone", "")), year if isinstance(year, int) else None,
                   str(raw.get("notes", "")))  # fmt: skip


def _clean(value: Any, field: str) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > LIMITS[field]:
        raise ProfileError(field, "care.error.too_long")
    allowed = "\n" if field in ("notes", "address") else ""
    if any(ch not in allowed and unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        raise ProfileError(field, "care.error.control")
    return text


@dataclass(frozen=True, slots=True)
class Person:
    """A person as stored: their own alarm configuration and where their personal data is."""

    home: str
    settings: dict[str, Any]
    disabled: frozenset[str]
    rules: dict[str, dict[str, Any]]
    profile_record: str | None
    created: float
    updated: float
    updated_by: str

    @property
    def configured(self) -> bool:
        """Whether they have anything of their own (else the generic configuration applies)."""
        return bool(self.settings or self.disabled or self.rules)


class SqlPeople:
    """The people and the generic settings on a SQLAlchemy engine (SQLite or PostgreSQL);
    personal data in ``companion`` (with a leaf in ``log``, which must share the engine).
    Call :meth:`create_schema` once. Thread-safe."""

    def __init__(self, engine: sa.Engine, companion: SqlCompanion, log: SqlLog) -> None:
        self._engine = engine
        self._companion = companion
        self._log = log

    def create_schema(self) -> None:
        """Create ``care_people`` and ``care_generic`` if missing. Idempotent."""
        metadata.create_all(self._engine)

    # -- people ------------------------------------------------------------------------------

    def add(self, home: str, profile: Profile, *, by: str, at: float | None = None) -> Person:
        """A new person, their personal data encrypted under their subject (created if new).
        :class:`DuplicatePerson` if ``home`` exists; ``ValueError`` for an unusable home id."""
        check_home(home)
        now = time.time() if at is None else at
        with self._log.writing() as (conn, _):
            found = conn.execute(sa.select(people_table.c.home).where(people_table.c.home == home))
            if found.first() is not None:
                raise DuplicatePerson(f"there is already a person {home!r}")
            record = self._put_profile(conn, home, profile, 1)
            conn.execute(people_table.insert().values(
                home=home, profile_record=record, profile_version=1, settings="{}",
                disabled="[]", rules="{}", created=now, updated=now, updated_by=by[:_MAX_USER],
            ))  # fmt: skip
        return self._require(home)

    def update_profile(self, home: str, profile: Profile, *, by: str) -> Person:
        """Replace the person's personal data (a new encrypted record); :class:`UnknownPerson`."""
        with self._log.writing() as (conn, _):
            version = conn.execute(
                sa.select(people_table.c.profile_version).where(people_table.c.home == home)
            ).scalar()
            if version is None:
                raise UnknownPerson(home)
            record = self._put_profile(conn, home, profile, int(version) + 1)
            conn.execute(people_table.update().where(people_table.c.home == home).values(
                profile_record=record, profile_version=int(version) + 1, updated=time.time(),
                updated_by=by[:_MAX_USER],
            ))  # fmt: skip
        return self._require(home)

    def _put_profile(self, conn: sa.Connection, home: str, profile: Profile, version: int) -> str:
        # Record ids and kinds stay in the log for ever: the home id is a pseudonym, the
        # version a counter, nothing personal. No "/" in it: the care feed reads records
        # "<device>/<seq>" as readings.
        record_id = f"care-profile.{home}.{version}"
        self._companion.put(home, record_id, profile.to_json(), kind=PROFILE_KIND,
                            log=self._log, conn=conn)  # fmt: skip
        return record_id

    def set_config(
        self,
        home: str,
        *,
        settings: Mapping[str, Any],
        disabled: Iterable[str],
        rules: Mapping[str, Mapping[str, Any]],
        by: str,
    ) -> Person:
        """Replace the person's own alarm configuration (as the engine accepted it);
        :class:`UnknownPerson` if there is none."""
        values = {
            "settings": json.dumps(dict(settings), sort_keys=True),
            "disabled": json.dumps(sorted(set(disabled))),
            "rules": json.dumps({k: dict(v) for k, v in rules.items()}, sort_keys=True),
            "updated": time.time(),
            "updated_by": by[:_MAX_USER],
        }
        with self._engine.begin() as conn:
            done = conn.execute(
                people_table.update().where(people_table.c.home == home).values(**values)
            ).rowcount
        if not done:
            raise UnknownPerson(home)
        return self._require(home)

    def remove(self, home: str) -> bool:
        """Forget the person's row (after her erasure); ``False`` if there was none."""
        with self._engine.begin() as conn:
            done = conn.execute(people_table.delete().where(people_table.c.home == home))
        return bool(done.rowcount)

    def get(self, home: str) -> Person | None:
        with self._engine.connect() as conn:
            row = conn.execute(people_table.select().where(people_table.c.home == home)).first()
        return None if row is None else _person(row)

    def _require(self, home: str) -> Person:
        person = self.get(home)
        if person is None:
            raise UnknownPerson(home)
        return person

    def all(self) -> list[Person]:
        """Every person, by home id."""
        with self._engine.connect() as conn:
            rows = conn.execute(people_table.select().order_by(people_table.c.home)).all()
        return [_person(row) for row in rows]

    def find(self, homes: Iterable[str]) -> list[Person]:
        """The people of ``homes`` that exist, by home id."""
        wanted = sorted(set(homes))
        found: list[Person] = []
        with self._engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = people_table.select().where(
                    people_table.c.home.in_(wanted[start : start + 500])
                )
                found += [_person(row) for row in conn.execute(query)]
        return sorted(found, key=lambda p: p.home)

    def homes(self) -> list[str]:
        with self._engine.connect() as conn:
            query = sa.select(people_table.c.home).order_by(people_table.c.home)
            return list(conn.execute(query).scalars())

    def profiles(self, people: Iterable[Person]) -> dict[str, Profile]:
        """The personal data of ``people``, decrypted (one query); a person whose data was
        erased (``msec erase``) or cannot be read is left out, the reason logged."""
        ids = {p.profile_record: p.home for p in people if p.profile_record}
        if not ids:
            return {}
        try:
            found = self._companion.get_many(list(ids))
        except CompanionError as exc:
            log.error("care: personal data unreadable: %s", exc)
            return {}
        return {ids[record_id]: Profile.from_json(data) for record_id, (_, data) in found.items()}

    def profile(self, person: Person) -> Profile | None:
        if not person.profile_record:
            return None
        try:
            _, data = self._companion.get(person.profile_record)
        except UnknownRecord:  # erased with the subject
            return None
        return Profile.from_json(data)

    # -- generic settings ----------------------------------------------------------------------

    def generic(self) -> dict[str, Any]:
        """The generic settings changed from the portal (``{}``: none)."""
        with self._engine.connect() as conn:
            text = conn.execute(
                sa.select(generic_table.c.settings).where(generic_table.c.id == 1)
            ).scalar()
        return {} if text is None else dict(json.loads(text))

    def set_generic(self, settings: Mapping[str, Any], *, by: str) -> None:
        values = {"settings": json.dumps(dict(settings), sort_keys=True), "updated": time.time(),
                  "updated_by": by[:_MAX_USER]}  # fmt: skip
        with self._engine.begin() as conn:
            done = conn.execute(
                generic_table.update().where(generic_table.c.id == 1).values(**values)
            ).rowcount
            if not done:
                conn.execute(generic_table.insert().values(id=1, **values))


def _person(row: Any) -> Person:
    return Person(
        home=row.home,
        settings=dict(json.loads(row.settings)),
        disabled=frozenset(json.loads(row.disabled)),
        rules={str(k): dict(v) for k, v in json.loads(row.rules).items()},
        profile_record=row.profile_record,
        created=float(row.created),
        updated=float(row.updated),
        updated_by=row.updated_by,
    )


class CarePeople:
    """The store and the alarm engine kept in step (see the module docstring)."""

    def __init__(self, store: SqlPeople, engine: CareEngine) -> None:
        self.store = store
        self.engine = engine
        #: The generic settings before the portal's changes (defaults and definition file).
        self.base: CareSettings = engine.settings

    def apply(self) -> None:
        """Give the engine the stored generic settings and every stored person's own
        configuration (call after the engine restored its snapshot). A configuration the
        engine no longer accepts (a rule removed from the definitions) is logged and left
        out: the person keeps the generic one."""
        try:
            self.engine.set_generic(self.generic_settings(self.store.generic()))
        except (ValueError, TypeError) as exc:
            log.warning("care: the stored generic settings are not applied: %s", exc)
        stored = self.store.all()
        for person in stored:
            try:
                self._configure(person.home, person.settings, person.disabled, person.rules)
            except (ValueError, TypeError) as exc:
                log.warning("care: %s's stored settings are not applied: %s", person.home, exc)
                self.engine.forget(person.home)
        homes = {p.home for p in stored}
        for home in self.engine.configured_homes():
            if home not in homes:  # configured before a crash, then removed from the store
                self.engine.forget(home)

    def _configure(self, home: str, settings: Mapping[str, Any], disabled: Iterable[str],
                   rules: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        self.engine.configure(home, disabled=disabled, rules=rules, **settings)

    def configure(
        self,
        home: str,
        *,
        settings: Mapping[str, Any],
        disabled: Iterable[str],
        rules: Mapping[str, Mapping[str, Any]],
        by: str,
    ) -> Person:
        """Change a person's own configuration: the engine first (``ValueError`` naming the
        setting, nothing changed), then the store (on failure the engine gets the previous
        configuration back). :class:`UnknownPerson` if there is no such person."""
        if self.store.get(home) is None:
            raise UnknownPerson(home)
        previous = self.engine.person(home)
        off = frozenset(disabled)
        self._configure(home, settings, off, rules)
        try:
            return self.store.set_config(home, settings=settings, disabled=off, rules=rules,
                                         by=by)  # fmt: skip
        except BaseException:
            self._configure(home, previous.overrides, previous.disabled, previous.rules)
            raise

    def generic_settings(self, overrides: Mapping[str, Any]) -> CareSettings:
        """The generic settings with the portal's ``overrides``; ``ValueError`` (naming it)
        for an unknown setting."""
        names = {f.name for f in dataclasses.fields(CareSettings)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self.base, **overrides)

    def set_generic(self, overrides: Mapping[str, Any], *, by: str) -> CareSettings:
        """New generic settings: the engine first (``ValueError`` naming the setting), then
        the store (on failure the engine gets the previous ones back)."""
        previous = self.engine.settings
        settings = self.generic_settings(overrides)
        self.engine.set_generic(settings)
        try:
            self.store.set_generic(overrides, by=by)
        except BaseException:
            self.engine.set_generic(previous)
            raise
        return settings
