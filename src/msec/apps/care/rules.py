"""Alert definitions of Connected Care: generic settings, per device type limits and custom
rules, declared in a TOML file (``[care] alerts``) instead of written in code.

The seven built-in alarms (:class:`~msec.apps.care.model.AlarmKind`) need the engine's
knowledge of a home (is the person away, in bed, is the sensor reporting); a definition file
sets their parameters for everyone (``[generic]``, any :class:`CareSettings` field), per device
type (``[device_types.<type>]``: ``offline_s`` and ``low_battery_pct``), and adds **custom
rules** (``[[rule]]``) of four types, each raising its own alarm kind:

``single``
    one reading matches a condition (``when``): e.g. the plug's voltage below 207 V.
``combined``
    several conditions on any of the home's sensors: ``all`` (AND: each matched by a reading,
    all within ``window_s``) or ``any`` (OR: a reading matching one of them).
``absence``
    no reading matching ``when`` for ``for_s`` while the sensor is reporting: e.g. the front
    door not opened for 24 h.
``duration``
    the condition holds without interruption (no reading of the same value that does not
    match) for ``for_s``: e.g. the heater above 1,500 W for 2 h.

Every rule may be limited to a ``schedule``: ``always`` (default), ``night`` or ``day`` (the
person's own night hours) or local hours ``"HH:MM-HH:MM"`` (may cross midnight). A condition
names a device type (or a role), a value ``service/resource`` and one comparison: ``above``,
``below`` (numbers) or ``equals`` (a number or true/false)::

    [generic]
    night_start = "22:30"
    inactivity_s = 10800

    [device_types.smart_plug]
    offline_s = 3600

    [[rule]]
    kind = "heater_on_long"
    label = "Heater on for two hours"
    type = "duration"
    when = { device_type = "smart_plug", value = "plug/power", above = 1500 }
    for_s = 7200

A person's own settings can change a rule's ``for_s``, ``window_s``, ``schedule`` and the
number of its only condition (``above``/``below``/``equals``), or switch the rule off, like any
built-in alarm. Every mistake in a file is a :class:`DefinitionError` naming the rule and the
key; the platform refuses to start on one rather than run without an alarm it was told to
raise.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from msec.core.care import DEVICE_ROLES, AlarmKind, CareSettings
from msec.core.errors import MsecError

__all__ = [
    "OVERRIDABLE",
    "RULE_TYPES",
    "Condition",
    "DefinitionError",
    "Definitions",
    "Rule",
    "check_schedule",
    "load_definitions",
    "parse_definitions",
]

RuleType = Literal["single", "combined", "absence", "duration"]
Op = Literal["above", "below", "equals"]

RULE_TYPES: Final[tuple[RuleType, ...]] = ("single", "combined", "absence", "duration")
_OPS: Final[tuple[Op, ...]] = ("above", "below", "equals")
#: What a person's own settings may change in a rule.
OVERRIDABLE: Final = frozenset({"for_s", "window_s", "schedule", *_OPS})
#: Per device type limits (``[device_types.<type>]``).
TYPE_LIMITS: Final = frozenset({"offline_s", "low_battery_pct"})
_KIND: Final = re.compile(r"[a-z][a-z0-9_]{1,31}")
_HM: Final = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_MAX_RULES: Final = 200
_MAX_LABEL: Final = 120
_TYPE_ROLE: Final = {kind: role for role, (kind, _s, _r) in DEVICE_ROLES.items()}


class DefinitionError(MsecError, ValueError):
    """An alert definition that cannot be used (the message names the rule and the key)."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A reading of ``role``'s ``service/resource`` compared with ``value``."""

    role: str
    service: str
    resource: str
    op: Op
    value: float | bool

    @property
    def key(self) -> str:
        return f"{self.role}/{self.service}/{self.resource}"

    def matches(self, reading: float | int | bool) -> bool:
        if self.op == "equals":
            if isinstance(self.value, bool):
                return bool(reading) is self.value
            return not isinstance(reading, bool) and float(reading) == self.value
        number = float(reading)
        return number > self.value if self.op == "above" else number < self.value

    def describe(self) -> str:
        return f"{self.role} {self.service}/{self.resource} {self.op} {_show(self.value)}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One custom rule; ``kind`` is the alarm kind it raises (one active per home)."""

    kind: str
    type: RuleType
    label: str
    conditions: tuple[Condition, ...]
    #: ``combined``: ``all`` (AND) or ``any`` (OR) of the conditions.
    join: Literal["all", "any"] = "all"
    window_s: float | None = None
    for_s: float | None = None
    schedule: str = "always"

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(c.role for c in self.conditions)

    @property
    def params(self) -> dict[str, Any]:
        """What a person may override, with the values in force."""
        out: dict[str, Any] = {"schedule": self.schedule}
        if self.for_s is not None:
            out["for_s"] = self.for_s
        if self.window_s is not None:
            out["window_s"] = self.window_s
        if len(self.conditions) == 1:
            out[self.conditions[0].op] = self.conditions[0].value
        return out

    def describe(self) -> str:
        conds = f" {self.join.upper()} ".join(c.describe() for c in self.conditions)
        parts = [self.type, conds]
        if self.window_s is not None:
            parts.append(f"within {_show(self.window_s)} s")
        if self.for_s is not None:
            parts.append(f"for {_show(self.for_s)} s")
        if self.schedule != "always":
            parts.append(f"({self.schedule})")
        return " ".join(parts)

    def with_params(self, params: Mapping[str, Any]) -> Rule:
        """This rule with a person's ``params`` (keys of :data:`OVERRIDABLE`)."""
        where = f"rule {self.kind!r}"
        unknown = set(params) - OVERRIDABLE
        if unknown:
            raise DefinitionError(f"{where}: cannot override {', '.join(sorted(unknown))}")
        changes: dict[str, Any] = {}
        if "schedule" in params:
            changes["schedule"] = check_schedule(params["schedule"], where)
        for name in ("for_s", "window_s"):
            if name in params:
                if getattr(self, name) is None:
                    raise DefinitionError(f"{where}: a {self.type} rule has no {name}")
                changes[name] = _positive(params[name], f"{where}: {name}")
        ops = [op for op in _OPS if op in params]
        if ops:
            if len(self.conditions) != 1 or ops != [self.conditions[0].op]:
                own = self.conditions[0].op if len(self.conditions) == 1 else "none"
                raise DefinitionError(f"{where}: the comparison that can be overridden: {own}")
            cond = self.conditions[0]
            value = _compare_value(cond.op, params[cond.op], f"{where}: {cond.op}")
            changes["conditions"] = (dataclasses.replace(cond, value=value),)
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Definitions:
    """A definition file's content: generic settings, per-type limits, custom rules."""

    generic: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: role -> {"offline_s": ..., "low_battery_pct": ...}
    device_types: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    def rule(self, kind: str) -> Rule | None:
        return next((r for r in self.rules if r.kind == kind), None)


