"""Bounds on everything a caller sends in a path, a query or a header (docs/api.md, "Bounds").

Every integer and string parameter of every route is declared with these, so an
out-of-range value is a 422 problem before a handler runs: a 2**70 index never reaches
SQLite (which overflows at 2**63) and a 60,000-character header never reaches the log.
`tests/test_bounds.py` walks the OpenAPI document and fails on an undeclared parameter.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, Path, Query, Request

from access.views import Place
from vault.errors import FieldProblem, ValidationFailed
from vault.i18n import Message

# The largest integer JSON and JavaScript carry exactly (the pages verify proofs in the
# browser); leaf indexes and tree sizes stay far below it for any real log.
MAX_INTEGER = 2**53 - 1
ID_LENGTH = 64  # resident ids, pseudonyms, consent/request/grant/decision/place ids
USER_LENGTH = 128  # usernames, as the log's column holds them
CODE_LENGTH = 64  # purpose codes, field names, report and measure names
FIELD_LIST_LENGTH = 2000  # ?fields=a,b,c: every catalogue name fits many times over
CURSOR_LENGTH = 512
JUSTIFICATION_LENGTH = 500  # characters, after percent-decoding

# A purpose code as docs/api.md defines them: lowercase ASCII words joined by hyphens
# (subsidy-review). It starts with a letter or digit, so no stored code can begin a
# spreadsheet formula, and it fits the log's column.
PURPOSE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
_PURPOSE = re.compile(PURPOSE_PATTERN)
# Control characters have no place in a reason a person types (newlines included: the log's
# CSV and the pages show it on one line).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The Justification header as the service takes it: printable ASCII and percent-encoded
# UTF-8 (RFC 3629's well-formed sequences, no control characters), at most
# JUSTIFICATION_LENGTH characters once decoded. One unit of the pattern is one character.
_HEX = "[0-9A-Fa-f]"
_CONT = "%[89ABab][0-9A-Fa-f]"  # a continuation byte, 80-BF
_UTF8 = "|".join(
    (
        r"[\x20-\x24\x26-\x7e]",
        "%(?:[2-6]" + _HEX + "|7[0-9A-Ea-e])",
        "%[Cc][2-9A-Fa-f]" + _CONT + "|%[Dd]" + _HEX + _CONT,
        "%[Ee]0%[ABab]" + _HEX + _CONT,
        "%[Ee][1-9A-Ca-cEeFf]" + _CONT + _CONT,
        "%[Ee][Dd]%[89]" + _HEX + _CONT,
        "%[Ff]0%(?:9" + "[0-9A-Fa-f]|[ABab][0-9A-Fa-f])" + _CONT + _CONT,
        "%[Ff][1-3]" + _CONT * 3,
        "%[Ff]4%8" + _HEX + _CONT + _CONT,
    )
)
JUSTIFICATION_PATTERN = f"^(?:{_UTF8}){{0,{JUSTIFICATION_LENGTH}}}$"
_JUSTIFICATION = re.compile(JUSTIFICATION_PATTERN)


@cache
def field_list_pattern(names: tuple[str, ...]) -> str:
    """`?fields=a,b`: catalogue names, comma-separated, nothing else (empty: every field)."""
    one = "(?:" + "|".join(re.escape(n) for n in names) + ")"
    return f"^(?:{one}(?:,{one})*)?$"


PURPOSE_DOC = (
    "用途代码 / purpose code (see GET /v1/purposes); the Purpose header also works. "
    f"At most {CODE_LENGTH} characters: lowercase letters, digits and hyphens"
)

Index = Annotated[int, Path(ge=0, le=MAX_INTEGER, description="leaf index in the audit log")]
PathId = Annotated[str, Path(max_length=ID_LENGTH)]
PathCode = Annotated[str, Path(max_length=CODE_LENGTH)]
QueryId = Annotated[str | None, Query(max_length=ID_LENGTH)]


def place_query(community: QueryId = None, grid: QueryId = None, building: QueryId = None) -> Place:
    """`?community=`, `?grid=`, `?building=`: a list or an export narrowed within scope."""
    return Place(community, grid, building)


QueryPlace = Annotated[Place, Depends(place_query)]
QueryCode = Annotated[str | None, Query(max_length=CODE_LENGTH)]
QueryUser = Annotated[str | None, Query(max_length=USER_LENGTH)]
QueryPurpose = Annotated[
    str | None, Query(max_length=CODE_LENGTH, pattern=PURPOSE_PATTERN, description=PURPOSE_DOC)
]
QueryFields = Annotated[
    str | None, Query(max_length=FIELD_LIST_LENGTH, description="comma-separated field names")
]
QueryCursor = Annotated[str | None, Query(max_length=CURSOR_LENGTH)]


def _refuse(field: str, message: Message) -> ValidationFailed:
    return ValidationFailed([FieldProblem(field, "out-of-bounds", message)])


def declared_purpose(request: Request, query: str | None) -> str | None:
    """The purpose a request declares (the Purpose header, else `?purpose=`), checked
    against the registry's format; anything else is a 422 and never reaches the log."""
    header = request.headers.get("purpose")
    if header and query and query.strip():
        # Beside the header, `?purpose=` is ignored, so it must at least be a registered
        # code: the document declares it as one, and nothing it declares goes unread.
        known = getattr(getattr(request.app.state, "explainer", None), "purposes", None)
        if known is not None and query.strip() not in known:
            raise _refuse("purpose", Message("error.bounds.purpose-unknown"))
    declared = header or query
    if declared is None:
        return None
    declared = declared.strip()
    if not declared:
        return None
    if not _PURPOSE.match(declared):
        raise _refuse("Purpose", Message("error.bounds.purpose", {"most": CODE_LENGTH}))
    return declared


def requested_fields(given: str | None, names: tuple[str, ...]) -> list[str] | None:
    """`?fields=a,b` as a list of catalogue names; None (every field) when not given."""
    if not given:
        return None
    if not re.match(field_list_pattern(names), given):
        raise _refuse("fields", Message("error.bounds.fields"))
    return given.split(",")


def declared_justification(given: str | None) -> str | None:
    """The Justification header, percent-decoded (it may carry Chinese), bounded."""
    if not given:
        return None
    text = unquote(given).strip()
    # The pattern counts one character per unit (printable ASCII or one UTF-8 sequence), so
    # it bounds the decoded length exactly as the OpenAPI document states it.
    if not _JUSTIFICATION.match(given) or len(text) > JUSTIFICATION_LENGTH or _CONTROL.search(text):
        raise _refuse(
            "Justification", Message("error.bounds.justification", {"most": JUSTIFICATION_LENGTH})
        )
    return text or None
