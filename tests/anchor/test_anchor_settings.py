"""AnchorSettings: off by default, strict about unknown keys and nonsense intervals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from msec.anchor import AnchorSettings


def test_defaults_are_off() -> None:
    settings = AnchorSettings()
    assert not settings.enabled
    assert settings.contract == "" and settings.key_file is None
    assert (settings.every_leaves, settings.every_seconds) == (10_000, 60.0)


def test_enabled_with_rpc_url() -> None:
    settings = AnchorSettings(rpc_url="http://127.0.0.1:8545", key_file=Path("/k"))
    assert settings.enabled and settings.key_file == Path("/k")


@pytest.mark.parametrize(
    "bad",
    [{"rpc": "x"}, {"every_leaves": 0}, {"every_seconds": 0}, {"timeout_s": -1}],
)
def test_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AnchorSettings.model_validate(bad)