def load_definitions(path: str | Path | None) -> Definitions:
    """The definitions in the TOML file ``path`` (``None``: the built-in ones, no rules)."""
    if path is None:
        return Definitions()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot read the alert definitions: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"{path}: not valid TOML: {exc}") from None
    return parse_definitions(data, str(path))


def parse_definitions(data: Mapping[str, Any], source: str = "definitions") -> Definitions:
    """Check and build :class:`Definitions` from parsed TOML (or JSON) ``data``."""
    if not isinstance(data, Mapping):
        raise DefinitionError(f"{source}: the definitions must be a table")
    unknown = set(data) - {"generic", "device_types", "rule"}
    if unknown:
        raise DefinitionError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}")
    generic = dict(_table(data.get("generic", {}), f"{source}: [generic]"))
    try:
        check_settings(dataclasses.replace(CareSettings(), **generic))
    except TypeError as exc:
        raise DefinitionError(f"{source}: [generic]: {_unknown_field(exc)}") from None
    except ValueError as exc:
        raise DefinitionError(f"{source}: [generic]: {exc}") from None
    types: dict[str, dict[str, float]] = {}
    for name, limits in _table(data.get("device_types", {}), f"{source}: [device_types]").items():
        where = f"{source}: [device_types.{name}]"
        role = _role(name, where)
        limits = _table(limits, where)
        extra = set(limits) - TYPE_LIMITS
        if extra:
            raise DefinitionError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        types[role] = {k: _positive(v, f"{where}: {k}") for k, v in limits.items()}
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or len(raw_rules) > _MAX_RULES:
        raise DefinitionError(f"{source}: [[rule]] must be a list of at most {_MAX_RULES} rules")
    rules = tuple(_rule(raw, f"{source}: rule {i + 1}") for i, raw in enumerate(raw_rules))
    seen: set[str] = set()
    for rule in rules:
        if rule.kind in seen:
            raise DefinitionError(f"{source}: two rules raise the kind {rule.kind!r}")
        seen.add(rule.kind)
    return Definitions(generic, types, rules)


