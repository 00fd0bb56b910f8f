"""Citizen-facing text in English, Spanish and Japanese.

Catalogs are flat JSON files (``<lang>.json``: message id -> text with ``{name}``
placeholders), one folder per package (the web foundation's ``msec/web/locales`` and each
app's own). English is complete by definition; a test checks that every other language has
every id and the same placeholders. The language is chosen, in order, by ``?lang=`` (then
remembered in a cookie), the ``msec_lang`` cookie, ``Accept-Language``, and English.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Final

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "Catalogs", "Translator", "negotiate"]

LANGUAGES: Final = ("en", "es", "ja")
DEFAULT_LANGUAGE: Final = "en"
LANGUAGE_NAMES: Final = {"en": "English", "es": "Español", "ja": "日本語"}


class Catalogs:
    """Every message of every language, merged from the given package folders."""

    def __init__(self, packages: Iterable[str]) -> None:
        self.messages: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
        self.sources: list[str] = []
        for package in packages:
            self.add_package(package)

    def add_package(self, package: str) -> None:
        """Merge ``<package>/locales/<lang>.json``; an id defined twice is an error."""
        folder = resources.files(package) / "locales"
        self.sources.append(package)
        for lang in LANGUAGES:
            entry = folder / f"{lang}.json"
            if not entry.is_file():
                continue
            data = json.loads(entry.read_text(encoding="utf-8"))
            clash = self.messages[lang].keys() & data.keys()
            if clash:
                raise ValueError(f"{package}: message ids defined twice: {sorted(clash)[:5]}")
            self.messages[lang].update(data)

    def translator(self, lang: str) -> Translator:
        return Translator(lang if lang in LANGUAGES else DEFAULT_LANGUAGE, self)

    def problems(self) -> list[str]:
        """What a translator has to fix: ids missing in a language, placeholders differing."""
        found: list[str] = []
        english = self.messages[DEFAULT_LANGUAGE]
        for lang in LANGUAGES:
            table = self.messages[lang]
            for key, text in english.items():
                if key not in table:
                    found.append(f"{lang}: missing {key!r}")
                elif _fields(table[key]) != _fields(text):
                    found.append(f"{lang}: {key!r} has placeholders {sorted(_fields(table[key]))}")
            for key in table.keys() - english.keys():
                found.append(f"{lang}: {key!r} is not in English")
        return found


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class Translator:
    """``t(id, **values)`` in one language, falling back to English, then to the id."""

    def __init__(self, lang: str, catalogs: Catalogs) -> None:
        self.lang = lang
        self._table = catalogs.messages[lang]
        self._english = catalogs.messages[DEFAULT_LANGUAGE]

    def __call__(self, key: str, /, **values: object) -> str:
        text = self._table.get(key) or self._english.get(key) or key
        if not values:
            return text
        try:
            return text.format_map(_Safe(values))
        except (ValueError, IndexError):  # a broken translation must not break the page
            return self._english.get(key, key).format_map(_Safe(values))


class _Safe(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def negotiate(query: str | None, cookie: str | None, accept: str | None) -> str:
    """The language to answer in (see the module docstring)."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice  # type: ignore[return-value]
    for lang, _ in _accepted(accept or ""):
        base = lang.split("-")[0]
        if base in LANGUAGES:
            return base
    return DEFAULT_LANGUAGE


def _accepted(header: str) -> list[tuple[str, float]]:
    """``Accept-Language`` as (language, q), best first; malformed parts ignored."""
    out: list[tuple[str, float]] = []
    for part in header[:500].split(","):
        lang, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        if lang and q > 0:
            out.append((lang.lower(), q))
    return sorted(out, key=lambda item: -item[1])


def language_names() -> Mapping[str, str]:
    return LANGUAGE_NAMES
