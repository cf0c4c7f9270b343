"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL.

On PostgreSQL every connection carries server-side limits (statement, lock and
idle-in-transaction timeouts) and an application name, so a slow query or a forgotten
transaction fails on its own instead of holding locks and pool slots; the pool is sized by
settings (docs/postgresql.md explains the sizing).
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from vault.config import VaultSettings
from vault.errors import ConfigurationError
from vault.i18n import Message
from vault.models import Base, DataKeyRecord

APPLICATION_NAME = "resident-vault"
# A lock wait longer than this is a queue forming behind a migration or a stuck writer.
MAX_LOCK_TIMEOUT_MS = 5_000
# A transaction left open without a statement for this long is a bug; end it server-side.
MIN_IDLE_IN_TRANSACTION_MS = 60_000
# SQLSTATEs of a statement the server cancelled for taking too long or waiting on a lock.
TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})
# A migration's own limits on PostgreSQL (migrations/env.py sets them per migration,
# the offline SQL of `db upgrade --sql` starts with them): a DDL statement waiting longer
# than the lock timeout for its table would queue every query on that table behind it.
MIGRATION_LOCK_TIMEOUT = "5s"
MIGRATION_STATEMENT_TIMEOUT = "10min"
# An arbitrary constant naming the advisory lock migrations hold on PostgreSQL.
MIGRATION_LOCK = 0x5256_4D49_4752_4154  # "RVMIGRAT"
# Phases a migration may declare (docs/postgresql.md, "Schema migrations").
PHASES = ("expand", "contract")


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


def bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows that all name the same columns, in the caller's transaction.

    Each value goes through its column's bind processor (e.g. TZDateTime's UTC check) as
    an INSERT would, and a refused row raises the same SQLAlchemy error an INSERT would:
    - on PostgreSQL (psycopg) one COPY: an executemany sends a statement per row, and an
      import of 10^4 residents is about 10^5 rows;
    - on SQLite the driver's executemany of one compiled INSERT with plain tuples: a Core
      executemany built a parameter dict per row, a tenth of an import's time.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    columns = [table.c[name] for name in rows[0]]
    processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]

    def values(row: Mapping[str, Any]) -> list[Any]:
        return [
            row[column.name] if process is None else process(row[column.name])
            for column, process in zip(columns, processors, strict=True)
        ]

    quote = dialect.identifier_preparer
    names = ", ".join(quote.quote(column.name) for column in columns)
    target = quote.format_table(table)
    driver = connection.connection.driver_connection
    if dialect.name == "sqlite":
        statement = f"INSERT INTO {target} ({names}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608 - our names
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(statement, [values(row) for row in rows])
        except sqlite3.Error as error:
            raise DBAPIError.instance(statement, None, error, sqlite3.Error) from error
        finally:
            cursor.close()
        return
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        session.execute(insert(table), rows)
        return
    statement = f"COPY {target} ({names}) FROM STDIN"
    cursor = driver.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(values(row))
    except psycopg.Error as error:
        raise DBAPIError.instance(statement, None, error, psycopg.Error) from error
    finally:
        cursor.close()


SQLITE_MMAP_BYTES = 256 * 1024 * 1024


def make_engine(
    url: str,
    limits: PoolLimits | None = None,
    *,
    read_only: bool = False,
    application_name: str = APPLICATION_NAME,
    **kwargs: Any,
) -> Engine:
    """An engine for `url`; on PostgreSQL a QueuePool of `limits` that pings connections
    idle for a while (`ping_when_idle`), with the server-side timeouts of `limits`
    (defaults when None)."""
    if url.startswith("sqlite"):
        if ":memory:" not in url and url.rstrip("/") != "sqlite:" and "poolclass" not in kwargs:
            # A SQLite connection costs a file handle, but opening one (and its pragmas) on
            # every request past the default five showed up in the read path's profile.
            kwargs.setdefault("pool_size", 20)
            kwargs.setdefault("max_overflow", 20)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed audit entry survives power loss (WAL with NORMAL may lose
            # the last commits), so no answer leaves before its entry is durable.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=5000")
            # Pages are read from the OS's page cache in place, shared by the pool's
            # connections, instead of copied into each one's 2 MB cache: a statistics
            # count over 10^4 residents took 31 ms without, 24 ms with (bench/).
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
            cursor.close()

        return engine
    limits = limits or PoolLimits()
    if kwargs.get("poolclass") is None:
        kwargs.setdefault("pool_size", limits.pool_size)
        kwargs.setdefault("max_overflow", limits.max_overflow)
        kwargs.setdefault("pool_timeout", limits.pool_timeout_seconds)
    connect_args = dict(kwargs.pop("connect_args", {}))
    if url.startswith("postgresql"):
        connect_args.setdefault("application_name", application_name)
        connect_args.setdefault("options", limits.server_options(read_only=read_only))
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine, IDLE_PING_SECONDS)
    return engine


