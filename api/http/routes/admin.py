"""The admin API: the district's places, organisations, purposes, mandates and accounts,
and the whole district as one document, with the powers of the commands (docs/admin.md).

Every route needs scope `admin:write` held by an account with the operator role (an
organisation's system can hold neither). Each change is one transaction with its audit
entry, on the api channel, by `user:<operator>`; a refusal is a problem (the one table
in api.http.problems) and writes nothing. The changes are made by the same functions the
commands call (`vault.places`, `vault.organisations`, `vault.purposes`, `vault.mandates`,
`vault.accounts`, `vault.district`); this module only speaks HTTP.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from access.errors import NotAnOperator
from api.http.context import runtime_of
from api.oauth.scopes import Scope
from api.oauth.service import end_logins
from api.oauth.tokens import Principal, require_scopes
from audit import operator_event
from vault.accounts import (
    Account,
    AccountChange,
    add_account,
    disable_account,
    list_accounts,
    reset_password,
)
from vault.district import (
    Change,
    apply_district,
    check_district,
    export_district,
    parse_until,
)
from vault.mandates import (
    MandateRow,
    catalogue_categories,
    grant_mandate,
    list_mandates,
    revoke_mandate,
)
from vault.organisations import (
    OrganisationRow,
    add_organisation,
    list_organisations,
    retire_organisation,
)
from vault.places import PlaceRow, add_place, list_places, move_place, retire_place
from vault.purposes import PurposeRow, add_purpose, list_purposes, purpose_definition

router = APIRouter(prefix="/v1/admin", tags=["admin"])

PlaceKind = Literal["street", "community", "grid", "building"]
Id = Annotated[str, Field(min_length=2, max_length=48)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
PathId = Annotated[str, PathParam(max_length=48)]
PathUser = Annotated[str, PathParam(max_length=64)]
Code = Annotated[str, Field(max_length=32)]  # an action, a recipient type
NO_STORE = {"Cache-Control": "no-store"}  # answers that carry a one-time password


def _operator(
    principal: Annotated[Principal, Depends(require_scopes(Scope.ADMIN_WRITE))],
) -> str:
    """The operator's name for the audit log; NotAnOperator for any other caller."""
    if principal.role != "operator" or not principal.username or principal.external:
        raise NotAnOperator
    return f"user:{principal.username}"


