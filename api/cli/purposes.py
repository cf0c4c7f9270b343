"""`resident-vault purposes`: the purpose registry, with its legal text in zh-CN and en.

    resident-vault purposes add flood-relief --name "$NAME_ZH" --name-en "Flood relocation" \\
        --basis statutory-duty --law "$LAW_ZH" --law-en "Flood Control Law, Art. 45" \\
        --recipient department --recipient grid_worker --action read --action list \\
        --field name=clear --field phone=clear --field address=clear --retention-days 365
    resident-vault purposes list --json

Adding a purpose grants it to nobody: `mandates grant` does (or a subject type's default
mandate in the policy). Each change is one transaction with its audit entry
(`purpose.added`, by `--actor`) and a new data revision (`vault.purposes`).
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
from api.cli.lang import current, help_text
from api.cli.mandates import split_list
from audit import operator_event
from vault.errors import DistrictError
from vault.i18n import Message
from vault.purposes import PurposeRow, add_purpose, list_purposes, purpose_definition

purposes_app = group("cli.help.purposes")


def treatments(values: list[str] | None) -> dict[str, str]:
    """`name=clear` pairs, repeated or comma-separated."""
    pairs: dict[str, str] = {}
    for item in split_list(values):
        name, sep, treatment = item.partition("=")
        if not sep or not name.strip() or not treatment.strip():
            raise DistrictError(Message("purposes.bad-pair", {"pair": item}))
        pairs[name.strip()] = treatment.strip()
    return pairs


@purposes_app.command("add", help=help_text("cli.help.purposes.add"))
def purposes_add(  # noqa: PLR0917 - a Typer command's parameters are its options
    code: Annotated[str, argument("cli.help.purposes.code", metavar="CODE")],
    name: Annotated[str, option("cli.help.purposes.name", "--name")],
    name_en: Annotated[str, option("cli.help.purposes.name-en", "--name-en")],
    basis: Annotated[str, option("cli.help.purposes.basis", "--basis")],
    law: Annotated[str, option("cli.help.purposes.law", "--law")],
    law_en: Annotated[str, option("cli.help.purposes.law-en", "--law-en")],
    recipient: Annotated[list[str], option("cli.help.purposes.recipient", "--recipient")],
    action: Annotated[list[str], option("cli.help.purposes.action", "--action")],
    field: Annotated[list[str] | None, option("cli.help.purposes.field", "--field")] = None,
    category: Annotated[
        list[str] | None, option("cli.help.purposes.category", "--category")
    ] = None,
    retention_days: Annotated[
        int, option("cli.help.purposes.retention-days", "--retention-days")
    ] = 365,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    who = operator_name(actor)
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        catalogue = rt.vault.store.catalogue
        definition = purpose_definition(
            name_zh=name,
            name_en=name_en,
            legal_basis=basis,
            reference_zh=law,
            reference_en=law_en,
            recipients=split_list(recipient),
            actions=split_list(action),
            fields=treatments(field),
            categories=treatments(category),
            retention_days=retention_days,
            field_names=catalogue.names,
            category_names={spec.category for spec in catalogue},
        )
        row = add_purpose(session, code, definition, actor=who)
        rt.audit.record(session, [operator_event("purpose.added", who, row.record())])
    print_change("cli.purposes.added", row.record(), as_json=as_json, code=row.code)


@purposes_app.command("list", help=help_text("cli.help.purposes.list"))
def purposes_list(
    retired: Annotated[bool, option("cli.help.purposes.list.retired", "--retired")] = False,
    as_json: AsJson = False,
) -> None:
    with one_line_errors(), runtime() as rt, rt.vault.sessions() as session:
        rows = list_purposes(session, retired=retired)
    lang = current()
    print_listing(
        rows,
        columns=[
            ("cli.purposes.column.code", lambda r: r.code),
            ("cli.places.column.name", lambda r: r.name(lang)),
            ("cli.purposes.column.basis", lambda r: str(r.definition.get("legal_basis"))),
            ("cli.purposes.column.actions", lambda r: ",".join(r.definition.get("actions", ()))),
            ("cli.places.column.status", lambda r: status_text(r.retired)),
        ],
        record=PurposeRow.record,
        as_json=as_json,
    )
