"""Mandates: which organisation may do which actions on which fields, for which purpose,
on which basis, until when. The policy reads the mandates in force as data
(`policies.district`); nothing else grants an organisation's system access.

A mandate is never edited or deleted: granting again for the same organisation and
purpose revokes the one in force and adds the new one, so the table is the history of
who could do what and when. Each change notes a new data revision in the caller's
transaction; the caller records the audit entry in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, ForeignKey, Integer, String, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from vault.errors import DistrictError
from vault.i18n import Message
from vault.models import Base, Organisation, TZDateTime, utcnow
from vault.policy_data import note_change
from vault.purposes import ACTIONS, RegisteredPurpose

# The basis a mandate is granted on, and the legal basis the policy records for it
# (None: the purpose's own statutory basis).
BASES: Final[Mapping[str, str | None]] = {
    "law": None,
    "consent": "consent",
    "contract": "contract",
    "vital-interest": "vital-interests",
}


class Mandate(Base):
    __tablename__ = "mandates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    purpose: Mapped[str] = mapped_column(ForeignKey("purposes.code"))
    actions: Mapped[list[str]] = mapped_column(JSON)
    # None: every field the purpose shows; else only these (the rest are denied).
    fields: Mapped[list[str] | None] = mapped_column(JSON)
    basis: Mapped[str] = mapped_column(String(16), default="law")
    valid_until: Mapped[datetime | None] = mapped_column(TZDateTime())
    granted_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    granted_by: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime(), index=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64))


@dataclass(frozen=True)
class MandateRow:
    id: int
    organisation: str
    purpose: str
    actions: tuple[str, ...]
    fields: tuple[str, ...] | None
    basis: str
    valid_until: datetime | None
    granted_at: datetime
    granted_by: str | None
    revoked_at: datetime | None
    revoked_by: str | None

    def in_force(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.valid_until is None or self.valid_until > now)

    def record(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "id": self.id,
            "organisation": self.organisation,
            "purpose": self.purpose,
            "actions": list(self.actions),
            "fields": None if self.fields is None else list(self.fields),
            "basis": self.basis,
            "valid_until": iso(self.valid_until),
            "granted_at": iso(self.granted_at),
            "granted_by": self.granted_by,
            "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by,
        }


def _refuse(key: str, **values: object) -> DistrictError:
    return DistrictError(Message(f"mandates.{key}", values))


def _covered(definition: Mapping[str, Any], name: str, category: str | None) -> bool:
    """Whether the purpose shows that field at all (by name, else by its category)."""
    fields = definition.get("fields", {})
    if name in fields:
        return bool(fields[name] != "denied")
    return bool(category and definition.get("categories", {}).get(category, "denied") != "denied")


def grant_mandate(
    session: Session,
    organisation_id: str,
    purpose: str,
    actions: Sequence[str],
    *,
    fields: Sequence[str] | None = None,
    basis: str = "law",
    valid_until: datetime | None = None,
    field_categories: Mapping[str, str | None],
    actor: str | None,
    now: datetime | None = None,
) -> tuple[MandateRow, MandateRow | None]:
    """Grant a mandate; (the new mandate, the one it replaced or None).

    `field_categories` is the field catalogue (name -> category). Refused, with nothing
    written, when the organisation or purpose is unknown or retired, the organisation's
    kind is not a recipient of the purpose, an action or field lies outside the purpose,
    the basis is unknown, or `valid_until` has passed.
    """
    now = now or utcnow()
    organisation = session.get(Organisation, organisation_id)
    if organisation is None or organisation.retired_at is not None:
        raise _refuse("unknown-org", org=organisation_id)
    registered = session.get(RegisteredPurpose, purpose)
    if registered is None or registered.retired_at is not None:
        raise _refuse("unknown-purpose", purpose=purpose)
    definition = registered.definition
    if organisation.type not in definition.get("recipient_types", ()):
        raise _refuse(
            "not-a-recipient",
            org=organisation_id,
            kind=organisation.type,
            purpose=purpose,
            kinds=", ".join(definition.get("recipient_types", ())) or "—",
        )
    chosen = _actions(actions, definition, purpose)
    if basis not in BASES:
        raise _refuse("unknown-basis", basis=basis, allowed=", ".join(BASES))
    if valid_until is not None and valid_until <= now:
        raise _refuse("until-passed", until=valid_until.isoformat())
    shown = None if fields is None else _fields(fields, definition, purpose, field_categories)
    replaced = _in_force(session, organisation_id, purpose, now)
    if replaced is not None:
        replaced.revoked_at, replaced.revoked_by = now, actor
    mandate = Mandate(
        organisation_id=organisation_id,
        purpose=purpose,
        actions=chosen,
        fields=shown,
        basis=basis,
        valid_until=valid_until,
        granted_at=now,
        granted_by=actor,
    )
    session.add(mandate)
    session.flush()
    note_change(session, "mandate.granted", f"{organisation_id}:{purpose}", actor)
    return _row(mandate), None if replaced is None else _row(replaced)


def _actions(actions: Sequence[str], definition: Mapping[str, Any], purpose: str) -> list[str]:
    chosen = list(dict.fromkeys(a.strip() for a in actions if a.strip()))
    if not chosen:
        raise _refuse("no-action")
    for action in chosen:
        if action not in ACTIONS:
            raise _refuse("unknown-action", action=action, allowed=", ".join(ACTIONS))
        if action not in definition.get("actions", ()):
            raise _refuse(
                "action-outside-purpose",
                action=action,
                purpose=purpose,
                allowed=", ".join(definition.get("actions", ())),
            )
    return chosen


def _fields(
    fields: Sequence[str],
    definition: Mapping[str, Any],
    purpose: str,
    field_categories: Mapping[str, str | None],
) -> list[str]:
    chosen = list(dict.fromkeys(f.strip() for f in fields if f.strip()))
    if not chosen:
        raise _refuse("no-field")
    for name in chosen:
        if name not in field_categories:
            raise _refuse("unknown-field", field=name)
        if not _covered(definition, name, field_categories[name]):
            raise _refuse("field-outside-purpose", field=name, purpose=purpose)
    return chosen


def _in_force(
    session: Session, organisation_id: str, purpose: str, now: datetime
) -> Mandate | None:
    return session.scalars(
        select(Mandate)
        .where(Mandate.organisation_id == organisation_id, Mandate.purpose == purpose)
        .where(Mandate.revoked_at.is_(None))
        .where(or_(Mandate.valid_until.is_(None), Mandate.valid_until > now))
        .order_by(Mandate.id.desc())
        .limit(1)
    ).first()


def revoke_mandate(
    session: Session,
    organisation_id: str,
    purpose: str,
    *,
    actor: str | None,
    now: datetime | None = None,
) -> MandateRow:
    """Revoke the mandate in force for that organisation and purpose; denied at once."""
    now = now or utcnow()
    mandate = _in_force(session, organisation_id, purpose, now)
    if mandate is None:
        raise _refuse("none-in-force", org=organisation_id, purpose=purpose)
    mandate.revoked_at, mandate.revoked_by = now, actor
    note_change(session, "mandate.revoked", f"{organisation_id}:{purpose}", actor)
    return _row(mandate)


def list_mandates(
    session: Session,
    *,
    organisation_id: str | None = None,
    history: bool = False,
    now: datetime | None = None,
) -> list[MandateRow]:
    """Mandates in force (with `history`, every mandate ever granted), by organisation."""
    now = now or utcnow()
    query = select(Mandate).order_by(Mandate.organisation_id, Mandate.purpose, Mandate.id)
    if organisation_id is not None:
        query = query.where(Mandate.organisation_id == organisation_id)
    rows = [_row(mandate) for mandate in session.scalars(query)]
    return rows if history else [row for row in rows if row.in_force(now)]


def mandates_in_force(session: Session, now: datetime) -> list[tuple[MandateRow, str]]:
    """Each mandate in force with its organisation's kind, for organisations in service."""
    query = (
        select(Mandate, Organisation.type)
        .join(Organisation, Organisation.id == Mandate.organisation_id)
        .join(RegisteredPurpose, RegisteredPurpose.code == Mandate.purpose)
        .where(Organisation.retired_at.is_(None), RegisteredPurpose.retired_at.is_(None))
        .where(Mandate.revoked_at.is_(None))
        .where(or_(Mandate.valid_until.is_(None), Mandate.valid_until > now))
        .order_by(Mandate.organisation_id, Mandate.purpose)
    )
    return [(_row(mandate), kind) for mandate, kind in session.execute(query)]


