"""The `resident-vault` command line: the root app, its own commands (init, serve, import,
export, lookup, erase, quality, fields) and the command groups, one module each (keys,
audit, clients, policy, config, backup, db; trace and restore are root commands of their
modules). What the groups share is in `api.cli.common`.

Every error ends in one line on stderr and a non-zero exit; nothing is left half-done,
because each data command runs in one transaction (rotations in resumable batches).
Text is Simplified Chinese by default; `--lang en` or VAULT_LANG=en for English (help
follows VAULT_LANG only: see `api.cli.lang`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from access.runtime import Runtime, init_runtime, operator_name
from api.cli.audit import audit_app
from api.cli.backup import backup_app, restore
from api.cli.clients import clients_app
from api.cli.common import (
    Actor,
    AsJson,
    CliError,
    err,
    group,
    one_line_errors,
    operator_access,
    option,
    out,
    print_listing,
    progress,
    runtime,
    settings,
    table,
)
from api.cli.config import config_app
from api.cli.db import db_app
from api.cli.district import district_app
from api.cli.keys import keys_app
from api.cli.lang import choose, current, help_text, say
from api.cli.mandates import mandates_app
from api.cli.orgs import orgs_app
from api.cli.places import places_app
from api.cli.policy import policy_app
from api.cli.purposes import purposes_app
from api.cli.trace import trace
from api.logging import configure_logging
from api.oauth.keys import ensure_oauth_keys
from api.oauth.service import init_demo_credentials
from audit import operator_event
from vault.context import keyring_exists
from vault.crypto import Suite
from vault.importer import import_csv
from vault.quality import run_checks
from vault.services import Provenance
from vault.spreadsheet import csv_row

app = group("cli.help.main", pretty_exceptions_enable=False, add_completion=False)
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(clients_app, name="clients")
app.add_typer(policy_app, name="policy")
app.add_typer(config_app, name="config")
app.add_typer(backup_app, name="backup")
app.add_typer(db_app, name="db")
app.add_typer(places_app, name="places")
app.add_typer(orgs_app, name="orgs")
app.add_typer(mandates_app, name="mandates")
app.add_typer(purposes_app, name="purposes")
app.add_typer(district_app, name="district")
app.command("restore", help=help_text("cli.help.main.restore"))(restore)
app.command("trace", help=help_text("cli.help.main.trace"))(trace)


@app.callback()
def _main(
    lang: Annotated[str | None, option("cli.help.main.lang", envvar="VAULT_LANG")] = None,
    log_json: Annotated[bool, typer.Option("--log-json/--log-console")] = True,
) -> None:
    choose(lang)
    configure_logging(json=log_json)


# -- init and serve ----------------------------------------------------------------------


def _initialise(demo: bool, residents: int, suite: Suite) -> None:
    from vault.demo import populate  # noqa: PLC0415 - demo data only when asked for

    configured = settings().model_copy(update={"crypto_suite": suite})
    if keyring_exists(configured):
        raise CliError(say("cli.init.already-initialised", home=configured.home))
    rt = init_runtime(configured)
    try:
        ensure_oauth_keys(rt)
        out.print(say("cli.init.created", home=configured.home))
        details: dict[str, Any] = {"suite": suite.value, "demo": demo}
        if demo:
            with progress() as bar, rt.vault.sessions() as session:
                task = bar.add_task(say("cli.init.progress"), total=residents)

                def commit_batch() -> None:
                    session.commit()
                    session.begin()

                session.begin()
                summary = populate(
                    session,
                    rt.vault.store,
                    residents,
                    progress=lambda n: bar.advance(task, n),
                    commit=commit_batch,
                )
                session.commit()
            details["demo_residents"] = summary.residents
            credentials = init_demo_credentials(rt)
            _print_demo_accounts(json.loads(credentials.read_text(encoding="utf-8")))
            # Printed once; the file (mode 0600) is the only other copy.
            out.print(say("cli.init.secrets-written", credentials=credentials))
            # The message names the fields of DemoSummary it shows.
            out.print(say("cli.init.demo-summary", **asdict(summary)))
        with rt.transaction() as session:
            rt.audit.record(session, [operator_event("vault.initialised", None, details)])
        rt.audit.checkpoint(rt.vault.sessions)
    finally:
        rt.close()


def _print_demo_accounts(data: dict[str, Any]) -> None:
    people = table(
        "cli.init.column.role",
        "cli.init.column.username",
        "cli.init.column.password",
        title=say("cli.init.logins-title"),
    )
    for user in data.get("users", []):
        people.add_row(user["role"], user["username"], user["password"])
    out.print(people)
    # Secrets are long: one line each, never cut to the terminal's width.
    out.print(say("cli.init.clients-heading"))
    for client in data.get("clients", []):
        out.print(f"  {client['client_id']} {client['client_secret']} {client['organisation']}")


@app.command(help=help_text("cli.help.main.init"))
def init(
    demo: Annotated[bool, option("cli.help.main.init.demo")] = False,
    residents: Annotated[int, option("cli.help.main.init.residents", min=0)] = 200,
    suite: Annotated[Suite, option("cli.help.main.init.suite")] = Suite.AES_256_GCM,
) -> None:
    """Create the data directory, keys and database."""
    _initialise(demo, residents, suite)


@app.command(help=help_text("cli.help.main.serve"))
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    demo: Annotated[bool, option("cli.help.main.serve.demo")] = False,
    residents: Annotated[int, typer.Option(min=0)] = 200,
) -> None:
    """Run the HTTP service."""
    import uvicorn  # noqa: PLC0415

    from api.http.app import create_app  # noqa: PLC0415
    from api.http.tls import TransportConfigError, uvicorn_options  # noqa: PLC0415
    from api.pages.clients import listen_origins  # noqa: PLC0415

    # TLS files are checked before anything starts (VAULT_TLS_*, docs/transport-security.md).
    try:
        transport = uvicorn_options(settings())
    except TransportConfigError as exc:
        raise CliError(exc.message.text(current())) from None
    scheme = transport.scheme
    public = settings().public_origins  # VAULT_PUBLIC_URL
    # Tokens name the server that issued them; default the issuer to where people reach
    # this one (the public URL), else to where it listens.
    os.environ.setdefault(
        "VAULT_OAUTH_ISSUER", public[0] if public else f"{scheme}://{host}:{port}"
    )
    if demo and not keyring_exists(settings()):  # a key file, or a keyring in the HSM
        _initialise(True, residents, settings().crypto_suite)
    application = create_app(settings())
    out.print(say("cli.serve.serving", scheme=scheme, host=host, port=port))
    _follow_pages_origins(
        application.state.runtime, [*public, *(listen_origins(scheme, host, port) if demo else [])]
    )
    # Uvicorn re-raises SIGTERM once it has stopped gracefully; a clean stop exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        # SIGTERM: stop accepting, let in-flight requests and their audit entries finish
        # (up to the grace), then the lifespan signs a checkpoint that covers them.
        timeout_graceful_shutdown=math.ceil(settings().shutdown_grace_seconds),
        **transport.uvicorn_kwargs,
    )


def _follow_pages_origins(rt: Runtime, origins: list[str]) -> None:
    """Give the pages' client the callback addresses of the origins people use (the
    public URL; with --demo also where this listens), so a port or a host name that
    changed needs no manual registration (docs/deployment.md §9)."""
    from api.oauth.service import RegistrationError  # noqa: PLC0415
    from api.pages.clients import follow_origins  # noqa: PLC0415

    if not origins:
        out.print(say("cli.serve.pages-unconfigured"))
        return
    try:
        with rt.transaction() as session:
            done = follow_origins(session, rt, origins)
    except RegistrationError as exc:
        raise CliError(exc.message.text(current())) from None
    out.print(
        say("cli.serve.pages", origins=" ".join(dict.fromkeys(origins)), client=done.client_id)
    )
    for old in done.revoked:
        out.print(say("cli.serve.pages-revoked", client=old))
    if done.missing_scopes:
        err.print(
            say(
                "cli.serve.pages-scopes",
                client=done.client_id,
                scopes=" ".join(done.missing_scopes),
            )
        )


def _exit_cleanly(_signal: int, _frame: object) -> None:
    raise SystemExit(0)


# -- data commands -----------------------------------------------------------------------


@app.command("import", help=help_text("cli.help.main.import"))
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    dry_run: Annotated[bool, option("cli.help.main.import.dry-run", "--dry-run")] = False,
    actor: Actor = None,
    purpose: Annotated[str, option("cli.help.main.import.purpose")] = "registration",
) -> None:
    """Import residents from CSV, all or nothing."""
    who = operator_name(actor)
    provenance = Provenance(actor=who, channel="import")
    with runtime() as rt, progress() as bar, rt.transaction() as session:
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
                    operator_access(
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


@app.command(help=help_text("cli.help.main.export"))
def export(
    resident_id: Annotated[str, typer.Argument()],
    fmt: Annotated[str, option("cli.help.main.export.format", "--format")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    actor: Actor = None,
) -> None:
    """Export a resident's own record (portability)."""
    if fmt not in ("json", "csv"):
        raise CliError(say("cli.export.bad-format"))
    with runtime() as rt, rt.transaction() as session:
        record = rt.vault.store.read(session, resident_id)
        provenance = rt.vault.store.provenance(session, resident_id)
        # PIPL Art. 45: the resident's own copy. Recorded before anything is written out.
        rt.audit.record(
            session,
            [
                operator_access(
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


@app.command(help=help_text("cli.help.main.lookup"))
def lookup(
    purpose: Annotated[str, option("cli.help.main.lookup.purpose")],
    id_number: Annotated[str | None, option("cli.help.main.lookup.id-number")] = None,
    phone: Annotated[str | None, option("cli.help.main.lookup.phone", "--phone")] = None,
    actor: Actor = None,
) -> None:
    """Find resident ids by identifier (blind index)."""
    given = [
        (v, validator)
        for v, validator in ((id_number, "gb11643"), (phone, "cn_mobile"))
        if v is not None
    ]
    if len(given) != 1:
        raise CliError(say("cli.lookup.one-identifier"))
    value, validator = given[0]
    with runtime() as rt, rt.transaction() as session:
        catalogue = rt.vault.store.catalogue
        field = next(s.name for s in catalogue.searchable if s.validator == validator)
        ids = rt.vault.store.find(session, field, value)
        who = operator_name(actor)
        drafts = [operator_access("search", who, rid, purpose, {field: "matched"}) for rid in ids]
        if not ids:
            drafts = [operator_event("search.no_match", who, {"by": field}, purpose=purpose)]
        rt.audit.record(session, drafts)
    if not ids:
        raise CliError(say("cli.lookup.not-found"), code=3)
    for resident_id in ids:
        out.print(resident_id)


@app.command(help=help_text("cli.help.main.erase"))
def erase(
    resident_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, option("cli.help.main.erase.reason")],
    yes: Annotated[bool, option("cli.help.main.erase.yes", "--yes")] = False,
    actor: Actor = None,
) -> None:
    """Erase a resident by destroying their data key."""
    if not yes:
        raise CliError(say("cli.erase.needs-yes"))
    who = operator_name(actor)
    with runtime() as rt, rt.transaction() as session:
        rt.vault.store.erase(session, resident_id, who, reason)
        erased = operator_event("resident.erased", who, {"reason": reason}, resident_id=resident_id)
        rt.audit.record(session, [erased])
    out.print(say("cli.erase.erased", resident_id=resident_id))


@app.command(help=help_text("cli.help.main.quality"))
def quality(actor: Actor = None) -> None:
    """List values that look like placeholders or errors."""
    who = operator_name(actor)
    with runtime() as rt, rt.transaction() as session:
        issues = run_checks(session, rt.vault.store)
        n = len(issues)
        rt.audit.record(
            session,
            [
                operator_access(
                    "quality-check",
                    who,
                    issue.resident_id,
                    "data-quality",
                    {issue.field: "checked"},
                    reason=issue.code,
                )
                for issue in issues
            ]
            + [operator_event("quality.checked", who, {"findings": n}, purpose="data-quality")],
        )
    if not issues:
        out.print(say("cli.quality.none-found"))
        return
    found = table(
        "cli.quality.column.resident",
        "cli.quality.column.field",
        "cli.quality.column.problem",
        "cli.quality.column.detail",
    )
    for issue in issues:
        found.add_row(issue.resident_id, issue.field, issue.code, issue.message(current()))
    out.print(found)
    out.print(say("cli.quality.total", issues=n))


@app.command(help=help_text("cli.help.main.fields"))
def fields(as_json: AsJson = False) -> None:
    """The field catalogue, with each enum's allowed values (what a CSV import accepts)."""
    from vault.catalogue import FieldSpec, default_catalogue  # noqa: PLC0415

    lang = current()
    catalogue = default_catalogue()

    def values(spec: FieldSpec) -> str:
        return ", ".join(f"{code} ({label.text(lang)})" for code, label in spec.values.items())

    print_listing(
        list(catalogue),
        columns=[
            ("cli.fields.column.field", lambda spec: spec.name),
            ("cli.fields.column.label", lambda spec: spec.label.text(lang)),
            (
                "cli.fields.column.category",
                lambda spec: catalogue.categories[spec.category].text(lang),
            ),
            (
                "cli.fields.column.sensitive",
                lambda spec: say("cli.fields.yes") if spec.sensitive else "",
            ),
            ("cli.fields.column.grade", lambda spec: spec.grade),
            (
                "cli.fields.column.searchable",
                lambda spec: say("cli.fields.yes") if spec.searchable else "",
            ),
            ("cli.fields.column.values", values),
        ],
        # The public metadata of GET /v1/fields: "values" only for an enum, with both labels.
        record=lambda spec: spec.public_metadata(),
        as_json=as_json,
    )


# -- entry point -------------------------------------------------------------------------


def main() -> None:
    """`resident-vault`: the app, with every expected error as one line (common.one_line)."""
    try:
        with one_line_errors():
            app()
    except KeyboardInterrupt:
        err.print(say("cli.error.interrupted"))
        sys.exit(130)
