"""End to end: checkpoints anchored on a chain catch a database rolled back to an old copy.

The attacker restores an old ``msec.db`` and deletes the witness file kept beside it, so
nothing on the host gives the rollback away; the anchors on the chain still do. Once on
eth-tester (in-process EVM) through the platform's own objects, once on a real Hardhat
node through ``msec verify --config``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from web3 import Web3

from msec.anchor import AnchorOutcome, connect
from msec.anchor.anchorer import Anchorer
from msec.anchor.policy import AnchorPolicy
from msec.cli.main import app
from msec.platform import Platform, Settings

#: Hardhat's public test account #3 (mnemonic "test test ... junk"): no value on any network.
HARDHAT_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"


def key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "anchor.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return path


def grow(platform: Platform, count: int) -> None:
    for n in range(count):
        platform.events.warn("access_denied", f"attempt {n}", source="test")
    platform.trust.checkpoint()


def roll_back(data_dir: Path, backup: Path) -> None:
    for suffix in ("-wal", "-shm"):
        (data_dir / f"msec.db{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, data_dir / "msec.db")
    (data_dir / "witness" / "checkpoint").unlink()


def snapshot(data_dir: Path, backup: Path) -> None:
    conn = sqlite3.connect(data_dir / "msec.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.copy(data_dir / "msec.db", backup)


def anchor_now(platform: Platform, chain: Any) -> None:
    anchorer = Anchorer(chain, AnchorPolicy(1, 3600), platform.trust.signed_checkpoint)
    result = anchorer.run_once()
    assert result.outcome == AnchorOutcome.ANCHORED, result.detail


def test_rollback_is_caught_by_anchors_on_eth_tester(tmp_path: Path, tester_w3: Web3,
                                                     owner: Any) -> None:
    data_dir = tmp_path / "data"
    settings = Settings.load(None, data_dir=data_dir)
    settings.anchor.key_file = key_file(tmp_path, owner.key.hex())
    platform = Platform.open(settings)
    try:
        chain = connect(settings.anchor, contract_file=settings.anchor_contract_file, w3=tester_w3)
        grow(platform, 10)
        anchor_now(platform, chain)
        backup = tmp_path / "old.db"
        snapshot(data_dir, backup)
        grow(platform, 10)
        anchor_now(platform, chain)
        assert platform.trust.verify(external=platform.trust.anchored(chain)).ok
    finally:
        platform.close()

    roll_back(data_dir, backup)
    platform = Platform.open(settings)
    try:
        assert platform.trust.verify().ok  # the database alone looks fine
        report = platform.trust.verify(external=platform.trust.anchored(chain))
        assert not report.ok
        [rollback] = [p for p in report.problems if p.what == "rollback"]
        assert "anchor 1 on chain has 20 leaves but the log only 10" in rollback.detail
        # The anchorer refuses to anchor over it, too.
        anchorer = Anchorer(chain, AnchorPolicy(1, 3600), platform.trust.signed_checkpoint)
        assert anchorer.run_once().outcome == AnchorOutcome.ROLLBACK
    finally:
        platform.close()


@pytest.mark.integration
@pytest.mark.slow
def test_msec_verify_reads_anchors_from_a_hardhat_node(tmp_path: Path, hardhat_url: str) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "msec.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n\n[anchor]\nrpc_url = "{hardhat_url}"\n'
        f'key_file = "{key_file(tmp_path, HARDHAT_KEY)}"\ntimeout_s = 20\n'
    )
    settings = Settings.load(config)
    platform = Platform.open(settings)
    try:
        chain = platform.anchor_chain()  # deploys the contract, remembers its address
        assert settings.anchor_contract_file.exists()
        grow(platform, 7)
        anchor_now(platform, chain)
        backup = tmp_path / "old.db"
        snapshot(data_dir, backup)
        grow(platform, 5)
        anchor_now(platform, chain)
    finally:
        platform.close()

    def verify(*args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(app, ["verify", "--config", str(config), "--json", *args])
        return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}

    code, report = verify()
    assert code == 0 and report["external"] == 3  # the witness file and two anchors
    roll_back(data_dir, backup)
    assert verify("--no-chain")[0] == 0
    code, report = verify()
    assert code == 1
    assert [p["what"] for p in report["problems"]] == ["rollback"]
