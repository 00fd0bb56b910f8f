"""Consent and delegation: grants, notices, acceptances, and their log leaves (issue 4)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from msec.access.consent import (
    DEFAULT_VERBS,
    Grant,
    NoticeConflict,
    SqlConsent,
    UnknownGrant,
    UnknownNotice,
    scope_matches,
)
from msec.access.consent_leaves import (
    ACCEPTANCE_LEAF,
    GRANT_LEAF,
    GRANT_REVOCATION_LEAF,
    NOTICE_LEAF,
    WITHDRAWAL_LEAF,
    acceptances_table,
    grants_table,
    notices_table,
)
from msec.access.model import Verb
from msec.tlog import NoteSigner, SqlLog, leaf_hash
from msec.tlog.audit import AuditReport, audit

ORIGIN = "test.local/log"
T0 = 1_800_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(engine: Engine) -> SqlLog:
    log = SqlLog(engine)
    log.create_schema()
    return log


@pytest.fixture
def store(engine: Engine, log: SqlLog, clock: Clock) -> SqlConsent:
    store = SqlConsent(engine, log=log, clock=clock)
    store.create_schema()
    return store


NOTICE = {
    "controller": "Ayuntamiento de Santander, Plaza del Ayuntamiento s/n",
    "purpose_text": "Share your home sensors with the caregivers you choose.",
    "legal_basis": "consent (GDPR art. 6(1)(a) and 9(2)(a))",
    "recipients": "the caregivers you name; the city's care service",
    "rights": "access, rectification, erasure, withdrawal at any time",
    "text": "Full notice text as shown on the registration page.",
}


def grant_maria(store: SqlConsent, **kwargs: object) -> Grant:
    args: dict[str, object] = {"scope": "home-17-*", "granted_by": "user:maria.garcia"}
    args.update(kwargs)
    return store.grant("maria.garcia", "user:juan", **args)  # type: ignore[arg-type]


# -- grants ---------------------------------------------------------------------------------


def test_grant_active_and_allows(store: SqlConsent, clock: Clock, log: SqlLog) -> None:
    grant = store.grant(
        "maria.garcia", "user:juan", scope="home-17-*", granted_by="user:maria.garcia"
    )
    assert grant.verbs == DEFAULT_VERBS and not grant.on_behalf and grant.evidence is None
    assert (grant.created, grant.expires_at, grant.revoked, grant.leaf) == (T0, None, False, 0)
    assert store.get_grant(grant.id) == grant
    assert store.active("user:juan") == [grant]
    assert store.active("user:juan", "maria.garcia") == [grant]
    assert store.active("user:juan", "jose.perez") == []
    assert store.active("user:ana") == []

    assert store.allows("user:juan", "home-17-door", Verb.GET) == grant
    assert store.allows("user:juan", "home-17-bed", "SUBSCRIBE") == grant
    assert store.allows("user:juan", "home-17-bed", "GET", subject="maria.garcia") == grant
    assert store.allows("user:juan", "home-17-bed", "GET", subject="jose.perez") is None
    assert store.allows("user:juan", "home-17-door", Verb.ACT) is None  # not granted
    assert store.allows("user:juan", "home-18-door", Verb.GET) is None  # out of scope
    assert store.allows("user:juan", "home-17", Verb.GET) is None  # the prefix is "home-17-"
    assert store.allows("user:ana", "home-17-door", Verb.GET) is None  # someone else
    with pytest.raises(ValueError):
        store.allows("user:juan", "home-17-door", "DELETE")

    clock.tick(1)
    door = store.grant(
        "maria.garcia",
        "user:juan",
        scope="home-17-door",
        verbs=[Verb.ACT, "GET"],
        granted_by="user:maria.garcia",
    )
    assert door.verbs == {Verb.ACT, Verb.GET}
    assert store.allows("user:juan", "home-17-door", Verb.ACT) == door
    assert store.allows("user:juan", "home-17-doorbell", Verb.ACT) is None  # exact name
    assert [g.id for g in store.grants_of("maria.garcia")] == [grant.id, door.id]
    assert store.grants_of("jose.perez") == []
    assert log.size() == 2


def test_scope_matches() -> None:
    assert scope_matches("home-17-*", "home-17-door")
    assert scope_matches("home-17-*", "home-17-")
    assert not scope_matches("home-17-*", "home-170")
    assert scope_matches("home-17", "home-17")
    assert not scope_matches("home-17", "home-17-door")


@pytest.mark.parametrize(
    "scope", ["", "*", "**", "home-*-x", "home/17", "home-17-#", "home 17", "+", "-home", "a" * 300]
)
def test_scope_is_validated(store: SqlConsent, scope: str, log: SqlLog) -> None:
    with pytest.raises(ValueError, match="scope"):
        grant_maria(store, scope=scope)
    assert store.grants_of("maria.garcia") == [] and log.size() == 0


@pytest.mark.parametrize("verbs", [[], ["DELETE"], "GET"])
def test_verbs_are_validated(store: SqlConsent, verbs: object) -> None:
    with pytest.raises(ValueError):
        grant_maria(store, verbs=verbs)


def test_grant_on_behalf_requires_evidence(store: SqlConsent) -> None:
    with pytest.raises(ValueError, match="evidence"):
        grant_maria(store, granted_by="user:op", on_behalf=True)
    with pytest.raises(ValueError, match="evidence"):
        grant_maria(store, granted_by="user:op", on_behalf=True, evidence="  ")
    paper = "paper consent form #123, scanned 2026-11-30"
    grant = grant_maria(store, granted_by="user:op", on_behalf=True, evidence=paper)
    stored = store.grants_of("maria.garcia")
    assert stored == [grant]
    assert (stored[0].granted_by, stored[0].on_behalf, stored[0].evidence) == (
        "user:op",
        True,
        paper,
    )


def test_grant_expires_by_the_clock(store: SqlConsent, clock: Clock) -> None:
    grant = grant_maria(store, expires_at=T0 + 60)
    assert store.allows("user:juan", "home-17-door", "GET") == grant
    clock.tick(59.5)
    assert store.active("user:juan") == [grant]
    clock.tick(0.5)  # expiry is exclusive: at T0 + 60 it no longer holds
    assert store.allows("user:juan", "home-17-door", "GET") is None
    assert store.active("user:juan") == []
    assert store.grants_of("maria.garcia") == [grant]  # still on record
    # As of an earlier time it was in force, and before it was made it was not.
    assert store.allows("user:juan", "home-17-door", "GET", at=T0 + 30) == grant
    assert store.allows("user:juan", "home-17-door", "GET", at=T0 - 1) is None
    with pytest.raises(ValueError, match="future"):
        grant_maria(store, expires_at=clock.now)
    with pytest.raises(ValueError):
        grant_maria(store, expires_at=float("inf"))


def test_revocation_takes_effect_on_the_next_request(
    store: SqlConsent, clock: Clock, log: SqlLog
) -> None:
    grant = grant_maria(store)
    other = store.grant("maria.garcia", "user:ana", scope="home-17-*", granted_by="user:op")
    assert store.allows("user:juan", "home-17-door", "GET") == grant
    clock.tick(10)
    revoked = store.revoke(grant.id, by="user:maria.garcia")
    assert (revoked.revoked_at, revoked.revoked_by, revoked.revocation_leaf) == (
        T0 + 10,
        "user:maria.garcia",
        2,
    )
    assert store.allows("user:juan", "home-17-door", "GET") is None
    assert store.active("user:juan") == []
    # Revoking again changes nothing and logs nothing.
    clock.tick(5)
    assert store.revoke(grant.id, by="user:op") == revoked
    assert log.size() == 3
    with pytest.raises(UnknownGrant):
        store.revoke("no-such-grant", by="user:op")
    # A clock stepping back does not revive it; history still says when it held.
    clock.now = T0 + 1
    assert store.allows("user:juan", "home-17-door", "GET") is None
    then = store.allows("user:juan", "home-17-door", "GET", at=T0 + 5)
    assert then == revoked  # as stored now: revoked since
    assert store.allows("user:juan", "home-17-door", "GET", at=T0 + 10) is None
    # Other grants are untouched.
    assert store.active("user:ana") == [other]


def test_revoke_all(store: SqlConsent, log: SqlLog) -> None:
    juan = [grant_maria(store), grant_maria(store, scope="home-17-door")]
    ana = store.grant("maria.garcia", "user:ana", scope="home-17-*", granted_by="user:op")
    jose = store.grant("jose.perez", "user:juan", scope="home-3-*", granted_by="user:op")
    done = store.revoke_all("maria.garcia", "user:juan", by="user:op")
    assert {g.id for g in done} == {g.id for g in juan}
    assert all(g.revoked_by == "user:op" for g in done)
    assert sorted(g.revocation_leaf for g in done) == [4, 5]  # type: ignore[type-var]
    assert store.active("user:juan") == [jose]
    assert store.revoke_all("maria.garcia", "user:juan", by="user:op") == []
    assert [g.id for g in store.revoke_all("maria.garcia", by="user:op")] == [ana.id]
    assert store.active("user:ana") == []
    assert log.size() == 7


@dataclass
class Model:
    """What the store should answer: the simplest possible bookkeeping."""

    now: float = T0
    grants: list[Grant] = field(default_factory=list)  # as made, never updated
    revoked: set[str] = field(default_factory=set)  # ids ever revoked; never shrinks

    def in_force(self, grantee: str) -> set[str]:
        return {
            g.id
            for g in self.grants
            if g.grantee == grantee
            and g.id not in self.revoked
            and (g.expires_at is None or self.now < g.expires_at)
        }

    def allowed(self, grantee: str, provider: str, verb: Verb) -> set[str]:
        in_force = self.in_force(grantee)
        return {
            g.id
            for g in self.grants
            if g.id in in_force and verb in g.verbs and scope_matches(g.scope, provider)
        }


SUBJECTS = ("maria.garcia", "jose.perez")
GRANTEES = ("user:juan", "user:ana")
SCOPES = ("home-17-*", "home-17-door", "home-1*", "home-18-*")
PROVIDERS = ("home-17-door", "home-17-bed", "home-18-door", "home-1")
STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("grant"),
            st.sampled_from(SUBJECTS),
            st.sampled_from(GRANTEES),
            st.sampled_from(SCOPES),
            st.frozensets(st.sampled_from(list(Verb)), min_size=1),
            st.one_of(st.none(), st.integers(1, 60)),
        ),
        st.tuples(st.just("revoke"), st.integers(0, 30)),
        st.tuples(
            st.just("revoke_all"),
            st.sampled_from(SUBJECTS),
            st.one_of(st.none(), st.sampled_from(GRANTEES)),
        ),
        st.tuples(st.just("tick"), st.integers(0, 40)),
    ),
    max_size=20,
)


@pytest.fixture
def bare_store(engine: Engine) -> Iterator[tuple[SqlConsent, Clock]]:
    clock = Clock()
    store = SqlConsent(engine, clock=clock)
    store.create_schema()
    yield store, clock


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=STEPS, verb=st.sampled_from(list(Verb)))
def test_a_revoked_grant_never_passes_again(
    bare_store: tuple[SqlConsent, Clock], engine: Engine, steps: list[tuple], verb: Verb
) -> None:
    store, clock = bare_store
    with engine.begin() as conn:
        conn.execute(grants_table.delete())
    clock.now = T0
    model = Model()
    for step in steps:
        if step[0] == "grant":
            _, subject, grantee, scope, verbs, expires = step
            expires_at = None if expires is None else model.now + expires
            made = store.grant(
                subject,
                grantee,
                scope=scope,
                verbs=verbs,
                granted_by="user:op",
                expires_at=expires_at,
            )
            assert (made.subject, made.grantee, made.scope, made.verbs) == (
                subject,
                grantee,
                scope,
                verbs,
            )
            model.grants.append(made)
        elif step[0] == "revoke" and model.grants:
            target = model.grants[step[1] % len(model.grants)].id
            assert store.revoke(target, by="user:op").revoked
            model.revoked.add(target)
        elif step[0] == "revoke_all":
            _, subject, grantee = step
            done = store.revoke_all(subject, grantee, by="user:op")
            expected = {
                g.id
                for g in model.grants
                if g.subject == subject
                and (grantee is None or g.grantee == grantee)
                and g.id not in model.revoked
            }
            assert {g.id for g in done} == expected
            model.revoked |= expected
        elif step[0] == "tick":
            model.now = clock.tick(step[1])

        for grantee in GRANTEES:
            active = {g.id for g in store.active(grantee)}
            assert active == model.in_force(grantee)
            assert not active & model.revoked
            for provider in PROVIDERS:
                found = store.allows(grantee, provider, verb)
                allowed = model.allowed(grantee, provider, verb)
                if found is None:
                    assert not allowed
                else:
                    assert found.id in allowed and found.id not in model.revoked


# -- notices and acceptances ----------------------------------------------------------------


def test_notices_are_immutable(store: SqlConsent, clock: Clock, log: SqlLog) -> None:
    first = store.publish_notice("care-sharing", 1, **NOTICE)
    assert (first.id, first.version, first.language, first.leaf) == (
        "care-sharing/v1/en",
        1,
        "en",
        0,
    )
    assert first.controller == NOTICE["controller"] and first.text == NOTICE["text"]
    clock.tick(10)
    # The same content again: the stored notice, nothing new logged.
    assert store.publish_notice("care-sharing", 1, **NOTICE) == first
    assert log.size() == 1
    changed = {**NOTICE, "recipients": "the caregivers you name; an insurer"}
    with pytest.raises(NoticeConflict, match="new version"):
        store.publish_notice("care-sharing", 1, **changed)
    assert store.get_notice("care-sharing/v1/en") == first
    second = store.publish_notice("care-sharing", 2, **changed)
    spanish = store.publish_notice("care-sharing", 1, **NOTICE, language="es")
    assert (second.id, spanish.id) == ("care-sharing/v2/en", "care-sharing/v1/es")
    assert store.latest_notice("care-sharing") == second
    assert store.latest_notice("care-sharing", "es") == spanish
    assert store.latest_notice("care-sharing", "ja") is None
    assert store.latest_notice("other") is None
    assert store.get_notice("nope/v1/en") is None
    assert log.size() == 3


@pytest.mark.parametrize(
    ("purpose", "version", "language"),
    [("Care", 1, "en"), ("care/x", 1, "en"), ("care", 0, "en"), ("care", True, "en"),
     ("care", 1, "e"), ("care", 1, "en/x")],
)  # fmt: skip
def test_notice_arguments_are_validated(
    store: SqlConsent, purpose: str, version: int, language: str
) -> None:
    with pytest.raises(ValueError):
        store.publish_notice(purpose, version, **NOTICE, language=language)


def test_notice_fields_are_required(store: SqlConsent) -> None:
    with pytest.raises(ValueError, match="legal_basis"):
        store.publish_notice("care", 1, **{**NOTICE, "legal_basis": ""})


def test_acceptance_records_the_exact_version(store: SqlConsent, clock: Clock) -> None:
    store.publish_notice("care-sharing", 1, **NOTICE)
    store.publish_notice("care-sharing", 1, **NOTICE, language="es")
    clock.tick(5)
    accepted = store.accept("user:maria.garcia", "care-sharing/v1/es")
    assert (accepted.notice_id, accepted.accepted_at, accepted.withdrawn) == (
        "care-sharing/v1/es",
        T0 + 5,
        False,
    )
    # Accepting the same notice again while it stands is the same acceptance.
    clock.tick(5)
    assert store.accept("user:maria.garcia", "care-sharing/v1/es") == accepted
    assert store.acceptances_of("user:maria.garcia") == [accepted]
    with pytest.raises(UnknownNotice):
        store.accept("user:maria.garcia", "care-sharing/v9/es")
    assert store.has_consented("user:maria.garcia", "care-sharing")
    assert not store.has_consented("user:maria.garcia", "other")
    assert not store.has_consented("user:juan", "care-sharing")


def test_withdrawal(store: SqlConsent, clock: Clock, log: SqlLog) -> None:
    store.publish_notice("care-sharing", 1, **NOTICE)
    store.publish_notice("care-sharing", 2, **NOTICE, language="es")
    store.publish_notice("newsletter", 1, **NOTICE)
    first = store.accept("user:maria.garcia", "care-sharing/v1/en")
    clock.tick(10)
    second = store.accept("user:maria.garcia", "care-sharing/v2/es")
    clock.tick(1)
    news = store.accept("user:maria.garcia", "newsletter/v1/en")
    clock.tick(9)
    withdrawn = store.withdraw("user:maria.garcia", "care-sharing")
    assert withdrawn is not None
    assert (withdrawn.id, withdrawn.withdrawn_at) == (second.id, T0 + 20)
    assert not store.has_consented("user:maria.garcia", "care-sharing")
    assert store.has_consented("user:maria.garcia", "newsletter")  # another purpose
    assert [a.withdrawn for a in store.acceptances_of("user:maria.garcia")] == [True, True, False]
    assert store.withdraw("user:maria.garcia", "care-sharing") is None
    assert log.size() == 3 + 3 + 2
    # History: consent stood between acceptance and withdrawal, not before nor after.
    assert not store.has_consented("user:maria.garcia", "care-sharing", at=T0 - 1)
    assert store.has_consented("user:maria.garcia", "care-sharing", at=T0 + 15)
    assert not store.has_consented("user:maria.garcia", "care-sharing", at=T0 + 20)
    # Consenting again is a new acceptance; the old ones stay on record.
    clock.tick(10)
    again = store.accept("user:maria.garcia", "care-sharing/v1/en")
    assert again.id not in (first.id, second.id, news.id)
    assert store.has_consented("user:maria.garcia", "care-sharing")
    assert len(store.acceptances_of("user:maria.garcia")) == 4


def test_needs_renewal(store: SqlConsent) -> None:
    store.publish_notice("care-sharing", 1, **NOTICE)
    assert not store.needs_renewal("user:maria.garcia", "care-sharing")  # nothing to renew
    store.accept("user:maria.garcia", "care-sharing/v1/en")
    assert not store.needs_renewal("user:maria.garcia", "care-sharing")
    store.publish_notice("care-sharing", 2, **{**NOTICE, "text": "Second wording."})
    assert store.needs_renewal("user:maria.garcia", "care-sharing")
    assert store.has_consented("user:maria.garcia", "care-sharing")  # any version counts
    store.accept("user:maria.garcia", "care-sharing/v2/en")
    assert not store.needs_renewal("user:maria.garcia", "care-sharing")
    store.publish_notice("care-sharing", 3, **NOTICE, language="es")  # any language counts
    assert store.needs_renewal("user:maria.garcia", "care-sharing")
    store.withdraw("user:maria.garcia", "care-sharing")
    assert not store.needs_renewal("user:maria.garcia", "care-sharing")


# -- transparency log -----------------------------------------------------------------------


def populate(store: SqlConsent, clock: Clock) -> dict[str, str]:
    """One of everything; returns a ref of each kind."""
    grant = grant_maria(store, expires_at=T0 + 3600)
    grant_maria(
        store, granted_by="user:op", on_behalf=True, evidence="paper form #123", scope="home-1"
    )
    clock.tick(0.123456789)  # fractions survive both backends exactly
    store.revoke(grant.id, by="user:maria.garcia")
    notice = store.publish_notice("care-sharing", 1, **NOTICE)
    accepted = store.accept("user:maria.garcia", notice.id)
    store.accept("user:jose.perez", notice.id)
    clock.tick(1.000001)
    store.withdraw("user:maria.garcia", "care-sharing")
    return {
        GRANT_LEAF: grant.id,
        GRANT_REVOCATION_LEAF: grant.id,
        NOTICE_LEAF: notice.id,
        ACCEPTANCE_LEAF: accepted.id,
        WITHDRAWAL_LEAF: accepted.id,
    }


def audit_report(engine: Engine, store: SqlConsent, log: SqlLog) -> AuditReport:
    signer = NoteSigner.generate(ORIGIN)
    log.checkpoint(signer, ORIGIN)
    return audit(engine, store.leaf_sources(), signer.verifier(), ORIGIN)


def test_every_change_is_a_leaf(
    store: SqlConsent, clock: Clock, log: SqlLog, engine: Engine
) -> None:
    populate(store, clock)
    entries = log.entries(0, log.size())
    assert [e.kind for e in entries] == [
        GRANT_LEAF,
        GRANT_LEAF,
        GRANT_REVOCATION_LEAF,
        NOTICE_LEAF,
        ACCEPTANCE_LEAF,
        ACCEPTANCE_LEAF,
        WITHDRAWAL_LEAF,
    ]
    sources = store.leaf_sources()
    with engine.connect() as conn:
        for entry in entries:
            source = sources[entry.kind]
            data = source.leaf_data(conn, [entry.ref])
            assert leaf_hash(data[entry.ref]) == entry.leaf_hash  # type: ignore[arg-type]
            assert source.leaf_index(conn, entry.ref) == entry.index
        counts = {kind: source.count_in(conn) for kind, source in sources.items()}
        refs = {kind: sorted(source.refs_in(conn)) for kind, source in sources.items()}
    assert counts == {kind: sum(e.kind == kind for e in entries) for kind in sources}
    assert refs == {kind: sorted(e.ref for e in entries if e.kind == kind) for kind in sources}
    report = audit_report(engine, store, log)
    assert report.ok, report.problems
    assert report.by_kind == counts


def test_without_a_log_nothing_is_logged(engine: Engine, clock: Clock) -> None:
    store = SqlConsent(engine, clock=clock)
    store.create_schema()
    grant = grant_maria(store)
    assert (grant.leaf, store.revoke(grant.id, by="user:op").revocation_leaf) == (None, None)
    notice = store.publish_notice("care", 1, **NOTICE)
    accepted = store.accept("user:maria.garcia", notice.id)
    assert (notice.leaf, accepted.leaf) == (None, None)


def test_an_undone_revocation_is_found(
    store: SqlConsent, clock: Clock, log: SqlLog, engine: Engine
) -> None:
    refs = populate(store, clock)
    grant_id = refs[GRANT_LEAF]
    with engine.begin() as conn:
        conn.execute(
            grants_table.update()
            .where(grants_table.c.id == grant_id)
            .values(revoked_at=None, revoked_by=None)
        )
    # The undone revocation lets the grant pass again (the attack), and the audit sees it.
    assert store.allows("user:juan", "home-17-door", "GET") is not None
    sources = store.leaf_sources()
    with engine.connect() as conn:
        assert sources[GRANT_REVOCATION_LEAF].leaf_data(conn, [grant_id]) == {}
        assert grant_id in sources[GRANT_LEAF].leaf_data(conn, [grant_id])  # still matches
    report = audit_report(engine, store, log)
    assert [(p.what, p.index, p.ref) for p in report.problems] == [("missing_record", 2, grant_id)]


def test_an_undone_withdrawal_is_found(
    store: SqlConsent, clock: Clock, log: SqlLog, engine: Engine
) -> None:
    refs = populate(store, clock)
    acceptance_id = refs[WITHDRAWAL_LEAF]
    with engine.begin() as conn:
        conn.execute(
            acceptances_table.update()
            .where(acceptances_table.c.id == acceptance_id)
            .values(withdrawn_at=None)
        )
    assert store.has_consented("user:maria.garcia", "care-sharing")
    with engine.connect() as conn:
        assert store.leaf_sources()[WITHDRAWAL_LEAF].leaf_data(conn, [acceptance_id]) == {}
    report = audit_report(engine, store, log)
    assert [(p.what, p.ref) for p in report.problems] == [("missing_record", acceptance_id)]


def test_edits_and_forgeries_are_found(
    store: SqlConsent, clock: Clock, log: SqlLog, engine: Engine
) -> None:
    refs = populate(store, clock)
    with engine.begin() as conn:
        # Extend a grant, reword a published notice, backdate a withdrawal.
        conn.execute(
            grants_table.update()
            .where(grants_table.c.id == refs[GRANT_LEAF])
            .values(expires_at=T0 + 10**9)
        )
        conn.execute(notices_table.update().values(recipients="everyone"))
        conn.execute(
            acceptances_table.update()
            .where(acceptances_table.c.id == refs[WITHDRAWAL_LEAF])
            .values(withdrawn_at=T0)
        )
        # A grant that no leaf logs.
        conn.execute(
            text(
                "INSERT INTO access_grants (id, subject, grantee, scope, verbs, granted_by, "
                "on_behalf, created) VALUES ('forged', 'maria.garcia', 'user:eve', 'home-17-*', "
                "'GET', 'user:maria.garcia', :f, 0)"
            ),
            {"f": False},
        )
    report = audit_report(engine, store, log)
    found = sorted((p.what, p.ref or "") for p in report.problems)
    assert found == sorted(
        [
            ("inserted", "forged"),
            ("root_mismatch", ""),  # the checkpoint signed the leaves as logged
            ("modified", refs[GRANT_LEAF]),
            ("modified", refs[NOTICE_LEAF]),
            ("modified", refs[WITHDRAWAL_LEAF]),
        ]
    )
