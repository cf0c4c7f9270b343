"""`resident-vault trace LEAKED_FILE [--json]`: which export did a leaked file come from?

Reads the file (NDJSON or CSV, whole or a subset of its rows), scores every export in the
`exports` table (`access.exports.trace`) and prints the most likely one — export id, request id,
organisation, client or user, time — with its posterior probability, its likelihood ratio
to the runner-up, and the runner-up. A file that cannot be read is one line and exit 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from access.exports.fingerprints import fingerprint_master, mark_key
from access.exports.records import all_exports
from access.exports.trace import LeakUnreadable, read_leak, score_exports, summary
from access.runtime import open_runtime
from api.cli.lang import current, say
from api.settings import Settings
from vault.pseudonyms import Pseudonyms

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
MAX_BYTES = 512 * 1024 * 1024


def _fail(message: str) -> typer.Exit:
    err.print(f"resident-vault: {message}", markup=False)
    return typer.Exit(2)


def trace(
    leaked_file: Annotated[Path, typer.Argument(help="泄露的文件 / the leaked file")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON 输出 / print JSON")] = False,
) -> None:
    """追查泄露文件来自哪次导出 / Trace a leaked file to the export it came from."""
    try:
        if leaked_file.stat().st_size > MAX_BYTES:
            raise _fail(say("cli.trace.too-large"))
        data = leaked_file.read_bytes()
    except OSError as exc:
        raise _fail(
            say("cli.trace.unreadable", leaked_file=leaked_file, strerror=exc.strerror)
        ) from exc
    try:
        leak = read_leak(data)
    except LeakUnreadable as exc:
        raise _fail(
            say("cli.trace.unreadable-leak", file=leaked_file, problem=exc.message.text(current()))
        ) from exc
    runtime = open_runtime(Settings())
    try:
        with runtime.vault.sessions() as session:
            records = all_exports(session)
            if not records:
                raise _fail(say("cli.trace.no-exports"))
            master = fingerprint_master(runtime.vault.keyring)
            scored = score_exports(
                leak, records, master, mark_key(master), Pseudonyms(runtime.vault.keyring)
            )
            answer = summary(scored, leak)
    finally:
        runtime.close()
    if as_json:
        out.print(json.dumps(answer, ensure_ascii=False), markup=False)
        return
    _print(answer)


def _print(answer: dict[str, Any]) -> None:
    best = answer["best"]
    who = best["user"] or best["client"] or "-"
    out.print(
        say(
            "cli.trace.read",
            rows=answer["rows"],
            format=answer["format"],
            exports_scored=answer["exports_scored"],
        ),
        markup=False,
    )
    lines = [
        (say("cli.trace.field.export"), best["export_id"]),
        (say("cli.trace.field.request"), best["request_id"]),
        (say("cli.trace.field.organisation"), best["organisation"] or "-"),
        (say("cli.trace.field.who"), who),
        (say("cli.trace.field.purpose"), best["purpose"] or "-"),
        (say("cli.trace.field.time"), best["created_at"]),
        (say("cli.trace.field.confidence"), f"{best['posterior']:.6f}"),
    ]
    ratio = answer["log10_likelihood_ratio_to_runner_up"]
    if ratio is not None:
        shown = "∞" if math.isinf(ratio) else f"10^{ratio:.1f}"
        lines.append((say("cli.trace.field.ratio"), shown))
    for label, value in lines:
        out.print(f"{label}: {value}", markup=False)
    runner = answer["runner_up"]
    if runner:
        out.print(
            say(
                "cli.trace.runner-up",
                export_id=runner["export_id"],
                organisation=runner["organisation"] or "-",
                posterior=runner["posterior"],
            ),
            markup=False,
        )
