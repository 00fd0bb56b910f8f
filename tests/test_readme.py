"""The README's quick start works as written: two commands, both real Makefile targets."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A Markdown heading line whose text contains "Quick start".
_HEADING = re.compile(r"^#{1,6}\s+.*quick start", re.IGNORECASE)
#: The opening fence of a shell (or plain) code block.
_FENCE = re.compile(r"^```\s*(sh|bash|shell|console)?\s*$")


def quick_start_commands(readme: str) -> list[str]:
    """The lines of the first fenced code block after the "Quick start" heading."""
    lines = readme.splitlines()
    start = next((i for i, line in enumerate(lines) if _HEADING.match(line)), None)
    assert start is not None, "README has no heading containing 'Quick start'"
    rest = lines[start + 1:]
    opening = next((i for i, line in enumerate(rest) if line.startswith("```")), None)
    assert opening is not None, "no fenced code block after the Quick start heading"
    assert _FENCE.match(rest[opening]), f"not a shell block: {rest[opening]!r}"
    assert not any(line.startswith("#") for line in rest[:opening]), \
        "the first code block after Quick start is under another heading"
    closing = next((i for i, line in enumerate(rest[opening + 1:], opening + 1)
                    if line.strip() == "```"), None)
    assert closing is not None, "the quick start code block is never closed"
    return [line.strip() for line in rest[opening + 1:closing] if line.strip()]


def makefile_targets(makefile: str) -> set[str]:
    """Names of the rules' targets (``name:``), not variable assignments (``name :=``)."""
    targets = set()
    for line in makefile.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-/ ]+?)\s*:(?![=:])", line)
        if match:
            targets.update(match.group(1).split())
    return targets


def test_quick_start_is_make_demo_then_make_test() -> None:
    commands = quick_start_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert commands == ["make demo", "make test"]


def test_quick_start_commands_are_makefile_targets() -> None:
    targets = makefile_targets((ROOT / "Makefile").read_text(encoding="utf-8"))
    assert {"demo", "test"} <= targets, sorted(targets)
    commands = quick_start_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    for command in commands:
        program, *goals = shlex.split(command)
        assert program == "make" and goals, command
        assert set(goals) <= targets, (command, sorted(targets))


def test_ci_runs_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    calls = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "exec":
            words = words[1:]
        if words[:1] == ["make"]:
            calls.append(words[1:])
    assert any("test" in goals for goals in calls), calls


def test_the_parsers_reject_what_they_should() -> None:
    # The README is rewritten often: make sure a wrong one really fails these checks.
    indented = "# M-Sec\n\nQuick start:\n\n    make demo\n    make test\n"
    with pytest.raises(AssertionError, match="no heading"):
        quick_start_commands(indented)
    later = "## Quick start\n\nSee below.\n\n## Other\n\n```sh\nmake demo\n```\n"
    with pytest.raises(AssertionError, match="another heading"):
        quick_start_commands(later)
    fenced = "# M-Sec\n\n## Quick start\n\n```sh\nmake demo\nmake test\n```\n\n```\nx\n```\n"
    assert quick_start_commands(fenced) == ["make demo", "make test"]
    assert makefile_targets("A := 1\nB ?= 2\ndemo: install\n\t$(X)\n.PHONY: demo\n") == {
        "demo", ".PHONY"}
