"""`resident-vault mandates`: which organisation may do what, for which purpose.

    resident-vault mandates grant org_ca_east --purpose subsidy-review \\
        --action read --action list --fields name,id_number,low_income_status --until 2027-12-31
    resident-vault mandates revoke org_ca_east --purpose subsidy-review
    resident-vault mandates list --org org_ca_east --json

Each change is one transaction with its audit entry (`mandate.granted`, `mandate.revoked`,
by `--actor`) and a new data revision, which every engine is on by the next request
(`policies.district`); a refusal is one line and writes nothing (`vault.mandates`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from access.runtime import operator_name
from api.cli.common import (
    Actor,
    AsJson,
    argument,
    group,
    one_line_errors,
    option,
    print_change,
    print_listing,
    runtime,
)
from api.cli.lang import help_text
from audit import operator_event
from vault.district import parse_until
from vault.mandates import (
    MandateRow,
    catalogue_categories,
    grant_mandate,
    list_mandates,
    revoke_mandate,
)

mandates_app = group("cli.help.mandates")

OrgId = Annotated[str, argument("cli.help.mandates.org", metavar="ORG")]
PurposeCode = Annotated[str, option("cli.help.mandates.purpose", "--purpose")]


def split_list(values: list[str] | None) -> list[str]:
    """Repeated options and comma lists alike: `--action read --action list,export`."""
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


@mandates_app.command("grant", help=help_text("cli.help.mandates.grant"))
def mandates_grant(  # noqa: PLR0917 - a Typer command's parameters are its options
    organisation_id: OrgId,
    purpose: PurposeCode,
    action: Annotated[list[str], option("cli.help.mandates.action", "--action")],
    fields: Annotated[str | None, option("cli.help.mandates.fields", "--fields")] = None,
    basis: Annotated[str, option("cli.help.mandates.basis", "--basis")] = "law",
    until: Annotated[str | None, option("cli.help.mandates.until", "--until")] = None,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    who = operator_name(actor)
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        granted, replaced = grant_mandate(
            session,
            organisation_id,
            purpose,
            split_list(action),
            fields=None if fields is None else split_list([fields]),
            basis=basis,
            valid_until=parse_until(until),
            field_categories=catalogue_categories(rt.vault.store.catalogue),
            actor=who,
        )
        details = granted.record() | {"replaced": None if replaced is None else replaced.id}
        rt.audit.record(session, [operator_event("mandate.granted", who, details)])
    print_change(
        "cli.mandates.granted",
        granted.record(),
        as_json=as_json,
        org=granted.organisation,
        purpose=granted.purpose,
        actions=", ".join(granted.actions),
    )


@mandates_app.command("revoke", help=help_text("cli.help.mandates.revoke"))
def mandates_revoke(
    organisation_id: OrgId, purpose: PurposeCode, actor: Actor = None, as_json: AsJson = False
) -> None:
    who = operator_name(actor)
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        revoked = revoke_mandate(session, organisation_id, purpose, actor=who)
        rt.audit.record(session, [operator_event("mandate.revoked", who, revoked.record())])
    print_change(
        "cli.mandates.revoked",
        revoked.record(),
        as_json=as_json,
        org=revoked.organisation,
        purpose=revoked.purpose,
    )


@mandates_app.command("list", help=help_text("cli.help.mandates.list"))
def mandates_list(
    org: Annotated[str | None, option("cli.help.mandates.list.org", "--org")] = None,
    history: Annotated[bool, option("cli.help.mandates.list.history", "--history")] = False,
    as_json: AsJson = False,
) -> None:
    with one_line_errors(), runtime() as rt, rt.vault.sessions() as session:
        rows = list_mandates(session, organisation_id=org, history=history)
    print_listing(
        rows,
        columns=[
            ("cli.mandates.column.org", lambda r: r.organisation),
            ("cli.mandates.column.purpose", lambda r: r.purpose),
            ("cli.mandates.column.actions", lambda r: ",".join(r.actions)),
            ("cli.mandates.column.fields", lambda r: ",".join(r.fields or ("*",))),
            ("cli.mandates.column.basis", lambda r: r.basis),
            ("cli.mandates.column.until", lambda r: _when(r.valid_until)),
            ("cli.mandates.column.revoked", lambda r: _when(r.revoked_at)),
        ],
        record=MandateRow.record,
        as_json=as_json,
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")
