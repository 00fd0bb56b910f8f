"""The transparency log over HTTP: checkpoint, key, proofs, entries, a record's proof.

The checkpoint, the verifier key and the two proofs are public: they reveal sizes and
hashes only, and anyone must be able to check the log with their own code. Entries and
record proofs name devices and records, so they need a bearer token like the rest of the
API. Hashes are standard base64, as in the checkpoint's root line.

Every query parameter is parsed here, strictly: anything malformed or out of range is a
400 with a message, never a 422 or a 500 (proof requests are what a hostile client fuzzes).
"""

import base64
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse

from msec.access.builtin import PLATFORM
from msec.access.model import Principal, Verb
from msec.tlog import LogError
from msec.tlog.sql import MAX_ENTRIES_PER_READ
from msec.tlog.trust import RecordProof, TrustLog

_PREFIX = "/api/v1/log"
_INT = re.compile(r"0|[1-9][0-9]{0,18}")
_MAX_REF = 512


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _int(name: str, raw: str | None, *, default: int | None = None) -> int:
    """A non-negative decimal query parameter, or a 400."""
    if raw is None:
        if default is None:
            raise HTTPException(400, f"query parameter {name!r} is required")
        return default
    if not _INT.fullmatch(raw):
        raise HTTPException(400, f"{name} must be a non-negative decimal integer")
    return int(raw)


def add_log_routes(
    app: FastAPI, trust: TrustLog, caller: Callable[..., Any], allow: Callable[..., None]
) -> None:
    """Add the routes under ``/api/v1/log``; ``caller`` is the API's authentication
    dependency and ``allow(request, principal, verb, provider, service, resource)`` its
    authorization check."""
    Caller = Annotated[Principal, Depends(caller)]
    log = trust.log

    def current_size(size: int | None) -> int:
        tree = log.size()
        if size is None:
            return tree
        if size > tree:
            raise HTTPException(400, f"size {size} is beyond the log's {tree} leaves")
        return size

    @app.get(_PREFIX + "/checkpoint", tags=["log"], response_class=PlainTextResponse)
    def get_checkpoint() -> PlainTextResponse:
        """The newest signed checkpoint (C2SP tlog-checkpoint in a C2SP signed note)."""
        try:
            note = trust.latest()
        except LogError as exc:
            raise HTTPException(503, f"the log refuses to sign: {exc}") from exc
        return PlainTextResponse(note, media_type="text/plain; charset=utf-8")

    @app.get(_PREFIX + "/key", tags=["log"], response_class=PlainTextResponse)
    def get_key() -> PlainTextResponse:
        """The log's verifier key, C2SP note format ``<name>+<hex key id>+<base64>``."""
        return PlainTextResponse(trust.verifier_key() + "\n", media_type="text/plain")

    @app.get(_PREFIX + "/proof/inclusion", tags=["log"])
    def get_inclusion(
        index: Annotated[str | None, Query()] = None,
        size: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        at = _int("index", index)
        tree = current_size(_int("size", size, default=log.size()))
        if at >= tree:
            raise HTTPException(400, f"index {at} is not below size {tree}")
        return {
            "index": at,
            "size": tree,
            "leaf_hash": _b64(log.leaf_hash(at)),
            "hashes": [_b64(h) for h in log.inclusion_proof(at, tree)],
        }

    @app.get(_PREFIX + "/proof/consistency", tags=["log"])
    def get_consistency(
        first: Annotated[str | None, Query()] = None,
        second: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """RFC 9162 consistency proof between the trees of ``first`` and ``second`` leaves."""
        old = _int("first", first)
        new = current_size(_int("second", second, default=log.size()))
        if old > new:
            raise HTTPException(400, f"first ({old}) must not exceed second ({new})")
        return {
            "first": old,
            "second": new,
            "hashes": [_b64(h) for h in log.consistency_proof(old, new)],
        }

    @app.get(_PREFIX + "/entries", tags=["log"])
    def get_entries(
        request: Request,
        who: Caller,
        start: Annotated[str | None, Query()] = None,
        end: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """Leaves ``[start, end)``, at most 1,000 a call (fewer past the end of the log)."""
        allow(request, who, Verb.GET, PLATFORM, "log", "entries")
        first = _int("start", start)
        last = _int("end", end, default=first + 100)
        if last < first or last - first > MAX_ENTRIES_PER_READ:
            raise HTTPException(400, f"[start, end) must hold 0..{MAX_ENTRIES_PER_READ} leaves")
        return {
            "entries": [
                {
                    "index": e.index,
                    "leaf_hash": _b64(e.leaf_hash),
                    "kind": e.kind,
                    "ref": e.ref,
                    "created": e.created,
                }
                for e in log.entries(first, last)
            ]
        }

    @app.get(_PREFIX + "/proof/record", tags=["log"])
    def get_record_proof(
        request: Request,
        who: Caller,
        kind: Annotated[str | None, Query()] = None,
        ref: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """Everything needed to check one stored record against the newest checkpoint.

        ``kind`` is the leaf kind (``reading``, ``event``, ``record``, ``erasure``) and
        ``ref`` the record's id (a reading: ``<device>/<seq>``). The answer holds the leaf
        data recomputed from storage (its SHA-256 over ``0x00 || data`` is the leaf hash),
        the leaf index, the inclusion proof and the signed checkpoint it leads to.
        """
        if not kind or not ref:
            raise HTTPException(400, "query parameters 'kind' and 'ref' are required")
        if len(ref) > _MAX_REF:
            raise HTTPException(400, f"ref is longer than {_MAX_REF} characters")
        source = trust.sources.get(kind)
        if source is None:
            raise HTTPException(400, f"unknown leaf kind {kind!r}")
        if kind == "reading" and "/" in ref:
            # A reading's proof is as readable as the reading's device.
            allow(request, who, Verb.GET, ref.rpartition("/")[0])
        else:
            allow(request, who, Verb.GET, PLATFORM, "log", "records")
        try:
            proof = trust.record_proof(kind, ref)
        except LogError as exc:
            raise HTTPException(503, f"the log refuses to sign: {exc}") from exc
        if proof is None:
            raise HTTPException(404, f"no {kind} {ref!r} in the log")
        return record_proof_json(proof)


def record_proof_json(proof: RecordProof) -> dict[str, Any]:
    """A record proof as the API and the proof pages serve it (base64 hashes)."""
    return {
        "kind": proof.kind,
        "ref": proof.ref,
        "index": proof.index,
        "size": proof.size,
        "leaf_data": _b64(proof.leaf_data) if proof.leaf_data is not None else None,
        "leaf_hash": _b64(proof.leaf_hash),
        "hashes": [_b64(h) for h in proof.hashes],
        "checkpoint": proof.note,
    }
