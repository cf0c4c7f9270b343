"""The FastAPI application: metadata, the public audit endpoints and operations.

Resident data is served only through the access gate (issue 3), never from here directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from html import escape
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import select

from access.gate import Gate
from access.runtime import Runtime, open_runtime
from api.http import schemas
from api.http.middleware import RequestContext
from api.http.observability import (
    Metrics,
    MetricsListener,
    ObservedEngine,
    Readiness,
    Telemetry,
    Tracing,
    innermost,
    install_metrics_route,
    install_policy_refusals,
    trace_audit_writes,
    trace_database,
    tracer_for,
)
from api.http.openapi import install_openapi, operation_id
from api.http.problems import (
    STATUSES,
    TITLES,
    UnhandledErrors,
    install_problem_handlers,
    lang_of,
    problem,
)
from api.http.routes.admin import router as admin_router
from api.http.routes.audit import router as audit_router
from api.http.routes.breakglass import router as breakglass_router
from api.http.routes.consent import router as consent_router
from api.http.routes.decisions import router as decisions_router
from api.http.routes.me import router as me_router
from api.http.routes.residents import router as residents_router
from api.http.routes.stats import router as stats_router
from api.logging import configure_logging
from api.oauth.routes import install_oauth
from api.pages.install import install_pages
from api.settings import Settings
from audit import EntryDraft
from audit.detection import DetectionRules, Detector
from audit.models import AuditEntry
from consent.notices import notice
from policies import CachedEngine, PolicyEngine, PolicyError, load_bundle
from policies.district import follow_district
from policies.explain import Explainer
from policies.settings import PoliciesSettings
from vault.i18n import HTML_LANG, text
from vault.purposes import LivePurposes, registered_purposes

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


async def _detection_loop(
    runtime: Runtime, detector: Detector, metrics: Metrics | None = None
) -> None:
    """Scan the log for insider-abuse patterns at the configured interval."""
    while True:
        try:
            await asyncio.to_thread(scan_once, runtime, detector, metrics)
        except Exception as exc:  # keep serving; the next scan tries again
            log.error("alert.scan_failed", error=type(exc).__name__)
        await asyncio.sleep(runtime.settings.alert_scan_seconds)


def scan_once(runtime: Runtime, detector: Detector, metrics: Metrics | None = None) -> int:
    with runtime.transaction() as session:
        raised = detector.scan(session)
    if metrics is not None:
        metrics.alerts_raised(alert.kind for alert in raised)
    return len(raised)


async def _policy_loop(engine: PolicyEngine, note: Callable[[str], None], every: float) -> None:
    """Follow the revision the policy engine serves (an OPA sidecar polls its bundle), so
    each new revision goes on the record once it is in force; refusals are logged."""
    healthy = True
    while True:
        try:
            revision = await asyncio.to_thread(lambda: engine.revision)
            await asyncio.to_thread(note, revision)
            healthy = True
        except PolicyError as exc:
            if healthy:  # once per outage, not once per loop
                log.error("policy.unavailable", error=type(exc).__name__)
            healthy = False
        except Exception as exc:  # keep serving; readiness tells the load balancer
            log.error("policy.revision_unrecorded", error=type(exc).__name__)
        await asyncio.sleep(every)


def detector_for(runtime: Runtime) -> Detector:
    settings = runtime.settings
    rules = DetectionRules.from_settings(settings)
    sensitive = [spec.name for spec in runtime.vault.store.catalogue if spec.sensitive]
    return Detector(runtime.audit, rules, sensitive)


def expected_revision(settings: PoliciesSettings) -> str | None:
    """The bundle revision an OPA server must report: VAULT_OPA_EXPECTED_REVISION, the
    shipped bundle's when unset, None (any) for `any`."""
    pinned = (settings.opa_expected_revision or "").strip()
    if not pinned:
        return load_bundle().revision
    return None if pinned.lower() == "any" else pinned


def policy_engine(settings: PoliciesSettings) -> PolicyEngine:
    """The embedded engine by default; an OPA server (sidecar) when VAULT_OPA_URL is set,
    whose decisions count only under the expected bundle revision."""
    if settings.opa_url:
        from policies import OpaServerEngine  # noqa: PLC0415 - only when configured

        return CachedEngine(
            OpaServerEngine(
                settings.opa_url,
                verify=str(settings.opa_ca_file) if settings.opa_ca_file else True,
                token=settings.opa_token.get_secret_value() if settings.opa_token else None,
                expected_revision=expected_revision(settings),
            )
        )
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


