"""Stored policies: JSON form, reserved priorities, history in the log, sync into the engine."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from msec.access.builtin import BUILTIN_POLICIES
from msec.access.engine import PolicyEngine, ResourceInfo
from msec.access.model import Principal, PrincipalKind, Verb
from msec.access.policies import (
    PolicyError,
    PolicySync,
    SqlPolicies,
    policy_from_json,
    policy_to_json,
)
from msec.tlog import NoteSigner, SqlLog
from msec.tlog.audit import audit

SPEC: dict[str, Any] = {
    "id": "officers-set", "effect": "allow", "verbs": ["SET"], "target": "llamas-01/*/*",
    "roles": ["officer"], "priority": 5, "hours": [8, 18], "description": "office hours",
}  # fmt: skip
OFFICER = Principal("user:ana", PrincipalKind.USER, "santander", frozenset({"officer"}))
INFO = ResourceInfo("santander")


def test_the_json_form_round_trips() -> None:
    policy = policy_from_json(SPEC)
    assert policy.provider == "llamas-01" and policy.hours == (8, 18)
    assert policy_from_json(policy_to_json(policy)) == policy


@pytest.mark.parametrize("change", [
    {"effect": "maybe"}, {"verbs": ["READ"]}, {"verbs": "GET"}, {"target": "a/b"},
    {"target": "home-*/x/y"}, {"priority": "5"}, {"owner": "yes"}, {"colour": "red"},
    {"id": "has space"}, {"id": ""}, {"hours": [8]},
])  # fmt: skip
def test_malformed_policies_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        policy_from_json({**SPEC, **change})


def test_store_history_log_and_sync(engine: Engine) -> None:
    log = SqlLog(engine)
    log.create_schema()
    store = SqlPolicies(engine, log=log)
    store.create_schema()
    decisions = PolicyEngine(BUILTIN_POLICIES, clock=lambda: 10 * 3600.0)
    now = [0.0]
    sync = PolicySync(decisions, store, builtin=BUILTIN_POLICIES, clock=lambda: now[0])
    assert not decisions.decide(OFFICER, Verb.SET, "llamas-01", "a", "b", INFO).allowed
    store.add(policy_from_json(SPEC), by="user:admin")
    assert sync.refresh()
    assert decisions.decide(OFFICER, Verb.SET, "llamas-01", "a", "b", INFO).allowed
    with pytest.raises(PolicyError):
        store.add(policy_from_json(SPEC), by="user:admin")  # ids are never reused
    with pytest.raises(PolicyError):
        store.add(policy_from_json({**SPEC, "id": "x", "priority": 1000}), by="user:admin")
    assert store.remove("officers-set", by="user:admin")
    assert not store.remove("officers-set", by="user:admin")
    assert not sync.refresh()  # checked at most once a second
    now[0] = 2.0
    assert sync.refresh()
    assert not decisions.decide(OFFICER, Verb.SET, "llamas-01", "a", "b", INFO).allowed
    assert len(decisions) == len(BUILTIN_POLICIES)  # the built-in ones stay
    # Both changes are leaves; undoing the removal by hand is caught.
    signer = NoteSigner.generate("test.local/log")
    log.checkpoint(signer, signer.name)
    sources = store.leaf_sources()
    assert audit(engine, sources, signer.verifier(), signer.name).ok
    with engine.begin() as conn:
        conn.execute(text("UPDATE access_policies SET removed_at = NULL"))
    report = audit(engine, sources, signer.verifier(), signer.name)
    assert [p.what for p in report.problems] == ["missing_record"]
