"""The operator console: the district's places, organisations, mandates and staff accounts,
listed and changed through `/v1/admin/...` with the operator's own token (docs/admin.md).

Every change is a form POST with the session's CSRF token. A refusal shows the API's
problem (in the page's language) on the same page, with what was typed still in the
form. A one-time password is shown once, on the page that answers the POST: it is never
put in a URL, a flash message, the session or a log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from access.runtime import Runtime
from api.pages.core import (
    Api,
    ApiRefused,
    PageRoute,
    PageSession,
    form_text,
    lang_of,
    posted,
    redirect,
    render,
    view,
)
from api.pages.names import names_for
from vault.accounts import STAFF_ROLES
from vault.mandates import BASES
from vault.models import ORGANISATION_TYPES
from vault.places import KINDS, PARENT_KIND
from vault.purposes import ACTIONS

AREA = "operator"
router = APIRouter(prefix="/operator", include_in_schema=False, route_class=PageRoute)
ID_LIMIT = 48
NAME_LIMIT = 200


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _page(
    request: Request,
    session: PageSession,
    template: str,
    *,
    refused: ApiRefused | None = None,
    **context: Any,
) -> Response:
    flash, session.flash = session.flash, None
    names = names_for(_runtime(request), lang_of(request))
    status = 200
    if refused is not None:
        status = refused.status if refused.status in (403, 404, 409, 422) else 400
    return render(
        request,
        template,
        {"names": names, "flash": flash, "refused": _problem(refused), **context},
        status=status,
        session=session,
        area=AREA,
    )


def _problem(refused: ApiRefused | None) -> dict[str, Any] | None:
    """What the page shows of a refusal: the problem's detail and each field's complaint."""
    if refused is None:
        return None
    errors = refused.problem.get("errors")
    listed = [
        {"field": str(e.get("field") or ""), "message": str(e.get("message") or "")}
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict) and (e.get("field") or e.get("message") != refused.detail)
    ]
    return {"detail": refused.detail, "errors": listed[:20]}


def _ids(form: FormData, name: str) -> list[str]:
    """Ids typed into one box, separated by commas or spaces, or ticked boxes of one name."""
    values = [v for v in form.getlist(name) if isinstance(v, str)]
    found = [part for value in values for part in value.replace(",", " ").split()]
    return list(dict.fromkeys(part[:ID_LIMIT] for part in found))[:500]


def _values(form: FormData, *names: str) -> dict[str, Any]:
    """What was typed, to put back into the form after a refusal."""
    return {name: form_text(form, name, NAME_LIMIT) for name in names}


# -- places ----------------------------------------------------------------------------------


async def _places_page(
    request: Request,
    session: PageSession,
    api: Api,
    *,
    refused: ApiRefused | None = None,
    typed: dict[str, Any] | None = None,
) -> Response:
    places = (await api.get("/v1/admin/places", params={"retired": "true"}))["items"]
    in_use: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for place in places:
        if not place["retired"]:
            in_use[place["kind"]].append(place["id"])
    return _page(
        request,
        session,
        "operator/places.html",
        refused=refused,
        places=places,
        in_use=in_use,
        kinds=KINDS,
        parent_kind=PARENT_KIND,
        typed=typed or {},
    )


@router.get("/")
async def places(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        return await _places_page(request, session, api)

    return await view(request, AREA, body)


@router.post("/places")
async def add_place(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        typed = _values(form, "kind", "id", "name", "parent")
        try:
            await api.post(
                "/v1/admin/places",
                json_body={
                    "kind": typed["kind"],
                    "id": typed["id"][:ID_LIMIT],
                    "name": typed["name"],
                    "parent": typed["parent"][:ID_LIMIT] or None,
                },
            )
        except ApiRefused as refused:
            return await _places_page(request, session, api, refused=refused, typed=typed)
        session.flash = "operator.place_added"
        return redirect("/operator/")

    return await posted(request, AREA, body)


@router.post("/places/{place_id}/move")
async def move_place(request: Request, place_id: str) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        try:
            await api.post(
                f"/v1/admin/places/{quote(place_id[:ID_LIMIT], safe='')}/move",
                json_body={
                    "kind": form_text(form, "kind", 16),
                    "parent": form_text(form, "parent", ID_LIMIT),
                },
            )
        except ApiRefused as refused:
            return await _places_page(request, session, api, refused=refused)
        session.flash = "operator.place_moved"
        return redirect("/operator/")

    return await posted(request, AREA, body)


@router.post("/places/{place_id}/retire")
async def retire_place(request: Request, place_id: str) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        try:
            await api.post(
                f"/v1/admin/places/{quote(place_id[:ID_LIMIT], safe='')}/retire",
                json_body={"kind": form_text(form, "kind", 16)},
            )
        except ApiRefused as refused:
            return await _places_page(request, session, api, refused=refused)
        session.flash = "operator.place_retired"
        return redirect("/operator/")

    return await posted(request, AREA, body)


# -- organisations ---------------------------------------------------------------------------


async def _organisations_page(
    request: Request,
    session: PageSession,
    api: Api,
    *,
    refused: ApiRefused | None = None,
    typed: dict[str, Any] | None = None,
) -> Response:
    listed = (await api.get("/v1/admin/organisations", params={"retired": "true"}))["items"]
    places = (await api.get("/v1/admin/places"))["items"]
    return _page(
        request,
        session,
        "operator/organisations.html",
        refused=refused,
        organisations=listed,
        communities=[p for p in places if p["kind"] == "community"],
        kinds=ORGANISATION_TYPES,
        typed=typed or {"places": []},
    )


@router.get("/organisations")
async def organisations(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        return await _organisations_page(request, session, api)

    return await view(request, AREA, body)


@router.post("/organisations")
async def add_organisation(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        typed = _values(form, "id", "kind", "name", "name_en", "buildings")
        typed["places"] = _ids(form, "places")
        try:
            await api.post(
                "/v1/admin/organisations",
                json_body={
                    "id": typed["id"][:ID_LIMIT],
                    "kind": typed["kind"],
                    "name": typed["name"],
                    "name_en": typed["name_en"] or None,
                    "places": typed["places"],
                    "buildings": _ids(form, "buildings"),
                },
            )
        except ApiRefused as refused:
            return await _organisations_page(request, session, api, refused=refused, typed=typed)
        session.flash = "operator.organisation_added"
        return redirect("/operator/organisations")

    return await posted(request, AREA, body)


@router.post("/organisations/{organisation_id}/retire")
async def retire_organisation(request: Request, organisation_id: str) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        try:
            await api.post(
                f"/v1/admin/organisations/{quote(organisation_id[:ID_LIMIT], safe='')}/retire"
            )
        except ApiRefused as refused:
            return await _organisations_page(request, session, api, refused=refused)
        session.flash = "operator.organisation_retired"
        return redirect("/operator/organisations")

    return await posted(request, AREA, body)


# -- mandates --------------------------------------------------------------------------------


async def _mandates_page(
    request: Request,
    session: PageSession,
    api: Api,
    *,
    history: bool = False,
    refused: ApiRefused | None = None,
    typed: dict[str, Any] | None = None,
) -> Response:
    params = {"history": "true"} if history else None
    mandates = (await api.get("/v1/admin/mandates", params=params))["items"]
    now = datetime.now(UTC)
    for mandate in mandates:
        until = mandate.get("valid_until")
        mandate["in_force"] = mandate.get("revoked_at") is None and (
            until is None or datetime.fromisoformat(until) > now
        )
    organisations = (await api.get("/v1/admin/organisations"))["items"]
    purposes = (await api.get("/v1/admin/purposes"))["items"]
    catalogue = _runtime(request).vault.store.catalogue
    return _page(
        request,
        session,
        "operator/mandates.html",
        refused=refused,
        history=history,
        mandates=mandates,
        organisations=organisations,
        purposes=purposes,
        actions=ACTIONS,
        bases=list(BASES),
        fields=list(catalogue.names),
        typed=typed or {"actions": [], "fields": [], "basis": "law"},
    )


@router.get("/mandates")
async def mandates(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        history = request.query_params.get("history") == "1"
        return await _mandates_page(request, session, api, history=history)

    return await view(request, AREA, body)


@router.post("/mandates")
async def grant_mandate(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        typed = _values(form, "org", "purpose", "basis", "until")
        typed["actions"] = [a for a in _ids(form, "actions") if a in ACTIONS]
        typed["fields"] = _ids(form, "fields")
        try:
            await api.post(
                "/v1/admin/mandates",
                json_body={
                    "org": typed["org"][:ID_LIMIT],
                    "purpose": typed["purpose"][:ID_LIMIT],
                    "actions": typed["actions"],
                    "fields": typed["fields"] or None,  # none ticked: what the purpose allows
                    "basis": typed["basis"][:16] or "law",
                    "until": typed["until"][:40] or None,
                },
            )
        except ApiRefused as refused:
            return await _mandates_page(request, session, api, refused=refused, typed=typed)
        session.flash = "operator.mandate_granted"
        return redirect("/operator/mandates")

    return await posted(request, AREA, body)


@router.post("/mandates/revoke")
async def revoke_mandate(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        try:
            await api.post(
                "/v1/admin/mandates/revoke",
                json_body={
                    "org": form_text(form, "org", ID_LIMIT),
                    "purpose": form_text(form, "purpose", ID_LIMIT),
                },
            )
        except ApiRefused as refused:
            return await _mandates_page(request, session, api, refused=refused)
        session.flash = "operator.mandate_revoked"
        return redirect("/operator/mandates")

    return await posted(request, AREA, body)


# -- accounts --------------------------------------------------------------------------------


async def _accounts_page(
    request: Request,
    session: PageSession,
    api: Api,
    *,
    refused: ApiRefused | None = None,
    typed: dict[str, Any] | None = None,
    issued: dict[str, Any] | None = None,
) -> Response:
    accounts = (await api.get("/v1/admin/accounts", params={"disabled": "true"}))["items"]
    organisations = (await api.get("/v1/admin/organisations"))["items"]
    places = (await api.get("/v1/admin/places"))["items"]
    return _page(
        request,
        session,
        "operator/accounts.html",
        refused=refused,
        accounts=accounts,
        organisations=organisations,
        grids=[p for p in places if p["kind"] == "grid"],
        communities=[p for p in places if p["kind"] == "community"],
        roles=STAFF_ROLES,
        typed=typed or {},
        issued=issued,
    )


@router.get("/accounts")
async def accounts(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        return await _accounts_page(request, session, api)

    return await view(request, AREA, body)


def _issued(answer: dict[str, Any], *, reset: bool) -> dict[str, Any]:
    """The account and its one-time password, for this one page only."""
    return {
        "reset": reset,
        "username": answer["account"]["username"],
        "password": answer.get("one_time_password"),
    }


@router.post("/accounts")
async def add_account(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        typed = _values(form, "username", "org", "role", "grid", "community")
        try:
            answer = await api.post(
                "/v1/admin/accounts",
                json_body={
                    "username": typed["username"][:64],
                    "org": typed["org"][:ID_LIMIT],
                    "role": typed["role"],
                    "grid": typed["grid"][:ID_LIMIT] or None,
                    "community": typed["community"][:ID_LIMIT] or None,
                },
            )
        except ApiRefused as refused:
            return await _accounts_page(request, session, api, refused=refused, typed=typed)
        # Shown on this answer only: no redirect, so the password is in no URL or cookie.
        issued = _issued(answer, reset=False)
        return await _accounts_page(request, session, api, issued=issued)

    return await posted(request, AREA, body)


@router.post("/accounts/{username}/disable")
async def disable_account(request: Request, username: str) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        try:
            await api.post(f"/v1/admin/accounts/{quote(username[:64], safe='')}/disable")
        except ApiRefused as refused:
            return await _accounts_page(request, session, api, refused=refused)
        session.flash = "operator.account_disabled"
        return redirect("/operator/accounts")

    return await posted(request, AREA, body)


@router.post("/accounts/{username}/reset-password")
async def reset_password(request: Request, username: str) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        try:
            answer = await api.post(
                f"/v1/admin/accounts/{quote(username[:64], safe='')}/reset-password"
            )
        except ApiRefused as refused:
            return await _accounts_page(request, session, api, refused=refused)
        issued = _issued(answer, reset=True)
        return await _accounts_page(request, session, api, issued=issued)

    return await posted(request, AREA, body)
