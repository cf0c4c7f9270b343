"""The `resident-vault` command line.

Every error ends in one line on stderr and a non-zero exit; nothing is left half-done,
because each data command runs in one transaction (rotations in resumable batches).
Text is Simplified Chinese by default; `--lang en` or VAULT_LANG=en for English.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
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

from api.logging import configure_logging
from vault.config import VaultSettings
from vault.context import Vault, init_vault, open_vault
from vault.crypto import Suite
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

app = typer.Typer(
    help="居民数据保险库 / Resident data vault",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="密钥管理 / Key management", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_lang = {"value": os.environ.get("VAULT_LANG", "zh")}


def t(zh: str, en: str) -> str:
    """The message in the chosen language (Simplified Chinese unless told otherwise)."""
    return en if _lang["value"].startswith("en") else zh


class CliError(Exception):
    """A one-line message for the user and an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@app.callback()
def _main(
    lang: Annotated[str, typer.Option(help="zh | en", envvar="VAULT_LANG")] = "zh",
    log_json: Annotated[bool, typer.Option("--log-json/--log-console")] = True,
) -> None:
    _lang["value"] = lang
    configure_logging(json=log_json)


def _settings() -> VaultSettings:
    return VaultSettings()


@contextmanager
def _vault() -> Iterator[Vault]:
    vault = open_vault(_settings())
    try:
        yield vault
    finally:
        vault.close()


def _actor(explicit: str | None) -> str:
    return explicit or f"cli:{getpass.getuser()}"


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
    if settings.keyring_path.exists():
        raise CliError(
            t(
                f"{settings.home} 已初始化；不会覆盖已有密钥",
                f"{settings.home} is already initialised; keys are never overwritten",
            )
        )
    vault = init_vault(settings)
    try:
        out.print(
            t(
                f"已创建数据目录 {settings.home}（密钥、数据库）",
                f"created data directory {settings.home} (keys, database)",
            )
        )
        if not demo:
            return
        with _progress() as bar, vault.sessions() as session:
            task = bar.add_task(t("生成演示居民", "generating demo residents"), total=residents)

            def commit_batch() -> None:
                session.commit()
                session.begin()

            session.begin()
            summary = populate(
                session,
                vault.store,
                residents,
                progress=lambda n: bar.advance(task, n),
                commit=commit_batch,
            )
            session.commit()
        out.print(
            t(
                f"演示数据：{summary.communities} 个社区，{summary.grids} 个网格，"
                f"{summary.buildings} 栋楼，{summary.organisations} 个机构，"
                f"{summary.households} 户，{summary.residents} 位居民（均为虚构）",
                f"demo data: {summary.communities} communities, {summary.grids} grids, "
                f"{summary.buildings} buildings, {summary.organisations} organisations, "
                f"{summary.households} households, {summary.residents} residents (all fictional)",
            )
        )
    finally:
        vault.close()


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

    from api.app import create_app  # noqa: PLC0415

    if demo and not _settings().keyring_path.exists():
        _initialise(True, residents, _settings().crypto_suite)
    application = create_app(_settings())
    out.print(
        t(
            f"服务地址 http://{host}:{port}/ （字段目录 /v1/fields）",
            f"serving on http://{host}:{port}/ (field catalogue at /v1/fields)",
        )
    )
    uvicorn.run(application, host=host, port=port, log_level="warning")


# -- data commands -----------------------------------------------------------------------


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate only")] = False,
    actor: Annotated[str | None, typer.Option(help="who is importing")] = None,
) -> None:
    """从 CSV 导入居民（逐行校验，全部成功才写入）/ Import residents from CSV, all or nothing."""
    provenance = Provenance(actor=_actor(actor), channel="import")
    with _vault() as vault, _progress() as bar, vault.sessions() as session, session.begin():
        task = bar.add_task(t("校验", "validating"), total=None)
        report = import_csv(
            session,
            vault.store,
            file,
            provenance,
            dry_run=dry_run,
            progress=lambda n: bar.advance(task, n),
        )
        if not report.ok:
            session.rollback()
    for error in report.errors:
        err.print(
            t(
                f"第 {error.line} 行 {error.column}：{error.message_zh}",
                f"line {error.line} {error.column}: {error.message_en}",
            )
        )
    if not report.ok:
        raise CliError(
            t(
                f"{len(report.errors)} 处错误，共 {report.rows} 行；未导入任何数据",
                f"{len(report.errors)} errors in {report.rows} rows; nothing imported",
            )
        )
    if dry_run:
        out.print(
            t(
                f"校验通过：{report.rows} 行（试运行，未写入）",
                f"all {report.rows} rows valid (dry run, nothing written)",
            )
        )
    else:
        out.print(
            t(
                f"已导入 {report.imported} 位居民，{report.households} 户",
                f"imported {report.imported} residents in {report.households} households",
            )
        )


