"""Reading the portal's alarm configuration forms: settings, alarm kinds, rule parameters.

The forms show durations in minutes (the engine counts seconds) and leave a field empty for
"the generic value". Every field is checked here first, so that the person filling the form
gets a message in their language naming the setting (:class:`FormError`); the engine checks
again (its ``ValueError`` is shown as it is).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msec.apps.care.model import CareSettings

__all__ = [
    "FormError",
    "SettingField",
    "parse_disabled",
    "parse_rules",
    "parse_settings",
    "rule_fields",
    "setting_fields",
    "shown",
]

Unit = Literal["time", "minutes", "watts", "percent", "zone", "number", "schedule", "flag"]
_HM: Final = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_MAX_TEXT: Final = 64


class FormError(ValueError):
    """A field that cannot be used: ``field`` (the input's name), ``message`` (a message id
    with a ``{setting}`` placeholder), ``label`` (the message id of the field's name) and
    the values of the message's other placeholders."""

    def __init__(self, field: str, message: str, label: str = "", **values: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.label = label
        self.values = values


@dataclass(frozen=True, slots=True)
class SettingField:
    """One input of a configuration form: ``name`` is the setting (or rule parameter),
    ``unit`` how it is written."""

    name: str
    unit: Unit

    @property
    def label(self) -> str:
        """The message id of its name."""
        return f"care.setting.{self.name}"


def _unit(name: str, default: Any) -> Unit:
    if name == "timezone":
        return "zone"
    if name == "schedule":
        return "schedule"
    if name.endswith("_s"):
        return "minutes"
    if name.endswith("_pct"):
        return "percent"
    if name.endswith("_w"):
        return "watts"
    if isinstance(default, bool):
        return "flag"
    if isinstance(default, str) and _HM.fullmatch(default):
        return "time"
    return "number"


def setting_fields() -> tuple[SettingField, ...]:
    """Every :class:`CareSettings` field, in its declaration order."""
    defaults = CareSettings()
    return tuple(SettingField(f.name, _unit(f.name, getattr(defaults, f.name)))
                 for f in dataclasses.fields(CareSettings))  # fmt: skip


def rule_fields(params: Mapping[str, Any]) -> tuple[SettingField, ...]:
    """The inputs of a custom rule's parameters (``Rule.params``)."""
    return tuple(SettingField(name, _unit(name, value)) for name, value in params.items())


def shown(unit: Unit, value: Any) -> str:
    """A value as the form writes it (seconds as minutes, ``true``/``false``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if unit == "minutes" and isinstance(value, int | float):
        return f"{value / 60:g}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parse(field: SettingField, text: str, key: str) -> Any:
    """One field's value in the engine's units; :class:`FormError` naming ``key``."""
    if field.unit == "time":
        if not _HM.fullmatch(text):
            raise FormError(key, "care.error.time", field.label)
        return text
    if field.unit == "zone":
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise FormError(key, "care.error.zone", field.label) from None
        return text
    if field.unit == "schedule":
        start, sep, end = text.partition("-")
        if text in ("always", "night", "day") or (
            sep and _HM.fullmatch(start) and _HM.fullmatch(end) and start != end
        ):
            return text
        raise FormError(key, "care.error.schedule", field.label)
    if field.unit == "flag" or (field.name == "equals" and text in ("true", "false")):
        if text not in ("true", "false"):
            raise FormError(key, "care.error.flag", field.label)
        return text == "true"
    try:
        number = float(text.replace(",", "."))
    except ValueError:
        raise FormError(key, "care.error.number", field.label) from None
    if not math.isfinite(number):
        raise FormError(key, "care.error.number", field.label)
    if field.unit == "percent" and not 0 < number < 100:
        raise FormError(key, "care.error.percent", field.label)
    if field.unit in ("minutes", "watts") and number <= 0:
        raise FormError(key, "care.error.positive", field.label)
    return number * 60 if field.unit == "minutes" else number


def parse_settings(
    form: Mapping[str, Any], fields: Sequence[SettingField], prefix: str = "s."
) -> dict[str, Any]:
    """The settings given in ``form`` (inputs ``<prefix><name>``; empty ones left out)."""
    out: dict[str, Any] = {}
    for field in fields:
        key = prefix + field.name
        text = str(form.get(key) or "").strip()
        if not text:
            continue
        if len(text) > _MAX_TEXT:
            raise FormError(key, "care.error.number", field.label)
        out[field.name] = _parse(field, text, key)
    return out


def parse_rules(
    form: Mapping[str, Any], rules: Iterable[tuple[str, Mapping[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """A person's rule parameters (inputs ``r.<kind>.<param>``) for ``rules`` as
    ``(kind, params)``; rules with nothing given are left out."""
    out: dict[str, dict[str, Any]] = {}
    for kind, params in rules:
        values = parse_settings(form, rule_fields(params), prefix=f"r.{kind}.")
        if values:
            out[kind] = values
    return out


def parse_disabled(form: Any, kinds: Iterable[str]) -> frozenset[str]:
    """The kinds of ``kinds`` left unticked (checkboxes ``enabled`` with a kind each)."""
    enabled = {str(v) for v in form.getlist("enabled")}
    return frozenset(k for k in kinds if k not in enabled)
