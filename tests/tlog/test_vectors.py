"""msec.tlog.merkle against transparency-dev/merkle's test vectors (independent implementation)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from msec.tlog.merkle import ProofError, verify_consistency, verify_inclusion

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "transparency_dev_merkle.json").read_text()
)


def b64(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: c["source"])
def test_inclusion_vectors(case: dict) -> None:
    proof = [b64(p) for p in case["proof"]]

    def check() -> None:
        verify_inclusion(b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof,
                         b64(case["root"]))

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: c["source"])
def test_consistency_vectors(case: dict) -> None:
    proof = [b64(p) for p in case["proof"]]

    def check() -> None:
        verify_consistency(case["size1"], case["size2"], b64(case["root1"]), b64(case["root2"]),
                           proof)

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


def test_the_vectors_hold_both_kinds_of_case() -> None:
    for kind in ("inclusion", "consistency"):
        wants = {c["wantErr"] for c in VECTORS[kind]}
        assert wants == {True, False}, kind
