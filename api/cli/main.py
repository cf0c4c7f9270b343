"""The `resident-vault` command line.

Every error ends in one line on stderr and a non-zero exit; nothing is left half-done,
because each data command runs in one transaction (rotations in resumable batches).
Text is Simplified Chinese by default; `--lang en` or VAULT_LANG=en for English.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from access.runtime import Runtime, init_runtime, open_runtime, operator_name
from api.cli.backup import RestoreFailed, backup_app, restore, tombstones_app
from api.cli.clients import clients_app, token_keys_app
from api.cli.config import config_app
from api.cli.db import db_app
from api.cli.lang import choose, current, say
from api.cli.policy import policy_app
from api.cli.trace import trace
from api.logging import configure_logging
from api.oauth.keys import ensure_oauth_keys
from api.oauth.service import init_demo_credentials
from api.settings import Settings
from audit import AuditError, EntryDraft, VerificationFailed, operator_event
from audit.models import AuditArchive
from audit.partitions import (
    ArchiveReport,
    detach_before,
    ensure_partitions,
    list_partitions,
    verify_archive_file,
    verify_archives_against_log,
)
from audit.verify import verify_log
from vault.backup import BackupError
from vault.config import SettingsInvalid
from vault.context import keyring_exists
from vault.crypto import Suite
from vault.db import SchemaMismatch
from vault.errors import (
    ConfigurationError,
    InvalidValue,
    ResidentNotFound,
    UnknownField,
    ValidationFailed,
    VaultError,
)
from vault.importer import import_csv
from vault.quality import run_checks
from vault.rotation import destroy_retired_keks, rotate_data_keys, rotate_kek
from vault.services import Provenance
from vault.spreadsheet import csv_row

app = typer.Typer(
    help="居民数据保险库 / Resident data vault",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="密钥管理 / Key management", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="审计日志 / Audit log", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(clients_app, name="clients")
app.add_typer(policy_app, name="policy")
app.add_typer(config_app, name="config")
app.add_typer(backup_app, name="backup")
app.add_typer(db_app, name="db")
app.command("restore")(restore)
audit_app.add_typer(tombstones_app, name="tombstones")
partitions_app = typer.Typer(help="审计日志月分区 / Monthly audit partitions", no_args_is_help=True)
audit_app.add_typer(partitions_app, name="partitions")
app.command("trace")(trace)
keys_app.add_typer(token_keys_app, name="tokens")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A one-line message for the user and an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@app.callback()
def _main(
    lang: Annotated[str | None, typer.Option(help="zh | en", envvar="VAULT_LANG")] = None,
    log_json: Annotated[bool, typer.Option("--log-json/--log-console")] = True,
) -> None:
    choose(lang)
    configure_logging(json=log_json)


def _settings() -> Settings:
    return Settings()


@contextmanager
def _runtime() -> Iterator[Runtime]:
    runtime = open_runtime(_settings())
    try:
        yield runtime
    finally:
        runtime.close()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


# -- init and serve ----------------------------------------------------------------------


def _initialise(demo: bool, residents: int, suite: Suite) -> None:
    from vault.demo import populate  # noqa: PLC0415 - demo data only when asked for

    settings = _settings().model_copy(update={"crypto_suite": suite})
    if keyring_exists(settings):
        raise CliError(say("cli.init.already-initialised", home=settings.home))
    runtime = init_runtime(settings)
    try:
        ensure_oauth_keys(runtime)
        out.print(say("cli.init.created", home=settings.home))
        details: dict[str, Any] = {"suite": suite.value, "demo": demo}
        if demo:
            with _progress() as bar, runtime.vault.sessions() as session:
                task = bar.add_task(say("cli.init.progress"), total=residents)

                def commit_batch() -> None:
                    session.commit()
                    session.begin()

                session.begin()
                summary = populate(
                    session,
                    runtime.vault.store,
                    residents,
                    progress=lambda n: bar.advance(task, n),
                    commit=commit_batch,
                )
                session.commit()
            details["demo_residents"] = summary.residents
            credentials = init_demo_credentials(runtime)
            _print_demo_accounts(json.loads(credentials.read_text(encoding="utf-8")))
            # Printed once; the file (mode 0600) is the only other copy.
            out.print(say("cli.init.secrets-written", credentials=credentials))
            out.print(
                say(
                    "cli.init.demo-summary",
                    communities=summary.communities,
                    grids=summary.grids,
                    buildings=summary.buildings,
                    organisations=summary.organisations,
                    households=summary.households,
                    residents=summary.residents,
                )
            )
        with runtime.transaction() as session:
            runtime.audit.record(session, [_event("vault.initialised", None, details)])
        runtime.audit.checkpoint(runtime.vault.sessions)
    finally:
        runtime.close()


def _print_demo_accounts(data: dict[str, Any]) -> None:
    people = Table(
        say("cli.init.column.role"),
        say("cli.init.column.username"),
        say("cli.init.column.password"),
        title=say("cli.init.logins-title"),
    )
    for user in data.get("users", []):
        people.add_row(user["role"], user["username"], user["password"])
    out.print(people)
    # Secrets are long: one line each, never cut to the terminal's width.
    out.print(say("cli.init.clients-heading"))
    for client in data.get("clients", []):
        out.print(f"  {client['client_id']} {client['client_secret']} {client['organisation']}")


@app.command()
def init(
    demo: Annotated[bool, typer.Option(help="add a fictional street and residents")] = False,
    residents: Annotated[int, typer.Option(min=0, help="demo residents")] = 200,
    suite: Annotated[Suite, typer.Option(help="cipher suite for new keys")] = Suite.AES_256_GCM,
) -> None:
    """初始化数据目录：生成密钥并建库 / Create the data directory, keys and database."""
    _initialise(demo, residents, suite)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    demo: Annotated[bool, typer.Option(help="initialise with demo data if not yet done")] = False,
    residents: Annotated[int, typer.Option(min=0)] = 200,
) -> None:
    """运行服务 / Run the HTTP service."""
    import uvicorn  # noqa: PLC0415

    from api.http.app import create_app  # noqa: PLC0415
    from api.http.tls import TransportConfigError, uvicorn_options  # noqa: PLC0415

    # TLS files are checked before anything starts (VAULT_TLS_*, docs/transport-security.md).
    try:
        transport = uvicorn_options(_settings())
    except TransportConfigError as exc:
        raise CliError(exc.message(current())) from None
    scheme = transport.scheme
    # Tokens name the server that issued them; default the issuer to where this one listens.
    os.environ.setdefault("VAULT_OAUTH_ISSUER", f"{scheme}://{host}:{port}")
    if demo and not keyring_exists(_settings()):  # a key file, or a keyring in the HSM
        _initialise(True, residents, _settings().crypto_suite)
    application = create_app(_settings())
    out.print(say("cli.serve.serving", scheme=scheme, host=host, port=port))
    # Uvicorn re-raises SIGTERM once it has stopped gracefully; a clean stop exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        # SIGTERM: stop accepting, let in-flight requests and their audit entries finish
        # (up to the grace), then the lifespan signs a checkpoint that covers them.
        timeout_graceful_shutdown=math.ceil(_settings().shutdown_grace_seconds),
        **transport.uvicorn_kwargs,
    )


def _exit_cleanly(_signal: int, _frame: object) -> None:
    raise SystemExit(0)


# -- audit entries of CLI commands --------------------------------------------------------


def _event(action: str, actor: str | None, details: dict[str, Any], **extra: Any) -> EntryDraft:
    return operator_event(action, actor, details, **extra)


def _access(
    action: str, actor: str, resident_id: str, purpose: str, fields: dict[str, str], **extra: Any
) -> EntryDraft:
    return EntryDraft(
        action=action,
        outcome="allowed",
        channel="cli",
        kind="access",
        user=actor,
        subject_type="operator",
        resident_id=resident_id,
        purpose=purpose,
        fields=fields,
        **extra,
    )


# -- data commands -----------------------------------------------------------------------


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate only")] = False,
    actor: Annotated[str | None, typer.Option(help="who is importing")] = None,
    purpose: Annotated[str, typer.Option(help="why the records are collected")] = "registration",
) -> None:
    """从 CSV 导入居民（逐行校验，全部成功才写入）/ Import residents from CSV, all or nothing."""
    who = operator_name(actor)
    provenance = Provenance(actor=who, channel="import")
    with _runtime() as rt, _progress() as bar, rt.transaction() as session:
        task = bar.add_task(say("cli.import.progress"), total=None)
        report = import_csv(
            session,
            rt.vault.store,
            file,
            provenance,
            dry_run=dry_run,
            progress=lambda n: bar.advance(task, n),
        )
        if report.ok and not dry_run:
            rt.audit.record(
                session,
                [
                    _access(
                        "create",
                        who,
                        rid,
                        purpose,
                        dict.fromkeys(names, "written"),
                        details={"source": file.name},
                    )
                    for rid, names in report.created
                ],
            )  # the entries commit with the residents, or neither does
        else:
            session.rollback()
    for error in report.errors:
        err.print(
            say(
                "cli.import.row-error",
                line=error.line,
                column=error.column,
                problem=error.message(current()),
            )
        )
    if not report.ok:
        raise CliError(say("cli.import.failed", errors=len(report.errors), rows=report.rows))
    if dry_run:
        out.print(say("cli.import.dry-run-ok", rows=report.rows))
    else:
        out.print(
            say("cli.import.imported", imported=report.imported, households=report.households)
        )


@app.command()
def export(
    resident_id: Annotated[str, typer.Argument()],
    fmt: Annotated[str, typer.Option("--format", help="json | csv")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    actor: Annotated[str | None, typer.Option(help="who runs the export for the resident")] = None,
) -> None:
    """导出居民本人的完整记录（可携带权）/ Export a resident's own record (portability)."""
    if fmt not in ("json", "csv"):
        raise CliError(say("cli.export.bad-format"))
    with _runtime() as rt, rt.transaction() as session:
        record = rt.vault.store.read(session, resident_id)
        provenance = rt.vault.store.provenance(session, resident_id)
        # PIPL Art. 45: the resident's own copy. Recorded before anything is written out.
        rt.audit.record(
            session,
            [
                _access(
                    "export",
                    operator_name(actor),
                    resident_id,
                    "portability",
                    dict.fromkeys(record, "clear"),
                    on_behalf_of=resident_id,
                    legal_basis="self",
                )
            ],
        )
    document: dict[str, Any] = {
        "resident_id": resident_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "fields": record,
        "provenance": {
            name: {
                "written_by": p.written_by,
                "channel": p.channel,
                "written_at": p.written_at.isoformat(),
                "verified_at": p.verified_at.isoformat() if p.verified_at else None,
            }
            for name, p in provenance.items()
        },
    }
    if fmt == "json":
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            csv_row(["field", "value", "written_by", "channel", "written_at", "verified_at"])
        )
        for name, value in record.items():
            p = document["provenance"][name]
            cell = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            # Every cell neutralised: a stored value beginning with `=` is text, not a formula.
            when = p["written_at"], p["verified_at"] or ""
            writer.writerow(csv_row([name, cell, p["written_by"], p["channel"], *when]))
        text = buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        err.print(say("cli.export.written", output=output))


