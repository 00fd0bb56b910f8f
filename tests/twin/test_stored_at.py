"""stored_at: when the platform stored each reading (audit trail, benchmark latency)."""

from __future__ import annotations

import time
from pathlib import Path

from msec.core.models import Reading
from msec.twin import SqlTwin, make_engine


def test_stored_at_is_the_write_time_and_missing_keys_are_left_out(tmp_path: Path) -> None:
    twin = SqlTwin(make_engine(f"sqlite:///{tmp_path / 't.db'}"))
    twin.create_schema()
    twin.ensure_provider("p", kind="environment_station")
    before = time.time()
    twin.write([Reading("p", "environment", "temperature", 20.0, 1.0, seq) for seq in range(3)])
    after = time.time()
    found = twin.stored_at([("p", 0), ("p", 2), ("p", 99), ("nobody", 1)])
    assert set(found) == {("p", 0), ("p", 2)}
    assert all(before <= t <= after for t in found.values())
    # A duplicate write does not move the stored time.
    time.sleep(0.01)
    twin.write([Reading("p", "environment", "temperature", 20.0, 1.0, 0)])
    assert twin.stored_at([("p", 0)]) == {("p", 0): found[("p", 0)]}


def test_stored_at_handles_more_keys_than_one_statement(tmp_path: Path) -> None:
    twin = SqlTwin(make_engine(f"sqlite:///{tmp_path / 't.db'}"))
    twin.create_schema()
    twin.ensure_provider("p", kind="environment_station")
    twin.write([Reading("p", "environment", "noise", 40.0, 1.0, seq) for seq in range(1200)])
    assert len(twin.stored_at([("p", seq) for seq in range(1300)])) == 1200