def revision_recorder(runtime: Runtime) -> Callable[[str], None]:
    """`record_policy_revision`, skipped while the revision is the one this process last
    recorded (readiness probes and the policy loop run every few seconds)."""
    last: list[str] = []
    lock = threading.Lock()

    def note(revision: str) -> None:
        with lock:
            if last != [revision]:
                record_policy_revision(runtime, revision)
                last[:] = [revision]

    return note


def _observed(runtime: Runtime, engine: PolicyEngine, tracing: Tracing | None) -> PolicyEngine:
    """With tracing on: spans for policy evaluations, SQL statements and audit writes."""
    if tracing is None:
        return engine
    trace_database(runtime.vault.engine, tracing.tracer)
    if runtime.vault.read_engine is not runtime.vault.engine:
        trace_database(runtime.vault.read_engine, tracing.tracer)
    trace_audit_writes(runtime, tracing.tracer)
    return ObservedEngine(engine, tracing.tracer)


def _install_middleware(
    app: FastAPI, settings: Settings, metrics: Metrics | None, tracing: Tracing | None
) -> None:
    """Added innermost first: RequestContext is outermost, so the request id is known to
    Telemetry, and an unhandled error's log line and 500 carry it."""
    app.add_middleware(Telemetry, metrics=metrics, tracer=tracing.tracer if tracing else None)
    app.add_middleware(UnhandledErrors)
    app.add_middleware(RequestContext, max_body=settings.max_body_bytes)


def _install_operations(app: FastAPI, readiness: Readiness) -> None:
    @app.get("/healthz", tags=["operations"], response_model=schemas.Health)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. Checks no dependency (that is /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=schemas.Readiness)
    async def readyz(request: Request) -> dict[str, Any] | JSONResponse:
        """Readiness: the database, the keyring and the policy engine (with its revision),
        each with its status and latency; 503 naming the checks that failed."""
        results = await readiness.check()
        checks = {result.name: result.as_dict() for result in results}
        failed = [result.name for result in results if not result.ok]
        if failed:
            return problem(request, "not-ready", detail=", ".join(failed), checks=checks)
        return {"status": "ready", "checks": checks}


