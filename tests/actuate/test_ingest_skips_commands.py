"""The ingest workers see the platform's own commands (same topic tree) and leave them alone."""

from __future__ import annotations

from pathlib import Path

from msec.ingest import Incoming
from msec.platform import Platform, Settings


def test_commands_on_the_topic_tree_are_acknowledged_not_stored(tmp_path: Path) -> None:
    platform = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    try:
        plug = platform.add_device("plug-1", "smart_plug")
        assert plug.command_key == platform.command_signer.public_key
        outcomes = platform.ingestor.process(
            [Incoming(b"\xd2\x84anything", "msec/default/plug-1/_cmd", "mqtt")]
        )
        assert [o.ok for o in outcomes] == [True] and outcomes[0].stored == 0
        assert platform.events.query() == []
    finally:
        platform.close()
