"""``msec bench access``: policy decisions per second, beside casbin on the same workload.

One run builds ``policies`` policies spread over 10,000 providers (each: one provider, a
service and resource that are a name or ``*``, one or two verbs, one role or one principal,
allow or deny, a priority 0..9) plus a lowest-priority deny of everything, and 10,000
requests by 1,000 principals with one or two roles each. It times our
:class:`~msec.access.engine.PolicyEngine` over the requests on one core (``decisions_per_s``,
``p99_us`` of single decisions), then loads the same policies into casbin with an equivalent
RBAC model (priority effect, ``keyMatch2`` on ``/provider/service/resource``, roles through
``g``) and times it on the same requests for at most ``casbin_seconds``
(``casbin_decisions_per_s``, ``ratio_vs_casbin``). Every request casbin answered is
compared with ours (``agreement``, expected 1.0). casbin (pycasbin) is a test dependency.
"""

from __future__ import annotations

import random
import time
from typing import Any

from msec.access.engine import PolicyEngine, ResourceInfo
from msec.access.model import ROLES, Effect, Policy, Principal, PrincipalKind, Verb

PROVIDERS = 10_000
SERVICES = {"environment": ("temperature", "co2", "noise"), "plug": ("switch", "power")}
_VERBS = list(Verb)
_ROLES = sorted(ROLES)
_CASBIN_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = priority, sub, obj, act, eft

[role_definition]
g = _, _

[policy_effect]
e = priority(p.eft) || deny

[matchers]
m = g(r.sub, p.sub) && keyMatch2(r.obj, p.obj) && r.act == p.act
"""


def _workload(
    count: int, seed: int
) -> tuple[list[Policy], list[Principal], list[tuple[Principal, Verb, str, str, str]]]:
    rng = random.Random(seed)
    providers = [f"p{n:05d}" for n in range(PROVIDERS)]
    principals = [
        Principal(
            f"user:u{n:04d}",
            PrincipalKind.USER,
            "santander",
            frozenset(rng.sample(_ROLES, rng.choice((1, 2)))),
        )
        for n in range(1000)
    ]
    policies = [
        Policy("deny-all", Effect.DENY, frozenset(_VERBS), priority=-1, principals=frozenset(),
               roles=frozenset(_ROLES)),
    ]  # fmt: skip
    for n in range(count):
        service = rng.choice([*SERVICES, "*"])
        resource = rng.choice([*SERVICES[service], "*"]) if service != "*" else "*"
        whom: dict[str, Any] = (
            {"roles": frozenset({rng.choice(_ROLES)})}
            if rng.random() < 0.9
            else {"principals": frozenset({rng.choice(principals).id})}
        )
        policies.append(
            Policy(
                f"pol{n:06d}",
                Effect.ALLOW if rng.random() < 0.8 else Effect.DENY,
                frozenset(rng.sample(_VERBS, rng.choice((1, 2)))),
                providers[n % PROVIDERS],
                service,
                resource,
                priority=rng.randrange(10),
                **whom,
            )
        )
    requests = []
    for _ in range(10_000):
        service = rng.choice(list(SERVICES))
        requests.append(
            (
                rng.choice(principals),
                rng.choice(_VERBS),
                rng.choice(providers),
                service,
                rng.choice(SERVICES[service]),
            )
        )
    return policies, principals, requests


def _casbin_enforcer(policies: list[Policy], principals: list[Principal]) -> Any:
    import casbin  # a test dependency: imported only here
    from casbin.persist.adapters.string_adapter import StringAdapter

    lines = []
    for policy in policies:
        # casbin's priority effect: the smallest number wins; make deny win at equal priority.
        rank = (10 - policy.priority) * 2 + (0 if policy.effect is Effect.DENY else 1)
        subjects = [f"role:{r}" for r in sorted(policy.roles)] + sorted(policy.principals)
        obj = f"/{policy.provider}/{policy.service}/{policy.resource}"
        for subject in subjects:
            for verb in sorted(policy.verbs):
                lines.append(f"p, {rank}, {subject}, {obj}, {verb}, {policy.effect.value}")
    for principal in principals:
        lines.extend(f"g, {principal.id}, role:{role}" for role in sorted(principal.roles))
    model = casbin.Enforcer.new_model(text=_CASBIN_MODEL)
    return casbin.Enforcer(model, StringAdapter("\n".join(lines)))


def run_access_bench(
    *, policies: int = 100_000, decisions: int = 200_000, casbin_seconds: float = 20.0,
    seed: int = 7,
) -> dict[str, Any]:  # fmt: skip
    """Run the benchmark; returns the figures."""
    rules, principals, requests = _workload(policies, seed)
    built = time.perf_counter()
    engine = PolicyEngine(rules)
    build_s = time.perf_counter() - built
    info = ResourceInfo("santander")
    decide = engine.decide
    # Throughput: back to back over the requests, cycling.
    start = time.perf_counter()
    done = 0
    while done < decisions:
        for principal, verb, provider, service, resource in requests:
            decide(principal, verb, provider, service, resource, info)
        done += len(requests)
    elapsed = time.perf_counter() - start
    # Latency of single decisions.
    samples = []
    clock = time.perf_counter_ns
    for principal, verb, provider, service, resource in requests:
        t = clock()
        decide(principal, verb, provider, service, resource, info)
        samples.append(clock() - t)
    samples.sort()
    result: dict[str, Any] = {
        "policies": len(rules),
        "providers": PROVIDERS,
        "decisions": done,
        "decisions_per_s": round(done / elapsed, 1),
        "p50_us": round(samples[len(samples) // 2] / 1000, 2),
        "p99_us": round(samples[int(len(samples) * 0.99)] / 1000, 2),
        "index_build_s": round(build_s, 3),
    }
    try:
        enforcer = _casbin_enforcer(rules, principals)
    except ImportError:
        result["casbin"] = "not installed"
        return result
    theirs: list[bool] = []
    start = time.perf_counter()
    deadline = start + casbin_seconds
    for principal, verb, provider, service, resource in requests:
        obj = f"/{provider}/{service}/{resource}"
        theirs.append(bool(enforcer.enforce(principal.id, obj, str(verb))))
        if time.perf_counter() >= deadline:
            break
    casbin_s = time.perf_counter() - start
    answered = len(theirs)
    casbin_rate = answered / casbin_s
    agree = sum(
        decide(principal, verb, provider, service, resource, info).allowed == answer
        for (principal, verb, provider, service, resource), answer in zip(
            requests, theirs, strict=False
        )
    )
    result.update(
        {
            "casbin_decisions": answered,
            "casbin_decisions_per_s": round(casbin_rate, 1),
            "ratio_vs_casbin": round(result["decisions_per_s"] / casbin_rate, 1),
            "agreement": round(agree / answered, 4),
        }
    )
    return result
