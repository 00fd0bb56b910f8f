"""Settings: TOML file, environment, refusal of unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from msec.platform import Settings


def test_defaults_use_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.load(None, data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{(tmp_path / 'msec.db').resolve()}"
    assert settings.mqtt.broker == "embedded" and settings.mqtt.shared_group == "msec"


def test_toml_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "msec.toml"
    config.write_text(
        'data_dir = "/var/lib/msec"\n[mqtt]\nbroker = "external"\nport = 1884\nworkers = 3\n'
    )
    monkeypatch.setenv("MSEC_DATABASE__URL", "postgresql+psycopg://u:p@db/msec")
    monkeypatch.setenv("MSEC_HTTP__PORT", "9000")
    settings = Settings.load(config)
    assert settings.mqtt.broker == "external" and settings.mqtt.port == 1884
    assert settings.mqtt.workers == 3
    assert settings.database_url == "postgresql+psycopg://u:p@db/msec"
    assert settings.http.port == 9000
    monkeypatch.setenv("MSEC_MQTT_PASSWORD", "s3cret")
    assert settings.mqtt.password() == "s3cret"


@pytest.mark.parametrize("text", [
    "[mqtt]\nwokers = 2\n",          # typo inside a section
    "colour = 'blue'\n",              # unknown top-level key
    "[mqtt]\nbroker = 'rabbit'\n",    # not one of the brokers
    "[mqtt]\nworkers = 0\n",          # out of range
])
def test_bad_settings_are_refused(tmp_path: Path, text: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ValidationError):
        Settings.load(config)


def test_file_values_win_over_the_environment(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "msec.toml"
    config.write_text("[http]\nport = 8123\n")
    monkeypatch.setenv("MSEC_HTTP__PORT", "9000")
    monkeypatch.setenv("MSEC_HTTP__HOST", "0.0.0.0")
    settings = Settings.load(config)
    assert settings.http.port == 8123  # the file says so
    assert settings.http.host == "0.0.0.0"  # the environment fills what the file omits


def test_the_data_dir_and_keys_are_private(tmp_path: Path) -> None:
    from msec.platform import Platform

    data_dir = tmp_path / "fresh"
    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    platform.close()
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert (data_dir / "keys").stat().st_mode & 0o777 == 0o700
    for name in ("kek.key", "secrets.json"):
        assert (data_dir / "keys" / name).stat().st_mode & 0o777 == 0o600
