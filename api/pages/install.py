"""Mount the pages on the app: the four areas' routers, their sign-in routes and the
static files (CSS and the small verification script)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.staticfiles import StaticFiles

from api.pages.console import router as console_router
from api.pages.core import (
    AREAS,
    HERE,
    STATIC_PATH,
    PageRoute,
    SessionStore,
    begin_login,
    csrf_ok,
    current_session,
    error_page,
    finish_login,
    logout,
    redirect,
)
from api.pages.desk import router as desk_router
from api.pages.operator import router as operator_router
from api.pages.portal import router as portal_router
from api.pages.settings import PagesSettings


def _sign_in_router(area: str) -> APIRouter:
    router = APIRouter(prefix=f"/{area}", include_in_schema=False, route_class=PageRoute)

    @router.get("/login")
    async def login(request: Request) -> Response:
        return await begin_login(request, area)

    @router.get("/callback")
    async def callback(request: Request) -> Response:
        return await finish_login(request, area)

    @router.post("/logout")
    async def sign_out(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=8)
        token = form.get("csrf_token")
        if not csrf_ok(
            request, current_session(request), token if isinstance(token, str) else None
        ):
            return error_page(request, "csrf", status=403, area=area)
        return await logout(request, area)

    return router


def install_pages(app: FastAPI, settings: PagesSettings | None = None) -> None:
    settings = settings or PagesSettings()
    app.state.public_origins = settings.public_origins  # VAULT_PUBLIC_URL
    app.state.page_sessions = SessionStore(
        settings.page_session_seconds, login_seconds=settings.page_login_seconds
    )
    for area in AREAS:
        app.include_router(_sign_in_router(area))
    app.include_router(portal_router)
    app.include_router(desk_router)
    app.include_router(console_router)
    app.include_router(operator_router)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return redirect("/portal/")

    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="pages-static")
