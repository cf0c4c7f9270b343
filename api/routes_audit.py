"""Public audit endpoints: checkpoints, proofs and the verifier key (API.md, "Checkpoints").

These need no token: anyone may check that the log is consistent. Entries themselves are
served only to auditors and to the resident they concern (with the access gate).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import select

from api.problems import problem
from api.runtime import Runtime
from audit import ProofUnavailable
from audit.models import AuditCheckpoint

router = APIRouter(prefix="/v1/audit", tags=["audit log"])


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@router.get("/checkpoint", response_class=PlainTextResponse)
def latest_checkpoint(request: Request) -> Response:
    """The latest signed tree head, as a C2SP checkpoint (text/plain)."""
    runtime = _runtime(request)
    with runtime.vault.sessions() as session:
        head = runtime.audit.latest_checkpoint(session)
    if head is None:
        return problem(request, "not-found", detail="no checkpoint has been signed yet")
    return PlainTextResponse(head.checkpoint)


@router.get("/checkpoints")
def checkpoints(
    request: Request,
    since: int = Query(default=0, ge=0, description="smallest tree size to list"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """Tree-head history: each checkpoint with the (unsigned) time it was signed."""
    runtime = _runtime(request)
    with runtime.vault.sessions() as session:
        heads = session.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.tree_size >= since)
            .order_by(AuditCheckpoint.tree_size)
            .limit(limit)
        ).all()
    return {
        "items": [
            {
                "checkpoint": h.checkpoint,
                "tree_size": h.tree_size,
                "signed_at": h.signed_at.isoformat(),
            }
            for h in heads
        ]
    }


@router.get("/proofs/inclusion", response_model=None)
def inclusion(
    request: Request, index: int = Query(ge=0), tree_size: int = Query(ge=1)
) -> dict[str, Any] | JSONResponse:
    runtime = _runtime(request)
    with runtime.vault.sessions() as session:
        try:
            hashes = runtime.audit.inclusion_proof(session, index, tree_size)
        except ProofUnavailable as exc:
            return problem(request, "proof-unavailable", detail=str(exc), status=404)
    return {"index": index, "tree_size": tree_size, "hashes": _b64(hashes)}


@router.get("/proofs/consistency", response_model=None)
def consistency(
    request: Request, first: int = Query(ge=1), second: int = Query(ge=1)
) -> dict[str, Any] | JSONResponse:
    """Proof that the tree of size `first` is a prefix of the tree of size `second`."""
    runtime = _runtime(request)
    with runtime.vault.sessions() as session:
        try:
            hashes = runtime.audit.consistency_proof(session, first, second)
        except ProofUnavailable as exc:
            return problem(request, "proof-unavailable", detail=str(exc), status=404)
    return {"first": first, "second": second, "hashes": _b64(hashes)}


@router.get("/public-key", response_class=PlainTextResponse)
def public_key(request: Request) -> PlainTextResponse:
    """The log's verifier key: `<origin>+<key id hex>+<base64(0x01 || public key)>`."""
    return PlainTextResponse(_runtime(request).audit.verifier_key + "\n")
