"""`resident-vault db current | upgrade`: where the schema stands, and migrating it.

    resident-vault db current [--json]               # exit 0 when this code runs on it
    resident-vault db upgrade --phase expand         # before a rolling restart: expand only
    resident-vault db upgrade                        # once no node runs the old code: the rest
    resident-vault db upgrade --sql > upgrade.sql    # the SQL for review; applies nothing

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
import os
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

log = structlog.get_logger(__name__)

db_app = typer.Typer(help="数据库结构 / Database schema", no_args_is_help=True)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FAILED = 1
EXIT_BEHIND = 3
EXIT_AHEAD = 4

Translate = Callable[[str, str], str]


class UpgradePhase(StrEnum):
    """How far one `db upgrade` goes."""

    EXPAND = "expand"  # up to, not including, the first contract migration
    ALL = "all"  # every pending migration (after the old code is gone, or a fresh install)


def _translator(ctx: typer.Context) -> Translate:
    """`t(zh, en)` for the language of `--lang` (on the root command) or VAULT_LANG."""
    root = ctx.find_root()
    value = root.params.get("lang") if root.params else None
    english = str(value or os.environ.get("VAULT_LANG", "zh")).startswith("en")
    return lambda zh, en: en if english else zh


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"resident-vault: {message}", markup=False)
    raise typer.Exit(code)


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
    return f"{count} migration" + ("" if count == 1 else "s")


def _listed(t: Translate, items: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{revision} {phase}" for revision, phase in items) or t("无", "none")


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


@db_app.command("current")
def db_current(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """数据库结构版本及本程序能否运行 / The schema's revision and whether this code runs on it.

    Exit 0 when this code can run on the schema (only its contracts may be pending), 3
    when the schema lacks a migration it needs (run `resident-vault db upgrade`), 4 when
    the schema is ahead of it by a migration that is not an expand.
    """
    t = _translator(ctx)
    settings = Settings()
    try:
        with _engine(settings) as engine:
            state = schema_state(engine)
    except SQLAlchemyError as exc:
        _fail(_unreadable(t, exc))
    document = state_document(state)
    if as_json:
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        raise typer.Exit(document["exit_code"])
    pending = [(item["revision"], item["phase"]) for item in document["pending"]]
    ahead = [(item["revision"], item["phase"]) for item in document["ahead"]]
    lines = [
        t(
            f"数据库结构版本：{state.current or '空（尚未迁移）'}",
            f"database revision: {state.current or 'empty (never migrated)'}",
        ),
        t(f"本程序最新版本：{state.head}", f"head of this code: {state.head}"),
        t(f"待执行的迁移：{_listed(t, pending)}", f"pending migrations: {_listed(t, pending)}"),
        t(f"比本程序新的迁移：{_listed(t, ahead)}", f"ahead of this code: {_listed(t, ahead)}"),
    ]
    contract = next((revision for revision, phase in pending if phase != "expand"), None)
    if contract is not None:
        first = [revision for revision, _ in pending].index(contract)
        lines.append(
            t(
                f"收缩迁移 {contract} 须等旧版程序全部下线后再运行 resident-vault db upgrade；"
                f"在此之前 resident-vault db upgrade --phase expand 应用 {first} 个",
                f"contract migration {contract} waits until no node runs the old code, then "
                f"`resident-vault db upgrade`; before that, `resident-vault db upgrade --phase "
                f"expand` applies {first}",
            )
        )
        later = [revision for revision, phase in pending[first:] if phase != "contract"]
        if later:
            lines.append(
                t(
                    f"注意：{', '.join(later)} 排在收缩迁移之后，本程序须等其应用后才能启动"
                    "（滚动部署要求一个版本的收缩迁移排在最后）",
                    f"note: {', '.join(later)} come after the contract, so this code cannot "
                    "start until they are applied (a rolling deploy needs a release's "
                    "contracts last)",
                )
            )
    problem = schema_problem(state)
    if problem is None:
        lines.append(t("本程序可以在此结构上运行：是", "this code can run on it: yes"))
    else:
        lines.append(
            t(
                f"本程序可以在此结构上运行：否（{problem.message_zh}）",
                f"this code can run on it: no ({problem.message_en})",
            )
        )
    for line in lines:
        out.print(line, markup=False)
    raise typer.Exit(document["exit_code"])


# -- db upgrade ----------------------------------------------------------------------------


def _unreadable(t: Translate, exc: SQLAlchemyError) -> str:
    return t("无法读取数据库结构：", "cannot read the database schema: ") + _database_error(exc)


def _planned(t: Translate, engine: Engine, to: str | None, expand_only: bool) -> UpgradePlan:
    """What `db upgrade` would apply here, or a one-line refusal (exit 4 when ahead)."""
    try:
        state = schema_state(engine)
    except SQLAlchemyError as exc:
        _fail(_unreadable(t, exc))
    try:
        return plan_upgrade(state, to=to, expand_only=expand_only)
    except UpgradeRefused as exc:
        _fail(t(exc.message_zh, exc.message_en), EXIT_AHEAD if state.ahead else EXIT_FAILED)


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


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    to: Annotated[
        str | None, typer.Option("--to", metavar="REV", help="stop at this revision (included)")
    ] = None,
    phase: Annotated[
        UpgradePhase,
        typer.Option(
            help="expand: only up to the first contract migration, while old code still serves"
        ),
    ] = UpgradePhase.ALL,
    sql: Annotated[
        bool, typer.Option("--sql", help="print the SQL for review (PostgreSQL) and apply nothing")
    ] = False,
    actor: Annotated[str | None, typer.Option(help="who runs the upgrade (audit log)")] = None,
) -> None:
    """应用待执行的迁移 / Apply pending migrations, recording each one's phase.

    Refuses a schema ahead of this code (exit 4). With --phase expand it stops before the
    first contract migration, so a rolling deploy can expand while the old code serves and
    run `db upgrade` again once no node runs the old code. With --sql it prints the
    migrations as one PostgreSQL transaction (Alembic offline mode) for a DBA to review or
    apply with psql, and changes nothing.
    """
    t = _translator(ctx)
    settings = Settings()
    expand_only = phase is UpgradePhase.EXPAND
    if sql:
        _print_sql(t, settings, to, expand_only)
        return
    with _migration_engine(settings) as (engine, audit, no_audit):
        plan = _planned(t, engine, to, expand_only)
        if plan.target is None:
            _nothing_to_do(t, plan, expand_only)
            return
        draft = _upgrade_event(plan, phase, operator_name(actor))
        dialect = engine.dialect.name
        recorded: list[str] = []
        try:
            migrate(engine, plan.target, also=_record_in(audit, draft, recorded) if audit else None)
        except (SQLAlchemyError, CommandError) as exc:
            _fail(
                t("迁移失败：", "migration failed: ")
                + (_database_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc))
                + t(
                    "；用 resident-vault db current 查看结构现状",
                    "; see where the schema stands with `resident-vault db current`",
                )
            )
    log.info("schema.upgraded", revision_from=plan.current, revision_to=plan.target,
             migrations=len(plan.steps), phase=phase.value)  # fmt: skip
    applied = _listed(t, plan.steps)
    at_head = plan.target == plan.head
    out.print(
        t(
            f"已应用 {len(plan.steps)} 个迁移（{applied}）：数据库结构现为 {plan.target}"
            + ("，即本程序的最新版本" if at_head else ""),
            f"applied {_migrations(len(plan.steps))} ({applied}): the database is at "
            f"{plan.target}" + (", the head of this code" if at_head else ""),
        ),
        markup=False,
    )
    _print_held_back(t, plan, expand_only)
    if dialect == "postgresql":  # docs/postgresql.md, 1. Roles
        out.print(
            t(
                "请以超级用户再运行一次 deploy/postgres/roles.sql：它为迁移新增的表重设服务的权限",
                "now run deploy/postgres/roles.sql again as a superuser: it re-applies the "
                "service's privileges to what the migrations added",
            ),
            markup=False,
        )
    if recorded:
        out.print(
            t("已写入审计日志（schema.upgraded）", "recorded in the audit log (schema.upgraded)")
        )
    else:
        no_audit = no_audit or t("审计日志尚未建立", "the audit log's tables do not exist yet")
        err.print(
            t(
                f"警告：未写入审计日志（{no_audit}）",
                f"warning: not recorded in the audit log ({no_audit})",
            ),
            markup=False,
        )


def _nothing_to_do(
    t: Translate, plan: UpgradePlan, expand_only: bool, console: Console = out
) -> None:
    if plan.held_back and expand_only:
        revision, phase = plan.held_back[0]
        console.print(
            t(
                f"扩展阶段无可应用的迁移：数据库结构在 {plan.current}，下一个是 {revision}"
                f"（{phase}），须等旧版程序全部下线后运行 resident-vault db upgrade",
                f"nothing to apply in the expand phase: the database is at {plan.current}, the "
                f"next migration {revision} is a {phase}; run `resident-vault db upgrade` once "
                "no node runs the old code",
            ),
            markup=False,
        )
        return
    console.print(
        t(
            f"无需迁移：数据库结构已在 {plan.current}",
            f"nothing to apply: the database is at {plan.current}",
        )
        + (
            t("（本程序的最新版本）", " (the head of this code)")
            if plan.current == plan.head
            else ""
        ),
        markup=False,
    )


def _print_held_back(
    t: Translate, plan: UpgradePlan, expand_only: bool, console: Console = out
) -> None:
    if not plan.held_back:
        return
    waiting = _listed(t, plan.held_back)
    if expand_only and plan.held_back[0][1] != "expand":
        message = t(
            f"未应用：{waiting}；旧版程序全部下线后运行 resident-vault db upgrade",
            f"not applied: {waiting}; run `resident-vault db upgrade` once no node runs the old "
            "code",
        )
    else:
        message = t(f"未应用（--to 之后）：{waiting}", f"not applied (after --to): {waiting}")
    console.print(message, markup=False)


def _print_sql(t: Translate, settings: Settings, to: str | None, expand_only: bool) -> None:
    with _engine(settings) as engine:
        if engine.dialect.name != "postgresql":
            _fail(
                t(
                    "--sql 仅用于 PostgreSQL；SQLite 由 resident-vault db upgrade 直接迁移",
                    "--sql is for PostgreSQL; SQLite is migrated directly by "
                    "`resident-vault db upgrade`",
                )
            )
        plan = _planned(t, engine, to, expand_only)
        try:
            text = upgrade_sql(engine, plan)
        except SQLAlchemyError as exc:
            _fail(_unreadable(t, exc))
    if plan.target is None:
        _nothing_to_do(t, plan, expand_only, err)
        return
    sys.stdout.write(text)
    err.print(
        t(
            f"以上 SQL 把数据库结构从 {plan.current or '空'} 迁移到 {plan.target}"
            f"（{len(plan.steps)} 个迁移，一个事务）；未做任何改动",
            f"the SQL above migrates the schema from {plan.current or 'empty'} to "
            f"{plan.target} ({_migrations(len(plan.steps))}, one transaction); nothing was changed",
        ),
        markup=False,
    )
    _print_held_back(t, plan, expand_only, err)
