"""`resident-vault db current | upgrade`: where the schema stands, and migrating it.

    resident-vault db current [--json]               # exit 0 when this code runs on it
    resident-vault db upgrade --phase expand         # before a rolling restart: expand only
    resident-vault db upgrade                        # once no node runs the old code: the rest
    resident-vault db upgrade --sql > upgrade.sql    # the SQL for review; applies nothing
    resident-vault db move-records                   # between 0017's expand and 0019's contract

Migrations are *expand* (the code before them still runs on the new schema) or *contract*
(only once every node runs code that no longer needs what they remove); docs/postgresql.md.
Neither command needs the keyring; `db upgrade` records an audit entry when it can open it.

Exit codes: 0 this code can run on the schema (`current`; its contracts may still be
pending) or the upgrade is done; 3 the schema lacks a migration this code needs; 4 it is
ahead of this code by a migration that is not an expand (or `upgrade` refuses a schema
ahead of it); 1 anything else, in one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import structlog
import typer
from alembic.util import CommandError
from rich.console import Console
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from access.runtime import operator_name
from api.cli.common import Actor, err, fail, group, option, out, progress, runtime
from api.cli.lang import current, help_text, say
from api.settings import Settings
from audit import AuditLog, EntryDraft, operator_event
from audit.models import AuditEntry
from vault.context import open_vault
from vault.db import (
    PoolLimits,
    SchemaState,
    UpgradePlan,
    UpgradeRefused,
    make_engine,
    migrate,
    plan_upgrade,
    schema_problem,
    schema_state,
    upgrade_sql,
)
from vault.errors import VaultError
from vault.record_move import move_records

log = structlog.get_logger(__name__)

db_app = group("cli.help.db")

EXIT_FAILED = 1
EXIT_BEHIND = 3
EXIT_AHEAD = 4


class UpgradePhase(StrEnum):
    """How far one `db upgrade` goes."""

    EXPAND = "expand"  # up to, not including, the first contract migration
    ALL = "all"  # every pending migration (after the old code is gone, or a fresh install)


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    raise fail(message, code)


def _database_error(exc: SQLAlchemyError) -> str:
    """The driver's first line (a DETAIL line can quote row values; never shown)."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


@contextmanager
def _engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.resolved_database_url, PoolLimits.of(settings))
    try:
        yield engine
    finally:
        engine.dispose()


def _migrations(count: int) -> str:
    return say("cli.db.migrations.one" if count == 1 else "cli.db.migrations.other", n=count)


def _listed(items: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{revision} {phase}" for revision, phase in items) or say(
        "cli.db.current.none"
    )


# -- db current ----------------------------------------------------------------------------


def _exit_code(state: SchemaState) -> int:
    if state.missing:
        return EXIT_BEHIND
    return 0 if state.runnable else EXIT_AHEAD


def state_document(state: SchemaState) -> dict[str, Any]:
    """`db current --json`: the schema against this code, and what `db upgrade` would do."""
    pending: tuple[tuple[str, str], ...] = ()
    expand_target = None
    if not state.ahead:
        pending = plan_upgrade(state).steps
        expand_target = plan_upgrade(state, expand_only=True).target
    code = _exit_code(state)
    return {
        "current": state.current,
        "head": state.head,
        "pending": [{"revision": r, "phase": p} for r, p in pending],
        "ahead": [{"revision": r, "phase": p} for r, p in sorted(state.ahead.items())],
        "runnable": state.runnable,
        "problem": {0: None, EXIT_BEHIND: "behind", EXIT_AHEAD: "ahead"}[code],
        "expand_target": expand_target,  # where `db upgrade --phase expand` would stop
        "exit_code": code,
    }


