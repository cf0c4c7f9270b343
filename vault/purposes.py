"""The purpose registry: what residents' data may be used for, under which legal basis,
by whom, for which actions and showing which fields. The policy reads it as data
(`policies.district`); the `Purpose` header and `--purpose` must name a registered code.

The national catalogue shipped with the policy (`policies/vault/data.json`) seeds the
registry when the database is created (migration 0015); a district adds its own with
`resident-vault purposes add`. A code is never reused: a retired purpose keeps its code
for the audit entries that name it. Each change notes a new data revision.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from vault.errors import DistrictConflict, DistrictError
from vault.i18n import Message
from vault.models import ORGANISATION_TYPES, Base, TZDateTime, utcnow
from vault.policy_data import data_revision, note_change

PURPOSE_CODE: Final = re.compile(r"^[a-z][a-z0-9-]{1,47}$")
LEGAL_BASES: Final = (
    "statutory-duty",
    "public-health-emergency",
    "consent",
    "contract",
    "vital-interests",
)
RECIPIENT_TYPES: Final = (*ORGANISATION_TYPES, "grid_worker", "community_worker")
ACTIONS: Final = ("read", "list", "search", "export", "write", "stats")
TREATMENTS: Final = ("clear", "masked", "generalised", "denied")
TEXT_LENGTH: Final = 500


class RegisteredPurpose(Base):
    __tablename__ = "purposes"

    code: Mapped[str] = mapped_column(String(48), primary_key=True)
    # The policy's purpose document: name, legal_basis, legal_reference, recipient_types,
    # actions, fields, categories, retention_days, ... (docs/policies.md).
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    added_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    added_by: Mapped[str | None] = mapped_column(String(64))
    retired_at: Mapped[datetime | None] = mapped_column(TZDateTime())


@dataclass(frozen=True)
class PurposeRow:
    code: str
    definition: Mapping[str, Any]
    retired: bool

    def record(self) -> dict[str, Any]:
        return {"code": self.code, **self.definition, "retired": self.retired}

    def name(self, lang: str) -> str:
        names = self.definition.get("name", {})
        return str(names.get("en" if lang.startswith("en") else "zh", self.code))


def _refuse(key: str, **values: object) -> DistrictError:
    return DistrictError(Message(f"purposes.{key}", values))


def _text(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > TEXT_LENGTH:
        raise _refuse("bad-text", what=what, limit=TEXT_LENGTH)
    return value


def _subset(values: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    chosen = list(dict.fromkeys(v.strip() for v in values if v.strip()))
    if not chosen:
        raise _refuse("none-given", what=what)
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise _refuse("unknown-value", what=what, value=unknown[0], allowed=", ".join(allowed))
    return chosen


def purpose_definition(
    *,
    name_zh: str,
    name_en: str,
    legal_basis: str,
    reference_zh: str,
    reference_en: str,
    recipients: Sequence[str],
    actions: Sequence[str],
    fields: Mapping[str, str],
    categories: Mapping[str, str],
    retention_days: int,
    field_names: Collection[str],
    category_names: Collection[str],
) -> dict[str, Any]:
    """A checked purpose document; DistrictError naming the first thing wrong."""
    if legal_basis not in LEGAL_BASES:
        raise _refuse(
            "unknown-value", what="basis", value=legal_basis, allowed=", ".join(LEGAL_BASES)
        )
    for name, treatment in fields.items():
        if name not in field_names:
            raise _refuse("unknown-field", field=name)
        if treatment not in TREATMENTS:
            raise _refuse(
                "unknown-value", what="treatment", value=treatment, allowed=", ".join(TREATMENTS)
            )
    for category, treatment in categories.items():
        if category not in category_names:
            raise _refuse("unknown-category", category=category)
        if treatment not in TREATMENTS:
            raise _refuse(
                "unknown-value", what="treatment", value=treatment, allowed=", ".join(TREATMENTS)
            )
    if not fields and not categories:
        raise _refuse("none-given", what="field")
    if not 1 <= retention_days <= 36500:
        raise _refuse("bad-retention", days=retention_days)
    return {
        "name": {"zh": _text(name_zh, "name"), "en": _text(name_en, "name-en")},
        "legal_basis": legal_basis,
        "legal_reference": {
            "zh": _text(reference_zh, "law"),
            "en": _text(reference_en, "law-en"),
        },
        "recipient_types": _subset(recipients, RECIPIENT_TYPES, "recipient"),
        "actions": _subset(actions, ACTIONS, "action"),
        "fields": dict(fields),
        "categories": dict(categories),
        "retention_days": retention_days,
        "notice_version": utcnow().date().isoformat(),
        "linking_fields": {},
    }


def add_purpose(
    session: Session, code: str, definition: Mapping[str, Any], *, actor: str | None
) -> PurposeRow:
    """Register a purpose (a document from `purpose_definition`); DistrictConflict if the
    code is taken, even by a retired purpose."""
    if not PURPOSE_CODE.fullmatch(code):
        raise _refuse("bad-code", code=code)
    if session.get(RegisteredPurpose, code) is not None:
        raise DistrictConflict(Message("purposes.exists", {"code": code}))
    row = RegisteredPurpose(code=code, definition=dict(definition), added_by=actor)
    session.add(row)
    note_change(session, "purpose.added", code, actor)
    return _row(row)


def retire_purpose(session: Session, code: str, *, actor: str | None) -> PurposeRow:
    """Retire a purpose: no decision allows it any more; its mandates lapse with it."""
    row = session.get(RegisteredPurpose, code)
    if row is None or row.retired_at is not None:
        raise _refuse("unknown", code=code)
    row.retired_at = utcnow()
    note_change(session, "purpose.retired", code, actor)
    return _row(row)


def list_purposes(session: Session, *, retired: bool = False) -> list[PurposeRow]:
    query = select(RegisteredPurpose).order_by(RegisteredPurpose.code)
    if not retired:
        query = query.where(RegisteredPurpose.retired_at.is_(None))
    return [_row(row) for row in session.scalars(query)]


def registered_purposes(session: Session) -> dict[str, dict[str, Any]]:
    """Code -> definition of every purpose in force (the policy's `purposes` data)."""
    return {row.code: dict(row.definition) for row in list_purposes(session)}


def find_purpose(session: Session, code: str) -> PurposeRow | None:
    """The purpose in force under that code, or None (unknown or retired)."""
    row = session.get(RegisteredPurpose, code) if PURPOSE_CODE.fullmatch(code) else None
    return _row(row) if row is not None and row.retired_at is None else None


def _row(row: RegisteredPurpose) -> PurposeRow:
    return PurposeRow(code=row.code, definition=row.definition, retired=row.retired_at is not None)


class LivePurposes(Mapping[str, Mapping[str, Any]]):
    """The registry as a read-only mapping for readers that hold no session (consent
    notices, metrics labels, the pages): read again whenever the data revision moved,
    so a purpose added on any node is known on the next request."""

    def __init__(self, sessions: Callable[[], AbstractContextManager[Session]]) -> None:
        self._sessions = sessions
        self._revision: int | None = None
        self._purposes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _current(self) -> dict[str, dict[str, Any]]:
        with self._sessions() as session:
            revision = data_revision(session)
            with self._lock:
                if revision != self._revision:
                    self._purposes = registered_purposes(session)
                    self._revision = revision
                return self._purposes

    def __getitem__(self, code: str) -> Mapping[str, Any]:
        return self._current()[code]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())
