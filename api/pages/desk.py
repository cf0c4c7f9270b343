"""The worker's counter desk: find a resident by ID number or phone (a POST, through the
blind index), see what policy lets the worker see for the declared purpose, record an
assisted consent with the scanned signed form, print a receipt; the correction queue.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from access import corrections
from access.gate import Gate
from access.runtime import Runtime
from api.http.params import PathId
from api.pages.core import (
    Api,
    ApiRefused,
    PageRoute,
    PageSession,
    correction_refusal,
    form_text,
    lang_of,
    posted,
    redirect,
    render,
    session_actor,
    view,
)
from api.pages.names import Names, names_for
from api.pages.portal import _record_rows
from api.pages.receipts import receipt_signature_ok

AREA = "desk"
router = APIRouter(prefix="/desk", include_in_schema=False, route_class=PageRoute)
MAX_FORM_FILE = 700 * 1024  # the API's body limit is 1 MiB, and base64 adds a third
FORM_TYPES = ("application/pdf", "image/png", "image/jpeg")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _page(request: Request, session: PageSession, template: str, **context: Any) -> Response:
    flash, session.flash = session.flash, None
    names = context.pop("names", None) or names_for(_runtime(request), lang_of(request))
    return render(
        request, template, {"names": names, "flash": flash, **context}, session=session, area=AREA
    )


def _purposes(names: Names, role: str | None) -> list[str]:
    return sorted(
        code for code, spec in names.purposes.items() if role in (spec.get("recipient_types") or [])
    )


@router.get("/")
async def home(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        names = names_for(_runtime(request), lang_of(request))
        return _page(
            request,
            session,
            "desk/home.html",
            names=names,
            purposes=_purposes(names, session.role),
        )

    return await view(request, AREA, body)


async def _resident_page(
    request: Request, session: PageSession, api: Api, found: list[dict[str, Any]], purpose: str
) -> Response:
    names = names_for(_runtime(request), lang_of(request))
    people = []
    for record in found:
        consents = await api.get("/v1/consents", params={"resident_id": record["resident_id"]})
        people.append(
            {
                "resident_id": record["resident_id"],
                "rows": _record_rows(request, record, set()),
                "treatments": record["treatments"],
                "consents": consents["items"],
            }
        )
    offers = [{"purpose": p} for p in names.consent_purposes()]
    recipients = sorted({o for p in names.consent_purposes() for o in names.recipients_for(p)})
    return _page(
        request,
        session,
        "desk/resident.html",
        names=names,
        people=people,
        purpose=purpose,
        purposes=_purposes(names, session.role),
        offers=offers,
        recipients=recipients,
        notice=names.notice(purpose) if purpose in names.purposes else None,
        legal_basis=(names.purposes.get(purpose) or {}).get("legal_basis"),
    )


@router.post("/search")
async def search(request: Request) -> Response:
    """The identifier travels in the POST body, to the API's POST search: never in a URL."""

    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        by = form_text(form, "by", 16)
        value = form_text(form, "value", 40)
        purpose = form_text(form, "purpose", 64)
        if by not in ("id_number", "phone") or not value:
            raise ApiRefused(422, {"title": "id_number|phone"})
        listing = await api.post(
            "/v1/residents/search", params={"purpose": purpose}, json_body={by: value}
        )
        return await _resident_page(request, session, api, listing["items"], purpose)

    return await posted(request, AREA, body)


@router.get("/residents/{resident_id}")
async def resident(request: Request, resident_id: PathId) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        purpose = request.query_params.get("purpose", "")
        record = await api.get(f"/v1/residents/{resident_id}", params={"purpose": purpose})
        return await _resident_page(request, session, api, [record], purpose)

    return await view(request, AREA, body)