@db_app.command("current", help=help_text("cli.help.db.current"))
def db_current(
    as_json: Annotated[bool, option("cli.help.db.current.json", "--json")] = False,
) -> None:
    """The schema's revision and whether this code runs on it (exit 0, 3 behind, 4 ahead)."""
    settings = Settings()
    try:
        with _engine(settings) as engine:
            state = schema_state(engine)
    except SQLAlchemyError as exc:
        _fail(_unreadable(exc))
    document = state_document(state)
    if as_json:
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        raise typer.Exit(document["exit_code"])
    pending = [(item["revision"], item["phase"]) for item in document["pending"]]
    ahead = [(item["revision"], item["phase"]) for item in document["ahead"]]
    lines = [
        say("cli.db.current.revision", current=state.current or say("cli.db.current.never")),
        say("cli.db.current.head", head=state.head),
        say("cli.db.current.pending", migrations=_listed(pending)),
        say("cli.db.current.ahead", migrations=_listed(ahead)),
    ]
    contract = next((revision for revision, phase in pending if phase != "expand"), None)
    if contract is not None:
        first = [revision for revision, _ in pending].index(contract)
        lines.append(say("cli.db.current.contract-waits", contract=contract, first=first))
        later = [revision for revision, phase in pending[first:] if phase != "contract"]
        if later:
            lines.append(say("cli.db.current.contract-not-last", later=", ".join(later)))
    problem = schema_problem(state)
    if problem is None:
        lines.append(say("cli.db.current.can-run"))
    else:
        lines.append(
            say(
                "cli.db.current.cannot-run",
                problem=problem.message.text(current()),
            )
        )
    for line in lines:
        out.print(line, markup=False)
    raise typer.Exit(document["exit_code"])


# -- db upgrade ----------------------------------------------------------------------------


def _unreadable(exc: SQLAlchemyError) -> str:
    return say("cli.db.unreadable") + _database_error(exc)


def _planned(engine: Engine, to: str | None, expand_only: bool) -> UpgradePlan:
    """What `db upgrade` would apply here, or a one-line refusal (exit 4 when ahead)."""
    try:
        state = schema_state(engine)
    except SQLAlchemyError as exc:
        _fail(_unreadable(exc))
    try:
        return plan_upgrade(state, to=to, expand_only=expand_only)
    except UpgradeRefused as exc:
        _fail(exc.message.text(current()), EXIT_AHEAD if state.ahead else EXIT_FAILED)


def _upgrade_event(plan: UpgradePlan, phase: UpgradePhase, who: str) -> EntryDraft:
    return operator_event(
        "schema.upgraded",
        who,
        {
            "from": plan.current,
            "to": plan.target,
            "migrations": [{"revision": r, "phase": p} for r, p in plan.steps],
            "phase": phase.value,
            "held_back": [r for r, _ in plan.held_back],
        },
    )


def _record_in(
    audit: AuditLog, draft: EntryDraft, recorded: list[str]
) -> Callable[[Connection], None]:
    """Writes `draft` in the migration's own transaction (see vault.db.migrate); its entry
    id lands in `recorded`."""

    def record(connection: Connection) -> None:
        if not inspect(connection).has_table(AuditEntry.__tablename__):
            return  # `--to` stopped before the audit log's migration
        with Session(bind=connection, join_transaction_mode="rollback_only") as session:
            recorded.extend(audit.record(session, [draft]))
            session.flush()

    return record


@contextmanager
def _migration_engine(settings: Settings) -> Iterator[tuple[Engine, AuditLog | None, str]]:
    """The primary engine, and the audit log when the keyring opens (not on a fresh
    install, where migrations come before `init`); else why there is none."""
    try:
        vault = open_vault(settings, upgrade_schema=False)
    except VaultError as exc:
        fresh = settings.keyring == "local" and not settings.keyring_path.exists()
        why = "no keyring yet: `resident-vault init` makes it" if fresh else str(exc)
        with _engine(settings) as engine:
            yield engine, None, why
        return
    try:
        yield vault.engine, AuditLog(vault.keyring, settings.resolved_log_origin), ""
    finally:
        vault.close()


