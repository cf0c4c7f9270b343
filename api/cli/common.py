"""What every command group of the command line shares: its consoles, settings and
runtime, the progress bar, the one-line error path, options whose help is in the
catalogue, and one way to print a listing as a table or as `--json`.

A command group is a module with a `typer.Typer` made by `group()`, wired into the root
app by `api.cli.main`. Its commands:

- declare options with `option()` / `argument()` (help from `cli.help.*` ids, fixed at
  import: see `api.cli.lang`), and reuse `Actor` and `AsJson` where they fit;
- refuse bad input with `raise fail(say(...))` before anything is written, or let a
  domain error (VaultError, AuditError, the gate's GateError) rise: `one_line_errors()`
  turns it into one line on stderr and exit 1, in `main()` and around any command body
  that wraps itself in it (so that a test invoking the group alone sees the same line);
- read resident data only through the gate, as someone (`api.cli.acting`);
- record what they did with `operator_event` (audit) or `operator_access`, under
  `operator_name(actor)`, in the transaction that does the work;
- print listings with `print_listing()`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from access.errors import GateError
from access.runtime import Runtime, open_runtime
from api.cli.lang import current, help_text, say
from api.settings import Settings
from audit import AuditError, EntryDraft, VerificationFailed
from audit.partitions import PartitionError
from vault.backup import BackupError
from vault.config import SettingsInvalid
from vault.db import SchemaMismatch
from vault.errors import (
    ConfigurationError,
    InvalidValue,
    ResidentNotFound,
    UnknownField,
    ValidationFailed,
    VaultError,
)

__all__ = [
    "Actor",
    "AsJson",
    "CliError",
    "argument",
    "err",
    "fail",
    "group",
    "one_line",
    "one_line_errors",
    "operator_access",
    "option",
    "out",
    "print_listing",
    "progress",
    "runtime",
    "settings",
    "table",
]

T = TypeVar("T")

# No highlighting (ids are not numbers to colour) and no wrapping: a line stays one line
# for the scripts that read it.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# -- options and groups --------------------------------------------------------------------


def group(help_id: str, **details: Any) -> typer.Typer:
    """A command group whose help is the catalogue's `help_id`; bare, it shows its help."""
    return typer.Typer(help=help_text(help_id), **{"no_args_is_help": True, **details})


def option(help_id: str, *names: str, **details: Any) -> Any:
    """`typer.Option(*names, **details)` with the catalogue's `help_id` as its help."""
    return typer.Option(*names, help=help_text(help_id), **details)


def argument(help_id: str, **details: Any) -> Any:
    """`typer.Argument(**details)` with the catalogue's `help_id` as its help."""
    return typer.Argument(help=help_text(help_id), **details)


# Who runs the command, for the audit log; None means `cli:<login>` (operator_name).
Actor = Annotated[str | None, option("cli.help.common.actor", "--actor")]
# A listing for scripts: one JSON object a line (print_listing).
AsJson = Annotated[bool, option("cli.help.common.json", "--json")]


# -- settings, runtime, progress -----------------------------------------------------------


def settings() -> Settings:
    """The configuration as the environment and VAULT_CONFIG_FILE give it, read anew."""
    return Settings()


@contextmanager
def runtime(configured: Settings | None = None) -> Iterator[Runtime]:
    """The vault, its audit log and keyring (of `configured`, else `settings()`), closed
    afterwards."""
    opened = open_runtime(configured or settings())
    try:
        yield opened
    finally:
        opened.close()


def progress() -> Progress:
    """A progress bar on stderr that leaves nothing behind: stdout stays the result."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


# -- audit entries -------------------------------------------------------------------------


def operator_access(
    action: str, actor: str, resident_id: str, purpose: str, fields: dict[str, str], **extra: Any
) -> EntryDraft:
    """An operator's access to one resident's fields from the command line, as the log
    records it (operator_event is the same for an access to no resident)."""
    return EntryDraft(
        action=action,
        outcome="allowed",
        channel="cli",
        kind="access",
        user=actor,
        subject_type="operator",
        resident_id=resident_id,
        purpose=purpose,
        fields=fields,
        **extra,
    )


# -- output --------------------------------------------------------------------------------


def table(*headings: str, **details: Any) -> Table:
    """A rich table whose column headings are catalogue ids, shown in the command's language."""
    return Table(*(say(heading) for heading in headings), **details)


def print_listing(
    items: Iterable[T],
    *,
    columns: Sequence[tuple[str, Callable[[T], str]]],
    record: Callable[[T], Mapping[str, Any]],
    as_json: bool,
) -> None:
    """Items for people, a table with a (heading id, cell) per column, or with `--json`
    for scripts, `record(item)` as one JSON object a line (never cut, never marked up)."""
    if as_json:
        for item in items:
            sys.stdout.write(json.dumps(record(item), ensure_ascii=False) + "\n")
        return
    rows = table(*(heading for heading, _ in columns))
    for item in items:
        rows.add_row(*(cell(item) for _, cell in columns))
    out.print(rows)


def print_change(
    message_id: str, record: Mapping[str, Any], *, as_json: bool, **values: Any
) -> None:
    """What a command that changed something prints: its catalogue line, or with `--json`
    the changed record as one JSON object."""
    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        out.print(say(message_id, **values), markup=False)


def status_text(retired: bool) -> str:
    """A place's or organisation's status column: in use, or retired."""
    return say("cli.places.status.retired" if retired else "cli.places.status.active")


# -- the one-line error path ---------------------------------------------------------------


class CliError(Exception):
    """A one-line message for the user and an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print the one line now and return the exit to raise: `raise fail(say(...))`. Works
    the same whether the group runs under `main()` or on its own (a test's CliRunner)."""
    err.print(f"resident-vault: {message}", markup=False)
    return typer.Exit(code)


def one_line(exc: BaseException) -> str:  # noqa: PLR0911 - one branch per error kind
    """What the user reads of an error: one line in the command line's language (a heading
    and one indented line per problem for invalid settings)."""
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, ValidationFailed):
        return "; ".join(f"{p.field}: {p.message(current())}" for p in exc.problems)
    if isinstance(exc, InvalidValue):
        return exc.message.text(current())
    if isinstance(exc, ResidentNotFound):
        return say("cli.error.no-resident")
    if isinstance(exc, UnknownField):
        return say("cli.error.unknown-field", name=exc.name)
    if isinstance(exc, SettingsInvalid):  # one line per problem, under a heading
        heading = say("cli.error.settings-heading", problems=len(exc.problems))
        return heading + "".join(f"\n  {problem}" for problem in exc.problems)
    if isinstance(exc, SchemaMismatch):  # start-up refusals name `db upgrade`, both languages
        return exc.message.text(current())
    if isinstance(exc, PartitionError) and exc.message is not None:
        return exc.message.text(current())
    if isinstance(exc, BackupError | ConfigurationError | VerificationFailed | AuditError):
        return str(exc)
    if isinstance(exc, VaultError) and exc.message is not None:  # e.g. vault.places
        return exc.message.text(current())
    if isinstance(exc, GateError):  # a data command's refusal, as the gate worded it
        return exc.message.text(current())
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Every error the command line expects ends here: one line on stderr and its exit code
    (a CliError's own, else 1). Anything else is a bug and keeps its traceback."""
    try:
        yield
    except (CliError, VaultError, AuditError, GateError) as exc:
        err.print(f"resident-vault: {one_line(exc)}", markup=False)
        raise SystemExit(exc.code if isinstance(exc, CliError) else 1) from None
