"""The auditor console: search and filter the log (CSV export), charts of accesses per
organisation and per day and of denied attempts, the anomaly list (the audit reports) and
the tree-head history with each head verified (signature, and consistency with the one
before), and the actors suspended by detection, each with a button to lift it and a
required reason. All of it through `/v1/audit/...` with the auditor's own token.
"""

from __future__ import annotations

import base64
from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from access.runtime import Runtime
from api.pages.charts import bar_chart
from api.pages.core import (
    CHINA,
    SECURITY_HEADERS,
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
from api.pages.messages import message
from api.pages.names import names_for
from audit.checkpoint import CheckpointError, verify_checkpoint
from audit.detection import LIFT_REASON_MAX, LIFT_REASON_MIN
from audit.merkle import verify_consistency
from vault.i18n import Message

AREA = "console"
router = APIRouter(prefix="/console", include_in_schema=False, route_class=PageRoute)
FILTERS = ("organisation", "user", "resident_id", "field", "purpose", "outcome", "action")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _page(request: Request, session: PageSession, template: str, **context: Any) -> Response:
    flash, session.flash = session.flash, None
    names = names_for(_runtime(request), lang_of(request))
    return render(
        request, template, {"names": names, "flash": flash, **context}, session=session, area=AREA
    )


def _saw(alert: dict[str, Any], lang: str) -> str:
    """What an alert saw, in its own catalogue message (older alerts have none)."""
    message = (alert.get("details") or {}).get("message")
    if not isinstance(message, dict) or not isinstance(message.get("id"), str):
        return ""
    return Message(message["id"], dict(message.get("values") or {})).text(lang)


def _local_time(value: str) -> str | None:
    """A `datetime-local` value is China time; the API wants ISO 8601 with an offset."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CHINA)
    return moment.isoformat()


def _filters(request: Request) -> dict[str, str]:
    query = request.query_params
    chosen = {k: query.get(k, "").strip()[:64] for k in FILTERS if query.get(k, "").strip()}
    for name in ("since", "until"):
        moment = _local_time(query.get(name, ""))
        if moment:
            chosen[name] = moment
    return chosen


@router.get("/")
async def search(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        chosen = _filters(request)
        cursor = request.query_params.get("cursor")
        page = await api.get("/v1/audit/entries", params={**chosen, "limit": 100, "cursor": cursor})
        catalogue = _runtime(request).vault.store.catalogue
        form = {k: request.query_params.get(k, "") for k in (*FILTERS, "since", "until")}
        return _page(
            request,
            session,
            "console/search.html",
            items=page["items"],
            form=form,
            next_cursor=page.get("next_cursor"),
            fields=list(catalogue.names),
            export_query=urlencode(
                [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            ),
        )

    return await view(request, AREA, body)


@router.get("/export.csv")
async def export(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        response = await api.raw(
            "GET",
            "/v1/audit/entries",
            params={**_filters(request), "format": "csv", "limit": 1000},
        )
        if response.status_code != 200:
            raise ApiRefused(response.status_code, response.json())
        headers = {**SECURITY_HEADERS, "Content-Disposition": 'attachment; filename="audit.csv"'}
        return Response(response.content, media_type="text/csv; charset=utf-8", headers=headers)

    return await view(request, AREA, body)


@router.get("/charts")
async def charts(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        lang = lang_of(request)
        names = names_for(_runtime(request), lang)
        per_day = (await api.get("/v1/audit/reports/accesses-per-day"))["items"]
        denied = (await api.get("/v1/audit/reports/denied"))["items"]
        by_org: Counter[str] = Counter()
        by_day: Counter[str] = Counter()
        for row in per_day:
            by_org[row["organisation"]] += row["count"]
            by_day[row["day"]] += row["count"]
        denied_days: Counter[str] = Counter(
            datetime.fromisoformat(e["recorded_at"]).astimezone(CHINA).date().isoformat()
            for e in denied
        )
        org_label = {"-": message("console.no_org", lang)}
        made = [
            bar_chart(
                "per-org",
                message("console.per_org", lang),
                [(org_label.get(o) or names.organisation(o), n) for o, n in by_org.most_common()],
            ),
            bar_chart("per-day", message("console.per_day", lang), sorted(by_day.items())[-31:]),
            bar_chart(
                "denied-day", message("console.denied_day", lang), sorted(denied_days.items())[-31:]
            ),
        ]
        return _page(request, session, "console/charts.html", charts=made)

    return await view(request, AREA, body)


@router.get("/anomalies")
async def anomalies(request: Request) -> Response:
    async def body(session: PageSession, api: Api) -> Response:
        reports = []
        for report, key in (
            ("out-of-hours", "console.out_of_hours"),
            ("sensitive-reads", "console.sensitive"),
            ("denied", "console.denied"),
        ):
            found = await api.get(f"/v1/audit/reports/{report}")
            reports.append({"key": key, "entries": found["items"][:50], "total": found["total"]})
        lang = lang_of(request)
        alerts = (await api.get("/v1/audit/alerts", params={"status": "all"}))["items"][:100]
        for alert in alerts:
            alert["saw"] = _saw(alert, lang)
        saw = {a["alert_id"]: a["saw"] for a in alerts}
        suspensions = (await api.get("/v1/audit/suspensions"))["items"]
        for suspension in suspensions:
            suspension["saw"] = saw.get(suspension.get("alert_id") or "", "")
        grants = (await api.get("/v1/audit/break-glass"))["items"][:100]
        return _page(
            request,
            session,
            "console/anomalies.html",
            reports=reports,
            alerts=alerts,
            suspensions=suspensions,
            reason_min=LIFT_REASON_MIN,
            reason_max=LIFT_REASON_MAX,
            grants=grants,
        )

    return await view(request, AREA, body)


@router.post("/suspensions/{actor}/lift")
async def lift(request: Request, actor: str) -> Response:
    """Lift a suspension: the reason is required, and the API writes it to the log."""

    async def body(session: PageSession, api: Api, form: FormData) -> Response:
        await api.post(
            f"/v1/audit/suspensions/{quote(actor[:128], safe='')}/lift",
            json_body={"reason": form_text(form, "reason", LIFT_REASON_MAX)},
        )
        session.flash = "console.lifted_msg"
        return redirect("/console/anomalies#suspensions")

    return await posted(request, AREA, body)


@router.get("/heads")
async def heads(request: Request) -> Response:
    """Each signed tree head checked with the log's key, and each against the one before
    with a consistency proof: a log that rewrote history fails here."""

    async def body(session: PageSession, api: Api) -> Response:
        key = (await api.raw("GET", "/v1/audit/public-key", auth=False)).text.strip()
        listed = await api.get("/v1/audit/checkpoints", params={"limit": 1000}, auth=False)
        items = listed["items"][-100:]
        rows: list[dict[str, Any]] = []
        previous: tuple[int, bytes] | None = None
        for item in items:
            row: dict[str, Any] = {"tree_size": item["tree_size"], "signed_at": item["signed_at"]}
            try:
                head = verify_checkpoint(item["checkpoint"], key)
                row["signature"] = head.size == item["tree_size"]
                row["root"] = base64.b64encode(head.root).decode()
            except CheckpointError:
                row["signature"] = False
                head = None
            row["consistent"] = None
            if head is not None and previous is not None:
                if previous[0] == head.size:
                    row["consistent"] = previous[1] == head.root
                else:
                    proof = await api.get(
                        "/v1/audit/proofs/consistency",
                        params={"first": previous[0], "second": head.size},
                        auth=False,
                    )
                    hashes = [base64.b64decode(h) for h in proof["hashes"]]
                    row["consistent"] = verify_consistency(
                        previous[0], head.size, previous[1], head.root, hashes
                    )
            if head is not None:
                previous = (head.size, head.root)
            rows.append(row)
        rows.reverse()
        return _page(request, session, "console/heads.html", heads=rows, key=key)

    return await view(request, AREA, body)
