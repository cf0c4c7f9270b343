"""`resident-vault district`: the whole district declared in one file.

    resident-vault district apply district.yaml --dry-run     # what would change
    resident-vault district apply district.yaml --actor ops.li
    resident-vault district export > district.yaml

Applying is one transaction: every change, each with its audit entry (`district.applied`
names them all), or nothing at all at the first refusal. `--dry-run` applies and rolls
back, so its diff is exactly what applying would do (`vault.district`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

from access.runtime import operator_name
from api.cli.common import Actor, AsJson, argument, group, one_line_errors, option, out, runtime
from api.cli.lang import help_text, say
from audit import operator_event
from vault.district import (
    Change,
    apply_district,
    dump_district,
    export_district,
    load_district_file,
)
from vault.errors import DistrictError
from vault.i18n import Message
from vault.mandates import catalogue_categories

district_app = group("cli.help.district")

SIGNS = {"add": "+", "change": "~", "retire": "-"}


def _read(path: Path) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        message = Message("district.unreadable", {"path": str(path), "reason": reason})
        raise DistrictError(message) from None


@district_app.command("apply", help=help_text("cli.help.district.apply"))
def district_apply(
    path: Annotated[Path, argument("cli.help.district.file", metavar="FILE")],
    dry_run: Annotated[bool, option("cli.help.district.dry-run", "--dry-run")] = False,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    who = operator_name(actor)
    with one_line_errors():
        document = load_district_file(_read(path))
        with runtime() as rt, rt.vault.sessions() as session, session.begin():
            catalogue = rt.vault.store.catalogue
            changes = apply_district(
                session,
                document,
                field_categories=catalogue_categories(catalogue),
                category_names=sorted({spec.category for spec in catalogue}),
                actor=who,
            )
            if dry_run:
                session.rollback()
            elif changes:
                details = {"file": path.name, "changes": [c.record() for c in changes]}
                rt.audit.record(session, [operator_event("district.applied", who, details)])
    _print(changes, dry_run=dry_run, as_json=as_json)


def _print(changes: list[Change], *, dry_run: bool, as_json: bool) -> None:
    if as_json:
        for change in changes:
            sys.stdout.write(_json(change.record()) + "\n")
        return
    for change in changes:
        extra = ", ".join(f"{k}={v}" for k, v in change.details.items())
        out.print(
            f"{SIGNS[change.action]} {change.kind} {change.id} {extra}".rstrip(), markup=False
        )
    key = "cli.district.would-apply" if dry_run else "cli.district.applied"
    out.print(say(key, changes=len(changes)), markup=False)


def _json(record: object) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)


@district_app.command("export", help=help_text("cli.help.district.export"))
def district_export(
    output: Annotated[Path | None, option("cli.help.district.output", "--output", "-o")] = None,
) -> None:
    with one_line_errors(), runtime() as rt, rt.vault.sessions() as session:
        text = dump_district(export_district(session))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(say("cli.district.exported", path=str(output)), markup=False)
