"""Operations: readiness checks, Prometheus metrics and OpenTelemetry traces.

None of it carries personal data. Metric labels and span attributes come from allowlists:
the HTTP method, the route *template* (`/v1/residents/{resident_id}`, never the path, so
no resident id or pseudonym), the status, purpose codes the policy registers, reason and
problem codes, and ids the service itself made (request, decision and evaluation ids,
policy revisions) checked against their shapes. No query string, header value, path
parameter or body is ever read into them.

    metrics = Metrics(runtime, engine, purposes=load_bundle().data["purposes"])
    app.add_middleware(Telemetry, metrics=metrics, tracer=tracer)
    gate.observer = metrics                       # decisions and refusals, counted once

`/metrics` is per process. With several uvicorn workers, either scrape each worker (one
port each) or set PROMETHEUS_MULTIPROC_DIR so that counters are summed across processes
(docs/operations.md).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event, func, select, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from access.runtime import Runtime
from api.http.middleware import TrustedProxies
from api.http.problems import problem
from api.http.settings import HttpSettings, metrics_address
from audit.models import AuditQueue
from policies import Decision, PolicyEngine, PolicyError, PolicyUnavailable
from policies.bundle import code_revision
from policies.district import is_engine
from policies.inputs import decision_input

__all__ = [
    "Metrics",
    "MetricsListener",
    "ObservedEngine",
    "Readiness",
    "Telemetry",
    "failure_cause",
    "install_metrics_route",
    "install_policy_refusals",
    "trace_audit_writes",
    "trace_database",
    "tracer_for",
]

log = structlog.get_logger(__name__)

# -- allowlists -----------------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
_REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")  # our own; a client's X-Request-ID is not
_DECISION_ID = re.compile(r"^dec_[0-9a-f]{32}$")
_EVALUATION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REVISION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SQL_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT"})
_UNMATCHED = "unmatched"


def _code(value: object) -> str:
    """A reason or problem code as a label; anything else becomes 'other'."""
    return value if isinstance(value, str) and _CODE.match(value) else "other"


def _shaped(pattern: re.Pattern[str], value: object) -> str | None:
    return value if isinstance(value, str) and pattern.match(value) else None


def route_template(scope: Scope) -> str:
    """The route's template as FastAPI matched it, never the concrete path."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) and template.startswith("/") else _UNMATCHED


