"""`resident-vault orgs`: the organisations of the district and the places they serve.

    resident-vault orgs add org_ca_east --kind department --name "Civil affairs (East)" \\
        --place cm_river --place cm_hill
    resident-vault orgs add org_river_property --kind property_company --name "Riverside" \\
        --building bd_river_1
    resident-vault orgs list --json
    resident-vault orgs retire org_river_property

Each change is one transaction with its audit entry (`organisation.added`,
`organisation.retired`, by `--actor`); a refusal is one line and writes nothing
(`vault.organisations`).
"""

from __future__ import annotations

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
    status_text,
)
from api.cli.lang import help_text
from audit import operator_event
from vault.organisations import (
    OrganisationRow,
    add_organisation,
    list_organisations,
    retire_organisation,
)

orgs_app = group("cli.help.orgs")

OrgId = Annotated[str, argument("cli.help.orgs.id", metavar="ID")]


@orgs_app.command("add", help=help_text("cli.help.orgs.add"))
def orgs_add(  # noqa: PLR0917 - a Typer command's parameters are its options
    organisation_id: OrgId,
    kind: Annotated[str, option("cli.help.orgs.kind", "--kind")],
    name: Annotated[str, option("cli.help.orgs.name", "--name")],
    name_en: Annotated[str | None, option("cli.help.orgs.name-en", "--name-en")] = None,
    place: Annotated[list[str] | None, option("cli.help.orgs.place", "--place")] = None,
    building: Annotated[list[str] | None, option("cli.help.orgs.building", "--building")] = None,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        row = add_organisation(
            session,
            organisation_id,
            kind,
            name,
            name_en=name_en,
            communities=place or (),
            buildings=building or (),
        )
        details = {"id": row.id, "kind": kind, "communities": list(row.communities)}
        details["buildings"] = list(row.buildings)
        event = operator_event("organisation.added", operator_name(actor), details)
        rt.audit.record(session, [event])
    print_change("cli.orgs.added", row.record(), as_json=as_json, id=row.id)


@orgs_app.command("retire", help=help_text("cli.help.orgs.retire"))
def orgs_retire(organisation_id: OrgId, actor: Actor = None, as_json: AsJson = False) -> None:
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        row = retire_organisation(session, organisation_id)
        event = operator_event("organisation.retired", operator_name(actor), {"id": row.id})
        rt.audit.record(session, [event])
    print_change("cli.orgs.retired", row.record(), as_json=as_json, id=row.id)


@orgs_app.command("list", help=help_text("cli.help.orgs.list"))
def orgs_list(
    retired: Annotated[bool, option("cli.help.orgs.list.retired", "--retired")] = False,
    as_json: AsJson = False,
) -> None:
    with one_line_errors(), runtime() as rt, rt.vault.sessions() as session:
        rows = list_organisations(session, retired=retired)
    print_listing(
        rows,
        columns=[
            ("cli.places.column.id", lambda r: r.id),
            ("cli.places.column.kind", lambda r: r.kind),
            ("cli.places.column.name", lambda r: r.name_zh),
            ("cli.orgs.column.serves", lambda r: " ".join((*r.communities, *r.buildings)) or "-"),
            ("cli.places.column.status", lambda r: status_text(r.retired)),
        ],
        record=OrganisationRow.record,
        as_json=as_json,
    )
