"""The committed ABI and bytecode are the build of the committed Solidity source."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from msec.anchor.client import _artifact, load_contract

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "contracts" / "CheckpointAnchor.sol"


def test_artifact_is_built_from_the_committed_source() -> None:
    artifact = _artifact()
    assert artifact["source_sha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), (
        "contracts/CheckpointAnchor.sol changed: run `node contracts/compile.js`"
    )
    assert artifact["contract"] == "CheckpointAnchor"


def test_solc_pins_agree() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["solc"]
    assert _artifact()["solc_version"].startswith(f"{pinned}+commit.")
    assert f"pragma solidity {pinned};" in SOURCE.read_text()


def test_load_contract_gives_abi_and_bytecode() -> None:
    abi, bytecode = load_contract()
    names = {item.get("name") for item in abi}
    assert {"anchor", "anchorCount", "anchorAt", "latest", "owner", "Anchored"} <= names
    assert bytecode.startswith("0x6080") and len(bytecode) > 1000


def test_compile_check_passes(solc_node: str) -> None:
    """What CI runs: a fresh solcjs build must equal the committed JSON byte for byte."""
    result = subprocess.run(
        [solc_node, "contracts/compile.js", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
