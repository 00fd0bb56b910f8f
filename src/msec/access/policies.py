"""An installation's own policies: stored, logged, and kept in step with the engine.

A policy is written as JSON (the CLI's and the API's format)::

    {"id": "care-caregivers", "effect": "allow", "verbs": ["GET", "SUBSCRIBE"],
     "target": "*/*/*", "roles": ["caregiver"], "consent": true, "tenant": "$principal",
     "priority": 10, "description": "caregivers read the homes that granted them access"}

``target`` is ``provider/service/resource``, each a name or ``*``; the other keys are those
of :class:`~msec.access.model.Policy`. Stored policies must have a priority below 1000:
the built-in ones (the platform's own resources) stay out of their reach.

``access_policies`` keeps every policy ever added; removing one marks it removed (with who
and when) rather than deleting the row, so that with a transparency log both the addition
and the removal are leaves (kinds ``policy`` and ``policy_removal``) and ``msec verify``
can recompute them. :class:`PolicySync` reloads the engine when the stored set changed (at
most once a second), so a policy added with the CLI reaches a running API.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import cbor2
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    MetaData,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from msec.access.engine import PolicyEngine
from msec.access.model import Effect, Policy, Verb
from msec.core.errors import MsecError
from msec.tlog import SqlLog, leaf_hash
from msec.tlog.sql import write_transaction

__all__ = [
    "MAX_STORED_PRIORITY",
    "PolicyError",
    "PolicySync",
    "SqlPolicies",
    "policy_from_json",
    "policy_to_json",
]

MAX_STORED_PRIORITY: Final = 999
POLICY_LEAF: Final = "policy"
REMOVAL_LEAF: Final = "policy_removal"
_KEYS: Final = frozenset(
    {"id", "effect", "verbs", "target", "roles", "principals", "priority", "tenant", "owner",
     "consent", "hours", "description"}
)  # fmt: skip

metadata = MetaData()

policies_table = Table(
    "access_policies",
    metadata,
    Column("id", Text, primary_key=True),
    Column("spec", Text, nullable=False),  # canonical JSON of the policy
    Column("created", Double, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("removed_at", Double),
    Column("removed_by", Text),
    Column("leaf", BigInteger),
    Column("removal_leaf", BigInteger),
)


class PolicyError(MsecError, ValueError):
    """A policy that cannot be stored: malformed, reserved priority, duplicate or unknown id."""


def policy_from_json(data: Mapping[str, Any]) -> Policy:
    """Parse the JSON form (see the module docstring); :class:`PolicyError` if malformed."""
    if not isinstance(data, Mapping):
        raise PolicyError("a policy is a JSON object")
    unknown = set(data) - _KEYS
    if unknown:
        raise PolicyError(f"unknown policy keys: {', '.join(sorted(unknown))}")
    try:
        target = str(data.get("target", "*/*/*"))
        segments = target.split("/")
        if len(segments) != 3:
            raise PolicyError("target is provider/service/resource")
        hours = data.get("hours")
        policy = Policy(
            id=_text(data.get("id"), "id"),
            effect=Effect(data.get("effect")),
            verbs=frozenset(Verb(v) for v in _list(data.get("verbs"), "verbs")),
            provider=segments[0],
            service=segments[1],
            resource=segments[2],
            roles=frozenset(_list(data.get("roles", []), "roles")),
            principals=frozenset(_list(data.get("principals", []), "principals")),
            priority=_int(data.get("priority", 0)),
            tenant=None if data.get("tenant") is None else _text(data.get("tenant"), "tenant"),
            owner=_bool(data.get("owner", False), "owner"),
            consent=_bool(data.get("consent", False), "consent"),
            hours=None if hours is None else (int(hours[0]), int(hours[1])),
            description=str(data.get("description", ""))[:500],
        )
    except PolicyError:
        raise
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise PolicyError(f"malformed policy: {exc}") from None
    if len(policy.id) > 100 or not policy.id.replace("-", "").replace("_", "").isalnum():
        raise PolicyError("a policy id is letters, digits, '-' and '_' (at most 100)")
    return policy


def policy_to_json(policy: Policy) -> dict[str, Any]:
    """The JSON form of a policy (keys sorted, lists sorted): what is stored and logged."""
    data: dict[str, Any] = {
        "id": policy.id,
        "effect": str(policy.effect),
        "verbs": sorted(str(v) for v in policy.verbs),
        "target": f"{policy.provider}/{policy.service}/{policy.resource}",
        "roles": sorted(policy.roles),
        "principals": sorted(policy.principals),
        "priority": policy.priority,
        "owner": policy.owner,
        "consent": policy.consent,
        "description": policy.description,
    }
    if policy.tenant is not None:
        data["tenant"] = policy.tenant
    if policy.hours is not None:
        data["hours"] = list(policy.hours)
    return data


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{what} must be a non-empty string")
    return value


def _list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{what} must be a list of strings")
    return value


def _int(value: object) -> int:
    if type(value) is not int:
        raise PolicyError("priority must be an integer")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise PolicyError(f"{what} must be true or false")
    return value


def _canonical(policy: Policy) -> str:
    return json.dumps(policy_to_json(policy), sort_keys=True, separators=(",", ":"))


def policy_leaf_data(id_: str, spec: str, created: float, created_by: str) -> bytes:
    return cbor2.dumps(["msec.access.policy/1", id_, spec, float(created), created_by],
                       canonical=True)  # fmt: skip


def removal_leaf_data(id_: str, removed_at: float, removed_by: str) -> bytes:
    return cbor2.dumps(["msec.access.policy_removal/1", id_, float(removed_at), removed_by],
                       canonical=True)  # fmt: skip


class SqlPolicies:
    """The stored policies. Call :meth:`create_schema` once."""

    def __init__(
        self, engine: Engine, *, log: SqlLog | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self.log = log
        self._clock = clock

    def create_schema(self) -> None:
        metadata.create_all(self._engine)

    def add(self, policy: Policy, *, by: str) -> Policy:
        """Store a new policy; :class:`PolicyError` for a reserved priority or a used id."""
        if policy.priority > MAX_STORED_PRIORITY:
            raise PolicyError(f"priority above {MAX_STORED_PRIORITY} is reserved")
        if policy.id.startswith("builtin-"):
            raise PolicyError("ids starting with 'builtin-' are reserved")
        spec = _canonical(policy)
        c = policies_table.c
        with write_transaction(self._engine, self.log) as (conn, first):
            if conn.execute(select(c.id).where(c.id == policy.id)).first() is not None:
                raise PolicyError(f"a policy {policy.id!r} exists (or existed): use a new id")
            now = self._clock()
            conn.execute(
                insert(policies_table).values(
                    id=policy.id, spec=spec, created=now, created_by=by, leaf=first
                )
            )
            if self.log is not None:
                data = policy_leaf_data(policy.id, spec, now, by)
                self.log.append([(leaf_hash(data), POLICY_LEAF, policy.id)], conn=conn)
        return policy

    def remove(self, policy_id: str, *, by: str) -> bool:
        """Mark a policy removed; False if there is no active policy with that id."""
        c = policies_table.c
        with write_transaction(self._engine, self.log) as (conn, first):
            now = self._clock()
            done = conn.execute(
                update(policies_table)
                .where(c.id == policy_id, c.removed_at.is_(None))
                .values(removed_at=now, removed_by=by, removal_leaf=first)
            ).rowcount
            if done and self.log is not None:
                data = removal_leaf_data(policy_id, now, by)
                self.log.append([(leaf_hash(data), REMOVAL_LEAF, policy_id)], conn=conn)
        return bool(done)

    def ensure(self, policy: Policy, *, by: str) -> bool:
        """Add ``policy`` unless a policy of its id is, or ever was, stored (an app's
        default an operator removed stays removed); ``True`` if it was added now."""
        if any(p.id == policy.id for p in self.active()):
            return False
        try:
            self.add(policy, by=by)
        except PolicyError:  # removed once (ids are never reused), or added concurrently
            return False
        return True

    def active(self) -> list[Policy]:
        c = policies_table.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(c.spec).where(c.removed_at.is_(None)).order_by(c.id))
            return [policy_from_json(json.loads(spec)) for (spec,) in rows]

    def version(self) -> tuple[int, float]:
        """Changes whenever a policy is added or removed (for :class:`PolicySync`)."""
        c = policies_table.c
        with self._engine.connect() as conn:
            count, last, removed = conn.execute(
                select(func.count(), func.max(c.created), func.max(c.removed_at))
            ).one()
        return int(count), max(float(last or 0), float(removed or 0))

    def leaf_sources(self) -> dict[str, Any]:
        return {POLICY_LEAF: _PolicyLeaves(), REMOVAL_LEAF: _RemovalLeaves()}


class PolicySync:
    """Keeps a :class:`PolicyEngine` holding the built-in and the stored policies."""

    def __init__(
        self,
        engine: PolicyEngine,
        store: SqlPolicies,
        *,
        builtin: Sequence[Policy] = (),
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.store = store
        self._builtin = {p.id for p in builtin}
        self._interval = interval_s
        self._clock = clock
        self._checked = -float("inf")
        self._version: tuple[int, float] | None = None
        self._lock = threading.Lock()

    def refresh(self, *, force: bool = False) -> bool:
        """Reload the stored policies if they changed (checked at most every interval)."""
        now = self._clock()
        if not force and now - self._checked < self._interval:
            return False
        with self._lock:
            self._checked = now
            version = self.store.version()
            if version == self._version and not force:
                return False
            stored = {p.id: p for p in self.store.active()}
            for policy in self.engine.policies():
                if policy.id not in self._builtin and policy.id not in stored:
                    self.engine.remove(policy.id)
            for policy in stored.values():
                self.engine.add(policy)
            self._version = version
            return True


class _PolicyLeaves:
    def leaf_data(self, conn: Connection, refs: Sequence[str]) -> dict[str, bytes]:
        c = policies_table.c
        found: dict[str, bytes] = {}
        ids = sorted(set(refs))
        for start in range(0, len(ids), 500):
            query = select(c.id, c.spec, c.created, c.created_by).where(
                c.id.in_(ids[start : start + 500])
            )
            for id_, spec, created, by in conn.execute(query):
                found[id_] = policy_leaf_data(id_, spec, created, by)
        return found

    def leaf_index(self, conn: Connection, ref: str) -> int | None:
        value = conn.execute(select(policies_table.c.leaf).where(policies_table.c.id == ref))
        found = value.scalar()
        return None if found is None else int(found)

    def count_in(self, conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(policies_table)).scalar_one())

    def refs_in(self, conn: Connection) -> Iterator[str]:
        for (id_,) in conn.execute(select(policies_table.c.id)):
            yield id_


class _RemovalLeaves:
    def leaf_data(self, conn: Connection, refs: Sequence[str]) -> dict[str, bytes]:
        c = policies_table.c
        found: dict[str, bytes] = {}
        ids = sorted(set(refs))
        for start in range(0, len(ids), 500):
            query = select(c.id, c.removed_at, c.removed_by).where(
                c.id.in_(ids[start : start + 500]), c.removed_at.is_not(None)
            )
            for id_, at, by in conn.execute(query):
                found[id_] = removal_leaf_data(id_, at, by or "")
        return found

    def leaf_index(self, conn: Connection, ref: str) -> int | None:
        c = policies_table.c
        found = conn.execute(select(c.removal_leaf).where(c.id == ref)).scalar()
        return None if found is None else int(found)

    def count_in(self, conn: Connection) -> int:
        c = policies_table.c
        query = select(func.count()).select_from(policies_table).where(c.removed_at.is_not(None))
        return int(conn.execute(query).scalar_one())

    def refs_in(self, conn: Connection) -> Iterator[str]:
        c = policies_table.c
        for (id_,) in conn.execute(select(c.id).where(c.removed_at.is_not(None))):
            yield id_