Operator = Annotated[str, Depends(_operator)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listed(BaseModel):
    model_config = ConfigDict(extra="allow")
    items: list[dict[str, Any]] = Field(max_length=100_000)  # a description, not a limit


class Item(BaseModel):
    model_config = ConfigDict(extra="allow")


def _event(request: Request, action: str, actor: str, details: dict[str, Any]) -> Any:
    request_id = getattr(request.state, "request_id", None)
    return operator_event(action, actor, details, channel="api", request_id=request_id)


# -- places ----------------------------------------------------------------------------------


class PlaceNew(Body):
    kind: PlaceKind
    id: Id
    name: Name
    parent: Id | None = None


class PlaceMove(Body):
    kind: PlaceKind
    parent: Id


class PlaceRetire(Body):
    kind: PlaceKind


@router.get("/places", summary="The district's places (scope admin:write)", response_model=Listed)
def admin_list_places(
    request: Request, _: Operator, retired: Annotated[bool, Query()] = False
) -> JSONResponse:
    with runtime_of(request).vault.sessions() as session:
        rows = list_places(session, retired=retired)
    return JSONResponse({"items": [row.record() for row in rows]})


@router.post(
    "/places", status_code=201, summary="Add a place (scope admin:write)", response_model=Item
)
def admin_add_place(request: Request, body: PlaceNew, actor: Operator) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        row: PlaceRow = add_place(session, body.kind, body.id, body.name, body.parent)
        runtime.audit.record(session, [_event(request, "place.added", actor, row.record())])
    return JSONResponse(row.record(), status_code=201)


@router.post(
    "/places/{place_id}/move", summary="Move a place (scope admin:write)", response_model=Item
)
def admin_move_place(
    request: Request, place_id: PathId, body: PlaceMove, actor: Operator
) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        row = move_place(session, body.kind, place_id, body.parent)
        runtime.audit.record(session, [_event(request, "place.moved", actor, row.record())])
    return JSONResponse(row.record())


@router.post(
    "/places/{place_id}/retire",
    summary="Retire a place nobody lives in (scope admin:write)",
    response_model=Item,
)
def admin_retire_place(
    request: Request,
    place_id: PathId,
    body: PlaceRetire,
    actor: Operator,
) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        row = retire_place(session, body.kind, place_id)
        runtime.audit.record(session, [_event(request, "place.retired", actor, row.record())])
    return JSONResponse(row.record())


# -- organisations ---------------------------------------------------------------------------


class OrganisationNew(Body):
    id: Id
    kind: Literal[
        "department",
        "street_office",
        "residents_committee",
        "property_company",
        "owners_committee",
        "social_organisation",
    ]
    name: Name
    name_en: Name | None = None
    places: list[Id] = Field(default_factory=list, max_length=500)
    buildings: list[Id] = Field(default_factory=list, max_length=5000)


@router.get(
    "/organisations",
    summary="The district's organisations (scope admin:write)",
    response_model=Listed,
)
def admin_list_organisations(
    request: Request, _: Operator, retired: Annotated[bool, Query()] = False
) -> JSONResponse:
    with runtime_of(request).vault.sessions() as session:
        rows = list_organisations(session, retired=retired)
    return JSONResponse({"items": [row.record() for row in rows]})


@router.post(
    "/organisations",
    status_code=201,
    summary="Add an organisation (scope admin:write)",
    response_model=Item,
)
def admin_add_organisation(
    request: Request, body: OrganisationNew, actor: Operator
) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        row: OrganisationRow = add_organisation(
            session,
            body.id,
            body.kind,
            body.name,
            name_en=body.name_en,
            communities=body.places,
            buildings=body.buildings,
        )
        event = _event(request, "organisation.added", actor, row.record())
        runtime.audit.record(session, [event])
    return JSONResponse(row.record(), status_code=201)


@router.post(
    "/organisations/{organisation_id}/retire",
    summary="Retire an organisation (scope admin:write)",
    response_model=Item,
)
def admin_retire_organisation(
    request: Request, organisation_id: PathId, actor: Operator
) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        row = retire_organisation(session, organisation_id)
        event = _event(request, "organisation.retired", actor, {"id": row.id})
        runtime.audit.record(session, [event])
    return JSONResponse(row.record())


# -- purposes --------------------------------------------------------------------------------


class PurposeNew(Body):
    code: Id
    name: Name
    name_en: Name
    basis: str = Field(max_length=32)
    law: str = Field(min_length=1, max_length=500)
    law_en: str = Field(min_length=1, max_length=500)
    recipients: list[Code] = Field(min_length=1, max_length=10)
    actions: list[Code] = Field(min_length=1, max_length=10)
    fields: dict[str, str] = Field(default_factory=dict, max_length=200)
    categories: dict[str, str] = Field(default_factory=dict, max_length=50)
    retention_days: int = Field(default=365, ge=1, le=36500)


@router.get("/purposes", summary="The purpose registry (scope admin:write)", response_model=Listed)
def admin_list_purposes(
    request: Request, _: Operator, retired: Annotated[bool, Query()] = False
) -> JSONResponse:
    with runtime_of(request).vault.sessions() as session:
        rows: list[PurposeRow] = list_purposes(session, retired=retired)
    return JSONResponse({"items": [row.record() for row in rows]})


@router.post(
    "/purposes",
    status_code=201,
    summary="Register a purpose (scope admin:write)",
    response_model=Item,
)
def admin_add_purpose(request: Request, body: PurposeNew, actor: Operator) -> JSONResponse:
    runtime = runtime_of(request)
    catalogue = runtime.vault.store.catalogue
    definition = purpose_definition(
        name_zh=body.name,
        name_en=body.name_en,
        legal_basis=body.basis,
        reference_zh=body.law,
        reference_en=body.law_en,
        recipients=body.recipients,
        actions=body.actions,
        fields=body.fields,
        categories=body.categories,
        retention_days=body.retention_days,
        field_names=catalogue.names,
        category_names={spec.category for spec in catalogue},
    )
    with runtime.transaction() as session:
        row = add_purpose(session, body.code, definition, actor=actor)
        runtime.audit.record(session, [_event(request, "purpose.added", actor, row.record())])
    return JSONResponse(row.record(), status_code=201)


# -- mandates --------------------------------------------------------------------------------


class MandateGrant(Body):
    org: Id
    purpose: Id
    actions: list[Code] = Field(min_length=1, max_length=6)
    fields: list[str] | None = Field(default=None, max_length=200)
    basis: str = Field(default="law", max_length=16)
    until: str | None = Field(
        default=None,
        max_length=40,
        description="2027-12-31 (through that day, Beijing time) or an ISO 8601 time with a zone",
    )


class MandateRevoke(Body):
    org: Id
    purpose: Id


@router.get(
    "/mandates",
    summary="Mandates in force, or every one with history (scope admin:write)",
    response_model=Listed,
)
def admin_list_mandates(
    request: Request,
    _: Operator,
    org: Annotated[str | None, Query(max_length=48)] = None,
    history: Annotated[bool, Query()] = False,
) -> JSONResponse:
    with runtime_of(request).vault.sessions() as session:
        rows: list[MandateRow] = list_mandates(session, organisation_id=org, history=history)
    return JSONResponse({"items": [row.record() for row in rows]})


@router.post(
    "/mandates",
    status_code=201,
    summary="Grant a mandate, replacing the one in force (scope admin:write)",
    response_model=Item,
)
def admin_grant_mandate(request: Request, body: MandateGrant, actor: Operator) -> JSONResponse:
    runtime = runtime_of(request)
    until: datetime | None = parse_until(body.until)
    with runtime.transaction() as session:
        granted, replaced = grant_mandate(
            session,
            body.org,
            body.purpose,
            body.actions,
            fields=body.fields,
            basis=body.basis,
            valid_until=until,
            field_categories=catalogue_categories(runtime.vault.store.catalogue),
            actor=actor,
        )
        details = granted.record() | {"replaced": None if replaced is None else replaced.id}
        runtime.audit.record(session, [_event(request, "mandate.granted", actor, details)])
    return JSONResponse(granted.record(), status_code=201)


@router.post(
    "/mandates/revoke",
    summary="Revoke the mandate in force; denied from the next request (scope admin:write)",
    response_model=Item,
)
def admin_revoke_mandate(request: Request, body: MandateRevoke, actor: Operator) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        revoked = revoke_mandate(session, body.org, body.purpose, actor=actor)
        event = _event(request, "mandate.revoked", actor, revoked.record())
        runtime.audit.record(session, [event])
    return JSONResponse(revoked.record())


# -- accounts --------------------------------------------------------------------------------


class AccountNew(Body):
    username: str = Field(min_length=3, max_length=64)
    org: Id
    role: Literal["grid_worker", "community_worker", "auditor", "operator"]
    grid: Id | None = None
    community: Id | None = None


def _changed(change: AccountChange, status: int = 200) -> JSONResponse:
    body: dict[str, Any] = {"account": change.account.record()}
    if change.password is not None:
        body["one_time_password"] = change.password  # shown here once, kept nowhere
    return JSONResponse(body, status_code=status, headers=NO_STORE)


def _record_change(request: Request, change: AccountChange, **extra: Any) -> Any:
    return _event(request, change.action, change.actor, {**change.details(), **extra})


@router.get("/accounts", summary="Staff accounts (scope admin:write)", response_model=Listed)
def admin_list_accounts(
    request: Request, _: Operator, disabled: Annotated[bool, Query()] = False
) -> JSONResponse:
    with runtime_of(request).vault.sessions() as session:
        rows: list[Account] = list_accounts(session, disabled=disabled)
    staff = [row.record() for row in rows if row.role != "resident"]
    return JSONResponse({"items": staff})


@router.post(
    "/accounts",
    status_code=201,
    summary="Add a staff account; its one-time password is in this answer only (scope admin:write)",
    response_model=Item,
)
def admin_add_account(request: Request, body: AccountNew, actor: Operator) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        change = add_account(
            session,
            actor,
            username=body.username,
            role=body.role,
            organisation_id=body.org,
            grid_id=body.grid,
            community_id=body.community,
        )
        runtime.audit.record(session, [_record_change(request, change)])
    return _changed(change, 201)


@router.post(
    "/accounts/{username}/disable",
    summary="Disable an account; its tokens stop on their next use (scope admin:write)",
    response_model=Item,
)
def admin_disable_account(request: Request, username: PathUser, actor: Operator) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        change = disable_account(session, actor, username)
        ended = end_logins(session, username, "account_disabled")
        runtime.audit.record(session, [_record_change(request, change, logins_ended=ended)])
    return _changed(change)


@router.post(
    "/accounts/{username}/reset-password",
    summary="A new one-time password, in this answer only (scope admin:write)",
    response_model=Item,
)
def admin_reset_password(request: Request, username: PathUser, actor: Operator) -> JSONResponse:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        change = reset_password(session, actor, username)
        # Whoever held the old password is logged out with it, as by the command.
        ended = end_logins(session, username, "password_reset")
        runtime.audit.record(session, [_record_change(request, change, logins_ended=ended)])
    return _changed(change)


# -- the whole district ----------------------------------------------------------------------


@router.get(
    "/district",
    summary="Today's district in the form `district apply` takes (scope admin:write)",
    response_model=Item,
)
def admin_export_district(request: Request, _: Operator) -> JSONResponse:
    with runtime_of(request).vault.sessions() as session:
        return JSONResponse(export_district(session))


@router.post(
    "/district",
    summary="Make the district what the document declares, or with dry_run say what "
    "would change (scope admin:write)",
    response_model=Item,
)
def admin_apply_district(
    request: Request,
    document: dict[str, Any],
    actor: Operator,
    dry_run: Annotated[bool, Query()] = False,
) -> JSONResponse:
    runtime = runtime_of(request)
    catalogue = runtime.vault.store.catalogue
    check_district(document)
    with runtime.vault.sessions() as session, session.begin():
        changes: list[Change] = apply_district(
            session,
            document,
            field_categories=catalogue_categories(catalogue),
            category_names=sorted({spec.category for spec in catalogue}),
            actor=actor,
        )
        records = [change.record() for change in changes]
        if dry_run:
            session.rollback()
        elif changes:
            event = _event(request, "district.applied", actor, {"changes": records})
            runtime.audit.record(session, [event])
    return JSONResponse({"dry_run": dry_run, "changes": records}, headers=NO_STORE)