@app.command()
def lookup(
    purpose: Annotated[str, typer.Option(help="why you are looking (recorded in the audit log)")],
    id_number: Annotated[str | None, typer.Option("--id-number", help="居民身份证号")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="手机号码")] = None,
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """按身份证号或手机号查找居民编号（盲索引）/ Find resident ids by identifier (blind index)."""
    given = [
        (v, validator)
        for v, validator in ((id_number, "gb11643"), (phone, "cn_mobile"))
        if v is not None
    ]
    if len(given) != 1:
        raise CliError(say("cli.lookup.one-identifier"))
    value, validator = given[0]
    with _runtime() as rt, rt.transaction() as session:
        catalogue = rt.vault.store.catalogue
        field = next(s.name for s in catalogue.searchable if s.validator == validator)
        ids = rt.vault.store.find(session, field, value)
        who = operator_name(actor)
        drafts = [_access("search", who, rid, purpose, {field: "matched"}) for rid in ids]
        if not ids:
            drafts = [_event("search.no_match", who, {"by": field}, purpose=purpose)]
        rt.audit.record(session, drafts)
    if not ids:
        raise CliError(say("cli.lookup.not-found"), code=3)
    for resident_id in ids:
        out.print(resident_id)


@app.command()
def erase(
    resident_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="legal reason, kept in the tombstone")],
    yes: Annotated[bool, typer.Option("--yes", help="confirm: this cannot be undone")] = False,
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """删除居民数据（销毁其数据密钥，不可恢复）/ Erase a resident by destroying their data key."""
    if not yes:
        raise CliError(say("cli.erase.needs-yes"))
    who = operator_name(actor)
    with _runtime() as rt, rt.transaction() as session:
        rt.vault.store.erase(session, resident_id, who, reason)
        rt.audit.record(
            session, [_event("resident.erased", who, {"reason": reason}, resident_id=resident_id)]
        )
    out.print(say("cli.erase.erased", resident_id=resident_id))


