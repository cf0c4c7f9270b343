"""The resident portal: my record, who accessed it (verifiable), my consents, my copy, my
children, and correction requests. Everything goes through `/v1/me...` with my own token.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from access import corrections
from access.gate import Gate
from access.runtime import Runtime
from api.http.params import Index, PathId
from api.pages.core import (
    SECURITY_HEADERS,
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
from api.pages.names import names_for
from api.pages.receipts import receipt_signature_ok
from audit.checkpoint import CheckpointError, verify_tlog_proof
from vault.masking import mask_value

AREA = "portal"
router = APIRouter(prefix="/portal", include_in_schema=False, route_class=PageRoute)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _page(request: Request, session: PageSession, template: str, **context: Any) -> Response:
    flash, session.flash = session.flash, None
    names = context.pop("names", None) or names_for(_runtime(request), lang_of(request))
    return render(
        request, template, {"names": names, "flash": flash, **context}, session=session, area=AREA
    )


def _record_rows(
    request: Request, record: dict[str, Any], hidden: set[str]
) -> list[dict[str, Any]]:
    catalogue = _runtime(request).vault.store.catalogue
    rows = []
    for name, treatment in record.get("treatments", {}).items():
        if name not in record.get("fields", {}):
            continue
        value = record["fields"][name]
        shown = _text(value)
        spec = catalogue.fields.get(name)
        if spec is not None and spec.values and isinstance(value, str) and value in spec.values:
            label = spec.values[value]
            shown = label.text(lang_of(request))
        if name in hidden and spec is not None:
            shown = _text(mask_value(spec, value))
        rows.append(
            {
                "name": name,
                "value": shown,
                "treatment": treatment,
                "hidden": name in hidden,
            }
        )
    return rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, list):
        return "、".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "；".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value) if isinstance(value, int | float) else json.dumps(value, ensure_ascii=False)


# -- my record -----------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        record = await api.get("/v1/me")
        return _page(
            request,
            session,
            "portal/home.html",
            rows=_record_rows(request, record, session.hidden_fields),
            resident_id=record["resident_id"],
        )

    return await view(request, AREA, body)


@router.post("/hidden")
async def save_hidden(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        catalogue = _runtime(request).vault.store.catalogue
        session.hidden_fields = {
            str(v) for v in form.getlist("hide") if isinstance(v, str) and v in catalogue
        }
        return redirect("/portal/")

    return await posted(request, AREA, body)


# -- who accessed my data --------------------------------------------------------------------


def _access_rows(items: list[dict[str, Any]], others_only: bool) -> list[dict[str, Any]]:
    """Every entry about me; with `others_only`, not my own views of my record."""
    if not others_only:
        return items
    return [item for item in items if item.get("subject_type") != "resident"]


@router.get("/accesses")
async def accesses(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        cursor = request.query_params.get("cursor")
        others_only = request.query_params.get("others") == "1"
        page = await api.get("/v1/me/accesses", params={"limit": 50, "cursor": cursor})
        return _page(
            request,
            session,
            "portal/accesses.html",
            others_only=others_only,
            items=_access_rows(page["items"], others_only),
            next_cursor=page.get("next_cursor"),
        )

    return await view(request, AREA, body)


@router.get("/accesses/{index}/proof")
async def access_proof(request: Request, index: Index) -> Response:
    """The entry as a C2SP tlog-proof file (what the in-browser check reads, too)."""

    async def body(session: PageSession, api: Api) -> Response:
        response = await api.raw("GET", f"/v1/me/accesses/{index}/proof")
        if response.status_code != 200:
            raise ApiRefused(response.status_code, response.json())
        headers = {
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="access-{index}.tlog-proof"',
        }
        return Response(response.text, media_type="text/plain; charset=utf-8", headers=headers)

    return await view(request, AREA, body)


@router.get("/accesses/{index}/verify")
async def verify_access(request: Request, index: Index) -> Response:
    """Check the entry's inclusion proof against the signed checkpoint, on the server, with
    the same key and file a resident can check offline; the page can repeat it in the
    browser (static/verify.js)."""

    async def body(session: PageSession, api: Api) -> Response:
        response = await api.raw("GET", f"/v1/me/accesses/{index}/proof")
        if response.status_code != 200:
            raise ApiRefused(response.status_code, response.json())
        key = (await api.raw("GET", "/v1/audit/public-key", auth=False)).text.strip()
        result: dict[str, Any] = {"ok": False, "index": index, "key": key}
        try:
            proven = verify_tlog_proof(response.text, key)
            entry = json.loads(proven.entry)
            result.update(
                ok=True,
                tree_size=proven.checkpoint.size,
                root=base64.b64encode(proven.checkpoint.root).decode(),
                entry=entry,
            )
        except (CheckpointError, ValueError) as error:
            result["error"] = str(error)
        return _page(request, session, "portal/verify.html", result=result)

    return await view(request, AREA, body)


# -- my consents ---------------------------------------------------------------------------------


GROUPS = ("active", "expired", "revoked", "superseded")


@router.get("/consents")
async def consents(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        mine = await api.get("/v1/me/consents")
        asked = await api.get("/v1/me/consent-requests")
        groups: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
        for item in mine["items"]:
            groups.setdefault(item["status"], []).append(item)
        names = names_for(_runtime(request), lang_of(request))
        offers = [
            {"purpose": p, "recipients": names.recipients_for(p), "notice": names.notice(p)}
            for p in names.consent_purposes()
        ]
        actor = await run_in_threadpool(session_actor, request, session)
        return _page(
            request,
            session,
            "portal/consents.html",
            names=names,
            groups=groups,
            pending=[r for r in asked["items"] if r["status"] == "pending"],
            legal=mine["legal_bases"],
            offers=offers,
            me=actor.subject.resident_id,
        )

    return await view(request, AREA, body)


@router.post("/consents/{consent_id}/revoke")
async def revoke(request: Request, consent_id: PathId) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        await api.post(f"/v1/me/consents/{consent_id}/revoke")
        session.flash = "consent.revoked_msg"
        return redirect("/portal/consents")

    return await posted(request, AREA, body)


@router.post("/consents")
async def grant(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        purpose = form_text(form, "purpose", 64)
        names = names_for(_runtime(request), lang_of(request))
        payload: dict[str, Any] = {
            "recipient": form_text(form, "recipient", 32),
            "purpose": purpose,
            "separate": True,
            "notice_version": names.notice(purpose).get("version"),
        }
        ward = form_text(form, "on_behalf_of", 32)
        if ward:
            payload["on_behalf_of"] = ward
        await api.post("/v1/me/consents", json_body=payload)
        session.flash = "consent.granted_msg"
        return redirect("/portal/consents")

    return await posted(request, AREA, body)


@router.post("/consent-requests/{request_id}/answer")
async def answer(request: Request, request_id: PathId) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        accept = form_text(form, "accept", 8) == "yes"
        await api.post(f"/v1/me/consent-requests/{request_id}/answer", json_body={"accept": accept})
        session.flash = "consent.answered_msg"
        return redirect("/portal/consents")

    return await posted(request, AREA, body)


@router.get("/consents/{consent_id}/receipt")
async def receipt(request: Request, consent_id: PathId) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        response = await api.raw("GET", f"/v1/consents/{consent_id}/receipt")
        if response.status_code != 200:
            raise ApiRefused(response.status_code, response.json())
        headers = {
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="consent-{consent_id}.jws"',
        }
        return Response(response.content, media_type="application/jose", headers=headers)

    return await view(request, AREA, body)


@router.get("/consents/{consent_id}/receipt/view")
async def receipt_view(request: Request, consent_id: PathId) -> Response:
    """The receipt as a page: what was agreed, and its signature checked."""

    async def body(session: PageSession, api: Api) -> Response:
        mine = await api.get("/v1/me/consents")
        consent = next((c for c in mine["items"] if c.get("consent_id") == consent_id), None)
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
            fingerprint=hashlib.sha256(jws.encode()).hexdigest(),
            signature_ok=await receipt_signature_ok(api, jws),
            back="/portal/consents",
        )

    return await view(request, AREA, body)


# -- my copy, my children ---------------------------------------------------------------------


@router.get("/download")
async def download(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        return _page(request, session, "portal/download.html")

    return await view(request, AREA, body)


@router.get("/export.{fmt}")
async def export(request: Request, fmt: str) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        if fmt not in ("json", "csv"):
            raise ApiRefused(404, {"title": "not found"})
        response = await api.raw("GET", "/v1/me/export", params={"format": fmt})
        if response.status_code != 200:
            raise ApiRefused(response.status_code, response.json())
        media = "application/json" if fmt == "json" else "text/csv; charset=utf-8"
        headers = {
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="my-data.{fmt}"',
        }
        return Response(response.content, media_type=media, headers=headers)

    return await view(request, AREA, body)


@router.get("/children")
async def children(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        wards = await api.get("/v1/me/children")
        mine = await api.get("/v1/me/consents")
        items = [
            {
                "resident_id": w["resident_id"],
                "rows": _record_rows(request, w, set()),
                "consents": [c for c in mine["items"] if c["resident_id"] == w["resident_id"]],
            }
            for w in wards["items"]
        ]
        return _page(request, session, "portal/children.html", wards=items)

    return await view(request, AREA, body)


# -- corrections ------------------------------------------------------------------------------


@router.get("/correction")
async def correction_form(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        await api.fresh()
        actor = await run_in_threadpool(session_actor, request, session)
        gate: Gate = request.app.state.gate
        try:
            mine = await run_in_threadpool(corrections.mine, gate, actor)
        except corrections.CorrectionError as error:
            raise correction_refusal(error, lang_of(request)) from None
        catalogue = _runtime(request).vault.store.catalogue
        return _page(
            request,
            session,
            "portal/correction.html",
            fields=list(catalogue.names),
            mine=mine,
            wards=list(actor.subject.children),
            me=actor.subject.resident_id,
        )

    return await view(request, AREA, body)


@router.post("/correction")
async def correction_submit(request: Request) -> Response:
    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        await api.fresh()
        actor = await run_in_threadpool(session_actor, request, session)
        resident = form_text(form, "resident_id", 32) or actor.subject.resident_id or ""
        try:
            await run_in_threadpool(
                lambda: corrections.request_correction(
                    _runtime(request),
                    actor,
                    resident_id=resident,
                    field=form_text(form, "field", 64),
                    value=form_text(form, "value", corrections.MAX_VALUE),
                    note=form_text(form, "note", corrections.MAX_NOTE),
                )
            )
        except corrections.CorrectionError as error:
            raise ApiRefused(422, {"title": error.key}) from None
        session.flash = "portal.correction.sent"
        return redirect("/portal/correction")

    return await posted(request, AREA, body)
