"""A resident's own view: my record, my children's, who accessed my data, my copy.

Residents need no purpose to read their own record; every read is still recorded, and
each entry about them comes with an inclusion proof they can check without the vault.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from api.http import schemas
from api.http.context import (
    Myself,
    decision_headers,
    gate_of,
    reads_recorded,
    record_view,
)
from api.http.params import Index, QueryCursor
from api.http.problems import problem
from audit.checkpoint import format_tlog_proof
from audit.models import AuditEntry
from audit.queries import EntryFilter, entry_summary, search
from vault.spreadsheet import csv_row

router = APIRouter(prefix="/v1/me", tags=["me (residents)"])


@router.get("", summary="My record, as the vault holds it", response_model=schemas.Record)
def my_record(request: Request, own: Myself) -> Response:
    access = own.access()
    view, decision = gate_of(request).read(access, own.resident_id, target="self")
    return JSONResponse(
        record_view(view),
        headers=decision_headers(access, decision),
    )


@router.get(
    "/children", summary="My minor children's records (guardian)", response_model=schemas.Records
)
def my_children(request: Request, own: Myself) -> Response:
    access = own.access()
    items = []
    for ward in access.subject.children:
        view, _ = gate_of(request).read(access, ward, target="child")
        items.append(record_view(view))
    return JSONResponse({"items": items}, headers={"Decision-Id": access.decision_id})


@router.get(
    "/accesses",
    summary="Who accessed my data: every entry about me, with proofs",
    response_model=schemas.MyAccessPage,
)
def my_accesses(
    request: Request,
    own: Myself,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: QueryCursor = None,
) -> Response:
    access = own.access()
    runtime = gate_of(request).runtime
    items = []
    # One transaction and one checkpoint for the whole page: every proof is against the same
    # head, and the read of the page is itself recorded before it is answered.
    with runtime.transaction() as session:
        page = search(session, EntryFilter(resident_id=own.resident_id), limit=limit, cursor=cursor)
        head = runtime.audit.latest_checkpoint(session)
        for index, entry in page.items:
            summary = entry_summary(index, entry)
            summary["proof"] = None
            if head is not None and index is not None and index < head.tree_size:
                hashes = runtime.audit.inclusion_proof(session, index, head.tree_size)
                summary["proof"] = {
                    "tree_size": head.tree_size,
                    "hashes": [base64.b64encode(h).decode() for h in hashes],
                }
            items.append(summary)
        reads_recorded(request, session, access.subject, "me.accesses", [own.resident_id])
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


@router.get(
    "/accesses/{index}/proof",
    response_class=PlainTextResponse,
    summary="An entry about me as a C2SP tlog-proof file, verifiable offline",
)
def my_access_proof(request: Request, index: Index, own: Myself) -> Response:
    runtime = gate_of(request).runtime
    with runtime.transaction() as session:
        entry: AuditEntry | None = runtime.audit.entry_at(session, index)
        head = runtime.audit.latest_checkpoint(session)
        if entry is None or entry.resident_id != own.resident_id:
            return problem(request, "not-found")
        if head is None or index >= head.tree_size:
            return problem(
                request,
                "proof-unavailable",
                detail="no checkpoint covers this entry yet; try again shortly",
            )
        hashes = runtime.audit.inclusion_proof(session, index, head.tree_size)
        document = format_tlog_proof(entry.canonical, index, hashes, head.checkpoint)
        reads_recorded(request, session, own.subject, "me.access_proof", [entry.resident_id])
    return PlainTextResponse(
        document,
        headers={"Content-Disposition": f'attachment; filename="access-{index}.tlog-proof"'},
    )


@router.get(
    "/export", summary="My data, to take elsewhere (JSON or CSV)", response_model=schemas.MyCopy
)
def my_export(
    request: Request,
    own: Myself,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    access = own.access("portability")
    view, decision = gate_of(request).read(access, own.resident_id, target="self")
    headers = decision_headers(access, decision)
    if format == "json":
        body: dict[str, Any] = {"resident_id": view.resident_id, "fields": view.fields}
        headers["Content-Disposition"] = 'attachment; filename="my-data.json"'
        return JSONResponse(body, headers=headers)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(csv_row(["field", "value"]))
    for name, value in view.fields.items():
        # Neutralised: a value beginning with `=` is text in the resident's spreadsheet.
        cell = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        writer.writerow(csv_row([name, cell]))
    headers["Content-Disposition"] = 'attachment; filename="my-data.csv"'
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