def lapsed_since(session: Session, since: datetime, now: datetime) -> list[datetime]:
    """When mandates not revoked ran out between `since` and `now`, oldest first."""
    query = (
        select(Mandate.valid_until)
        .where(Mandate.revoked_at.is_(None))
        .where(Mandate.valid_until > since, Mandate.valid_until <= now)
        .order_by(Mandate.valid_until)
    )
    return [moment for moment in session.scalars(query) if moment is not None]


def next_lapse(session: Session, now: datetime) -> datetime | None:
    """When the next mandate in force runs out, if any does."""
    return session.scalars(
        select(Mandate.valid_until)
        .where(Mandate.revoked_at.is_(None), Mandate.valid_until > now)
        .order_by(Mandate.valid_until)
        .limit(1)
    ).first()


def _row(mandate: Mandate) -> MandateRow:
    return MandateRow(
        id=mandate.id,
        organisation=mandate.organisation_id,
        purpose=mandate.purpose,
        actions=tuple(mandate.actions),
        fields=None if mandate.fields is None else tuple(mandate.fields),
        basis=mandate.basis,
        valid_until=mandate.valid_until,
        granted_at=mandate.granted_at,
        granted_by=mandate.granted_by,
        revoked_at=mandate.revoked_at,
        revoked_by=mandate.revoked_by,
    )


def catalogue_categories(catalogue: Iterable[Any]) -> dict[str, str | None]:
    """name -> category of a field catalogue (`vault.catalogue.Catalogue`)."""
    return {spec.name: getattr(spec, "category", None) for spec in catalogue}
