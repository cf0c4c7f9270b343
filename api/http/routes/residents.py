"""Resident data over HTTP: translate requests to gate calls and their answers to JSON.

Every route here goes through `access.gate.Gate`; none reads the vault directly. A gate
refusal is raised on, and `api.http.problems` answers it (with its Decision-Id).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from access.exports.records import find_export, open_export
from access.gate import Listing
from access.subjects import Access
from api.http import schemas
from api.http.context import access_of, decision_headers, gate_of, record_view
from api.http.params import (
    ID_LENGTH,
    JUSTIFICATION_LENGTH,
    PathId,
    QueryCursor,
    QueryFields,
    QueryPlace,
    QueryPurpose,
    requested_fields,
)
from api.http.problems import problem
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes

router = APIRouter(prefix="/v1", tags=["residents"])


def _listing(access: Access, listing: Listing) -> JSONResponse:
    body = {
        "items": [record_view(v) for v in listing.items],
        "next_cursor": listing.next_cursor,
        "left_out": listing.left_out,
    }
    return JSONResponse(body, headers=decision_headers(access, listing.decision))


Reader = Annotated[Principal, Depends(require_scopes(Scope.RESIDENTS_READ))]
Writer = Annotated[Principal, Depends(require_scopes(Scope.RESIDENTS_WRITE))]


async def _reading(request: Request, principal: Reader, purpose: QueryPurpose = None) -> Access:
    # On the loop, as the token check is: the subject is cached under the change stamp.
    return access_of(request, principal, purpose)


def _writing(request: Request, principal: Writer, purpose: QueryPurpose = None) -> Access:
    return access_of(request, principal, purpose)


def _exporting(
    request: Request,
    principal: Reader,
    purpose: QueryPurpose = None,
    # percent-encoded UTF-8 may take up to 9 characters a character (api/http/params.py)
    justification: Annotated[str | None, Header(max_length=9 * JUSTIFICATION_LENGTH)] = None,
) -> Access:
    return access_of(request, principal, purpose, justification)


async def _requested(request: Request, fields: QueryFields = None) -> list[str] | None:
    """`?fields=a,b`: the fields asked for (names of the catalogue); None asks for all.
    Async on purpose: it only reads the query, so it costs no threadpool hop."""
    return requested_fields(fields, gate_of(request).catalogue.names)


ReadAccess = Annotated[Access, Depends(_reading)]  # residents:read, with its purpose
WriteAccess = Annotated[Access, Depends(_writing)]  # residents:write, with its purpose
ExportAccess = Annotated[Access, Depends(_exporting)]  # an export may name a Justification
Requested = Annotated[list[str] | None, Depends(_requested)]


@router.get(
    "/residents/{resident_id}",
    summary="Read one resident (scope residents:read)",
    response_model=schemas.Record,
)
async def read_resident(
    request: Request,
    resident_id: PathId,
    access: ReadAccess,
    requested: Requested,
) -> Response:
    # The hot path: no threadpool hop (Gate.read_async).
    view, decision = await gate_of(request).read_async(access, resident_id, requested)
    return JSONResponse(record_view(view), headers=decision_headers(access, decision))


@router.get(
    "/residents",
    summary="List residents in scope (scope residents:read)",
    response_model=schemas.RecordPage,
)
def list_residents(
    request: Request,
    access: ReadAccess,
    place: QueryPlace,
    requested: Requested,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: QueryCursor = None,
) -> Response:
    listing = gate_of(request).list_residents(
        access,
        place=place,
        requested=requested,
        limit=limit,
        cursor=cursor,
    )
    return _listing(access, listing)


class ByIdNumber(BaseModel):
    """Look up by resident ID number (GB 11643): region, birth date and check digit."""

    model_config = ConfigDict(extra="forbid")
    id_number: str = Field(
        max_length=18,
        pattern="^[0-9]{17}[0-9Xx]$",
        json_schema_extra={"format": "cn-resident-id"},
        description="18 characters: 17 digits and a check digit or X",
    )


class ByPhone(BaseModel):
    """Look up by mainland mobile number."""

    model_config = ConfigDict(extra="forbid")
    phone: str = Field(
        max_length=15,
        pattern=r"^(?:\+86|0086|86)?1[3-9][0-9]{9}$",
        description="11 digits starting 13-19, with or without a +86 prefix; no separators",
    )


# Exactly one identifier: an empty body, or both, is a 422 naming them.
SearchBody = Annotated[ByIdNumber | ByPhone, Body()]


@router.post(
    "/residents/search",
    summary="Find by ID number or phone (blind index; a POST so identifiers never appear in URLs)",
    response_model=schemas.RecordPage,
)
def search_residents(
    request: Request,
    body: SearchBody,
    access: ReadAccess,
    requested: Requested,
) -> Response:
    validator, value = (
        ("gb11643", body.id_number) if isinstance(body, ByIdNumber) else ("cn_mobile", body.phone)
    )
    catalogue = gate_of(request).catalogue
    field_name = next(s.name for s in catalogue.searchable if s.validator == validator)
    listing = gate_of(request).search(access, field_name, value, requested)
    return _listing(access, listing)


class ResidentWrite(BaseModel):
    fields: dict[str, Any]
    household_id: str | None = Field(default=None, max_length=ID_LENGTH)


@router.post(
    "/residents",
    status_code=201,
    summary="Create a resident (scope residents:write)",
    response_model=schemas.ResidentWritten,
)
def create_resident(
    request: Request,
    body: ResidentWrite,
    access: WriteAccess,
) -> Response:
    resident_id, decision = gate_of(request).write(
        access, None, body.fields, household_id=body.household_id
    )
    return JSONResponse(
        {"resident_id": resident_id}, status_code=201, headers=decision_headers(access, decision)
    )


@router.patch(
    "/residents/{resident_id}",
    summary="Update a resident (scope residents:write)",
    response_model=schemas.ResidentWritten,
)
def update_resident(
    request: Request,
    resident_id: PathId,
    body: Annotated[dict[str, Any], Body()],
    access: WriteAccess,
) -> Response:
    values = body.get("fields", body)
    if not isinstance(values, dict):
        return problem(
            request,
            "validation-error",
            errors=[{"field": "fields", "message": "an object of field values"}],
        )
    _, decision = gate_of(request).write(access, resident_id, values)
    return JSONResponse({"resident_id": resident_id}, headers=decision_headers(access, decision))


# -- exports --------------------------------------------------------------------------------


EXPORT_CHUNK_BYTES = 64 * 1024


def _chunks(lines: Iterator[str], size: int = EXPORT_CHUNK_BYTES) -> Iterator[bytes]:
    """The lines, encoded and joined into chunks of about `size` bytes."""
    pending: list[bytes] = []
    length = 0
    for line in lines:
        encoded = line.encode()
        pending.append(encoded)
        length += len(encoded)
        if length >= size:
            yield b"".join(pending)
            pending, length = [], 0
    if pending:
        yield b"".join(pending)


@router.get("/exports/residents", summary="Streamed bulk export (NDJSON or CSV)")
def export_residents(
    request: Request,
    access: ExportAccess,
    place: QueryPlace,
    requested: Requested,
    format: Annotated[str, Query(pattern="^(ndjson|csv)$")] = "ndjson",
) -> Response:
    """Every export is fingerprinted for its recipient and request (docs/traceable-exports.md)
    and recorded in the `exports` table before its first row is sent."""
    opened = open_export(
        gate_of(request),
        access,
        format=format,
        place=place,
        requested=requested,
    )
    decision, export_id = opened.decision, opened.export_id

    # A sync iterator: Starlette runs it in a worker thread, so the database work of each
    # batch (whose audit entries commit before its rows are sent) never blocks the loop.
    # One hop per chunk of lines, not per line: a hop cost more than a row.
    body = _chunks(opened.lines)
    media = "application/x-ndjson" if format == "ndjson" else "text/csv; charset=utf-8"
    headers = {**decision_headers(access, decision), "Export-Id": export_id}
    return StreamingResponse(body, media_type=media, headers=headers)


@router.get(
    "/exports/{export_id}",
    summary="An export's summary: rows, and how many were left "
    "out for lack of consent (a count only)",
    response_model=schemas.ExportSummary,
)
def export_summary(request: Request, export_id: PathId, principal: Reader) -> Response:
    with gate_of(request).runtime.vault.sessions() as session:
        record = find_export(session, export_id)
        if record is None or (record.client, record.organisation) != (
            principal.client_id,
            principal.organisation,
        ):
            return problem(request, "not-found")
        body = {
            "export_id": record.id,
            "state": record.state,
            "rows": record.rows,
            "left_out": record.left_out,
            "purpose": record.purpose,
            "format": record.format,
        }
    return JSONResponse(body)
