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

from access.exports.fingerprints import fingerprint_master, mark_key
from access.exports.records import all_exports
from access.exports.trace import LeakUnreadable, read_leak, score_exports, summary
from api.cli.common import argument, fail, option, out, runtime
from api.cli.lang import current, say
from vault.pseudonyms import Pseudonyms

MAX_BYTES = 512 * 1024 * 1024
EXIT_UNREADABLE = 2  # every refusal of `trace`: the file, or no export to compare it with


def trace(
    leaked_file: Annotated[Path, argument("cli.help.main.trace.leaked-file")],
    as_json: Annotated[bool, option("cli.help.main.trace.json", "--json")] = False,
) -> None:
    """Trace a leaked file to the export it came from (registered by api.cli.main)."""
    try:
        if leaked_file.stat().st_size > MAX_BYTES:
            raise fail(say("cli.trace.too-large"), EXIT_UNREADABLE)
        data = leaked_file.read_bytes()
    except OSError as exc:
        raise fail(
            say("cli.trace.unreadable", leaked_file=leaked_file, strerror=exc.strerror),
            EXIT_UNREADABLE,
        ) from exc
    try:
        leak = read_leak(data)
    except LeakUnreadable as exc:
        problem = exc.message.text(current())
        raise fail(
            say("cli.trace.unreadable-leak", file=leaked_file, problem=problem), EXIT_UNREADABLE
        ) from exc
    with runtime() as rt, rt.vault.sessions() as session:
        records = all_exports(session)
        if not records:
            raise fail(say("cli.trace.no-exports"), EXIT_UNREADABLE)
        keyring = rt.vault.keyring
        master = fingerprint_master(keyring)
        scored = score_exports(leak, records, master, mark_key(master), Pseudonyms(keyring))
        answer = summary(scored, leak)
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