def failure_cause(exc: BaseException) -> str:
    """Why no decision could be made, as a short code (no message: it may name hosts)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, str):
        return cause
    if type(exc).__name__ == "UnexpectedRevision":
        return "revision-mismatch"
    if isinstance(exc, PolicyUnavailable):
        return "unavailable"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, PolicyError):
        return "fault"
    return "error"


def _revision_details(exc: BaseException) -> dict[str, str]:
    """The revisions an UnexpectedRevision names: public facts, useful to an operator."""
    reported, expected = getattr(exc, "reported", None), getattr(exc, "expected", None)
    details = {"expected_revision": expected} if isinstance(expected, str) else {}
    if isinstance(expected, str):
        details["reported_revision"] = reported if isinstance(reported, str) else "none"
    return details


# -- the policy engine, unwrapped and observed -------------------------------------------


def innermost(engine: PolicyEngine) -> PolicyEngine:
    """The engine that really evaluates, below caches and observers."""
    while True:
        inner = getattr(engine, "engine", None)  # caches, observers, the district follower
        if not is_engine(inner):
            return engine
        engine = inner


class ObservedEngine:
    """A `PolicyEngine` that puts each evaluation in a span; everything else passes through
    (`stats()`, `close()` of the engine below)."""

    def __init__(self, engine: PolicyEngine, tracer: Tracer) -> None:
        self.engine = engine
        self._tracer = tracer

    @property
    def revision(self) -> str:
        return self.engine.revision

    def evaluate(self, input: Mapping[str, Any]) -> Decision:
        with self._tracer.start_as_current_span("policy.evaluate") as span:
            decision = self.engine.evaluate(input)
            span.set_attribute("vault.policy.outcome", "allowed" if decision.allow else "denied")
            span.set_attribute("vault.policy.cached", decision.from_cache)
            span.set_attribute("vault.policy.reason", _code(decision.reason.code))
            revision = _shaped(_REVISION, decision.revision)
            if revision:
                span.set_attribute("vault.policy.revision", revision)
            evaluation = _shaped(_EVALUATION_ID, decision.evaluation_id)
            if evaluation:
                span.set_attribute("vault.policy.evaluation_id", evaluation)
            return decision

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


# -- metrics ----------------------------------------------------------------------------------

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(
        self,
        runtime: Runtime,
        engine: PolicyEngine,
        *,
        purposes: Iterable[str],
        expected_revision: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.engine = engine
        self.purposes = frozenset(purposes)
        self.expected_revision = expected_revision
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "vault_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "vault_http_request_duration_seconds",
            "Time to the last byte of the response, by method and route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "vault_policy_decisions",
            "Access decisions the gate made, by outcome and purpose",
            ["outcome", "purpose"],
            registry=registry,
        )
        self.denials = Counter(
            "vault_policy_denials",
            "Denied decisions by the policy's reason code",
            ["reason"],
            registry=registry,
        )
        self.refusals = Counter(
            "vault_access_refusals",
            "Refused accesses the gate recorded, by problem (policy-denied, consent-required, "
            "not-found, rate-limited, ...)",
            ["problem"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "vault_rate_limit_rejections",
            "Requests refused by a rate limit or privacy budget",
            ["problem"],
            registry=registry,
        )
        self.policy_unavailable = Counter(
            "vault_policy_unavailable",
            "Requests refused because no trusted decision could be made (OPA down, "
            "unexpected bundle revision, engine fault)",
            ["cause"],
            registry=registry,
        )
        self.database_timeouts = Counter(
            "vault_database_timeouts",
            "Requests refused (503 database-timeout) for a statement or lock timeout or no "
            "free pool connection; nothing was done",
            registry=registry,
        )
        self.alerts = Counter(
            "vault_alerts_raised",
            "Insider-abuse alerts raised, by kind",
            ["kind"],
            registry=registry,
        )
        self.readiness_failures = Counter(
            "vault_readiness_failures",
            "Readiness checks that failed, by check",
            ["check"],
            registry=registry,
        )
        registry.register(_StateCollector(self))

    # -- the gate's observer ---------------------------------------------------------------

    def purpose_label(self, purpose: str | None) -> str:
        if purpose is None:
            return "none"
        return purpose if purpose in self.purposes else "unknown"

    def decided(self, decision: Decision, purpose: str | None) -> None:
        outcome = "allowed" if decision.allow else "denied"
        self.decisions.labels(outcome, self.purpose_label(purpose)).inc()
        if not decision.allow:
            self.denials.labels(_code(decision.reason.code)).inc()

    def refused(self, slug: str) -> None:
        self.refusals.labels(_code(slug)).inc()
        if slug in ("rate-limited", "budget-exhausted"):
            self.rate_limited.labels(slug).inc()

    # -- others ------------------------------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def alerts_raised(self, kinds: Iterable[str]) -> None:
        for kind in kinds:
            self.alerts.labels(_code(kind)).inc()

    def exposition(self) -> bytes:
        """The text format; summed over worker processes in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess  # noqa: PLC0415 - only in that mode

            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            combined.register(_StateCollector(self))
            return generate_latest(combined)
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges read at scrape time from the database, the keyring and the policy engine."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._audit()
        yield from self._keys()
        yield from self._policy()

    def _audit(self) -> Iterator[Metric]:
        runtime = self.metrics.runtime
        now = datetime.now(UTC)
        try:
            with runtime.vault.sessions() as session:
                pending, oldest = session.execute(
                    select(func.count(), func.min(AuditQueue.recorded_at))
                ).one()
                latest = runtime.audit.latest_checkpoint(session)
                size = runtime.audit.tree_size(session)
        except Exception as exc:  # a scrape must not fail: the gauges are left out
            log.warning("metrics.audit_unreadable", error=type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "vault_audit_pending_entries",
            "Audit entries recorded but not yet integrated into the tree",
            value=int(pending),
        )
        yield GaugeMetricFamily(
            "vault_audit_pending_oldest_age_seconds",
            "Age of the oldest audit entry not yet integrated (0 when none)",
            value=_age(now, oldest),
        )
        yield GaugeMetricFamily(
            "vault_audit_tree_size", "Entries integrated into the audit tree", value=size
        )
        yield GaugeMetricFamily(
            "vault_audit_checkpoint_tree_size",
            "Tree size the latest signed checkpoint covers",
            value=latest.tree_size if latest else 0,
        )
        if latest is not None:
            yield GaugeMetricFamily(
                "vault_audit_checkpoint_age_seconds",
                "Seconds since the latest checkpoint was signed",
                value=_age(now, latest.signed_at),
            )

    def _keys(self) -> Iterator[Metric]:
        try:
            keks = self.metrics.runtime.vault.keyring.keks()
        except Exception as exc:  # a scrape must not fail
            log.warning("metrics.keyring_unreadable", error=type(exc).__name__)
            return
        active = [k for k in keks if k.active]
        if active:
            yield GaugeMetricFamily(
                "vault_kek_active_age_seconds",
                "Age of the active key-encryption key (rotate before your policy's limit)",
                value=_age(datetime.now(UTC), active[0].created_at),
            )
        yield GaugeMetricFamily(
            "vault_keks", "Key-encryption keys in the keyring (active and retired)", len(keks)
        )

    def _policy(self) -> Iterator[Metric]:
        try:
            revision: str | None = self.metrics.engine.revision
        except Exception:  # reported as not ready below
            revision = None
        info = GaugeMetricFamily(
            "vault_policy_revision_info",
            "The policy revision in force (1) and the one expected",
            labels=["revision", "expected"],
        )
        info.add_metric(
            [
                _shaped(_REVISION, revision) or "none",
                _shaped(_REVISION, self.metrics.expected_revision) or "any",
            ],
            1,
        )
        yield info
        yield GaugeMetricFamily(
            "vault_policy_ready",
            "1 when the policy engine answers with the expected revision",
            value=1 if revision is not None else 0,
        )