@app.command()
def quality(actor: Annotated[str | None, typer.Option()] = None) -> None:
    """列出疑似占位或错误的数据 / List values that look like placeholders or errors."""
    who = operator_name(actor)
    with _runtime() as rt, rt.transaction() as session:
        issues = run_checks(session, rt.vault.store)
        rt.audit.record(
            session,
            [
                _access(
                    "quality-check",
                    who,
                    issue.resident_id,
                    "data-quality",
                    {issue.field: "checked"},
                    reason=issue.code,
                )
                for issue in issues
            ]
            + [_event("quality.checked", who, {"findings": len(issues)}, purpose="data-quality")],
        )
    if not issues:
        out.print(say("cli.quality.none-found"))
        return
    table = Table(
        say("cli.quality.column.resident"),
        say("cli.quality.column.field"),
        say("cli.quality.column.problem"),
        say("cli.quality.column.detail"),
    )
    for issue in issues:
        table.add_row(issue.resident_id, issue.field, issue.code, issue.message(current()))
    out.print(table)
    out.print(say("cli.quality.total", issues=len(issues)))


@app.command()
def fields() -> None:
    """字段目录 / The field catalogue."""
    from vault.catalogue import default_catalogue  # noqa: PLC0415

    lang = current()
    table = Table(
        say("cli.fields.column.field"),
        say("cli.fields.column.label"),
        say("cli.fields.column.category"),
        say("cli.fields.column.sensitive"),
        say("cli.fields.column.grade"),
        say("cli.fields.column.searchable"),
    )
    catalogue = default_catalogue()
    for spec in catalogue:
        table.add_row(
            spec.name,
            spec.label.text(lang),
            catalogue.categories[spec.category].text(lang),
            say("cli.fields.yes") if spec.sensitive else "",
            spec.grade,
            say("cli.fields.yes") if spec.searchable else "",
        )
    out.print(table)


