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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from access.exports.records import open_export
from access.runtime import Runtime, init_runtime, operator_name
from access.views import RecordView
from api.cli.accounts import accounts_app
from api.cli.acting import AsOrg, AsUser, Justification, Purpose, acting
from api.cli.audit import audit_app
from api.cli.backup import backup_app, restore
from api.cli.clients import clients_app
from api.cli.common import (
    Actor,
    AsJson,
    CliError,
    argument,
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
from api.cli.stats import stats_app
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
app.add_typer(stats_app, name="stats")
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
app.add_typer(accounts_app, name="accounts")
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


@contextmanager
def _destination(output: Path | None) -> Iterator[TextIO]:
    """Stdout, or a file only its owner reads (mode 0600)."""
    if output is None:
        yield sys.stdout
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yield handle
    err.print(say("cli.export.written", output=output))


def _record_document(view: RecordView, fmt: str) -> str:
    """One record as the gate let it out: JSON, or CSV with every cell neutralised."""
    if fmt == "json":
        document = {
            "resident_id": view.resident_id,
            "exported_at": datetime.now(UTC).isoformat(),
            "fields": view.fields,
            "treatments": view.treatments,
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(csv_row(["field", "value", "treatment"]))
    for name, value in view.fields.items():
        # A stored value beginning with `=` is text in a spreadsheet, not a formula.
        cell = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        writer.writerow(csv_row([name, cell, view.treatments.get(name, "")]))
    return buffer.getvalue()


@app.command(help=help_text("cli.help.main.export"))
def export(  # noqa: PLR0917 - a Typer command's parameters are its options
    resident_id: Annotated[
        str | None, argument("cli.help.main.export.resident", metavar="[RESIDENT]")
    ] = None,
    as_user: AsUser = None,
    as_org: AsOrg = None,
    purpose: Purpose = None,
    justification: Justification = None,
    fmt: Annotated[str, option("cli.help.main.export.format", "--format")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """One resident's record as `--as`/`--as-org` may see it (a resident's own copy with
    no RESIDENT), or without RESIDENT a bulk export, fingerprinted and recorded like
    `GET /v1/exports/residents`."""
    if fmt not in ("json", "csv", "ndjson"):
        raise CliError(say("cli.export.bad-format"))
    with (
        one_line_errors(),
        acting(as_user, as_org, purpose, "export", justification) as (gate, access),
    ):
        subject = access.subject
        own = subject.resident_id if subject.type == "resident" else None
        wanted = resident_id or own
        if wanted is not None:
            target = "other"
            if own is not None and wanted == own:
                target = "self"
            elif own is not None and wanted in subject.children:
                target = "child"
            view, _ = gate.read(access, wanted, target=target)
            with _destination(output) as sink:
                sink.write(_record_document(view, "csv" if fmt == "csv" else "json"))
            return
        opened = open_export(gate, access, format="csv" if fmt == "csv" else "ndjson")
        with _destination(output) as sink:
            # Streamed: each batch's entries commit before its lines are written.
            for line in opened.lines:
                sink.write(line)
        err.print(say("cli.export.bulk", export=opened.export_id))


@app.command(help=help_text("cli.help.main.lookup"))
def lookup(  # noqa: PLR0917 - a Typer command's parameters are its options
    purpose: Purpose = None,
    id_number: Annotated[str | None, option("cli.help.main.lookup.id-number")] = None,
    phone: Annotated[str | None, option("cli.help.main.lookup.phone", "--phone")] = None,
    as_user: AsUser = None,
    as_org: AsOrg = None,
    as_json: AsJson = False,
) -> None:
    """Find residents by identifier (blind index), within what policy lets the caller see."""
    given = [
        (v, validator)
        for v, validator in ((id_number, "gb11643"), (phone, "cn_mobile"))
        if v is not None
    ]
    if len(given) != 1:
        raise CliError(say("cli.lookup.one-identifier"))
    value, validator = given[0]
    with one_line_errors():
        with acting(as_user, as_org, purpose, "search") as (gate, access):
            field = next(s.name for s in gate.catalogue.searchable if s.validator == validator)
            # Only the identifier searched by is read (and recorded), as policy treats it.
            listing = gate.search(access, field, value, [field])
        if not listing.items:
            raise CliError(say("cli.lookup.not-found"), code=3)
    for view in listing.items:  # one a line, for scripts; ids as the caller sees them
        if as_json:
            record = {"resident_id": view.resident_id, "fields": view.fields}
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            out.print(view.resident_id)


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