def _age(now: datetime, then: datetime | None) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


LOOPBACK: Final = "127.0.0.0/8,::1"


def scrapers(settings: HttpSettings, *, own_listener: bool = False) -> TrustedProxies:
    """The addresses /metrics answers: VAULT_METRICS_ALLOW_FROM when set; else any address
    when a scrape needs the token or /metrics has a listener of its own (whose address the
    operator chose), and loopback alone otherwise."""
    if settings.metrics_allow_from:
        return TrustedProxies(settings.metrics_allow_from)
    if settings.metrics_token is not None or own_listener:
        return TrustedProxies("*")
    return TrustedProxies(LOOPBACK)


def _client_address(request: Request) -> str | None:
    """The peer's address (a trusted proxy's client, as RequestContext set it), IPv4 for
    an IPv4-mapped IPv6 one."""
    host = request.client.host if request.client else None
    try:
        mapped = ipaddress.ip_address(host or "")
    except ValueError:
        return host
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        return str(mapped.ipv4_mapped)
    return host


def install_metrics_route(
    app: FastAPI, metrics: Metrics, settings: HttpSettings, *, own_listener: bool = False
) -> None:
    """GET /metrics, to the addresses `scrapers` allows (others are told there is nothing
    here), behind a bearer token when VAULT_METRICS_TOKEN is set."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    allowed = scrapers(settings, own_listener=own_listener)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics_route(request: Request) -> Response:
        address = _client_address(request)
        if not allowed.trusts(address):
            # Counts and durations only, but the default keeps them on the host.
            log.warning("metrics.refused", address=address)
            return problem(request, "not-found")
        if token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()
            ):
                response = problem(request, "invalid-token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
                return response
        body = await asyncio.to_thread(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


class MetricsListener:
    """/metrics on a port of its own (VAULT_METRICS_LISTEN), the API's port then serving
    none: a small app under a uvicorn of its own, in a thread (so its signal handling
    stays the main server's), started and stopped with the service. Plain HTTP: bind it
    to an address only the scraper reaches."""

    START_SECONDS = 10.0

    def __init__(self, metrics: Metrics, settings: HttpSettings) -> None:
        address = metrics_address(settings.metrics_listen or "")
        if address is None:
            raise ValueError(f"VAULT_METRICS_LISTEN: {settings.metrics_listen!r}")
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        install_metrics_route(app, metrics, settings, own_listener=True)
        config = uvicorn.Config(
            app, host=address[0], port=address[1], log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="metrics-listener", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the one given for port 0)."""
        sockets = self._server.servers[0].sockets if self._server.servers else []
        return int(sockets[0].getsockname()[1]) if sockets else 0

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + self.START_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError("the metrics listener did not start (VAULT_METRICS_LISTEN)")
            time.sleep(0.01)
        log.info("metrics.listening", port=self.port)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=self.START_SECONDS)


def install_policy_refusals(app: FastAPI, metrics: Metrics | None) -> None:
    """No decision, no data: a request whose decision cannot be trusted (OPA down, another
    bundle revision) gets a 503 `policy-unavailable`, is logged and counted. Nothing falls
    back to another engine."""

    @app.exception_handler(PolicyError)
    async def _policy_unavailable(request: Request, exc: PolicyError) -> JSONResponse:
        cause = failure_cause(exc)
        details = _revision_details(exc)
        log.error("policy.refused", cause=cause, route=route_template(request.scope), **details)
        if metrics is not None:
            metrics.policy_unavailable.labels(cause).inc()
        extra: dict[str, Any] = {"cause": cause, **details}
        return problem(request, "policy-unavailable", **extra)


