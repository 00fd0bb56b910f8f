"""The browser assets msec serves itself: vendored libraries and our three scripts.

The libraries are copied from node_modules by ``web/vendor.js`` and committed, so the installed
package needs no Node and no CDN; these tests hold the copies to MANIFEST.json and the lockfile.
proof.js is run under Node against proofs made by msec.tlog, the code it must agree with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from msec.testing.services import ServiceUnavailable
from msec.tlog.checkpoint import Checkpoint, NoteSigner, note_key_id, sign_note
from msec.tlog.merkle import MemoryTree, inclusion_proof, leaf_hash

ROOT = Path(__file__).resolve().parents[2]
STATIC = Path(str(files("msec.web") / "static"))
VENDOR = STATIC / "vendor"
SCRIPTS = [STATIC / "js" / name for name in ("plan.js", "chart.js", "proof.js")]
PROOF_JS = STATIC / "js" / "proof.js"


def _manifest() -> dict[str, dict[str, str]]:
    manifest: dict[str, dict[str, str]] = json.loads((VENDOR / "MANIFEST.json").read_text())
    return manifest


def _node() -> str:
    """The ``node`` binary; ``ServiceUnavailable`` (a skip, a failure in CI) if missing."""
    node = shutil.which("node")
    if node is None:
        raise ServiceUnavailable("node is not on PATH; install Node 20 (Debian: nodejs npm)")
    return node


# ---- vendored libraries ----------------------------------------------------------------------
def test_manifest_files_exist_with_their_hashes() -> None:
    manifest = _manifest()
    assert manifest, "MANIFEST.json lists no file; run `node web/vendor.js`"
    for name, entry in manifest.items():
        path = VENDOR / name
        assert path.is_file(), f"{name} is in MANIFEST.json but not in the package"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{name} differs from MANIFEST.json"


def test_every_vendored_file_is_in_the_manifest() -> None:
    on_disk = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}
    assert on_disk - {"MANIFEST.json"} == set(_manifest())


def test_manifest_versions_are_the_locked_ones() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    declared = json.loads((ROOT / "package.json").read_text())["dependencies"]
    vendored = {entry["package"]: entry["version"] for entry in _manifest().values()}
    # "dependencies" are the browser libraries, all vendored; tools are devDependencies.
    assert set(vendored) == set(declared), "add the package to FILES in web/vendor.js"
    for package, version in vendored.items():
        assert lock[f"node_modules/{package}"]["version"] == version, package
        assert declared[package] == version, f"{package} must be pinned exactly"


def test_vendor_check_passes() -> None:
    """What CI runs: the committed copies equal node_modules installed from the lockfile."""
    node = _node()
    if not (ROOT / "node_modules").is_dir():
        raise ServiceUnavailable(f"{ROOT / 'node_modules'} is missing; run `npm ci` in {ROOT}")
    result = subprocess.run(
        [node, "web/vendor.js", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# ---- our scripts: what a strict CSP and a no-network page demand -----------------------------
_HTML_SINK = re.compile(r"\b(?:innerHTML|outerHTML)\s*\+?=\s*(?!\"[^\"$`]*\"\s*;|'[^'$`]*'\s*;)")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_csp_and_offline_safe(script: Path) -> None:
    source = script.read_text()
    assert "eval(" not in source
    assert "new Function" not in source
    assert not _HTML_SINK.search(source), "set text with textContent, not innerHTML"
    assert "insertAdjacentHTML" not in source and "document.write" not in source
    assert not re.search(r"https?://", source), "scripts must not reach other origins"


# ---- proof.js under Node, against msec.tlog --------------------------------------------------
_RUNNER = r"""
const proof = require(process.argv[1]);
const subtle = require("crypto").webcrypto.subtle;
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const raw = (text) => new Uint8Array(Buffer.from(text, "base64"));
let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", async () => {
  const cases = JSON.parse(input);
  const out = { results: [], roots: [], key_ids: [], b64: [], note: null };
  for (const p of cases.proofs) out.results.push(await proof.verifyProof(p, subtle));
  for (const [leaf, index, size, hashes] of cases.roots) {
    const root = await proof.rootFromInclusion(subtle, raw(leaf), index, size, hashes.map(raw));
    out.roots.push(b64(root));
  }
  for (const [name, key] of cases.key_ids) {
    out.key_ids.push(await proof.keyId(subtle, name, raw(key)));
  }
  for (const text of cases.b64) {
    try { out.b64.push(b64(proof.b64decode(text))); } catch (err) { out.b64.push(null); }
  }
  const note = proof.parseNote(cases.note);
  const checkpoint = proof.parseCheckpoint(note.text);
  out.note = {
    text: note.text,
    signatures: note.signatures.map((s) => [s.name, s.keyId, b64(s.signature)]),
    checkpoint: [checkpoint.origin, String(checkpoint.size), b64(checkpoint.root),
                 checkpoint.extensions],
  };
  process.stdout.write(JSON.stringify(out));
});
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _run_proof_js(cases: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [_node(), "-e", _RUNNER, str(PROOF_JS)],
        input=json.dumps(cases), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


class _Log:
    """A small log made with msec.tlog: leaves, tree, and checkpoints signed as the server does."""

    ORIGIN = "example.org/msec/test-log"

    def __init__(self, count: int) -> None:
        self.data = [f'{{"reading":{i},"device":"llamas-01"}}'.encode() for i in range(count)]
        self.tree = MemoryTree([leaf_hash(d) for d in self.data])
        self.signer = NoteSigner.generate("msec-test-log")
        self.witness = NoteSigner.generate("some-witness")  # a key proof.js must skip

    def answer(self, index: int, size: int) -> dict[str, Any]:
        """What the proof endpoint answers for leaf ``index`` under a checkpoint of ``size``."""
        body = Checkpoint(self.ORIGIN, size, self.tree.root(size), ("x-ext line",)).body()
        return {
            "leaf_data": _b64(self.data[index]),
            "leaf_hash": _b64(self.tree.subtree_hash(index, index + 1)),
            "index": index,
            "size": size,
            "hashes": [_b64(h) for h in inclusion_proof(self.tree, index, size)],
            "checkpoint": sign_note(body, self.witness, self.signer),
            "verifier_key": self.signer.verifier().to_string(),
        }


def _flip(b64: str, at: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 0x01
    return _b64(bytes(raw))


def _flip_signature(note: str, name: str) -> str:
    lines = note.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(f"\u2014 {name} "):
            prefix, blob = line.rsplit(" ", 1)
            lines[i] = f"{prefix} {_flip(blob, 10)}"  # past the 4-byte key ID
    return "\n".join(lines)


def _statuses(result: dict[str, Any]) -> dict[str, bool]:
    return {step: outcome["ok"] for step, outcome in result["steps"].items()}


ALL_OK = {"leaf": True, "inclusion": True, "checkpoint": True, "signature": True}


def test_proof_js_verifies_msec_proofs_and_rejects_tampering() -> None:
    log = _Log(11)
    other = NoteSigner.generate("another-log")
    good = [log.answer(i, s) for i, s in [(0, 1), (0, 11), (4, 7), (6, 7), (10, 11), (5, 8)]]
    base = log.answer(5, 11)
    tampered = {
        "leaf_data": {**base, "leaf_data": _flip(base["leaf_data"], 3)},
        "signature": {**base, "checkpoint": _flip_signature(base["checkpoint"], log.signer.name)},
        "leaf_hash": {**base, "leaf_hash": _flip(base["leaf_hash"], 0)},
        "proof_hash": {**base, "hashes": [_flip(base["hashes"][0], 31), *base["hashes"][1:]]},
        "size": {**base, "size": 12, "hashes": base["hashes"]},
        "index": {**base, "index": 4},
        "key": {**base, "verifier_key": other.verifier().to_string()},
        "bad_base64": {**base, "hashes": ["not base64!", *base["hashes"][1:]]},
        "no_blank_line": {**base, "checkpoint": base["checkpoint"].replace("\n\n", "\n")},
    }
    out = _run_proof_js({
        "proofs": [*good, *tampered.values()],
        "roots": [], "key_ids": [], "b64": [], "note": base["checkpoint"],
    })  # fmt: skip
    results = out["results"]
    for answer, result in zip(good, results, strict=False):
        assert _statuses(result) == ALL_OK, (answer["index"], answer["size"], result)
        assert result["verified"] is True
    found = dict(zip(tampered, results[len(good) :], strict=True))
    assert all(r["verified"] is False for r in found.values())
    assert _statuses(found["leaf_data"]) == {**ALL_OK, "leaf": False}
    assert _statuses(found["signature"]) == {**ALL_OK, "signature": False}
    assert "invalid signature" in found["signature"]["steps"]["signature"]["message"]
    assert _statuses(found["leaf_hash"]) == {**ALL_OK, "leaf": False, "checkpoint": False}
    assert _statuses(found["proof_hash"]) == {**ALL_OK, "checkpoint": False}
    assert _statuses(found["index"]) == {**ALL_OK, "checkpoint": False}
    assert _statuses(found["key"]) == {**ALL_OK, "signature": False}
    # The path fits size 12 too, but leads elsewhere, and the checkpoint is for 11 leaves.
    assert _statuses(found["size"]) == {**ALL_OK, "checkpoint": False}
    assert "for 11 leaves" in found["size"]["steps"]["checkpoint"]["message"]
    assert _statuses(found["bad_base64"]) == {**ALL_OK, "inclusion": False,
                                              "checkpoint": False, "signature": False}  # fmt: skip
    assert found["bad_base64"]["steps"]["signature"]["message"] == "bad base64"
    assert _statuses(found["no_blank_line"]) == {**ALL_OK, "checkpoint": False,
                                                 "signature": False}  # fmt: skip


def test_proof_js_pure_functions_agree_with_msec_tlog() -> None:
    log = _Log(17)
    roots = [
        [_b64(log.tree.subtree_hash(i, i + 1)), i, size,
         [_b64(h) for h in inclusion_proof(log.tree, i, size)]]
        for size in range(1, 18) for i in range(size)
    ]  # fmt: skip
    names = [("msec-test-log", bytes(range(32))), ("ünïcode.example/log", bytes(32))]
    note = log.answer(3, 9)["checkpoint"]
    out = _run_proof_js({
        "proofs": [],
        "roots": roots,
        "key_ids": [[name, _b64(key)] for name, key in names],
        "b64": ["AQ==", "AR==", "AQ", "A Q==", ""],
        "note": note,
    })  # fmt: skip
    expected = [_b64(log.tree.root(size)) for _, _, size, _ in roots]
    assert out["roots"] == expected
    assert out["key_ids"] == [note_key_id(name, key) for name, key in names]
    # Canonical base64 only, as msec.tlog.checkpoint accepts.
    assert out["b64"] == ["AQ==", None, None, None, ""]
    body = Checkpoint(log.ORIGIN, 9, log.tree.root(9), ("x-ext line",)).body()
    assert out["note"]["text"] == body
    assert out["note"]["checkpoint"] == [log.ORIGIN, "9", _b64(log.tree.root(9)), ["x-ext line"]]
    assert [(n, k) for n, k, _ in out["note"]["signatures"]] == [
        (log.witness.name, log.witness.key_id),
        (log.signer.name, log.signer.key_id),
    ]
    assert out["note"]["signatures"][1][2] == _b64(log.signer.sign(body))