# A connection used this recently is taken as alive; one idle longer is pinged first.
IDLE_PING_SECONDS = 5.0


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Pre-ping, but only connections idle for `idle_seconds` or more (SQLAlchemy's
    pessimistic disconnect handling, by checkout event). Pinging every checkout cost a
    round trip per checkout on the hot path; a connection that served a request moments
    ago is almost surely alive, and a failover found through one is still caught: the
    error invalidates the whole pool, as SQLAlchemy does on any disconnect."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi: Any, record: Any, _proxy: Any) -> None:
        # `info` belongs to the DBAPI connection: none yet means it was opened just now.
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < idle_seconds:
            return
        try:
            cursor = dbapi.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi.rollback()
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and checks out (or opens) another.
            raise DisconnectionError from exc


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


def lock_writers(session: Session, key: int, *, wait: bool = True) -> bool:
    """Make this transaction the only one of its kind at work, across processes and nodes;
    call it before the transaction's first read. On PostgreSQL, the transaction-scoped
    advisory lock `key` (waited for, or False at once when `wait` is off and another holds
    it). On SQLite, the database's write lock, taken now: pysqlite begins a transaction
    only at the first INSERT, so the reads before it would see a state another writer may
    change before this one writes (two integrators gave the same leaf indexes)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        if not wait:
            return bool(connection.scalar(select(func.pg_try_advisory_xact_lock(key))))
        connection.execute(select(func.pg_advisory_xact_lock(key)))
    elif connection.dialect.name == "sqlite":
        driver: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
        if not driver.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # waits up to the busy timeout
    return True


def migrations_location() -> str:
    """The directory of the migration scripts this code ships."""
    # Found by name, not imported: the environment at the root (migrations/env.py) imports
    # every package's models, and the ground floor imports none of the floors above it.
    return str(resources.files("migrations"))


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", migrations_location())
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(
    engine: Engine, revision: str = "head", *, also: Callable[[Connection], None] | None = None
) -> None:
    """Bring the schema to `revision` (the newest by default), recording each migration's
    phase: the same path tests, start-up and `resident-vault db upgrade` take.

    `also` runs in the migration's transaction once the migrations are applied (the audit
    entry of `db upgrade`), so the change and its record commit together or not at all.
    On PostgreSQL the migrations hold an advisory lock: two nodes starting at once with
    VAULT_MIGRATE_ON_START, or two upgrade jobs, migrate one after the other, and the
    second finds nothing left to do.
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Wait for the other migrator as long as a migration may take (env.py sets the
            # short lock timeout for the migrations' own statements afterwards).
            connection.exec_driver_sql(
                f"SET LOCAL statement_timeout = '{MIGRATION_STATEMENT_TIMEOUT}'"
            )
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{MIGRATION_STATEMENT_TIMEOUT}'")
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        elif connection.dialect.name == "sqlite":
            # pysqlite opens a transaction only at the first INSERT/UPDATE: DDL before it
            # would commit on its own, so a migration refused further on (a contract that
            # finds rows left) would leave the ones before it half applied, unrecorded.
            # One explicit transaction makes the upgrade all or nothing, as on PostgreSQL.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        _record_phases(connection)
        if also is not None:
            also(connection)


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
    # The phase of each revision in `behind` (unknown ones count as expands: needed).
    behind_phases: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> tuple[str, ...]:
        """Pending migrations this code needs: all but contracts. A contract only removes
        what this code no longer uses, so the code runs before it too; that is what lets
        new nodes start during a rolling deploy, before the contract step."""
        return tuple(rev for rev in self.behind if self.behind_phases.get(rev) != "contract")

    @property
    def runnable(self) -> bool:
        """The code runs on this schema: nothing it needs is missing (contracts may still be
        pending), and anything newer only expanded."""
        return not self.missing and all(phase == "expand" for phase in self.ahead.values())


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def migration_phases(scripts: ScriptDirectory | None = None) -> dict[str, str]:
    """Each shipped migration's `phase` ("expand" or "contract"), by revision."""
    return {
        rev.revision: str(getattr(rev.module, "phase", "unknown"))
        for rev in (scripts or _scripts()).walk_revisions()
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
    phases = migration_phases(scripts)
    if current is None:
        every = tuple(r.revision for r in scripts.walk_revisions())[::-1]
        return SchemaState(None, head, every, behind_phases=phases)
    if current not in known:
        ahead = {rev: phase for rev, phase in noted.items() if rev not in known}
        ahead.setdefault(current, "unknown")
        return SchemaState(current, head, (), ahead)
    behind = tuple(r.revision for r in scripts.iterate_revisions(head, current))[::-1]
    return SchemaState(current, head, behind, behind_phases={r: phases[r] for r in behind})


_applied_by_current: dict[str, frozenset[str]] = {}


def migration_applied(connection: Connection, revision: str) -> bool:
    """Whether `revision` is applied to this database (its current revision or one before
    it): what lets the code of a release tell if its contract has run yet, and keep doing
    what the older code needs until it has. One query; the revision walk is cached."""
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        return False
    if current not in _applied_by_current:
        scripts = _scripts()
        try:
            walked = frozenset(r.revision for r in scripts.iterate_revisions(current, "base"))
        except RevisionError:  # a revision newer than this code: past all of ours
            walked = frozenset(r.revision for r in scripts.walk_revisions())
        _applied_by_current[current] = walked
    return revision in _applied_by_current[current]


def require_runnable_schema(engine: Engine) -> SchemaState:
    """At start-up without migrate-on-start: refuse a schema that lacks a migration this
    code needs (any but a contract), or is ahead of it by one that is not an expand, with
    one line saying what to do."""
    state = schema_state(engine)
    problem = schema_problem(state)
    if problem is not None:
        raise problem
    return state


def schema_problem(state: SchemaState) -> SchemaMismatch | None:
    """Why this code cannot run on a schema in `state` (what start-up refuses), or None."""
    if state.missing:
        if state.current is None:
            return SchemaMismatch(Message("db.schema.empty", {"head": state.missing[-1]}))
        return SchemaMismatch(
            Message("db.schema.behind", {"current": state.current, "head": state.missing[-1]})
        )
    contracted = sorted(rev for rev, phase in state.ahead.items() if phase != "expand")
    if contracted:
        return SchemaMismatch(Message("db.schema.ahead", {"revisions": ", ".join(contracted)}))
    return None


class SchemaMismatch(ConfigurationError):
    """The schema and the code do not fit; the message says which way and what to run."""

    message: Message

    def __init__(self, message: Message) -> None:
        super().__init__(message.text("en"))
        self.message = message

    @property
    def message_zh(self) -> str:
        return self.message.text("zh")

    @property
    def message_en(self) -> str:
        return self.message.text("en")


class UpgradeRefused(SchemaMismatch):
    """`db upgrade` will not run: the schema is ahead of this code, or the target is wrong."""


@dataclass(frozen=True)
class UpgradePlan:
    """What one `db upgrade` applies, in order, and the pending migrations it leaves."""

    current: str | None
    head: str
    steps: tuple[tuple[str, str], ...]  # (revision, phase) in the order they apply
    held_back: tuple[tuple[str, str], ...] = ()  # pending after `--to` or the first contract

    @property
    def target(self) -> str | None:
        """The revision the database is at afterwards; None when there is nothing to do."""
        return self.steps[-1][0] if self.steps else None


def plan_upgrade(
    state: SchemaState,
    phases: Mapping[str, str] | None = None,
    *,
    to: str | None = None,
    expand_only: bool = False,
) -> UpgradePlan:
    """The migrations `db upgrade` applies to a database in `state`.

    `to` stops at that revision (included); `expand_only` stops before the first migration
    that is not an expand (a migration without a known phase counts as a contract), so a
    rolling deploy can expand while the old code still serves. Never downgrades, and never
    touches a schema ahead of this code: that is the newer code's to migrate.
    """
    phases = migration_phases() if phases is None else phases
    if state.ahead:
        newer = ", ".join(sorted(state.ahead))
        raise UpgradeRefused(
            Message(
                "db.upgrade.ahead",
                {"current": state.current, "head": state.head, "revisions": newer},
            )
        )
    pending = [(revision, phases.get(revision, "unknown")) for revision in state.behind]
    end = len(pending)
    if to is not None and to != "head":
        revisions = [revision for revision, _ in pending]
        if to in revisions:
            end = revisions.index(to) + 1
        elif to == state.current:  # already there: running the same step twice is fine
            end = 0
        elif to in phases:
            raise UpgradeRefused(
                Message("db.upgrade.applied", {"target": to, "current": state.current})
            )
        else:
            raise UpgradeRefused(Message("db.upgrade.unknown", {"target": to, "head": state.head}))
    if expand_only:
        end = next((i for i, (_, phase) in enumerate(pending[:end]) if phase != "expand"), end)
    return UpgradePlan(state.current, state.head, tuple(pending[:end]), tuple(pending[end:]))


# The migration that creates schema_phases: the offline SQL records phases from it on.
SCHEMA_PHASES_REVISION = "0011"


def upgrade_sql(engine: Engine, plan: UpgradePlan) -> str:
    """The SQL `db upgrade` would run for `plan`, for a DBA to review or apply: see
    `offline_upgrade_sql`. Reads which phases the database has noted; changes nothing."""
    if plan.target is None:
        return ""
    with engine.connect() as connection:
        noted: set[str] = set()
        if inspect(connection).has_table(SchemaPhase.__tablename__):
            noted = set(connection.scalars(select(SchemaPhase.revision)))
    return offline_upgrade_sql(engine.url, plan.current, plan.target, noted=noted)


def offline_upgrade_sql(
    url: str | URL, start: str | None, target: str, *, noted: Collection[str] = ()
) -> str:
    """The SQL that takes a schema from `start` (None: empty) to `target`, rendered for the
    dialect of `url` without connecting (Alembic's offline mode): the migrations, the
    version stamp and the phase rows older code reads (but those in `noted`), in one
    transaction on PostgreSQL, under the same lock and statement timeouts as online."""
    config = alembic_config(make_url(url).render_as_string(hide_password=False))
    scripts = ScriptDirectory.from_config(config)
    applied = [rev.revision for rev in scripts.iterate_revisions(target, "base")][::-1]
    phases = migration_phases()
    rows = []
    if SCHEMA_PHASES_REVISION in applied:
        rows = [
            {"revision": rev, "phase": phases.get(rev, "unknown"), "applied_at": func.now()}
            for rev in applied
            if rev not in noted
        ]
    buffer = io.StringIO()
    dialect = make_url(url).get_backend_name()

    def steps(heads: Any, _context: MigrationContext) -> Any:
        return scripts._upgrade_revs(target, heads)  # what `alembic upgrade --sql` runs

    with EnvironmentContext(
        config, scripts, fn=steps, as_sql=True, starting_rev=start, destination_rev=target
    ) as environment:
        environment.configure(
            url=url,
            # Named parameters: literal SQL such as a PL/pgSQL RAISE keeps its single `%`.
            dialect_opts={"paramstyle": "named"},
            output_buffer=buffer,
            literal_binds=True,
            render_as_batch=dialect == "sqlite",
        )
        with environment.begin_transaction():
            if dialect == "postgresql":
                environment.execute(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'")
                environment.execute(
                    f"SET LOCAL statement_timeout = '{MIGRATION_STATEMENT_TIMEOUT}'"
                )
            environment.run_migrations()
            if rows:
                environment.execute(insert(SchemaPhase).values(rows))
    return buffer.getvalue()