# -- readiness --------------------------------------------------------------------------------

_READINESS_CONTEXT = b"resident-vault/readiness-probe"
_PROBE_INPUT: dict[str, Any] = decision_input(
    {
        "type": "readiness-probe",
        "roles": [],
        "jurisdiction": {"communities": [], "grids": [], "buildings": []},
    },
    action="read",
    target="other",
    fields=[],
)


@dataclass
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "ok" if self.ok else "fail",
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.error:
            body["error"] = self.error
        return {**body, **self.details}


class Readiness:
    """Whether this node can serve: the database answers, the keyring wraps and unwraps,
    and the policy engine decides under the expected revision. Each check has a timeout,
    so a hung dependency makes the node not ready instead of hanging the probe."""

    def __init__(
        self,
        runtime: Runtime,
        engine: PolicyEngine,
        *,
        timeout: float = 5.0,
        on_revision: Callable[[str], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.runtime = runtime
        self.engine = engine
        self.timeout = timeout
        self.on_revision = on_revision
        self.metrics = metrics

    def database(self) -> dict[str, str]:
        settings = self.runtime.settings
        with self.runtime.vault.engine.connect() as connection:
            if connection.dialect.name == "postgresql" and settings.database_statement_timeout_ms:
                timeout_ms = min(settings.database_statement_timeout_ms, int(self.timeout * 1000))
                connection.execute(
                    text("SELECT set_config('statement_timeout', :ms, true)"),
                    {"ms": str(timeout_ms)},
                )
            connection.execute(text("SELECT 1"))
            connection.rollback()
        return {}

    def replica(self) -> dict[str, str]:
        """The standby answers, is a standby, and how far its replay is behind (seconds
        since the last transaction it replayed; large on an idle primary too)."""
        with self.runtime.vault.read_engine.connect() as connection:
            in_recovery, lag = connection.execute(
                text(
                    "SELECT pg_is_in_recovery(), "
                    "EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())"
                )
            ).one()
            connection.rollback()
        if not in_recovery:
            raise RuntimeError("the replica is not in recovery: it was promoted")
        return {"replay_lag_seconds": "unknown" if lag is None else f"{float(lag):.1f}"}

    def keyring(self) -> dict[str, str]:
        keyring = self.runtime.vault.keyring
        probe = secrets.token_bytes(32)  # a throwaway key, never stored
        kek_id, wrapped = keyring.wrap(probe, _READINESS_CONTEXT)
        if not hmac.compare_digest(keyring.unwrap(kek_id, wrapped, _READINESS_CONTEXT), probe):
            raise RuntimeError("keyring round trip gave another key")
        return {}

    def policy(self) -> dict[str, str]:
        engine = innermost(self.engine)
        revision = engine.revision
        decision = engine.evaluate(_PROBE_INPUT)
        expected = getattr(engine, "expected_revision", None)
        pinned = expected is not None and code_revision(revision) != expected
        if decision.revision != revision or pinned:
            raise PolicyError("the probe decision ran under another revision")
        if self.on_revision is not None:
            self.on_revision(revision)
        return {"revision": revision}

    async def check(self) -> list[CheckResult]:
        checks = {"database": self.database, "keyring": self.keyring, "policy": self.policy}
        if self.runtime.vault.read_engine is not self.runtime.vault.engine:
            checks["replica"] = self.replica
        results = await asyncio.gather(*(self._run(n, c) for n, c in checks.items()))
        failed = [r.name for r in results if not r.ok]
        if failed:
            log.warning("readiness.failed", checks=failed)
            if self.metrics is not None:
                for name in failed:
                    self.metrics.readiness_failures.labels(name).inc()
        return list(results)

    async def _run(self, name: str, check: Callable[[], dict[str, str]]) -> CheckResult:
        started = time.perf_counter()
        try:
            details = await asyncio.wait_for(asyncio.to_thread(check), self.timeout)
        except Exception as exc:  # any failure is "not ready", named by a code only
            elapsed = (time.perf_counter() - started) * 1000
            error = failure_cause(exc) if name == "policy" else _error_code(exc)
            details = _revision_details(exc) if name == "policy" else {}
            return CheckResult(name, False, elapsed, error, details)
        return CheckResult(name, True, (time.perf_counter() - started) * 1000, None, details)


def _error_code(exc: BaseException) -> str:
    """A failure's class, never its message (a database error can quote the URL)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


# -- traces -------------------------------------------------------------------------------------


@dataclass
class Tracing:
    tracer: Tracer
    provider: TracerProvider | None  # ours to flush and shut down, if we made it

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def tracer_for(settings: HttpSettings, provider: TracerProvider | None = None) -> Tracing | None:
    """The service's tracer when VAULT_TRACING_ENABLED; None otherwise.

    Without a given provider one is made from the standard variables: OTEL_SERVICE_NAME
    and OTEL_RESOURCE_ATTRIBUTES (resource), OTEL_TRACES_SAMPLER (sampling), and
    OTEL_TRACES_EXPORTER: `otlp` (the default; needs opentelemetry-exporter-otlp-proto-http,
    which reads OTEL_EXPORTER_OTLP_*), `console` or `none`.
    """
    if not settings.tracing_enabled:
        return None
    if provider is not None:
        return Tracing(provider.get_tracer("resident-vault"), None)
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "resident-vault")}
    )
    made = TracerProvider(resource=resource)
    exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower())
    if exporter is not None:
        made.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(made.get_tracer("resident-vault"), made)


def _exporter(name: str) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]  # noqa: PLC0415 - optional package
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning("tracing.no_otlp_exporter", hint="pip install resident-vault[otlp]")
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    if name != "none":
        log.warning("tracing.unknown_exporter", exporter=_code(name))
    return None


def trace_database(engine: Engine, tracer: Tracer) -> None:
    """A span per SQL statement: the dialect and the statement's verb, never its text or
    parameters."""

    @event.listens_for(engine, "before_cursor_execute")
    def _start(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        words = statement.split(None, 1)
        verb = words[0].upper() if words else ""
        verb = verb if verb in _SQL_VERBS else "OTHER"
        span = tracer.start_span(
            f"db {verb}",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": engine.dialect.name, "db.operation.name": verb},
        )
        if context is not None:
            context._vault_span = span

    @event.listens_for(engine, "after_cursor_execute")
    def _end(
        _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        span = getattr(context, "_vault_span", None)
        if span is not None:
            span.end()

    @event.listens_for(engine, "handle_error")
    def _error(exception_context: Any) -> None:
        span = getattr(exception_context.execution_context, "_vault_span", None)
        if span is not None:
            error = type(exception_context.original_exception).__name__
            span.set_status(Status(StatusCode.ERROR, error))
            span.end()


def trace_audit_writes(runtime: Runtime, tracer: Tracer) -> None:
    """A span around each audit write (the entries commit with the access they record)."""
    record = runtime.audit.record

    def traced(session: Any, drafts: Any) -> list[str]:
        with tracer.start_as_current_span("audit.record") as span:
            span.set_attribute("vault.audit.entries", len(drafts))
            return record(session, drafts)

    runtime.audit.record = traced  # type: ignore[method-assign]


# -- the ASGI middleware ------------------------------------------------------------------------


class Telemetry:
    """Counts, times and traces each HTTP request. Pure ASGI, so a streamed export is
    measured to its last byte and never buffered."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None, tracer: Tracer | None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.metrics is None and self.tracer is None):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        method = method if method in _METHODS else "OTHER"
        started = time.perf_counter()
        status = 500
        seen: dict[str, str] = {}

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    key = name.decode("latin-1").lower()
                    if key in ("decision-id", "policy-revision"):
                        seen[key] = value.decode("latin-1")
            await send(message)

        span = (
            self.tracer.start_span(
                f"HTTP {method}", kind=SpanKind.SERVER, attributes={"http.request.method": method}
            )
            if self.tracer is not None
            else None
        )
        try:
            if span is not None:
                with trace.use_span(span, end_on_exit=False):
                    await self.app(scope, receive, observed_send)
            else:
                await self.app(scope, receive, observed_send)
        finally:
            route = route_template(scope)
            if self.metrics is not None:
                self.metrics.request(method, route, status, time.perf_counter() - started)
            if span is not None:
                self._finish(span, scope, method=method, route=route, status=status, seen=seen)

    @staticmethod
    def _finish(
        span: trace.Span,
        scope: Scope,
        *,
        method: str,
        route: str,
        status: int,
        seen: dict[str, str],
    ) -> None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        state = scope.get("state") or {}
        request_id = _shaped(_REQUEST_ID, state.get("request_id"))
        if request_id:
            span.set_attribute("vault.request_id", request_id)
        decision = _shaped(_DECISION_ID, seen.get("decision-id"))
        if decision:
            span.set_attribute("vault.decision_id", decision)
        revision = _shaped(_REVISION, seen.get("policy-revision"))
        if revision:
            span.set_attribute("vault.policy.revision", revision)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
