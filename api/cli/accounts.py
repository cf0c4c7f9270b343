"""`resident-vault accounts`: the district's staff accounts (grid and community workers,
auditors, operators).

    resident-vault accounts add grid.east1 --org org_rc_east --role grid_worker --grid gd_east_1
    resident-vault accounts add ops.li --org org_district --role operator --password-stdin
    resident-vault accounts list --json
    resident-vault accounts disable grid.east1
    resident-vault accounts reset-password ops.li

A password the vault makes is printed once and kept nowhere (only its Argon2 hash);
`--password-stdin` reads one instead. Each change is one transaction with its audit entry
(`account.added`, `account.disabled`, `account.password_reset`, by `--actor`); a refusal
(an unknown or retired organisation, a grid outside its places, an unknown role, a taken
username, a weak password) is one line and writes nothing (`vault.accounts`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

from access.runtime import operator_name
from api.cli.common import (
    Actor,
    AsJson,
    argument,
    fail,
    group,
    one_line_errors,
    option,
    out,
    print_change,
    print_listing,
    runtime,
)
from api.cli.lang import help_text, say
from api.oauth.service import end_logins
from audit import operator_event
from vault.accounts import (
    Account,
    AccountChange,
    add_account,
    disable_account,
    list_accounts,
    reset_password,
)

accounts_app = group("cli.help.accounts")

Username = Annotated[str, argument("cli.help.accounts.username", metavar="USERNAME")]
PasswordStdin = Annotated[bool, option("cli.help.accounts.password-stdin", "--password-stdin")]


def _stdin_password(wanted: bool) -> str | None:
    """The password on standard input's first line (its line ending removed), if asked for;
    never echoed, never an argument (a process list would show it)."""
    if not wanted:
        return None
    given = sys.stdin.readline().rstrip("\r\n")
    if not given:
        raise fail(say("cli.accounts.no-password"))
    return given


def _show(message_id: str, change: AccountChange, *, as_json: bool, **values: Any) -> None:
    """The change's line, then a one-time password once; with `--json` one object, the
    password in it."""
    record = change.account.record()
    if change.password is not None:
        record["one_time_password"] = change.password
    print_change(message_id, record, as_json=as_json, username=change.account.username, **values)
    if change.password is not None and not as_json:
        out.print(say("cli.accounts.one-time-password", password=change.password), markup=False)


@accounts_app.command("add", help=help_text("cli.help.accounts.add"))
def accounts_add(  # noqa: PLR0917 - a Typer command's parameters are its options
    username: Username,
    organisation: Annotated[str, option("cli.help.accounts.org", "--org")],
    role: Annotated[str, option("cli.help.accounts.role", "--role")],
    grid: Annotated[str | None, option("cli.help.accounts.grid", "--grid")] = None,
    community: Annotated[str | None, option("cli.help.accounts.community", "--community")] = None,
    password_stdin: PasswordStdin = False,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    password = _stdin_password(password_stdin)
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        change = add_account(
            session,
            operator_name(actor),
            username=username,
            role=role,
            organisation_id=organisation,
            grid_id=grid,
            community_id=community,
            password=password,
        )
        event = operator_event(
            change.action, change.actor, change.details(), organisation=organisation
        )
        rt.audit.record(session, [event])
    _show("cli.accounts.added", change, as_json=as_json, role=change.account.role)


@accounts_app.command("disable", help=help_text("cli.help.accounts.disable"))
def accounts_disable(username: Username, actor: Actor = None, as_json: AsJson = False) -> None:
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        change = disable_account(session, operator_name(actor), username)
        ended = end_logins(session, username, "account_disabled")
        details = {**change.details(), "logins_ended": ended}
        event = operator_event(
            change.action, change.actor, details, organisation=change.account.organisation
        )
        rt.audit.record(session, [event])
    _show("cli.accounts.disabled", change, as_json=as_json, logins=ended)


@accounts_app.command("reset-password", help=help_text("cli.help.accounts.reset-password"))
def accounts_reset_password(
    username: Username,
    password_stdin: PasswordStdin = False,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    password = _stdin_password(password_stdin)
    with one_line_errors(), runtime() as rt, rt.transaction() as session:
        change = reset_password(session, operator_name(actor), username, password)
        # Whoever held the old password is logged out with it.
        ended = end_logins(session, username, "password_reset")
        details = {**change.details(), "logins_ended": ended}
        event = operator_event(
            change.action, change.actor, details, organisation=change.account.organisation
        )
        rt.audit.record(session, [event])
    _show("cli.accounts.password-reset", change, as_json=as_json, logins=ended)


def _area(account: Account) -> str:
    """A grid worker's grid, a community worker's community, else a dash."""
    if account.role == "grid_worker":
        return " ".join(account.grids) or "-"
    return account.community or "-"


def _status(account: Account) -> str:
    return say("cli.accounts.status.disabled" if account.disabled else "cli.places.status.active")


@accounts_app.command("list", help=help_text("cli.help.accounts.list"))
def accounts_list(
    disabled: Annotated[bool, option("cli.help.accounts.list.disabled", "--disabled")] = False,
    as_json: AsJson = False,
) -> None:
    with one_line_errors(), runtime() as rt, rt.vault.sessions() as session:
        rows = list_accounts(session, disabled=disabled)
    print_listing(
        rows,
        columns=[
            ("cli.accounts.column.username", lambda a: a.username),
            ("cli.accounts.column.role", lambda a: a.role),
            ("cli.accounts.column.organisation", lambda a: a.organisation or "-"),
            ("cli.accounts.column.jurisdiction", _area),
            ("cli.places.column.status", _status),
        ],
        record=Account.record,
        as_json=as_json,
    )