@db_app.command("upgrade", help=help_text("cli.help.db.upgrade"))
def db_upgrade(
    to: Annotated[str | None, option("cli.help.db.upgrade.to", "--to", metavar="REV")] = None,
    phase: Annotated[UpgradePhase, option("cli.help.db.upgrade.phase")] = UpgradePhase.ALL,
    sql: Annotated[bool, option("cli.help.db.upgrade.sql", "--sql")] = False,
    actor: Actor = None,
) -> None:
    """Apply pending migrations, recording each one's phase (the help says when to use
    --phase expand and --sql)."""
    settings = Settings()
    expand_only = phase is UpgradePhase.EXPAND
    if sql:
        _print_sql(settings, to, expand_only)
        return
    with _migration_engine(settings) as (engine, audit, no_audit):
        plan = _planned(engine, to, expand_only)
        if plan.target is None:
            _nothing_to_do(plan, expand_only)
            return
        draft = _upgrade_event(plan, phase, operator_name(actor))
        dialect = engine.dialect.name
        recorded: list[str] = []
        try:
            migrate(engine, plan.target, also=_record_in(audit, draft, recorded) if audit else None)
        except (SQLAlchemyError, CommandError) as exc:
            _fail(
                say("cli.db.upgrade.failed")
                + (_database_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc))
                + say("cli.db.upgrade.see-current")
            )
    log.info(
        "schema.upgraded",
        revision_from=plan.current,
        revision_to=plan.target,
        migrations=len(plan.steps),
        phase=phase.value,
    )
    applied = _listed(plan.steps)
    at_head = plan.target == plan.head
    out.print(
        say(
            "cli.db.upgrade.applied",
            migrations=_migrations(len(plan.steps)),
            applied=applied,
            target=plan.target,
        )
        + (say("cli.db.upgrade.applied-head") if at_head else ""),
        markup=False,
    )
    _print_held_back(plan, expand_only)
    if dialect == "postgresql":  # docs/postgresql.md, 1. Roles
        out.print(
            say("cli.db.upgrade.roles-hint"),
            markup=False,
        )
    if recorded:
        out.print(say("cli.db.upgrade.recorded"))
    else:
        no_audit = no_audit or say("cli.db.upgrade.no-audit-tables")
        err.print(
            say("cli.db.upgrade.not-recorded", no_audit=no_audit),
            markup=False,
        )


def _nothing_to_do(plan: UpgradePlan, expand_only: bool, console: Console = out) -> None:
    if plan.held_back and expand_only:
        revision, phase = plan.held_back[0]
        console.print(
            say(
                "cli.db.upgrade.nothing-expand",
                current=plan.current,
                revision=revision,
                phase=phase,
            ),
            markup=False,
        )
        return
    console.print(
        say("cli.db.upgrade.nothing", current=plan.current)
        + (say("cli.db.upgrade.at-head") if plan.current == plan.head else ""),
        markup=False,
    )


def _print_held_back(plan: UpgradePlan, expand_only: bool, console: Console = out) -> None:
    if not plan.held_back:
        return
    waiting = _listed(plan.held_back)
    if expand_only and plan.held_back[0][1] != "expand":
        message = say("cli.db.upgrade.held-back", waiting=waiting)
    else:
        message = say("cli.db.upgrade.held-back-to", waiting=waiting)
    console.print(message, markup=False)


def _print_sql(settings: Settings, to: str | None, expand_only: bool) -> None:
    with _engine(settings) as engine:
        if engine.dialect.name != "postgresql":
            _fail(say("cli.db.upgrade.sql.postgres-only"))
        plan = _planned(engine, to, expand_only)
        try:
            text = upgrade_sql(engine, plan)
        except SQLAlchemyError as exc:
            _fail(_unreadable(exc))
    if plan.target is None:
        _nothing_to_do(plan, expand_only, err)
        return
    sys.stdout.write(text)
    err.print(
        say(
            "cli.db.upgrade.sql.printed",
            current=plan.current or say("cli.db.upgrade.sql.empty"),
            target=plan.target,
            migrations=_migrations(len(plan.steps)),
        ),
        markup=False,
    )
    _print_held_back(plan, expand_only, err)


@db_app.command("move-records", help=help_text("cli.help.db.move-records"))
def db_move_records(
    batch_size: Annotated[int, typer.Option(min=1)] = 500,
    actor: Actor = None,
) -> None:
    """Move the per-field rows into one record per resident; an interrupted run resumes."""
    who = operator_name(actor)
    with runtime() as rt, progress() as bar:
        task = bar.add_task(say("cli.db.move-records.progress"), total=None)
        report = move_records(
            rt.vault.sessions,
            rt.vault.store,
            batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        if report.table_gone:
            out.print(say("cli.db.move-records.gone"))
            return
        details = {"residents": report.residents, "fields": report.fields}
        with rt.transaction() as session:
            rt.audit.record(session, [operator_event("records.moved", who, details)])
    out.print(
        say("cli.db.move-records.done", residents=report.residents, fields=report.fields)
        + (say("cli.keys.rotate.resumed") if report.resumed else "")
    )
