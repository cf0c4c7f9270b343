"""The command line's one language picker and its one way to say things.

The language is `--lang` on the root command (which Typer also reads from VAULT_LANG), or
VAULT_LANG when a command group runs on its own (tests invoke `db_app`, `clients_app`),
through `vault.i18n.negotiate`: Simplified Chinese unless told otherwise. Every message is
a catalogue id (`cli.<command>.<name>`, `vault/locale/`), shown with `say(id, **values)`.

Help is the exception. Click renders `--help` from strings fixed when the app is built,
before `--lang` is parsed, so `help_text(id)` (the `cli.help.<group>.<command>[.<option>]`
ids) reads VAULT_LANG alone, through the same `negotiate`, when the module declaring the
command is imported: `VAULT_LANG=en resident-vault --help` is English, `--lang en --help`
is not.
"""

from __future__ import annotations

import os
from typing import Any

import click

from vault.i18n import negotiate, text

__all__ = ["choose", "current", "help_text", "say"]

# The root command's `--lang`, kept for what is printed after Click has returned (the
# one-line error of `main()`); reset by every run of the root command.
_chosen: dict[str, str | None] = {"asked": None}


def choose(asked: str | None) -> str:
    """Remember the root command's `--lang` (None when not given) and return the language."""
    _chosen["asked"] = asked
    return current()


def current() -> str:
    """`zh` or `en`: `--lang` of the running root command, else VAULT_LANG, else Chinese."""
    context = click.get_current_context(silent=True)
    if context is not None:
        root = context.find_root()
        asked = root.params.get("lang") if root.params else None
    else:
        asked = _chosen["asked"]
    return negotiate(str(asked) if asked else None, os.environ.get("VAULT_LANG"))


def say(message_id: str, /, **values: Any) -> str:
    """The catalogue's text of `message_id` in the command line's language."""
    return text(message_id, current(), **values)


def help_text(message_id: str, /) -> str:
    """The catalogue's text of a `cli.help.*` id in VAULT_LANG's language (Chinese unless
    told otherwise), for help fixed at import time; `--lang` cannot reach it."""
    return text(message_id, negotiate(None, os.environ.get("VAULT_LANG")))
