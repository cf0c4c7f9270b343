"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL.

On PostgreSQL every connection carries server-side limits (statement, lock and
idle-in-transaction timeouts) and an application name, so a slow query or a forgotten
transaction fails on its own instead of holding locks and pool slots; the pool is sized by
settings (docs/postgresql.md explains the sizing).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    String,
    create_engine,
    event,
    insert,
    inspect,
    select,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from vault.config import VaultSettings
from vault.errors import ConfigurationError
from vault.models import Base, DataKeyRecord

APPLICATION_NAME = "resident-vault"
# A lock wait longer than this is a queue forming behind a migration or a stuck writer.
MAX_LOCK_TIMEOUT_MS = 5_000
# A transaction left open without a statement for this long is a bug; end it server-side.
MIN_IDLE_IN_TRANSACTION_MS = 60_000
# SQLSTATEs of a statement the server cancelled for taking too long or waiting on a lock.
TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})


@dataclass(frozen=True)
class PoolLimits:
    """How many connections one process holds and how long a statement may run."""

    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout_seconds: float = 10.0
    statement_timeout_ms: int = 15_000

    @classmethod
    def of(cls, settings: VaultSettings) -> PoolLimits:
        return cls(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout_seconds=settings.database_pool_timeout_seconds,
            statement_timeout_ms=settings.database_statement_timeout_ms,
        )

    def server_options(self, *, read_only: bool = False) -> str:
        """libpq `options`: the session settings every new connection starts with."""
        statement = self.statement_timeout_ms
        lock = min(statement, MAX_LOCK_TIMEOUT_MS) if statement else MAX_LOCK_TIMEOUT_MS
        idle = max(MIN_IDLE_IN_TRANSACTION_MS, 4 * statement)
        options = [
            f"statement_timeout={statement}",
            f"lock_timeout={lock}",
            f"idle_in_transaction_session_timeout={idle}",
        ]
        if read_only:
            options.append("default_transaction_read_only=on")
        return " ".join(f"-c {option}" for option in options)


