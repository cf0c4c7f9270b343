"""`resident-vault stats ...`: the statistics tokens (vault/stat_tokens.py).

    resident-vault stats backfill [--batch-size N] [--json]   # resumable

A vault upgraded to migration 0016 holds residents without statistics tokens; until the
backfill has run, statistics of those fields decrypt them (correct, only slow). Tokens and
values are never printed; the run is recorded in the audit log.
"""

from __future__ import annotations

from typing import Annotated

import typer

from access.runtime import operator_name
from api.cli.common import Actor, AsJson, group, print_change, progress, runtime
from api.cli.lang import help_text, say
from audit import operator_event
from vault.stat_tokens import backfill

stats_app = group("cli.help.stats")


@stats_app.command("backfill", help=help_text("cli.help.stats.backfill"))
def stats_backfill(
    batch_size: Annotated[int, typer.Option(min=1)] = 500,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    """Token the values stored before the statistics tokens existed; resumes."""
    with runtime() as rt, progress() as bar:
        vault = rt.vault
        task = bar.add_task(say("cli.stats.backfill.progress"), total=None)
        report = backfill(
            vault.sessions,
            vault.store,
            batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        details = {
            "fields": report.fields,
            "residents": report.processed,
            "resumed": report.resumed,
        }
        with rt.transaction() as session:
            rt.audit.record(
                session, [operator_event("stats.tokens_backfilled", operator_name(actor), details)]
            )
    print_change(
        "cli.stats.backfill.done",
        details,
        as_json=as_json,
        fields=", ".join(report.fields) or "-",
        processed=report.processed,
    )