@router.post("/consents")
async def record_assisted(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        upload = form.get("form")
        if not isinstance(upload, UploadFile):
            raise ApiRefused(422, {"detail": names_msg(request, "desk.file_missing")})
        content = await upload.read(MAX_FORM_FILE + 1)
        if not content:
            raise ApiRefused(422, {"detail": names_msg(request, "desk.file_missing")})
        if len(content) > MAX_FORM_FILE:
            raise ApiRefused(422, {"detail": names_msg(request, "desk.file_large")})
        media = upload.content_type if upload.content_type in FORM_TYPES else "application/pdf"
        resident_id = form_text(form, "resident_id", 32)
        purpose = form_text(form, "purpose", 64)
        names = names_for(_runtime(request), lang_of(request))
        granted = await api.post(
            "/v1/consents",
            json_body={
                "resident_id": resident_id,
                "recipient": form_text(form, "recipient", 32),
                "purpose": purpose,
                "separate": True,
                "notice_version": names.notice(purpose).get("version"),
                "witness": form_text(form, "witness", 128),
                "evidence": {
                    "content_base64": base64.b64encode(content).decode(),
                    "media_type": media,
                },
            },
        )
        query = urlencode({"resident_id": resident_id})
        return redirect(f"/desk/receipts/{quote(granted['consent_id'])}?{query}")

    return await posted(request, AREA, body)


@router.post("/consents/{consent_id}/revoke")
async def revoke_assisted(request: Request, consent_id: PathId) -> Response:
    """Withdrawing is as easy as giving (PIPL Art. 15): at the counter, with a witness."""

    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        await api.post(
            f"/v1/consents/{consent_id}/revoke", json_body={"witness": form_text(form, "witness")}
        )
        query = urlencode({"resident_id": form_text(form, "resident_id", 32)})
        return redirect(f"/desk/receipts/{quote(consent_id)}?{query}")

    return await posted(request, AREA, body)


def names_msg(request: Request, key: str) -> str:
    from api.pages.messages import message  # noqa: PLC0415 - tiny, only on errors

    return message(key, lang_of(request))


def _receipt_claims(jws: str) -> dict[str, Any]:
    try:
        payload = jws.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


@router.get("/receipts/{consent_id}")
async def receipt(request: Request, consent_id: PathId) -> Response:
    """A page to print for the resident: what they agreed to, and the signed receipt."""

    async def body(session: PageSession, api: Api) -> Response:
        resident_id = request.query_params.get("resident_id", "")
        listing = await api.get("/v1/consents", params={"resident_id": resident_id})
        consent = next((c for c in listing["items"] if c["consent_id"] == consent_id), None)
        if consent is None:
            raise ApiRefused(404, {"title": "not found"})
        response = await api.raw("GET", f"/v1/consents/{consent_id}/receipt")
        if response.status_code != 200:
            raise ApiRefused(response.status_code, response.json())
        jws = response.text
        return _page(
            request,
            session,
            "desk/receipt.html",
            consent=consent,
            jws=jws,
            claims=_receipt_claims(jws),
            fingerprint=hashlib.sha256(jws.encode()).hexdigest(),
            signature_ok=await receipt_signature_ok(api, jws),
            back="/desk/",
        )

    return await view(request, AREA, body)


# -- the correction queue -----------------------------------------------------------------


def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


@router.get("/corrections")
async def queue(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        await api.fresh()
        actor = await run_in_threadpool(session_actor, request, session)
        try:
            items = await run_in_threadpool(corrections.queue, _gate(request), actor)
        except corrections.CorrectionError as error:
            raise correction_refusal(error, lang_of(request)) from None
        return _page(request, session, "desk/corrections.html", items=items, opened=None)

    return await view(request, AREA, body)


@router.post("/corrections/{request_id}/open")
async def open_correction(request: Request, request_id: str) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        await api.fresh()
        actor = await run_in_threadpool(session_actor, request, session)
        gate = _gate(request)
        try:
            opened = await run_in_threadpool(corrections.open_request, gate, actor, request_id)
            items = await run_in_threadpool(corrections.queue, gate, actor)
        except corrections.CorrectionError as error:
            raise correction_refusal(error, lang_of(request)) from None
        return _page(request, session, "desk/corrections.html", items=items, opened=opened)

    return await posted(request, AREA, body)


@router.post("/corrections/{request_id}/resolve")
async def resolve_correction(request: Request, request_id: str) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        await api.fresh()
        actor = await run_in_threadpool(session_actor, request, session)
        try:
            await run_in_threadpool(corrections.resolve, _gate(request), actor, request_id)
        except corrections.CorrectionError as error:
            raise correction_refusal(error, lang_of(request)) from None
        return redirect("/desk/corrections")

    return await posted(request, AREA, body)