def make_engine(
    url: str,
    limits: PoolLimits | None = None,
    *,
    read_only: bool = False,
    application_name: str = APPLICATION_NAME,
    **kwargs: Any,
) -> Engine:
    """An engine for `url`; on PostgreSQL a QueuePool of `limits` with pre-ping and the
    server-side timeouts of `limits` (defaults when None)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    limits = limits or PoolLimits()
    kwargs.setdefault("pool_pre_ping", True)
    if kwargs.get("poolclass") is None:
        kwargs.setdefault("pool_size", limits.pool_size)
        kwargs.setdefault("max_overflow", limits.max_overflow)
        kwargs.setdefault("pool_timeout", limits.pool_timeout_seconds)
    connect_args = dict(kwargs.pop("connect_args", {}))
    if url.startswith("postgresql"):
        connect_args.setdefault("application_name", application_name)
        connect_args.setdefault("options", limits.server_options(read_only=read_only))
    return create_engine(url, connect_args=connect_args, **kwargs)


def engines_for(settings: VaultSettings) -> tuple[Engine, Engine]:
    """The primary engine and the read engine (the replica's, or the primary itself)."""
    limits = PoolLimits.of(settings)
    primary = make_engine(settings.resolved_database_url, limits)
    replica_url = settings.database_replica_url
    if not replica_url:
        return primary, primary
    if not replica_url.startswith("postgresql"):
        raise ConfigurationError("VAULT_DATABASE_REPLICA_URL must be a PostgreSQL URL")
    replica = make_engine(
        replica_url, limits, read_only=True, application_name=f"{APPLICATION_NAME}-read"
    )
    return primary, replica


def is_timeout(error: BaseException) -> bool:
    """A statement the server cancelled (statement or lock timeout), or no pool slot free
    in time: the request may succeed if retried, and nothing of it was committed."""
    if isinstance(error, PoolTimeout):
        return True
    if isinstance(error, DBAPIError):
        code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return code in TIMEOUT_SQLSTATES
    cause = error.__cause__
    return isinstance(cause, SQLAlchemyError) and is_timeout(cause)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def read_session_factory(read_engine: Engine, primary: Engine) -> sessionmaker[Session]:
    """Sessions whose statements go to the read engine, except residents' data keys, which
    are read from the primary: an erasure (the wrapped key destroyed on the primary) holds
    at once even while a replica lags, so a replica only ever serves ciphertext."""
    if read_engine is primary:
        return session_factory(primary)
    return sessionmaker(
        bind=read_engine,
        binds={Base: read_engine, DataKeyRecord: primary},
        expire_on_commit=False,
    )


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back everything on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("vault") / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest migration (the same path tests and production take)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        _record_phases(connection)


class SchemaPhase(Base):
    """The phase of each migration applied here, written by the code that applied it, so
    older code can tell whether a schema ahead of it only expanded (safe to run on)."""

    __tablename__ = "schema_phases"

    revision: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands against the migrations this code ships."""

    current: str | None
    head: str
    behind: tuple[str, ...]  # migrations this code has and the database lacks
    ahead: dict[str, str] = field(default_factory=dict)  # newer revisions -> their phase

    @property
    def runnable(self) -> bool:
        """The code runs on this schema: nothing missing, and anything newer only expanded."""
        return not self.behind and all(phase == "expand" for phase in self.ahead.values())


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def migration_phases() -> dict[str, str]:
    """Each shipped migration's `phase` ("expand" or "contract"), by revision."""
    return {
        rev.revision: str(getattr(rev.module, "phase", "unknown"))
        for rev in _scripts().walk_revisions()
    }


def _record_phases(connection: Connection) -> None:
    if not inspect(connection).has_table(SchemaPhase.__tablename__):
        return
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        return
    scripts = _scripts()
    applied = [rev.revision for rev in scripts.iterate_revisions(current, "base")]
    phases = migration_phases()
    noted = set(connection.scalars(select(SchemaPhase.revision)))
    rows = [
        {"revision": rev, "phase": phases.get(rev, "unknown"), "applied_at": datetime.now(UTC)}
        for rev in applied
        if rev not in noted
    ]
    if rows:
        connection.execute(insert(SchemaPhase), rows)


def schema_state(engine: Engine) -> SchemaState:
    """Compare the database's revision with this code's head, changing nothing."""
    scripts = _scripts()
    head = scripts.get_current_head() or ""
    known = {rev.revision for rev in scripts.walk_revisions()}
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        noted: dict[str, str] = {}
        if inspect(connection).has_table(SchemaPhase.__tablename__):
            noted = {r.revision: r.phase for r in connection.execute(select(SchemaPhase))}
    if current is None:
        return SchemaState(None, head, tuple(r.revision for r in scripts.walk_revisions())[::-1])
    if current not in known:
        ahead = {rev: phase for rev, phase in noted.items() if rev not in known}
        ahead.setdefault(current, "unknown")
        return SchemaState(current, head, (), ahead)
    behind = tuple(r.revision for r in scripts.iterate_revisions(head, current))[::-1]
    return SchemaState(current, head, behind)


def require_runnable_schema(engine: Engine) -> SchemaState:
    """At start-up without migrate-on-start: refuse a schema behind the code, or ahead of
    it by a contract migration, with one line saying what to do."""
    state = schema_state(engine)
    if state.behind:
        raise SchemaMismatch(
            f"数据库结构落后于程序（{state.current or '空'} → {state.head}）：请先运行 "
            "resident-vault db upgrade",
            f"the database schema is behind this code ({state.current or 'empty'} -> "
            f"{state.head}): run `resident-vault db upgrade`",
        )
    contracted = sorted(rev for rev, phase in state.ahead.items() if phase != "expand")
    if contracted:
        raise SchemaMismatch(
            f"数据库结构比程序新，且含收缩迁移（{', '.join(contracted)}）：请升级程序",
            f"the database schema is ahead of this code by non-expand migrations "
            f"({', '.join(contracted)}): deploy the newer code",
        )
    return state


class SchemaMismatch(ConfigurationError):
    """The schema and the code do not fit; the message says which way and what to run."""

    def __init__(self, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.message_zh = message_zh
        self.message_en = message_en
