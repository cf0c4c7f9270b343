"""The FastAPI application: metadata, the public audit endpoints and operations.

Resident data is served only through the access gate (issue 3), never from here directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select, text

from api.gate import Gate
from api.logging import configure_logging
from api.middleware import RequestContext
from api.oauth.routes import install_oauth
from api.openapi import install_openapi
from api.pages.install import install_pages
from api.problems import TITLES, install_problem_handlers, problem
from api.routes_audit import router as audit_router
from api.routes_breakglass import router as breakglass_router
from api.routes_consent import router as consent_router
from api.routes_decisions import router as decisions_router
from api.routes_me import router as me_router
from api.routes_residents import router as residents_router
from api.routes_stats import router as stats_router
from api.runtime import Runtime, open_runtime
from audit import EntryDraft
from audit.detection import DetectionRules, Detector
from audit.models import AuditEntry
from consent.notices import notice
from policies import CachedEngine, PolicyEngine, load_bundle
from policies.explain import Explainer
from vault.config import VaultSettings

log = structlog.get_logger(__name__)


async def _checkpoint_loop(runtime: Runtime) -> None:
    """Integrate new entries and sign a checkpoint at the configured interval, if grown."""
    interval = runtime.settings.checkpoint_interval_seconds
    while True:
        try:
            await asyncio.to_thread(runtime.audit.checkpoint, runtime.vault.sessions)
        except Exception as exc:  # keep serving; readiness reports audit lag
            log.error("audit.checkpoint_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)


async def _detection_loop(runtime: Runtime, detector: Detector) -> None:
    """Scan the log for insider-abuse patterns at the configured interval."""
    while True:
        try:
            await asyncio.to_thread(scan_once, runtime, detector)
        except Exception as exc:  # keep serving; the next scan tries again
            log.error("alert.scan_failed", error=type(exc).__name__)
        await asyncio.sleep(runtime.settings.alert_scan_seconds)


def scan_once(runtime: Runtime, detector: Detector) -> int:
    with runtime.transaction() as session:
        return len(detector.scan(session))


def detector_for(runtime: Runtime) -> Detector:
    settings = runtime.settings
    rules = DetectionRules(
        volume_floor=settings.alert_volume_floor,
        suspend_on=frozenset(k.strip() for k in settings.alert_suspend_on.split(",") if k.strip()),
    )
    sensitive = [spec.name for spec in runtime.vault.store.catalogue if spec.sensitive]
    return Detector(runtime.audit, rules, sensitive)


def policy_engine(settings: VaultSettings) -> PolicyEngine:
    """The embedded engine by default; an OPA server (sidecar) when VAULT_OPA_URL is set."""
    if settings.opa_url:
        from policies import OpaServerEngine  # noqa: PLC0415 - only when configured

        return CachedEngine(OpaServerEngine(settings.opa_url))
    from policies import EmbeddedEngine  # noqa: PLC0415 - loads wasmtime

    return CachedEngine(EmbeddedEngine())


def record_policy_revision(runtime: Runtime, revision: str) -> None:
    """A change of policy is a change in who sees what: put each new revision on the record."""
    with runtime.transaction() as session:
        last = session.scalars(
            select(AuditEntry.details)
            .where(AuditEntry.action == "policy.revision_in_force")
            .order_by(AuditEntry.recorded_at.desc())
            .limit(1)
        ).first()
        if last is None or last.get("revision") != revision:
            runtime.audit.record(
                session,
                [
                    EntryDraft(
                        action="policy.revision_in_force",
                        outcome="allowed",
                        channel="api",
                        kind="event",
                        policy_revision=revision,
                        details={"revision": revision, "previous": (last or {}).get("revision")},
                    )
                ],
            )
            log.info("policy.revision_in_force", revision=revision)


def create_app(
    settings: VaultSettings | None = None,
    *,
    background: bool = True,
    engine: PolicyEngine | None = None,
) -> FastAPI:
    settings = settings or VaultSettings()
    configure_logging()
    runtime = open_runtime(settings)  # refuses to start without the keyring
    gate = Gate(runtime, engine or policy_engine(settings))
    record_policy_revision(runtime, gate.engine.revision)
    detector = detector_for(runtime)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = (
            [
                asyncio.create_task(_checkpoint_loop(runtime)),
                asyncio.create_task(_detection_loop(runtime, detector)),
            ]
            if background
            else []
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # One last checkpoint so entries written before shutdown are covered.
            await asyncio.to_thread(runtime.audit.checkpoint, runtime.vault.sessions)
            runtime.close()

    app = FastAPI(title="Resident data vault / 居民数据保险库", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    app.state.gate = gate
    app.state.detector = detector
    app.state.explainer = Explainer(
        load_bundle().data,
        gate.field_input,
        {k: {"zh": v.zh, "en": v.en} for k, v in gate.catalogue.categories.items()},
    )
    install_problem_handlers(app)
    install_oauth(app, runtime)
    # The API's routers, in one list: each is included and its scopes documented.
    routers = [
        audit_router, residents_router, me_router, consent_router, decisions_router,
        breakglass_router,
        stats_router,
    ]  # fmt: skip
    for router in routers:
        app.include_router(router)
    install_pages(app)  # /portal/, /desk/, /console/ and their static files
    app.add_middleware(RequestContext, max_body=settings.max_body_bytes)
    install_openapi(
        app,
        routers,
        load_bundle().data.get("purposes", {}),
    )

    @app.get("/v1/purposes", tags=["metadata"])
    async def list_purposes() -> dict[str, Any]:
        """The purpose registry: names, legal basis and reference, fields, recipients, and
        the plain-language notice (zh/en) a consent records the version of."""
        purposes = load_bundle().data.get("purposes", {})
        catalogue = runtime.vault.store.catalogue
        return {
            "items": [
                {"code": code, **spec, "notice": notice(code, spec, catalogue)}
                for code, spec in sorted(purposes.items())
            ]
        }

    @app.get("/v1/fields", tags=["metadata"])
    async def list_fields() -> dict[str, Any]:
        """The field catalogue's metadata: names, labels, categories, grades. Never values."""
        catalogue = runtime.vault.store.catalogue
        return {
            "version": catalogue.version,
            "categories": {k: {"zh": v.zh, "en": v.en} for k, v in catalogue.categories.items()},
            "items": [spec.public_metadata() for spec in catalogue],
        }

    @app.get("/problems/{slug}", response_class=HTMLResponse, include_in_schema=False)
    async def problem_page(slug: str) -> HTMLResponse:
        """The page a problem's `type` points at: what it means, in both languages."""
        if slug not in TITLES:
            return HTMLResponse(
                "<!doctype html><title>404</title><p>未知问题 / Unknown problem", status_code=404
            )
        status, zh, en = TITLES[slug]
        return HTMLResponse(
            f'<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>{zh} / {en}</title>'
            f'<h1>{zh}</h1><p lang="en">{en} (HTTP {status})</p></html>'
        )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=None)
    def readyz(request: Request) -> dict[str, str] | JSONResponse:
        try:
            with runtime.vault.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            runtime.vault.keyring.active_kek_id()
        except Exception:  # readiness reports any failure as not ready
            return problem(request, "not-ready", status=503)
        return {"status": "ready"}

    return app
