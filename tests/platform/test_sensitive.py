"""Readings of sensitive resources: encrypted in the companion store, logged, erasable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from msec.cli.main import app
from msec.companion import UnknownSubject
from msec.ingest import Incoming, Ingestor
from msec.platform import Platform, Settings

KIND = "environment_station"


def open_platform(data_dir: Path, url: str | None = None) -> Platform:
    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "sensitive": {"resources": ["home-*/environment/*"]},
    }
    if url:
        overrides["database"] = {"url": url}
    return Platform.open(Settings.load(None, **overrides))


@pytest.fixture(params=["sqlite", "postgresql"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    p = open_platform(tmp_path / "data", url)
    yield p
    p.close()


def send(platform: Platform, *envelopes: bytes) -> list[Any]:
    return platform.ingestor.process([Incoming(e, None, "test") for e in envelopes])


def test_sensitive_readings_are_encrypted_under_the_subject_and_kept_out_of_the_twin(
    platform: Platform,
) -> None:
    home = platform.add_device("home-1", KIND, subject="maria.garcia")
    park = platform.add_device("llamas-9", KIND)
    outcomes = send(
        platform,
        home.seal([("environment", "temperature", 21.5), ("health", "battery", 80.0)]),
        park.seal([("environment", "temperature", 12.0)]),
    )
    assert [(o.stored, o.duplicates) for o in outcomes] == [(2, 0), (1, 0)]
    twin = platform.twin
    # Only the battery (not sensitive) of the home device reached the twin, in clear.
    assert twin.latest("home-1", "environment", "temperature") is None
    battery = twin.latest("home-1", "health", "battery")
    assert battery is not None and battery.value == 80.0
    assert twin.latest("llamas-9", "environment", "temperature") is not None
    export = platform.export_subject("maria.garcia")
    [record] = export["records"]
    assert record["record_id"] == "home-1/1"
    assert record["content"]["value"] == 21.5
    assert record["content"]["resource"] == "temperature"
    report = platform.trust.verify()
    assert report.ok, report.problems
    assert report.by_kind == {"device": 2, "reading": 2, "record": 1}
    # The sensitive reading has a proof like any other record.
    ref = f"{export['subject_id']}/home-1/1"
    assert platform.trust.find("record", ref) is not None


def test_a_retry_is_a_duplicate_and_an_old_copy_a_replay(platform: Platform) -> None:
    home = platform.add_device("home-2", KIND, subject="juan")
    envelope = home.seal([("environment", "temperature", 20.0)])
    assert send(platform, envelope)[0].stored == 1
    again = send(platform, envelope)[0]
    assert again.rejected is None and again.duplicates == 1  # within the retry grace
    strict = Ingestor(
        platform.registry,
        platform.twin,
        platform.events,
        retry_grace=0.0,
        sensitive=platform.ingestor.sensitive,
        companion=platform.companion,
    )
    late = strict.process([Incoming(envelope, None, "test")])[0]
    assert late.rejected is not None and late.rejected.reason.value == "replay"
    assert len(platform.export_subject("juan")["records"]) == 1


def test_erasing_the_subject_leaves_a_verifiable_log(platform: Platform) -> None:
    home = platform.add_device("home-3", KIND, subject="ana")
    for n in range(5):
        send(platform, home.seal([("environment", "temperature", 18.0 + n)]))
    platform.trust.checkpoint()
    erasure = platform.erase_subject("ana", reason="request 7")
    assert erasure.record_count == 5
    with pytest.raises(UnknownSubject):
        platform.export_subject("ana")
    report = platform.trust.verify()
    assert report.ok, report.problems
    assert report.erased == 5
    assert report.by_kind == {"device": 1, "record": 5, "erasure": 1}
    # Readings after the erasure start a new subject under the same name.
    send(platform, home.seal([("environment", "temperature", 30.0)]))
    assert len(platform.export_subject("ana")["records"]) == 1


def test_no_plaintext_in_the_database_file_and_cli_export_erase(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    platform = open_platform(data_dir)
    try:
        home = platform.add_device("home-4", KIND, subject="rosa")
        send(platform, home.seal([("environment", "co2", 777)]))
    finally:
        platform.close()
    files = b"".join(p.read_bytes() for p in data_dir.glob("msec.db*"))
    assert b'"resource":"co2"' not in files and b"777" not in files
    runner = CliRunner()
    env = {"MSEC_SENSITIVE__RESOURCES": '["home-*/environment/*"]'}
    exported = runner.invoke(app, ["export", "rosa", "--data-dir", str(data_dir)], env=env)
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["records"][0]["content"]["value"] == 777
    erased = runner.invoke(app, ["erase", "rosa", "--data-dir", str(data_dir), "--yes"], env=env)
    assert erased.exit_code == 0, erased.output
    assert runner.invoke(app, ["export", "rosa", "--data-dir", str(data_dir)]).exit_code == 2
    assert runner.invoke(app, ["verify", "--data-dir", str(data_dir)]).exit_code == 0


def test_a_pattern_must_name_provider_service_and_resource() -> None:
    from msec.core.sensitive import SensitiveResources

    with pytest.raises(ValueError):
        SensitiveResources(["home-*"])
    rules = SensitiveResources(["home-*/*/*"])
    assert rules("home-1", "motion", "state") and not rules("llamas-1", "motion", "state")
    rules.add("*/health/battery")
    assert rules("llamas-1", "health", "battery")


def test_rotating_the_companion_kek_keeps_every_record_readable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    platform = open_platform(data_dir)
    try:
        home = platform.add_device("home-5", KIND, subject="luis")
        send(platform, home.seal([("environment", "temperature", 19.0)]))
    finally:
        platform.close()
    keys = data_dir / "keys"
    old = (keys / "companion.kek").read_bytes()
    runner = CliRunner()
    rotated = runner.invoke(
        app, ["companion", "rotate-kek", "--data-dir", str(data_dir), "--destroy-old"]
    )
    assert rotated.exit_code == 0, rotated.output
    assert (keys / "companion.kek").read_bytes() != old
    assert sorted(p.name for p in keys.glob("companion*.kek")) == ["companion.kek"]
    env = {"MSEC_SENSITIVE__RESOURCES": '["home-*/environment/*"]'}
    exported = runner.invoke(app, ["export", "luis", "--data-dir", str(data_dir)], env=env)
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["records"][0]["content"]["value"] == 19.0
    assert not any(old in p.read_bytes() for p in keys.iterdir())
