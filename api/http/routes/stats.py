"""Statistics over HTTP (`stats:read`): counts and sums with disclosure control, no rows.

`GET /v1/stats` lists the measures, `GET /v1/stats/budget` shows the caller's privacy
budget for the month, `GET /v1/stats/{measure}?by=community|grid|building` answers one
query (suppressed small cells by default; `dp=true` or `noise=laplace|gaussian` with
`epsilon` for differentially private noise). The work is `access.stats.service.StatsService`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from access.stats.measures import MEASURES
from access.stats.service import PublishedPlace, StatsResult, StatsService
from access.subjects import Access
from api.http import schemas
from api.http.context import decision_headers, subject_of
from api.http.params import PathCode, QueryPurpose, declared_purpose
from api.http.problems import lang_of
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes

router = APIRouter(prefix="/v1", tags=["statistics"])

MAX_EPSILON = 100.0

StatsReader = Annotated[Principal, Depends(require_scopes(Scope.STATS_READ))]


def service_of(request: Request) -> StatsService:
    service = getattr(request.app.state, "stats", None)
    if service is None:
        service = request.app.state.stats = StatsService(request.app.state.gate)
    return service


def _access(request: Request, principal: Principal, purpose: str | None) -> Access:
    declared = declared_purpose(request, purpose)
    return Access(
        subject=subject_of(request, principal),
        purpose=declared,
        request_id=request.state.request_id,
    )


def _place(published: PublishedPlace) -> dict[str, Any]:
    place = published.place
    return {
        "id": place.id,
        "level": place.level,
        "name": place.name or None,
        "parent": place.parent,
        "values": published.values,
    }


def _body(result: StatsResult, lang: str) -> dict[str, Any]:
    disclosure = {k: v for k, v in result.disclosure.items() if not k.startswith("note_")}
    disclosure["note"] = result.disclosure[f"note_{'en' if lang == 'en' else 'zh'}"]
    return {
        "measure": result.measure.name,
        "label": result.measure.label(lang),
        "unit": str(result.measure.unit),
        "by": result.by,
        "categories": list(result.categories),
        "cells": [_place(p) for p in result.cells],
        "totals": [_place(p) for p in result.totals],
        "disclosure": disclosure,
        "budget": result.budget.as_dict(),
    }


@router.get(
    "/stats", summary="The statistical measures (scope stats:read)", response_model=schemas.Measures
)
def list_measures(request: Request, principal: StatsReader) -> dict[str, Any]:
    lang = lang_of(request)
    return {
        "items": [
            {
                "measure": m.name,
                "label": m.label(lang),
                "unit": str(m.unit),
                "field": m.field,
                "categories": list(m.categories),
            }
            for m in MEASURES.values()
        ]
    }


@router.get(
    "/stats/budget",
    summary="This month's differential-privacy budget (stats:read)",
    response_model=schemas.Budget,
)
def budget(request: Request, principal: StatsReader) -> dict[str, Any]:
    access = _access(request, principal, None)
    return service_of(request).budget(access).as_dict()


@router.get(
    "/stats/{measure}",
    summary="Counts or sums by community, grid or building, with disclosure control "
    "(scope stats:read)",
    response_model=schemas.Statistics,
)
def stats(
    request: Request,
    measure: PathCode,
    principal: StatsReader,
    by: Annotated[str, Query(max_length=16, description="community | grid | building")] = (
        "community"
    ),
    purpose: QueryPurpose = None,
    dp: Annotated[bool, Query(description="differentially private noise (Laplace)")] = False,
    noise: Annotated[str | None, Query(max_length=16, description="laplace | gaussian")] = None,
    # Above any budget an operator would set; the service refuses more than max_epsilon.
    epsilon: Annotated[
        float | None, Query(gt=0, le=MAX_EPSILON, description="privacy loss of this query")
    ] = None,
) -> Response:
    access = _access(request, principal, purpose)
    mechanism = noise or ("laplace" if dp or epsilon is not None else None)
    result = service_of(request).query(access, measure, by, noise=mechanism, epsilon=epsilon)
    return JSONResponse(
        _body(result, lang_of(request)), headers=decision_headers(access, result.decision)
    )