@app.command()
def export(
    resident_id: Annotated[str, typer.Argument()],
    fmt: Annotated[str, typer.Option("--format", help="json | csv")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """导出居民本人的完整记录（可携带权）/ Export a resident's own record (portability)."""
    if fmt not in ("json", "csv"):
        raise CliError(t("格式须为 json 或 csv", "format must be json or csv"))
    with _vault() as vault, vault.sessions() as session:
        record = vault.store.read(session, resident_id)
        provenance = vault.store.provenance(session, resident_id)
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
        writer.writerow(["field", "value", "written_by", "channel", "written_at", "verified_at"])
        for name, value in record.items():
            p = document["provenance"][name]
            cell = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            writer.writerow(
                [name, cell, p["written_by"], p["channel"], p["written_at"], p["verified_at"] or ""]
            )
        text = buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        err.print(t(f"已写入 {output}", f"written to {output}"))


@app.command()
def lookup(
    id_number: Annotated[str | None, typer.Option("--id-number", help="居民身份证号")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="手机号码")] = None,
) -> None:
    """按身份证号或手机号查找居民编号（盲索引）/ Find resident ids by identifier (blind index)."""
    given = [
        (v, validator)
        for v, validator in ((id_number, "gb11643"), (phone, "cn_mobile"))
        if v is not None
    ]
    if len(given) != 1:
        raise CliError(
            t("请只给出 --id-number 或 --phone 之一", "give exactly one of --id-number or --phone")
        )
    value, validator = given[0]
    with _vault() as vault, vault.sessions() as session:
        field = next(s.name for s in vault.store.catalogue.searchable if s.validator == validator)
        ids = vault.store.find(session, field, value)
    if not ids:
        raise CliError(t("未找到", "not found"), code=3)
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
        raise CliError(t("删除不可恢复；确认请加 --yes", "erasure cannot be undone; add --yes"))
    with _vault() as vault, vault.sessions() as session, session.begin():
        vault.store.erase(session, resident_id, _actor(actor), reason)
    out.print(
        t(
            f"已删除 {resident_id}：数据密钥已销毁，留有删除记录",
            f"erased {resident_id}: data key destroyed, tombstone kept",
        )
    )


@app.command()
def quality() -> None:
    """列出疑似占位或错误的数据 / List values that look like placeholders or errors."""
    with _vault() as vault, vault.sessions() as session:
        issues = run_checks(session, vault.store)
    if not issues:
        out.print(t("未发现问题", "no problems found"))
        return
    table = Table(
        t("居民编号", "resident"), t("字段", "field"), t("问题", "problem"), t("说明", "detail")
    )
    for issue in issues:
        table.add_row(issue.resident_id, issue.field, issue.code, issue.message(_lang["value"]))
    out.print(table)
    out.print(t(f"共 {len(issues)} 处", f"{len(issues)} findings"))


@app.command()
def fields() -> None:
    """字段目录 / The field catalogue."""
    from vault.catalogue import default_catalogue  # noqa: PLC0415

    lang = _lang["value"]
    table = Table(
        t("字段", "field"),
        t("名称", "label"),
        t("类别", "category"),
        t("敏感", "sensitive"),
        t("级别", "grade"),
        t("可检索", "searchable"),
    )
    catalogue = default_catalogue()
    for spec in catalogue:
        table.add_row(
            spec.name,
            spec.label.text(lang),
            catalogue.categories[spec.category].text(lang),
            t("是", "yes") if spec.sensitive else "",
            spec.grade,
            t("是", "yes") if spec.searchable else "",
        )
    out.print(table)


# -- keys --------------------------------------------------------------------------------


@keys_app.command("rotate")
def keys_rotate(
    data_keys: Annotated[
        bool,
        typer.Option(
            "--data-keys", help="also re-seal every field under new per-resident data keys"
        ),
    ] = False,
    destroy_retired: Annotated[
        bool, typer.Option("--destroy-retired", help="destroy KEKs no key uses any more")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 500,
) -> None:
    """轮换密钥（可中断后续跑）/ Rotate keys online; an interrupted run resumes."""
    with _vault() as vault, _progress() as bar:
        task = bar.add_task(t("重新封装数据密钥", "rewrapping data keys"), total=None)
        report = rotate_kek(
            vault.sessions,
            vault.store,
            batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        out.print(
            t(
                f"主密钥已轮换为 {report.target}，重新封装 {report.processed} 个数据密钥"
                + ("（续跑）" if report.resumed else ""),
                f"key-encryption key is now {report.target}; rewrapped {report.processed}"
                " data keys" + (" (resumed)" if report.resumed else ""),
            )
        )
        if data_keys:
            task = bar.add_task(t("更换数据密钥", "re-sealing fields"), total=None)
            dk = rotate_data_keys(
                vault.sessions,
                vault.store,
                batch_size=max(1, batch_size // 2),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            out.print(
                t(
                    f"已为 {dk.processed} 位居民更换数据密钥",
                    f"new data keys for {dk.processed} residents",
                )
            )
        if destroy_retired:
            destroyed = destroy_retired_keks(vault.sessions, vault.store)
            out.print(
                t(f"已销毁 {len(destroyed)} 个旧主密钥", f"destroyed {len(destroyed)} old KEKs")
            )


@keys_app.command("list")
def keys_list() -> None:
    """列出主密钥 / List key-encryption keys (ids and dates, never key material)."""
    with _vault() as vault:
        for info in vault.keyring.keks():
            mark = t("（当前）", " (active)") if info.active else ""
            out.print(f"{info.kek_id}  {info.suite.value}  {info.created_at.isoformat()}{mark}")


# -- entry point -------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:  # noqa: PLR0911 - one branch per error kind
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, ValidationFailed):
        return "; ".join(f"{p.field}: {p.message(_lang['value'])}" for p in exc.problems)
    if isinstance(exc, InvalidValue):
        return t(exc.message_zh, exc.message_en)
    if isinstance(exc, ResidentNotFound):
        return t("未找到该居民（或已删除）", "no such resident (or erased)")
    if isinstance(exc, UnknownField):
        return t(f"未知字段 {exc.name}", f"unknown field {exc.name}")
    if isinstance(exc, ConfigurationError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def main() -> None:
    try:
        app()
    except (CliError, VaultError) as exc:
        err.print(f"resident-vault: {_one_line(exc)}", markup=False)
        sys.exit(exc.code if isinstance(exc, CliError) else 1)
    except KeyboardInterrupt:
        err.print(
            t(
                "resident-vault: 已中断；重新运行同一命令即可续跑",
                "resident-vault: interrupted; run the same command again to resume",
            )
        )
        sys.exit(130)
