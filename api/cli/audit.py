"""`resident-vault audit ...`: sign and check the audit log, and keep its monthly partitions.

    resident-vault audit checkpoint                  # sign a tree head now
    resident-vault audit verify [--against FILE]     # recompute the log, check every head
    resident-vault audit verify --archive-only --key KEY --archive FILE ...
    resident-vault audit public-key
    resident-vault audit partitions list | ensure [--months N] | detach --before YYYY-MM
    resident-vault audit tombstones export -o FILE   # from api.cli.backup

Verification needs only the log (and the archive files of detached months); with
`--archive-only` and `--key` it needs no vault at all.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from sqlalchemy import select

from access.runtime import operator_name
from api.cli.backup import tombstones_app
from api.cli.common import CliError, err, group, option, out, runtime
from api.cli.lang import help_text, say
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

audit_app = group("cli.help.audit")
audit_app.add_typer(tombstones_app, name="tombstones")
partitions_app = group("cli.help.audit.partitions")
audit_app.add_typer(partitions_app, name="partitions")


@audit_app.command("checkpoint", help=help_text("cli.help.audit.checkpoint"))
def audit_checkpoint() -> None:
    """Integrate new entries and sign a checkpoint now."""
    with runtime() as rt:
        head = rt.audit.checkpoint(rt.vault.sessions, force=True)
    if head is None:
        raise CliError(say("cli.audit.checkpoint.empty"))
    sys.stdout.write(head.checkpoint)


@audit_app.command("verify", help=help_text("cli.help.audit.verify"))
def audit_verify(
    against: Annotated[
        Path | None, option("cli.help.audit.verify.against", exists=True, dir_okay=False)
    ] = None,
    key: Annotated[str | None, option("cli.help.audit.verify.key")] = None,
    archive: Annotated[
        list[Path] | None, option("cli.help.audit.verify.archive", exists=True, dir_okay=False)
    ] = None,
    archive_only: Annotated[
        bool, option("cli.help.audit.verify.archive-only", "--archive-only")
    ] = False,
) -> None:
    """Recompute the tree and check every checkpoint."""
    archives = archive or []
    if archive_only:
        if not key or not archives:
            raise CliError(say("cli.audit.verify.archive-only-args"), code=2)
        for report in [verify_archive_file(path, key) for path in archives]:
            out.print(_archive_line(report))
        return
    with runtime() as rt, rt.vault.sessions() as session:
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


@partitions_app.command("list", help=help_text("cli.help.audit.partitions.list"))
def partitions_list() -> None:
    """Attached monthly partitions, and archived ones."""
    with runtime() as rt, rt.vault.engine.connect() as connection:
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


@partitions_app.command("ensure", help=help_text("cli.help.audit.partitions.ensure"))
def partitions_ensure(
    months: Annotated[int, option("cli.help.audit.partitions.ensure.months", min=1, max=120)] = 12,
) -> None:
    """Create partitions ahead (run monthly)."""
    with runtime() as rt, rt.vault.engine.begin() as connection:
        created = ensure_partitions(connection, months)
    out.print(say("cli.audit.partitions.ensure.created", created=created))


@partitions_app.command("detach", help=help_text("cli.help.audit.partitions.detach"))
def partitions_detach(
    before: Annotated[str, option("cli.help.audit.partitions.detach.before")],
    archive_dir: Annotated[
        Path, option("cli.help.audit.partitions.detach.archive", "--archive", file_okay=False)
    ],
    drop: Annotated[bool, option("cli.help.audit.partitions.detach.drop", "--drop")] = False,
) -> None:
    """Archive and detach old months (still verifiable)."""

    def progress(name: str) -> None:
        err.print(say("cli.audit.partitions.detach.progress", name=name))

    with runtime() as rt:
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
        # The message names the fields of Detached it shows.
        out.print(say("cli.audit.partitions.detach.detached", **asdict(item)))


@audit_app.command("public-key", help=help_text("cli.help.audit.public-key"))
def audit_public_key() -> None:
    """The log's verifier key (C2SP note format)."""
    with runtime() as rt:
        out.print(rt.audit.verifier_key)