def _lifespan(
    runtime: Runtime,
    policy: PolicyEngine,
    *,
    detector: Detector,
    metrics: Metrics | None,
    note_revision: Callable[[str], None],
    tracing: Tracing | None,
    background: bool,
    listener: MetricsListener | None = None,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    settings = runtime.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if listener is not None:
            await asyncio.to_thread(listener.start)
        tasks = (
            [
                asyncio.create_task(_checkpoint_loop(runtime)),
                asyncio.create_task(_detection_loop(runtime, detector, metrics)),
                asyncio.create_task(
                    _policy_loop(policy, note_revision, settings.checkpoint_interval_seconds)
                ),
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
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            # Uvicorn has let in-flight requests finish (their entries are committed): one
            # last checkpoint covers every entry written before shutdown.
            await asyncio.to_thread(runtime.audit.checkpoint, runtime.vault.sessions)
            log.info("service.stopped")
            if tracing is not None:
                tracing.shutdown()
            runtime.close()

    return lifespan


def _gate(
    runtime: Runtime, settings: Settings, engine: PolicyEngine | None, tracing: Tracing | None
) -> tuple[Gate, PolicyEngine, Metrics | None]:
    """The gate, the engine it asks and the metrics watching it. Every engine decides with
    the district's data from the database (policies.district)."""
    followed = follow_district(
        engine or policy_engine(settings), runtime.vault.sessions, runtime.vault.stamps.current
    )
    policy = _observed(runtime, followed, tracing)
    gate = Gate(runtime, policy)
    metrics = (
        Metrics(
            runtime,
            policy,
            purposes=LivePurposes(runtime.vault.sessions),
            expected_revision=getattr(innermost(policy), "expected_revision", None),
        )
        if settings.metrics_enabled
        else None
    )
    gate.observer = metrics
    return gate, policy, metrics


def create_app(
    settings: Settings | None = None,
    *,
    background: bool = True,
    engine: PolicyEngine | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The service. `tracer_provider` replaces the one made from OTEL_* (tests pass one
    with an in-memory exporter); tracing still needs VAULT_TRACING_ENABLED."""
    settings = settings or Settings()
    configure_logging()
    runtime = open_runtime(settings)  # refuses to start without the keyring
    tracing = tracer_for(settings, tracer_provider)
    gate, policy, metrics = _gate(runtime, settings, engine, tracing)
    note_revision = revision_recorder(runtime)
    try:
        note_revision(gate.engine.revision)
    except PolicyError as exc:
        # An OPA sidecar may start after us, or serve another revision: start anyway, not
        # ready and refusing decisions, until it serves the expected one (readiness says).
        log.error("policy.not_ready", error=type(exc).__name__)
    readiness = Readiness(runtime, policy, on_revision=note_revision, metrics=metrics)
    detector = detector_for(runtime)
    # /metrics on a port of its own (VAULT_METRICS_LISTEN), or on the API's (below).
    listener = (
        MetricsListener(metrics, settings)
        if metrics is not None and settings.metrics_listen
        else None
    )

    lifespan = _lifespan(
        runtime,
        policy,
        detector=detector,
        metrics=metrics,
        note_revision=note_revision,
        tracing=tracing,
        background=background,
        listener=listener,
    )

    app = FastAPI(
        title="Resident data vault / 居民数据保险库",
        version="0.1.0",
        lifespan=lifespan,
        # operationId = the handler's name (read_resident), what a generated client calls.
        generate_unique_id_function=operation_id,
    )
    app.state.runtime = runtime
    app.state.gate = gate
    app.state.metrics = metrics
    app.state.metrics_listener = listener
    app.state.readiness = readiness
    app.state.detector = detector
    app.state.explainer = Explainer(
        {**load_bundle().data, "purposes": LivePurposes(runtime.vault.sessions)},
        gate.field_input,
        {k: {"zh": v.zh, "en": v.en} for k, v in gate.catalogue.categories.items()},
    )
    install_problem_handlers(app)
    install_policy_refusals(app, metrics)
    install_oauth(app, runtime)
    # The API's routers, in one list: each is included and its scopes documented.
    routers = [
        audit_router,
        residents_router,
        me_router,
        consent_router,
        decisions_router,
        breakglass_router,
        stats_router,
        admin_router,
    ]
    for router in routers:
        app.include_router(router)
    install_pages(app, settings)  # /portal/, /desk/, /console/ and their static files
    _install_middleware(app, settings, metrics, tracing)
    if metrics is not None and listener is None:
        install_metrics_route(app, metrics, settings)
    install_openapi(
        app,
        routers,
        LivePurposes(runtime.vault.sessions),
        runtime.vault.store.catalogue,
    )

    @app.get("/v1/purposes", tags=["metadata"], response_model=schemas.Purposes)
    def list_purposes() -> dict[str, Any]:
        """The purpose registry: names, legal basis and reference, fields, recipients, and
        the plain-language notice (zh/en) a consent records the version of."""
        with runtime.vault.sessions() as session:
            purposes = registered_purposes(session)
        catalogue = runtime.vault.store.catalogue
        return {
            "items": [
                {"code": code, **spec, "notice": notice(code, spec, catalogue)}
                for code, spec in sorted(purposes.items())
            ]
        }

    @app.get("/v1/fields", tags=["metadata"], response_model=schemas.Catalogue)
    async def list_fields() -> dict[str, Any]:
        """The field catalogue's metadata: names, labels, categories, grades. Never values."""
        catalogue = runtime.vault.store.catalogue
        return {
            "version": catalogue.version,
            "categories": {k: {"zh": v.zh, "en": v.en} for k, v in catalogue.categories.items()},
            "items": [spec.public_metadata() for spec in catalogue],
        }

    @app.get("/problems/{slug}", response_class=HTMLResponse, include_in_schema=False)
    async def problem_page(slug: str, request: Request) -> HTMLResponse:
        """The page a problem's `type` points at: what it means, in both languages."""
        if slug not in TITLES:
            lang = lang_of(request)
            return HTMLResponse(
                f'<!doctype html><html lang="{HTML_LANG[lang]}"><meta charset="utf-8">'
                f"<title>404</title><p>{escape(text('problem.page.unknown', lang))}</html>",
                status_code=404,
                headers={"Content-Language": HTML_LANG[lang]},
            )
        status, zh, en = STATUSES[slug], TITLES[slug].text("zh"), TITLES[slug].text("en")
        return HTMLResponse(
            f'<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>{zh} / {en}</title>'
            f'<h1>{zh}</h1><p lang="en">{en} (HTTP {status})</p></html>'
        )

    _install_operations(app, readiness)
    return app