# -- keys --------------------------------------------------------------------------------


@keys_app.command("rotate")
def keys_rotate(
    data_keys: Annotated[
        bool, typer.Option("--data-keys", help="also re-seal every field under new data keys")
    ] = False,
    destroy_retired: Annotated[
        bool, typer.Option("--destroy-retired", help="destroy KEKs no key uses any more")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 500,
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """轮换密钥（可中断后续跑）/ Rotate keys online; an interrupted run resumes."""
    who = operator_name(actor)
    with _runtime() as rt, _progress() as bar:
        vault = rt.vault
        task = bar.add_task(say("cli.keys.rotate.progress-rewrap"), total=None)
        report = rotate_kek(
            vault.sessions,
            vault.store,
            batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        events = [
            _event(
                "keys.kek_rotated",
                who,
                {"kek": report.target, "rewrapped": report.processed, "resumed": report.resumed},
            )
        ]
        out.print(
            say("cli.keys.rotate.kek-done", target=report.target, processed=report.processed)
            + (say("cli.keys.rotate.resumed") if report.resumed else "")
        )
        if data_keys:
            task = bar.add_task(say("cli.keys.rotate.progress-reseal"), total=None)
            dk = rotate_data_keys(
                vault.sessions,
                vault.store,
                batch_size=max(1, batch_size // 2),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            events.append(_event("keys.data_keys_rotated", who, {"residents": dk.processed}))
            out.print(say("cli.keys.rotate.data-keys-done", processed=dk.processed))
        if destroy_retired:
            destroyed = destroy_retired_keks(vault.sessions, vault.store)
            events.append(_event("keys.kek_destroyed", who, {"keks": destroyed}))
            out.print(say("cli.keys.rotate.keks-destroyed", destroyed=len(destroyed)))
        with rt.transaction() as session:
            rt.audit.record(session, events)


@keys_app.command("list")
def keys_list() -> None:
    """列出主密钥 / List key-encryption keys (ids and dates, never key material)."""
    with _runtime() as rt:
        for info in rt.vault.keyring.keks():
            mark = say("cli.keys.list.active") if info.active else ""
            out.print(f"{info.kek_id}  {info.suite.value}  {info.created_at.isoformat()}{mark}")


@keys_app.command("migrate")
def keys_migrate(
    to: Annotated[str, typer.Option("--to", help="pkcs11 (the HSM in VAULT_PKCS11_*)")],
    destroy_local: Annotated[
        bool, typer.Option("--destroy-local", help="overwrite and delete the local key file")
    ] = False,
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """把本地密钥迁入 HSM，核对后切换 / Move the local keys into the HSM, check, switch."""
    from vault import keyring_migration as migration  # noqa: PLC0415 - loads PKCS#11
    from vault.keyring import LocalKeyring  # noqa: PLC0415

    if to != "pkcs11":
        raise CliError(say("cli.keys.migrate.bad-target", to=to))
    settings = _settings().model_copy(update={"keyring": "local"})
    if settings.keyring_path.exists():
        with _runtime_of(settings) as rt:
            keyring = rt.vault.keyring
            assert isinstance(keyring, LocalKeyring)  # noqa: S101 - keyring=local
            report = migration.migrate_to_pkcs11(settings, keyring, rt.vault.sessions)
            details = {**report.details(), "local": "destroyed" if destroy_local else "renamed"}
            with rt.transaction() as session:
                rt.audit.record(session, [_event("keys.migrated", operator_name(actor), details)])
    elif not migration.token_holds_migrated_keyring(settings):
        path = settings.keyring_path
        raise CliError(say("cli.keys.migrate.no-keyring", path=path))
    kept = migration.retire_local_keyring(settings, destroy=destroy_local)
    out.print(say("cli.keys.migrate.done"))
    gone = say("cli.keys.migrate.destroyed")
    out.print(say("cli.keys.migrate.local-file", kept=kept or gone))
    out.print(say("cli.keys.migrate.settings-heading"))
    for line in (
        "VAULT_KEYRING=pkcs11",
        f"VAULT_PKCS11_TOKEN_LABEL={settings.pkcs11_token_label}",
        f"VAULT_PKCS11_KEY_PREFIX={settings.pkcs11_key_prefix}",
        f"VAULT_PKCS11_MODULE={settings.pkcs11_module}",
        "VAULT_PKCS11_PIN (or VAULT_PKCS11_PIN_FILE)",
    ):
        out.print(f"  {line}", markup=False)


@contextmanager
def _runtime_of(settings: Settings) -> Iterator[Runtime]:
    runtime = open_runtime(settings)
    try:
        yield runtime
    finally:
        runtime.close()


# -- audit -------------------------------------------------------------------------------


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """整合新条目并签发检查点 / Integrate new entries and sign a checkpoint now."""
    with _runtime() as rt:
        head = rt.audit.checkpoint(rt.vault.sessions, force=True)
    if head is None:
        raise CliError(say("cli.audit.checkpoint.empty"))
    sys.stdout.write(head.checkpoint)


@audit_app.command("verify")
def audit_verify(
    against: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="a checkpoint kept elsewhere")
    ] = None,
    key: Annotated[str | None, typer.Option(help="verifier key (default: this vault's)")] = None,
    archive: Annotated[
        list[Path] | None,
        typer.Option(exists=True, dir_okay=False, help="an archive of a detached partition"),
    ] = None,
    archive_only: Annotated[
        bool, typer.Option("--archive-only", help="check the archive files alone (needs --key)")
    ] = False,
) -> None:
    """重算默克尔树并核对所有检查点 / Recompute the tree and check every checkpoint."""
    archives = archive or []
    if archive_only:
        if not key or not archives:
            raise CliError(
                say("cli.audit.verify.archive-only-args"),
                code=2,
            )
        for report in [verify_archive_file(path, key) for path in archives]:
            out.print(_archive_line(report))
        return
    with _runtime() as rt, rt.vault.sessions() as session:
        verifier = key or rt.audit.verifier_key
        reports = [verify_archive_file(path, verifier) for path in archives]
        result = verify_log(
            session,
            verifier,
            external_checkpoint=against.read_text(encoding="utf-8") if against else None,
        )
        verify_archives_against_log(session, reports)
    out.print(
        say("cli.audit.verify.intact", entries=result.entries, checkpoints=result.checkpoints)
        + (say("cli.audit.verify.external-matches") if result.external_checked else "")
        + (say("cli.audit.verify.archived", archived=result.archived) if result.archived else "")
    )
    for report in reports:
        out.print(_archive_line(report))


def _archive_line(report: ArchiveReport) -> str:
    return say(
        "cli.audit.verify.archive-intact",
        name=report.path.name,
        partition=report.partition,
        entries=report.entries,
        from_at=report.from_at.isoformat(),
        to_at=report.to_at.isoformat(),
    )


@partitions_app.command("list")
def partitions_list() -> None:
    """列出月分区及已归档分区 / Attached monthly partitions, and archived ones."""
    with _runtime() as rt, rt.vault.engine.connect() as connection:
        partitions = list_partitions(connection)
        archived = connection.execute(
            select(AuditArchive.partition, AuditArchive.entries, AuditArchive.archived_at).order_by(
                AuditArchive.from_at
            )
        ).all()
    # Plain columns, one partition a line: read by people and by scripts (no truncation).
    headings = (
        say("cli.audit.partitions.list.column.partition"),
        say("cli.audit.partitions.list.column.from"),
        say("cli.audit.partitions.list.column.to"),
        say("cli.audit.partitions.list.column.rows"),
        say("cli.audit.partitions.list.column.size"),
    )
    out.print("\t".join(headings))
    default = say("cli.audit.partitions.list.default")
    for p in partitions:
        out.print(
            "\t".join(
                (
                    p.name,
                    p.lower.isoformat() if p.lower else default,
                    p.upper.isoformat() if p.upper else "-",
                    str(p.rows_estimate),
                    f"{p.total_bytes / 2**20:.1f} MiB",
                )
            )
        )
    for name, entries, archived_at in archived:
        out.print(
            say(
                "cli.audit.partitions.list.archived",
                name=name,
                entries=entries,
                archived_at=archived_at.isoformat(),
            )
        )


@partitions_app.command("ensure")
def partitions_ensure(
    months: Annotated[int, typer.Option(min=1, max=120, help="create this many months ahead")] = 12,
) -> None:
    """预建未来月份的分区（每月运行）/ Create partitions ahead (run monthly)."""
    with _runtime() as rt, rt.vault.engine.begin() as connection:
        created = ensure_partitions(connection, months)
    out.print(say("cli.audit.partitions.ensure.created", created=created))


@partitions_app.command("detach")
def partitions_detach(
    before: Annotated[str, typer.Option(help="archive months ending by YYYY-MM (exclusive)")],
    archive_dir: Annotated[
        Path, typer.Option("--archive", file_okay=False, help="directory for the archive files")
    ],
    drop: Annotated[
        bool, typer.Option("--drop", help="drop the detached tables once archived")
    ] = False,
) -> None:
    """归档并分离旧月分区（仍可验证）/ Archive and detach old months (still verifiable)."""

    def progress(name: str) -> None:
        err.print(say("cli.audit.partitions.detach.progress", name=name))

    with _runtime() as rt:
        done = detach_before(
            rt.vault.sessions,
            rt.audit,
            before,
            archive_dir,
            actor=operator_name(None),
            drop=drop,
            progress=progress,
        )
    if not done:
        out.print(say("cli.audit.partitions.detach.none", before=before))
    for item in done:
        out.print(
            say(
                "cli.audit.partitions.detach.detached",
                partition=item.partition,
                entries=item.entries,
                archive=item.archive,
                file_sha256=item.file_sha256,
            )
        )


@audit_app.command("public-key")
def audit_public_key() -> None:
    """审计日志的验证公钥 / The log's verifier key (C2SP note format)."""
    with _runtime() as rt:
        out.print(rt.audit.verifier_key)


# -- entry point -------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:  # noqa: PLR0911 - one branch per error kind
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, ValidationFailed):
        return "; ".join(f"{p.field}: {p.message(current())}" for p in exc.problems)
    if isinstance(exc, InvalidValue):
        return exc.message.text(current())
    if isinstance(exc, ResidentNotFound):
        return say("cli.error.no-resident")
    if isinstance(exc, UnknownField):
        return say("cli.error.unknown-field", name=exc.name)
    if isinstance(exc, SettingsInvalid):  # one line per problem, under a heading
        heading = say("cli.error.settings-heading", problems=len(exc.problems))
        return heading + "".join(f"\n  {problem}" for problem in exc.problems)
    if isinstance(exc, BackupError | RestoreFailed):
        return str(exc)
    if isinstance(exc, SchemaMismatch):  # start-up refusals name `db upgrade`, both languages
        return exc.message.text(current())
    if isinstance(exc, ConfigurationError | VerificationFailed | AuditError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def main() -> None:
    try:
        app()
    except (CliError, VaultError, AuditError) as exc:
        err.print(f"resident-vault: {_one_line(exc)}", markup=False)
        sys.exit(exc.code if isinstance(exc, CliError) else 1)
    except KeyboardInterrupt:
        err.print(say("cli.error.interrupted"))
        sys.exit(130)
