"""The policy engine: a role x verb x resource matrix, conditions, and properties checked
against a brute-force reference (every policy scanned, the rules of the docstring applied)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msec.access.engine import PolicyEngine, ResourceInfo
from msec.access.model import (
    ANONYMOUS,
    ROLES,
    Effect,
    Policy,
    Principal,
    PrincipalKind,
    Verb,
)

SANTANDER = "santander"
PARK = ("llamas-01", "environment", "co2")
HOME = ("home-7", "motion", "state")
PLUG = ("home-7", "plug", "switch")
PARK_INFO = ResourceInfo(SANTANDER)
HOME_INFO = ResourceInfo(SANTANDER, subject="maria", sensitive=True)


def user(name: str, *roles: str, tenant: str | None = SANTANDER, subject: str | None = None):
    return Principal(f"user:{name}", PrincipalKind.USER, tenant, frozenset(roles), subject)


def pilot_engine(grants: set[tuple[str, str]] | None = None) -> PolicyEngine:
    """Connected Care's policy: caregivers read a home only with the person's consent."""
    grants = grants if grants is not None else set()
    return PolicyEngine(
        [
            Policy("care-caregiver-read", Effect.ALLOW, frozenset({Verb.GET, Verb.SUBSCRIBE}),
                   "home-7", roles=frozenset({"caregiver"}), consent=True, tenant="$principal"),
        ],
        consent=lambda principal, provider, verb: (principal.id, provider) in grants,
    )  # fmt: skip


# ---- the matrix -----------------------------------------------------------------------------
def expected(role: str, verb: Verb, target: tuple[str, str, str], consent: bool) -> bool:
    """The documented defaults plus the care policy, written out by hand."""
    if role == "admin" or role == "operator":
        return True  # admin level, or owner level through the operator role
    if target == PARK:
        return verb in (Verb.DESCRIBE, Verb.GET, Verb.SUBSCRIBE)
    # The home's sensor and plug are personal data of maria: only describing is open.
    if verb is Verb.DESCRIBE:
        return True
    return role == "caregiver" and consent and verb in (Verb.GET, Verb.SUBSCRIBE)


@pytest.mark.parametrize("consent", [False, True], ids=["no-grant", "grant"])
@pytest.mark.parametrize("target", [PARK, HOME, PLUG], ids=["park", "home", "plug"])
@pytest.mark.parametrize("verb", list(Verb))
@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_verb_resource_matrix(role: str, verb: Verb, target: tuple[str, str, str],
                                   consent: bool) -> None:
    principal = user("someone", role)
    engine = pilot_engine({(principal.id, "home-7")} if consent else set())
    info = PARK_INFO if target == PARK else HOME_INFO
    decision = engine.decide(principal, verb, *target, info)
    assert decision.allowed is expected(role, verb, target, consent), decision


@pytest.mark.parametrize("verb", list(Verb))
def test_the_data_subject_owns_their_home_and_strangers_and_anonymous_do_not(verb: Verb) -> None:
    engine = pilot_engine()
    maria = user("maria", "citizen", subject="maria")
    assert engine.decide(maria, verb, *HOME, HOME_INFO).allowed
    assert not engine.decide(ANONYMOUS, verb, *HOME, HOME_INFO).allowed
    assert not engine.decide(ANONYMOUS, verb, *PARK, PARK_INFO).allowed
    other = user("rosa", "citizen", subject="rosa")
    assert engine.decide(other, verb, *HOME, HOME_INFO).allowed is (verb is Verb.DESCRIBE)


def test_another_tenant_is_a_wall_even_for_its_admin() -> None:
    engine = PolicyEngine([Policy("open", Effect.ALLOW, frozenset(Verb), priority=100)])
    fujisawa_admin = user("kenji", "admin", tenant="fujisawa")
    for verb in Verb:
        decision = engine.decide(fujisawa_admin, verb, *PARK, PARK_INFO)
        assert not decision.allowed and decision.reason == "another tenant's resource"
    platform_admin = user("root", "admin", tenant=None)
    assert engine.decide(platform_admin, Verb.ACT, *PLUG, HOME_INFO).allowed


def test_conditions_owner_tenant_and_hours() -> None:
    now = [10 * 3600.0]  # 10:00 UTC
    engine = PolicyEngine(
        [
            Policy("office-hours", Effect.ALLOW, frozenset({Verb.SET}), "llamas-01",
                   roles=frozenset({"officer"}), hours=(8, 18)),
            Policy("night", Effect.ALLOW, frozenset({Verb.ACT}), "llamas-01",
                   roles=frozenset({"officer"}), hours=(22, 6)),
            Policy("own-home", Effect.ALLOW, frozenset({Verb.SET}), "home-7", owner=True),
            Policy("fujisawa-only", Effect.ALLOW, frozenset({Verb.SET}), "park-9",
                   tenant="fujisawa"),
        ],
        clock=lambda: now[0],
    )  # fmt: skip
    officer = user("ana", "officer")
    assert engine.decide(officer, Verb.SET, *PARK, PARK_INFO).allowed
    assert not engine.decide(officer, Verb.ACT, *PARK, PARK_INFO).allowed
    now[0] = 23 * 3600.0
    assert not engine.decide(officer, Verb.SET, *PARK, PARK_INFO).allowed
    assert engine.decide(officer, Verb.ACT, *PARK, PARK_INFO).allowed
    now[0] = 86400 + 3 * 3600.0  # 03:00 next day: still inside 22..6
    assert engine.decide(officer, Verb.ACT, *PARK, PARK_INFO).allowed
    maria = user("maria", "citizen", subject="maria")
    juan = user("juan", "citizen", subject="juan")
    home = ResourceInfo(SANTANDER, subject="maria")
    assert engine.decide(maria, Verb.SET, "home-7", "x", "y", home).allowed
    assert not engine.decide(juan, Verb.SET, "home-7", "x", "y", home).allowed
    # A policy naming another tenant never applies to this one's resources.
    assert not engine.decide(juan, Verb.SET, "park-9", "x", "y", PARK_INFO).allowed


def test_a_revoked_grant_never_passes_again() -> None:
    grants = {("user:juan", "home-7")}
    engine = pilot_engine(grants)
    juan = user("juan", "caregiver")
    assert engine.decide(juan, Verb.GET, *HOME, HOME_INFO).allowed
    grants.clear()  # the consent store answers from the database on every call
    assert not engine.decide(juan, Verb.GET, *HOME, HOME_INFO).allowed


def test_policies_can_be_replaced_and_removed() -> None:
    engine = PolicyEngine([Policy("p", Effect.DENY, frozenset({Verb.GET}), "llamas-01")])
    citizen = user("c", "citizen")
    assert not engine.decide(citizen, Verb.GET, *PARK, PARK_INFO).allowed
    engine.add(Policy("p", Effect.ALLOW, frozenset({Verb.ACT}), "llamas-01"))
    assert engine.decide(citizen, Verb.GET, *PARK, PARK_INFO).allowed  # the default again
    assert engine.decide(citizen, Verb.ACT, *PARK, PARK_INFO).allowed
    assert engine.remove("p") and not engine.remove("p") and len(engine) == 0


@pytest.mark.parametrize("bad", ["", "a/b", "home-*", "*x"])
def test_a_pattern_segment_is_a_name_or_star(bad: str) -> None:
    with pytest.raises(ValueError):
        Policy("x", Effect.ALLOW, frozenset({Verb.GET}), bad)


# ---- properties against a brute-force reference -------------------------------------------------
NAMES = ["a", "b", "*"]
ROLE_LIST = ["citizen", "officer", "caregiver"]


def reference(policies: Iterable[Policy], principal: Principal, verb: Verb,
              path: tuple[str, str, str]) -> bool | None:
    """Scan every policy; None when none applies (the default decides)."""
    best: Policy | None = None
    for policy in policies:
        pattern = (policy.provider, policy.service, policy.resource)
        matches = all(p in ("*", v) for p, v in zip(pattern, path, strict=True))
        if verb not in policy.verbs or not matches:
            continue
        if (policy.roles or policy.principals) and not (
            policy.roles & principal.roles or principal.id in policy.principals
        ):
            continue
        key = (policy.priority, policy.effect is Effect.DENY)
        if best is None or key > (best.priority, best.effect is Effect.DENY):
            best = policy
    return None if best is None else best.effect is Effect.ALLOW


policy_strategy = st.builds(
    Policy,
    id=st.uuids().map(str),
    effect=st.sampled_from(list(Effect)),
    verbs=st.frozensets(st.sampled_from(list(Verb)), min_size=1),
    provider=st.sampled_from(NAMES),
    service=st.sampled_from(NAMES),
    resource=st.sampled_from(NAMES),
    roles=st.frozensets(st.sampled_from(ROLE_LIST), max_size=2),
    priority=st.integers(0, 3),
)
request_strategy = st.tuples(
    st.frozensets(st.sampled_from(ROLE_LIST), max_size=2),
    st.sampled_from(list(Verb)),
    st.tuples(*(st.sampled_from(["a", "b", "c"]) for _ in range(3))),
)


@settings(max_examples=300, deadline=None)
@given(policies=st.lists(policy_strategy, max_size=25), requests=st.lists(request_strategy,
                                                                            min_size=1,
                                                                            max_size=10))
def test_the_index_decides_like_a_full_scan(policies: list[Policy], requests: list) -> None:
    engine = PolicyEngine(policies)
    for roles, verb, path in requests:
        principal = user("p", *roles)
        want = reference(policies, principal, verb, path)
        decision = engine.decide(principal, verb, *path, PARK_INFO)
        if want is None:
            assert decision.policy is None, decision
        else:
            assert decision.allowed is want, (decision, policies)


@settings(max_examples=200, deadline=None)
@given(priority=st.integers(-5, 5), verb=st.sampled_from(list(Verb)),
       more=st.lists(policy_strategy, max_size=10))
def test_deny_overrides_allow_at_equal_priority(priority: int, verb: Verb,
                                                more: list[Policy]) -> None:
    top = max([priority, *(p.priority for p in more)])
    policies = [
        *more,
        Policy("allow", Effect.ALLOW, frozenset({verb}), "a", priority=top),
        Policy("deny", Effect.DENY, frozenset({verb}), "a", "*", "c", priority=top),
    ]
    decision = PolicyEngine(policies).decide(user("x", "citizen"), verb, "a", "b", "c", PARK_INFO)
    assert not decision.allowed


@settings(max_examples=200, deadline=None)
@given(policies=st.lists(policy_strategy, max_size=20), request=request_strategy,
       tenants=st.sampled_from([("santander", "fujisawa"), ("fujisawa", "santander")]))
def test_tenants_never_see_each_other(policies: list[Policy], request: tuple,
                                      tenants: tuple[str, str]) -> None:
    roles, verb, path = request
    principal = user("p", *roles, "admin", tenant=tenants[0])
    everything = [*policies, Policy("all", Effect.ALLOW, frozenset(Verb), priority=99)]
    decision = PolicyEngine(everything).decide(principal, verb, *path, ResourceInfo(tenants[1]))
    assert not decision.allowed
