"""`resident-vault places`: the district's streets, communities, grids and buildings.

    resident-vault places add street st_east --name "East Street"
    resident-vault places add community cm_riverside --name Riverside --parent st_east
    resident-vault places list --json
    resident-vault places move grid gd_riverside_1 --parent cm_hill
    resident-vault places retire building bd_old_3

Each change is one transaction with its audit entry (`place.added`, `place.moved`,
`place.retired`, by `--actor`); a refusal (an unknown parent, a taken id, a place people
still live in) is one line and writes nothing (`vault.places`).
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
from vault.places import PlaceRow, add_place, list_places, move_place, retire_place

places_app = group("cli.help.places")

Kind = Annotated[str, argument("cli.help.places.kind", metavar="street|community|grid|building")]
PlaceId = Annotated[str, argument("cli.help.places.id", metavar="ID")]


@places_app.command("add", help=help_text("cli.help.places.add"))
def places_add(  # noqa: PLR0917 - a Typer command's parameters are its options
    kind: Kind,
    place_id: PlaceId,
    name: Annotated[str, option("cli.help.places.name", "--name")],
    parent: Annotated[str | None, option("cli.help.places.parent", "--parent")] = None,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        row = add_place(session, kind, place_id, name, parent)
        details = {"kind": kind, "id": place_id, "parent": parent}
        rt.audit.record(session, [operator_event("place.added", operator_name(actor), details)])
    print_change("cli.places.added", row.record(), as_json=as_json, kind=row.kind, id=row.id)


@places_app.command("move", help=help_text("cli.help.places.move"))
def places_move(
    kind: Kind,
    place_id: PlaceId,
    parent: Annotated[str, option("cli.help.places.parent", "--parent")],
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        row = move_place(session, kind, place_id, parent)
        details = {"kind": kind, "id": place_id, "parent": parent}
        rt.audit.record(session, [operator_event("place.moved", operator_name(actor), details)])
    print_change("cli.places.moved", row.record(), as_json=as_json, kind=row.kind, id=row.id)


@places_app.command("retire", help=help_text("cli.help.places.retire"))
def places_retire(
    kind: Kind, place_id: PlaceId, actor: Actor = None, as_json: AsJson = False
) -> None:
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        row = retire_place(session, kind, place_id)
        details = {"kind": kind, "id": place_id}
        rt.audit.record(session, [operator_event("place.retired", operator_name(actor), details)])
    print_change("cli.places.retired", row.record(), as_json=as_json, kind=row.kind, id=row.id)


@places_app.command("list", help=help_text("cli.help.places.list"))
def places_list(
    retired: Annotated[bool, option("cli.help.places.list.retired", "--retired")] = False,
    as_json: AsJson = False,
) -> None:
    with one_line_errors(), runtime() as rt, rt.vault.sessions() as session:
        rows = list_places(session, retired=retired)
    print_listing(
        rows,
        columns=[
            ("cli.places.column.kind", lambda r: r.kind),
            ("cli.places.column.id", lambda r: r.id),
            ("cli.places.column.name", lambda r: r.name),
            ("cli.places.column.parent", lambda r: r.parent or "-"),
            ("cli.places.column.residents", lambda r: str(r.residents)),
            ("cli.places.column.status", lambda r: status_text(r.retired)),
        ],
        record=PlaceRow.record,
        as_json=as_json,
    )