def _rule(raw: Any, where: str) -> Rule:
    raw = _table(raw, where)
    kind = raw.get("kind")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise DefinitionError(f"{where}: kind must be a lowercase name (a-z, 0-9, _; 2-32)")
    where = f"{where} ({kind!r})"
    if kind in {k.value for k in AlarmKind}:
        raise DefinitionError(f"{where}: {kind!r} is a built-in alarm: set its [generic] values")
    allowed = {"kind", "label", "type", "when", "all", "any", "window_s", "for_s", "schedule"}
    extra = set(raw) - allowed
    if extra:
        raise DefinitionError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    rtype = raw.get("type")
    if rtype not in RULE_TYPES:
        raise DefinitionError(f"{where}: type must be one of {', '.join(RULE_TYPES)}")
    label = raw.get("label", kind)
    if not isinstance(label, str) or not 0 < len(label) <= _MAX_LABEL:
        raise DefinitionError(f"{where}: label must be 1 to {_MAX_LABEL} characters")
    schedule = check_schedule(raw.get("schedule", "always"), where)
    join: Literal["all", "any"] = "all"
    window_s = for_s = None
    if rtype == "combined":
        if ("all" in raw) == ("any" in raw) or "when" in raw:
            raise DefinitionError(f"{where}: a combined rule has either all = [...] or any = [...]")
        join = "all" if "all" in raw else "any"
        items = raw[join]
        if not isinstance(items, list) or not 2 <= len(items) <= 10:
            raise DefinitionError(f"{where}: {join} must list 2 to 10 conditions")
        conditions = tuple(_condition(c, f"{where}: {join}[{i}]") for i, c in enumerate(items))
        if join == "all":
            window_s = _positive(raw.get("window_s"), f"{where}: window_s")
        elif "window_s" in raw:
            raise DefinitionError(f"{where}: an any rule raises on each match: no window_s")
        if "for_s" in raw:
            raise DefinitionError(f"{where}: a combined rule has window_s, not for_s")
    else:
        if "all" in raw or "any" in raw or "window_s" in raw:
            raise DefinitionError(f"{where}: a {rtype} rule has one condition, when = {{...}}")
        conditions = (_condition(raw.get("when"), f"{where}: when"),)
        if rtype in ("absence", "duration"):
            for_s = _positive(raw.get("for_s"), f"{where}: for_s")
        elif "for_s" in raw:
            raise DefinitionError(f"{where}: a single rule has no for_s")
    return Rule(kind, rtype, label, conditions, join, window_s, for_s, schedule)


def _condition(raw: Any, where: str) -> Condition:
    raw = _table(raw, where)
    extra = set(raw) - {"device_type", "role", "value", *_OPS}
    if extra:
        raise DefinitionError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    if ("device_type" in raw) == ("role" in raw):
        raise DefinitionError(f"{where}: name the sensor by device_type or by role")
    if "role" in raw:
        role = raw["role"]
        if role not in DEVICE_ROLES:
            raise DefinitionError(f"{where}: role must be one of {', '.join(DEVICE_ROLES)}")
    else:
        role = _role(raw["device_type"], where)
    value = raw.get("value")
    service, sep, resource = value.partition("/") if isinstance(value, str) else ("", "", "")
    if not sep or not service or not resource or "/" in resource:
        raise DefinitionError(f"{where}: value must be service/resource, e.g. plug/power")
    ops = [op for op in _OPS if op in raw]
    if len(ops) != 1:
        raise DefinitionError(f"{where}: give exactly one of above, below, equals")
    op = ops[0]
    return Condition(role, service, resource, op, _compare_value(op, raw[op], f"{where}: {op}"))


def _compare_value(op: Op, value: Any, where: str) -> float | bool:
    if op == "equals" and isinstance(value, bool):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DefinitionError(f"{where} must be a finite number" +
                              (" or true/false" if op == "equals" else ""))  # fmt: skip
    return float(value)


def _role(device_type: Any, where: str) -> str:
    role = _TYPE_ROLE.get(device_type) if isinstance(device_type, str) else None
    if role is None:
        raise DefinitionError(
            f"{where}: device_type must be one of {', '.join(sorted(_TYPE_ROLE))}"
        )
    return role


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DefinitionError(f"{where} must be a positive number of seconds")
    if value <= 0:
        raise DefinitionError(f"{where} must be a positive number of seconds")
    return float(value)


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DefinitionError(f"{where} must be a table")
    return value


def check_schedule(value: Any, where: str = "schedule") -> str:
    """``always``, ``night``, ``day`` or ``"HH:MM-HH:MM"`` (local; may cross midnight)."""
    if value in ("always", "night", "day"):
        return str(value)
    if isinstance(value, str):
        start, sep, end = value.partition("-")
        if sep and _HM.fullmatch(start) and _HM.fullmatch(end) and start != end:
            return value
    raise DefinitionError(f"{where}: schedule must be always, night, day or HH:MM-HH:MM")


def check_settings(s: CareSettings) -> None:
    """``ValueError`` naming the first setting of ``s`` that cannot be used."""
    for name in ("night_start", "night_end", "morning_start", "morning_end"):
        value = getattr(s, name)
        if not isinstance(value, str) or not _HM.fullmatch(value):
            raise ValueError(f"{name} must be a local time HH:MM, not {value!r}")
    for f in dataclasses.fields(s):
        value = getattr(s, f.name)
        if f.name.endswith(("_s", "_pct", "_w")) and (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{f.name} must be a positive number, not {value!r}")
    if s.low_battery_pct >= 100:
        raise ValueError(f"low_battery_pct must be below 100, not {s.low_battery_pct!r}")
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"timezone must be an IANA time zone, not {s.timezone!r}") from None


def _unknown_field(exc: TypeError) -> str:
    names = {f.name for f in dataclasses.fields(CareSettings)}
    return f"{exc}; the settings are {', '.join(sorted(names))}"


def _show(value: float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}"
