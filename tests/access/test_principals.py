"""The principal store on SQLite and PostgreSQL: passwords, lockout, tokens, the log."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from msec.access.model import TENANTS, Principal, PrincipalKind
from msec.access.principals import (
    ACCESS_LEAF,
    AuthError,
    AuthReason,
    DuplicatePrincipal,
    InvalidCredentials,
    InvalidToken,
    LockedOut,
    PrincipalError,
    SqlPrincipals,
    UnknownPrincipal,
    UnknownToken,
    access_event_leaf_data,
    parse_principal_id,
)
from msec.tlog import NoteSigner, SqlLog, leaf_hash
from msec.tlog.audit import audit

PASSWORD = "correct horse battery"
T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingHash(PasswordHash):
    """A cheap argon2id (tests only) that counts how many passwords it checked."""

    def __init__(self, time_cost: int = 1) -> None:
        super().__init__((Argon2Hasher(time_cost=time_cost, memory_cost=1024, parallelism=1),))
        self.checks = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.checks += 1

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        self._count()
        return super().verify(password, hash)

    def verify_and_update(
        self, password: str | bytes, hash: str | bytes
    ) -> tuple[bool, str | None]:
        self._count()
        return super().verify_and_update(password, hash)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hasher() -> CountingHash:
    return CountingHash()


@pytest.fixture
def log(engine: sa.Engine) -> SqlLog:
    log = SqlLog(engine)
    log.create_schema()
    return log


@pytest.fixture
def store(engine: sa.Engine, log: SqlLog, clock: Clock, hasher: CountingHash) -> SqlPrincipals:
    store = SqlPrincipals(engine, log=log, clock=clock, password_hash=hasher)
    store.create_schema()
    return store


@pytest.fixture
def maria(store: SqlPrincipals) -> str:
    store.add_user(
        "maria", tenant="santander", roles=["citizen"], password=PASSWORD, subject="maria"
    )
    return "user:maria"


def raw_user(engine: sa.Engine, name: str) -> sa.Row:
    with engine.connect() as conn:
        query = sa.text("SELECT * FROM access_users WHERE name = :name")
        return conn.execute(query, {"name": name}).one()


def reason_of(call: object, *args: object) -> AuthReason:
    with pytest.raises(AuthError) as info:
        call(*args)  # type: ignore[operator]
    return info.value.reason


# -- schema and accounts -------------------------------------------------------------------------


def test_schema_has_the_pilot_tenants_and_is_idempotent(store: SqlPrincipals) -> None:
    store.create_schema()
    assert store.tenants() == sorted({"default", *TENANTS})
    assert {"santander", "fujisawa"} <= set(store.tenants())


def test_passwords_are_stored_as_argon2id_with_the_default_costs(engine: sa.Engine) -> None:
    store = SqlPrincipals(engine)  # the production hasher
    store.create_schema()
    store.add_user("ana", tenant="fujisawa", roles=["officer"], password=PASSWORD)
    stored = raw_user(engine, "ana").password_hash
    assert re.fullmatch(
        r"\$argon2id\$v=19\$m=65536,t=3,p=4\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", stored
    )
    assert PASSWORD not in stored
    assert "argon2" not in repr(store.get_user("ana")) and PASSWORD not in repr(store)
    principal = store.authenticate_password("ana", PASSWORD)
    assert principal == Principal(
        "user:ana", PrincipalKind.USER, "fujisawa", frozenset({"officer"})
    )


def test_add_user_and_authenticate(store: SqlPrincipals, maria: str) -> None:
    user = store.get_user("maria")
    assert user is not None and user.principal_id == maria and user.roles == {"citizen"}
    assert user.tenant == "santander" and user.subject == "maria" and not user.disabled
    principal = store.authenticate_password("Maria", PASSWORD)  # names match in lower case
    assert principal == Principal(
        maria, PrincipalKind.USER, "santander", frozenset({"citizen"}), "maria"
    )
    assert store.principal(maria) == principal
    assert [u.name for u in store.list_users()] == ["maria"]
    assert store.list_users(tenant="fujisawa") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Maria"}, "lower case"),
        ({"name": "-x"}, "lower case"),
        ({"name": "a" * 65}, "lower case"),
        ({"name": "ma ria"}, "lower case"),
        ({"roles": ["wizard"]}, "unknown roles"),
        ({"roles": "admin"}, "not one string"),
        ({"tenant": "atlantis"}, "no tenant"),
        ({"password": "short"}, "characters"),
        ({"password": "x" * 1025}, "characters"),
        ({"subject": ""}, "subject"),
    ],
)
def test_add_user_rejects_bad_input(store: SqlPrincipals, kwargs: dict, message: str) -> None:
    args = {"name": "bob", "tenant": "santander", "roles": ["citizen"], "password": PASSWORD}
    args.update(kwargs)
    name = args.pop("name")
    with pytest.raises(ValueError, match=message):
        store.add_user(name, **args)
    assert store.list_users() == []


def test_duplicate_user_and_extra_roles(
    engine: sa.Engine, store: SqlPrincipals, maria: str
) -> None:
    with pytest.raises(DuplicatePrincipal):
        store.add_user("maria", tenant="fujisawa", roles=[], password=PASSWORD)
    wider = SqlPrincipals(engine, extra_roles=["auditor"], password_hash=CountingHash())
    wider.add_user("eve", tenant="default", roles=["auditor", "admin"], password=PASSWORD)
    assert wider.principal("user:eve").roles == {"auditor", "admin"}  # type: ignore[union-attr]


def test_principal_ids() -> None:
    assert parse_principal_id("user:maria") == (PrincipalKind.USER, "maria")
    assert parse_principal_id("service:ingest") == (PrincipalKind.SERVICE, "ingest")
    for bad in ["maria", "user:", "device:x", "user:Maria", "user:a:b", ""]:
        with pytest.raises(ValueError):
            parse_principal_id(bad)


def test_set_roles_applies_to_tokens_at_once(store: SqlPrincipals, maria: str) -> None:
    token, _ = store.issue_token(maria)
    store.set_roles("maria", ["citizen", "caregiver"])
    assert store.authenticate_token(token).roles == {"citizen", "caregiver"}
    with pytest.raises(ValueError):
        store.set_roles("maria", ["pirate"])
    with pytest.raises(UnknownPrincipal):
        store.set_roles("nobody", ["citizen"])


def test_set_password(store: SqlPrincipals, maria: str) -> None:
    store.set_password("maria", "another long password")
    with pytest.raises(InvalidCredentials):
        store.authenticate_password("maria", PASSWORD)
    assert store.authenticate_password("maria", "another long password").id == maria
    with pytest.raises(ValueError):
        store.set_password("maria", "short")
    with pytest.raises(UnknownPrincipal):
        store.set_password("nobody", PASSWORD)


# -- failed logins ---------------------------------------------------------------------------


def test_unknown_user_and_wrong_password_fail_alike(
    store: SqlPrincipals, maria: str, hasher: CountingHash
) -> None:
    failures = []
    for name, password in [
        ("nobody", PASSWORD),
        ("maria", "wrong password"),
        ("", ""),
        ("Ünïcode", PASSWORD),
        ("maria", "x" * 5000),
    ]:
        before = hasher.checks
        with pytest.raises(InvalidCredentials) as info:
            store.authenticate_password(name, password)
        assert hasher.checks - before == 1  # one argon2 check each: no timing difference
        failures.append(info.value)
    assert {type(f) for f in failures} == {InvalidCredentials}
    assert {str(f) for f in failures} == {"invalid user name or password"}
    reasons = [f.reason for f in failures]
    assert reasons == [
        AuthReason.UNKNOWN,
        AuthReason.BAD_PASSWORD,
        AuthReason.UNKNOWN,
        AuthReason.UNKNOWN,
        AuthReason.BAD_PASSWORD,
    ]
    assert failures[1].principal_id == maria


def test_lockout_then_unlock_as_time_passes(
    store: SqlPrincipals, maria: str, clock: Clock, hasher: CountingHash
) -> None:
    for _ in range(5):
        assert reason_of(store.authenticate_password, "maria", "wrong") == AuthReason.BAD_PASSWORD
    checks = hasher.checks
    with pytest.raises(LockedOut) as info:
        store.authenticate_password("maria", PASSWORD)  # even the right password
    assert info.value.reason == AuthReason.LOCKED and info.value.until == T0 + 900
    assert info.value.principal_id == maria
    assert hasher.checks == checks  # not even checked while locked
    assert store.get_user("maria").locked(clock.now)  # type: ignore[union-attr]
    clock.advance(899)
    with pytest.raises(LockedOut):
        store.authenticate_password("maria", PASSWORD)
    clock.advance(2)
    assert store.authenticate_password("maria", PASSWORD).id == maria
    user = store.get_user("maria")
    assert user is not None and user.failed_logins == 0 and not user.locked(clock.now)


def test_lockouts_double_until_a_login_succeeds(
    store: SqlPrincipals, maria: str, clock: Clock
) -> None:
    def lock() -> float:
        for _ in range(5):
            with pytest.raises(InvalidCredentials):
                store.authenticate_password("maria", "wrong")
        with pytest.raises(LockedOut) as info:
            store.authenticate_password("maria", PASSWORD)
        return info.value.until - clock.now

    assert lock() == 900
    clock.advance(901)
    assert lock() == 1800
    clock.advance(1801)
    assert lock() == 3600
    clock.advance(3601)
    store.authenticate_password("maria", PASSWORD)
    assert lock() == 900


def test_a_success_resets_the_count(store: SqlPrincipals, maria: str) -> None:
    for _ in range(2):
        for _ in range(4):
            with pytest.raises(InvalidCredentials):
                store.authenticate_password("maria", "wrong")
        store.authenticate_password("maria", PASSWORD)
    assert store.get_user("maria").failed_logins == 0  # type: ignore[union-attr]


def test_enable_user_lifts_a_lockout(store: SqlPrincipals, maria: str) -> None:
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            store.authenticate_password("maria", "wrong")
    with pytest.raises(LockedOut):
        store.authenticate_password("maria", PASSWORD)
    assert store.enable_user("maria") is True
    assert store.authenticate_password("maria", PASSWORD).id == maria
    assert store.enable_user("maria") is False


def test_a_burst_of_parallel_guesses_gets_no_more_checks(
    engine: sa.Engine, log: SqlLog, clock: Clock
) -> None:
    hasher = CountingHash()
    store = SqlPrincipals(engine, log=log, clock=clock, password_hash=hasher, max_failures=3)
    store.create_schema()
    store.add_user("maria", tenant="santander", roles=[], password=PASSWORD)
    hasher.checks = 0
    errors: list[BaseException] = []

    def guess() -> None:
        try:
            store.authenticate_password("maria", "wrong guess")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 12 and all(isinstance(e, AuthError) for e in errors)
    assert hasher.checks <= 3
    assert sum(isinstance(e, LockedOut) for e in errors) >= 9
    with pytest.raises(LockedOut):
        store.authenticate_password("maria", PASSWORD)


def test_disabled_user_cannot_log_in_or_use_tokens(store: SqlPrincipals, maria: str) -> None:
    token, _ = store.issue_token(maria)
    assert store.disable_user("maria") is True
    assert store.disable_user("maria") is False
    assert reason_of(store.authenticate_password, "maria", PASSWORD) == AuthReason.DISABLED
    assert reason_of(store.authenticate_password, "maria", "wrong") == AuthReason.BAD_PASSWORD
    assert reason_of(store.authenticate_token, token) == AuthReason.DISABLED
    assert store.principal(maria) is None
    with pytest.raises(PrincipalError, match="disabled"):
        store.issue_token(maria)
    store.enable_user("maria")
    assert store.authenticate_token(token).id == maria
    with pytest.raises(UnknownPrincipal):
        store.disable_user("nobody")


def test_outdated_hashes_are_rehashed_on_login(
    engine: sa.Engine, store: SqlPrincipals, maria: str, log: SqlLog
) -> None:
    assert ",t=1," in raw_user(engine, "maria").password_hash
    size = log.size()
    stronger = SqlPrincipals(engine, log=log, password_hash=CountingHash(time_cost=2))
    stronger.authenticate_password("maria", PASSWORD)
    assert ",t=2," in raw_user(engine, "maria").password_hash
    assert stronger.authenticate_password("maria", PASSWORD).id == maria
    assert log.size() == size  # the same password at new costs is not an account change


# -- tokens ----------------------------------------------------------------------------------


def test_tokens_are_shown_once_and_stored_hashed(
    engine: sa.Engine, store: SqlPrincipals, maria: str
) -> None:
    token, info = store.issue_token(maria, label="phone")
    match = re.fullmatch(r"msec_([0-9a-f]{24})_([A-Za-z0-9_-]{43})", token)
    assert match is not None and match.group(1) == info.id
    assert info.principal_id == maria and info.label == "phone"
    assert info.expires_at == T0 + 3600 and info.state(T0) == "active"
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM access_tokens")).one()
    assert bytes(row.secret_hash) == hashlib.sha256(match.group(2).encode()).digest()
    assert match.group(2) not in repr(tuple(row)) and match.group(2) not in repr(info)
    assert store.authenticate_token(token) == store.principal(maria)


def test_token_expiry(store: SqlPrincipals, maria: str, clock: Clock) -> None:
    token, info = store.issue_token(maria, ttl_s=60)
    forever, _ = store.issue_token(maria, ttl_s=None)
    clock.advance(59.9)
    assert store.authenticate_token(token).id == maria
    clock.advance(0.1)
    assert reason_of(store.authenticate_token, token) == AuthReason.EXPIRED
    assert store.token_info(info.id).state(clock.now) == "expired"  # type: ignore[union-attr]
    clock.advance(10 * 365 * 86400)
    assert store.authenticate_token(forever).id == maria
    for ttl in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            store.issue_token(maria, ttl_s=ttl)


def test_revocation_takes_effect_on_the_next_request(
    engine: sa.Engine, store: SqlPrincipals, maria: str, clock: Clock
) -> None:
    other = SqlPrincipals(engine, clock=clock, password_hash=CountingHash())  # another process
    token, info = store.issue_token(maria)
    assert other.authenticate_token(token).id == maria
    assert store.revoke_token(info.id) is True
    assert reason_of(other.authenticate_token, token) == AuthReason.REVOKED
    assert reason_of(store.authenticate_token, token) == AuthReason.REVOKED
    assert store.revoke_token(info.id) is False
    store.enable_user("maria")
    clock.advance(1)
    assert reason_of(store.authenticate_token, token) == AuthReason.REVOKED  # never again
    for unknown in ("0" * 24, "not-an-id", ""):
        with pytest.raises(UnknownToken):
            store.revoke_token(unknown)


def test_revoke_all(store: SqlPrincipals, maria: str) -> None:
    store.add_service("ingest", tenant="default", roles=["provider"])
    tokens = [store.issue_token(maria, label=str(i))[0] for i in range(3)]
    kept, _ = store.issue_token("service:ingest")
    store.revoke_token(store.list_tokens(maria)[0].id)
    assert store.revoke_all(maria) == 2
    assert store.revoke_all(maria) == 0
    for token in tokens:
        assert reason_of(store.authenticate_token, token) == AuthReason.REVOKED
    assert store.authenticate_token(kept).id == "service:ingest"
    assert [t.state(T0) for t in store.list_tokens(maria)] == ["revoked"] * 3
    assert store.revoke_all("user:nobody") == 0


def test_wrong_secret_and_unknown_id(store: SqlPrincipals, maria: str) -> None:
    token, info = store.issue_token(maria)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(InvalidToken) as wrong:
        store.authenticate_token(forged)
    assert wrong.value.reason == AuthReason.UNKNOWN and wrong.value.token_id == info.id
    assert wrong.value.principal_id is None  # a forger learns nothing, even in the event
    unknown = "msec_" + "0" * 24 + token[-44:]
    assert reason_of(store.authenticate_token, unknown) == AuthReason.UNKNOWN
    assert reason_of(store.authenticate_token, token + " ") == AuthReason.MALFORMED


def test_service_accounts(store: SqlPrincipals) -> None:
    service = store.add_service("ingest", tenant="fujisawa", roles=["provider"])
    assert service.principal_id == "service:ingest" and not service.disabled
    token, _ = store.issue_token("service:ingest", label="gateway")
    principal = store.authenticate_token(token)
    assert principal == Principal(
        "service:ingest", PrincipalKind.SERVICE, "fujisawa", frozenset({"provider"})
    )
    with pytest.raises(DuplicatePrincipal):
        store.add_service("ingest", tenant="fujisawa", roles=[])
    assert store.disable_service("ingest") is True
    assert reason_of(store.authenticate_token, token) == AuthReason.DISABLED
    assert store.enable_service("ingest") is True
    assert store.authenticate_token(token) == principal
    assert [s.name for s in store.list_services()] == ["ingest"]
    with pytest.raises(UnknownPrincipal):
        store.issue_token("service:nobody")
    with pytest.raises(ValueError):
        store.issue_token("device:meter-1")


def test_last_used_is_written_at_most_once_a_minute(
    store: SqlPrincipals, maria: str, clock: Clock
) -> None:
    token, info = store.issue_token(maria)
    store.authenticate_token(token)
    assert store.token_info(info.id).last_used == T0  # type: ignore[union-attr]
    clock.advance(30)
    store.authenticate_token(token)
    assert store.token_info(info.id).last_used == T0  # type: ignore[union-attr]
    clock.advance(31)
    store.authenticate_token(token)
    assert store.token_info(info.id).last_used == T0 + 61  # type: ignore[union-attr]


@pytest.fixture
def issued(store: SqlPrincipals, maria: str) -> Iterator[tuple[SqlPrincipals, str]]:
    token, _ = store.issue_token(maria)
    yield store, token


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.one_of(
        st.text(),
        st.from_regex(r"msec_[0-9a-f]{24}_[A-Za-z0-9_-]{43}", fullmatch=True),
        st.from_regex(r"msec_[0-9a-fA-F]{20,28}_.{40,46}", fullmatch=True),
        st.binary().map(lambda b: b.decode("latin-1")),
    )
)
@example(text="msec_")
@example(text="msec_" + "0" * 24 + "_" + "A" * 43)
@example(text="msec_" + "0" * 24 + "_" + "A" * 43 + "\n")
@example(text="\x00")
def test_any_text_is_only_ever_an_invalid_token(
    issued: tuple[SqlPrincipals, str], text: str
) -> None:
    store, token = issued
    if text == token:
        return
    with pytest.raises(InvalidToken) as info:
        store.authenticate_token(text)
    assert str(info.value) == "invalid token"
    assert info.value.reason in (AuthReason.MALFORMED, AuthReason.UNKNOWN)


def test_non_text_tokens_and_passwords(store: SqlPrincipals, maria: str) -> None:
    for value in (None, b"msec_", 42):
        assert reason_of(store.authenticate_token, value) == AuthReason.MALFORMED
        with pytest.raises(InvalidCredentials):
            store.authenticate_password(value, PASSWORD)  # type: ignore[arg-type]
    with pytest.raises(InvalidCredentials):
        store.authenticate_password("maria", None)  # type: ignore[arg-type]


# -- the transparency log --------------------------------------------------------------------


def test_every_change_is_a_leaf_the_audit_recomputes(
    engine: sa.Engine, store: SqlPrincipals, log: SqlLog, clock: Clock
) -> None:
    store.add_tenant("kyoto")
    store.add_user("maria", tenant="kyoto", roles=["citizen"], password=PASSWORD)
    store.add_service("ingest", tenant="default", roles=["provider"])
    token, info = store.issue_token("user:maria", label="phone")
    store.set_roles("maria", ["citizen", "buyer"])
    store.set_password("maria", "a new long password")
    store.disable_user("maria")
    store.enable_user("maria")
    store.revoke_token(info.id)
    store.issue_token("service:ingest")
    store.revoke_all("service:ingest")
    store.disable_service("ingest")
    for _ in range(5):  # failures and lockouts are security events, not account changes
        with pytest.raises(InvalidCredentials):
            store.authenticate_password("maria", "wrong")

    actions = [e.action for e in reversed(store.events())]
    assert actions == [
        "tenant.added",
        "user.added",
        "service.added",
        "token.issued",
        "user.roles",
        "user.password",
        "user.disabled",
        "user.enabled",
        "token.revoked",
        "token.issued",
        "token.revoked",
        "service.disabled",
    ]
    assert log.size() == len(actions)
    entries = log.entries(0, log.size())
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, at, principal_id, action, detail, leaf FROM access_events ORDER BY id"
            )
        ).all()
    for entry, row in zip(entries, rows, strict=True):
        assert (entry.kind, entry.ref, entry.index) == (ACCESS_LEAF, str(row.id), row.leaf)
        assert entry.leaf_hash == leaf_hash(access_event_leaf_data(tuple(row)[:5]))
    assert store.get_user("maria").leaf == 1  # type: ignore[union-attr]
    assert info.leaf == 3

    secret = token.split("_", 2)[2]  # the 43 base64url characters may hold "_"
    everything = json.dumps([tuple(map(str, r)) for r in rows])
    for never in (secret, PASSWORD, "a new long password", "argon2"):
        assert never not in everything
    assert store.events(principal_id="user:maria", limit=1)[0].detail == {"token": info.id}

    signer = NoteSigner.generate("msec.test")
    report = audit(engine, store.leaf_sources(), signer.verifier(), "msec.test")
    assert report.ok, report.problems
    assert report.by_kind == {ACCESS_LEAF: len(actions)}

    with engine.begin() as conn:  # someone rewrites history: the roles given were "admin"
        conn.execute(
            sa.text("UPDATE access_events SET detail = :d WHERE action = 'user.roles'"),
            {"d": '{"roles":["admin"]}'},
        )
    report = audit(engine, store.leaf_sources(), signer.verifier(), "msec.test")
    assert not report.ok
    assert str(rows[4].id) in {p.ref for p in report.problems}


def test_without_a_log_events_are_kept_unlinked(engine: sa.Engine, clock: Clock) -> None:
    store = SqlPrincipals(engine, clock=clock, password_hash=CountingHash())
    store.create_schema()
    store.add_user("maria", tenant="santander", roles=[], password=PASSWORD)
    token, info = store.issue_token("user:maria")
    assert store.authenticate_token(token).id == "user:maria"
    assert info.leaf is None and store.get_user("maria").leaf is None  # type: ignore[union-attr]
    assert [(e.action, e.leaf) for e in store.events()] == [
        ("token.issued", None),
        ("user.added", None),
    ]


def test_a_failed_change_leaves_no_leaf(store: SqlPrincipals, maria: str, log: SqlLog) -> None:
    size = log.size()
    with pytest.raises(DuplicatePrincipal):
        store.add_user("maria", tenant="santander", roles=[], password=PASSWORD)
    with pytest.raises(DuplicatePrincipal):
        store.add_tenant("santander")
    with pytest.raises(PrincipalError):
        store.issue_token("user:nobody")
    assert log.size() == size and len(store.events()) == size
