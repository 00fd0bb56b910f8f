"""Shared fixtures: real PostgreSQL and Mosquitto started by :mod:`msec.testing.services`.

Tests that use ``postgres``, ``pg_url`` or ``mosquitto`` are marked ``integration``
automatically (deselect them with ``-m "not integration"``); mark tests that call the launchers
directly yourself. Whenever a fixture or a test raises ``ServiceUnavailable`` (binary missing)
the test is skipped, except in CI (``CI=true``), where it fails: CI must never silently skip.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import Engine

from msec.testing.services import (
    MosquittoHandle,
    PostgresHandle,
    ServiceUnavailable,
    mosquitto_server,
    postgres_server,
)
from msec.twin import make_engine

_SERVICE_FIXTURES = frozenset({"postgres", "pg_url", "mosquitto"})
_database_numbers = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real service as ``integration``."""
    for item in items:
        if _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Turn a missing service in a fixture into a skip (a failure in CI)."""
    try:
        return (yield)
    except ServiceUnavailable as exc:
        _unavailable(exc)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Turn a missing service in a test body (direct launcher use) into a skip or CI failure."""
    try:
        return (yield)
    except ServiceUnavailable as exc:
        _unavailable(exc)


def _unavailable(exc: ServiceUnavailable) -> NoReturn:
    # CI must never pass by skipping what it was meant to test.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required service unavailable in CI: {exc}", pytrace=False)
    pytest.skip(f"service unavailable: {exc}")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresHandle]:
    """One PostgreSQL server for the whole session; use ``pg_url`` for a database of your own."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as handle:
        yield handle


@pytest.fixture
def pg_url(postgres: PostgresHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database, dropped (connections cut) after the test."""
    slug = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40]
    name = f"t{next(_database_numbers)}_{slug}".rstrip("_")
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoHandle]:
    """A running broker requiring passwords; ``mosquitto.users`` has ``ingest`` and ``device``."""
    users = {"ingest": secrets.token_hex(12), "device": secrets.token_hex(12)}
    with mosquitto_server(tmp_path / "mosquitto", users=users) as handle:
        yield handle


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """One SQL backend per parameter: a SQLite file, then a fresh PostgreSQL database.

    Storage tests that take ``engine`` run once on each, so both backends keep the same
    behaviour.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'msec.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()
