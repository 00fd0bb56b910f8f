"""Proof on click: any value a page shows links to its reading's proof.

``/proof/reading/{provider}/{seq}`` shows what the log holds for one stored reading (the
values it commits to), checks it on the server (leaf hash, inclusion proof, checkpoint
signature) and lets the browser check it again independently with WebCrypto
(``static/js/proof.js`` reads ``.../proof.json``): the reading's leaf hash, the path to the
signed root, and the log's Ed25519 signature, with the key published at
``/api/v1/log/key``. A reading is as readable here as its device is to the viewer.
"""

from __future__ import annotations

from typing import Any

import cbor2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from msec.access.model import Verb
from msec.tlog import LogError
from msec.tlog.trust import RecordProof, TrustLog
from msec.twin.sql import READING_LEAF, reading_ref
from msec.web.log_api import record_proof_json
from msec.web.ui import Viewer, ViewerDep, WebUi

__all__ = ["add_proof_pages", "decode_reading_leaf", "proof_path"]


def proof_path(provider: str, seq: int | None) -> str:
    return f"/proof/reading/{provider}/{seq}"


def decode_reading_leaf(data: bytes | None) -> dict[str, Any] | None:
    """The fields a reading's leaf commits to (see ``msec.twin.sql.reading_leaf_data``)."""
    if data is None:
        return None
    try:
        item = cbor2.loads(data)
        _tag, provider, seq, service, resource, kind, num, text, timestamp, stored = item
    except (ValueError, TypeError, cbor2.CBORDecodeError):
        return None
    value: Any = text if text is not None else num
    if kind == "i" and isinstance(value, float):
        value = int(value)
    elif kind == "b":
        value = bool(value)
    return {
        "provider": provider, "seq": seq, "service": service, "resource": resource,
        "value": value, "timestamp": timestamp, "stored_at": stored,
    }  # fmt: skip


def add_proof_pages(app: FastAPI, ui: WebUi, trust: TrustLog) -> None:

    def load(request: Request, viewer: Viewer, provider: str, seq: str) -> RecordProof:
        if not seq.isdigit() or len(seq) > 19 or not provider or len(provider) > 64:
            raise HTTPException(404, viewer.t("proof.none"))
        source = request.client.host if request.client else ""
        decision = ui.access.authorize(
            viewer.principal, Verb.GET, provider, source=source, record=True
        )
        if not decision.allowed:
            if not viewer.logged_in:
                raise HTTPException(303, headers={"Location": f"/login?next={request.url.path}"})
            raise HTTPException(404, viewer.t("proof.none"))
        try:
            proof = trust.record_proof(READING_LEAF, reading_ref(provider, int(seq)))
        except LogError as exc:
            raise HTTPException(503, viewer.t("proof.refused", reason=str(exc))) from exc
        if proof is None:
            raise HTTPException(404, viewer.t("proof.none"))
        return proof

    @app.get("/proof/reading/{provider}/{seq}/proof.json", include_in_schema=False)
    def proof_json(request: Request, provider: str, seq: str, viewer: ViewerDep) -> Response:
        proof = load(request, viewer, provider, seq)
        body = record_proof_json(proof) | {"verifier_key": trust.verifier_key()}
        return ui.finish(request, viewer, JSONResponse(body))

    @app.get("/proof/reading/{provider}/{seq}", response_class=HTMLResponse,
             include_in_schema=False)  # fmt: skip
    def proof_page(request: Request, provider: str, seq: str, viewer: ViewerDep) -> Response:
        proof = load(request, viewer, provider, seq)
        checks = proof.check(trust.verifier)
        return ui.render(
            request, viewer, "proof.html", title=viewer.t("proof.title"),
            proof=proof, checks=checks, reading=decode_reading_leaf(proof.leaf_data),
            data=record_proof_json(proof), verifier_key=trust.verifier_key(),
            json_url=request.url.path + "/proof.json",
        )  # fmt: skip
