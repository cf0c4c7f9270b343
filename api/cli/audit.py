"""`resident-vault audit ...`: sign and check the audit log, and keep its monthly partitions.

    resident-vault audit checkpoint                  # sign a tree head now
    resident-vault audit verify [--against FILE]     # recompute the log, check every head
    resident-vault audit verify --archive-only --key KEY --archive FILE ...
    resident-vault audit public-key
    resident-vault audit partitions list | ensure [--months N] | detach --before YYYY-MM
    resident-vault audit tombstones export -o FILE   # from api.cli.backup
    resident-vault audit suspensions list [--json]   # actors suspended by detection
    resident-vault audit suspensions lift ACTOR --reason TEXT [--actor WHO]

Verification needs only the log (and the archive files of detached months); with
`--archive-only` and `--key` it needs no vault at all.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from sqlalchemy import select

from access.runtime import operator_name
from api.cli.backup import tombstones_app
from api.cli.common import (
    Actor,
    AsJson,
    CliError,
    argument,
    err,
    fail,
    group,
    option,
    out,
    print_listing,
    runtime,
)
from api.cli.lang import current, help_text, say
from audit.detection import LiftRefused, active_suspensions, lift_suspension
from audit.models import AuditAlert, AuditArchive, Suspension
from audit.partitions import (
    ArchiveReport,
    detach_before,
    ensure_partitions,
    list_partitions,
    verify_archive_file,
    verify_archives_against_log,
)
from audit.verify import verify_log
from vault.i18n import Message

audit_app = group("cli.help.audit")
audit_app.add_typer(tombstones_app, name="tombstones")
partitions_app = group("cli.help.audit.partitions")
audit_app.add_typer(partitions_app, name="partitions")
suspensions_app = group("cli.help.audit.suspensions")
audit_app.add_typer(suspensions_app, name="suspensions")


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


# -- suspensions ---------------------------------------------------------------------------


def _saw(alert: AuditAlert | None) -> str:
    """The alert's own message (what it saw), in the command line's language."""
    message = (alert.details or {}).get("message") if alert is not None else None
    if not isinstance(message, dict) or not isinstance(message.get("id"), str):
        return "-"
    return Message(message["id"], dict(message.get("values") or {})).text(current())


@suspensions_app.command("list", help=help_text("cli.help.audit.suspensions.list"))
def suspensions_list(as_json: AsJson = False) -> None:
    """Actors suspended pending review, with what the alert saw."""
    with runtime() as rt, rt.vault.sessions() as session:
        found = active_suspensions(session)
        alerts = {
            a.id: a
            for a in session.scalars(
                select(AuditAlert).where(AuditAlert.id.in_([s.alert_id for s in found]))
            )
        }
        rows = [(s, alerts.get(s.alert_id or "")) for s in found]

    def record(row: tuple[Suspension, AuditAlert | None]) -> dict[str, Any]:
        suspension, alert = row
        return {
            "suspension_id": suspension.id,
            "actor": suspension.actor,
            "actor_kind": suspension.actor_kind,
            "since": suspension.created_at.isoformat(),
            "reason": suspension.reason,
            "alert_id": suspension.alert_id,
            "alert_kind": alert.kind if alert else None,
            "details": alert.details if alert else {},
            "saw": _saw(alert),
        }

    if not rows and not as_json:
        out.print(say("cli.audit.suspensions.none"))
        return
    print_listing(
        rows,
        columns=[
            ("cli.audit.suspensions.column.actor", lambda r: r[0].actor),
            ("cli.audit.suspensions.column.since", lambda r: r[0].created_at.isoformat()),
            ("cli.audit.suspensions.column.alert", lambda r: r[0].alert_id or "-"),
            ("cli.audit.suspensions.column.saw", lambda r: _saw(r[1])),
        ],
        record=record,
        as_json=as_json,
    )


@suspensions_app.command("lift", help=help_text("cli.help.audit.suspensions.lift"))
def suspensions_lift(
    actor_id: Annotated[str, argument("cli.help.audit.suspensions.lift.actor-id")],
    reason: Annotated[str, option("cli.help.audit.suspensions.lift.reason", "--reason")],
    actor: Actor = None,
) -> None:
    """Lift a suspension after review; who and why go to the audit log."""
    who = operator_name(actor)
    with runtime() as rt:
        try:
            with rt.transaction() as session:
                lifted = lift_suspension(
                    session,
                    rt.audit,
                    actor_id,
                    lifted_by=who,
                    reason=reason,
                    channel="cli",
                    subject_type="operator",
                )
        except LiftRefused as refused:  # nothing was written: the transaction rolled back
            raise fail(refused.message.text(current())) from None
    out.print(say("cli.audit.suspensions.lifted", actor=actor_id, count=len(lifted), by=who))
