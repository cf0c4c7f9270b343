"""The change log of the district's policy data: every change to the purpose registry or
to a mandate adds one row, in the same transaction, and the highest row id is the **data
revision** the policy engines must run under (`policies.district`).

One cheap read (`data_revision`) tells every API node sharing the database whether its
engine's data is current, so a change takes effect on the next request everywhere.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from vault.models import Base, TZDateTime, utcnow


class PolicyDataChange(Base):
    __tablename__ = "policy_data_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    changed_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    change: Mapped[str] = mapped_column(String(40))  # e.g. mandate.granted, purpose.added
    subject: Mapped[str] = mapped_column(String(120))  # what changed: a purpose, org:purpose
    actor: Mapped[str | None] = mapped_column(String(64))


def note_change(session: Session, change: str, subject: str, actor: str | None) -> int:
    """Record one change (in the caller's transaction); the new data revision."""
    row = PolicyDataChange(change=change, subject=subject[:120], actor=actor, changed_at=utcnow())
    session.add(row)
    session.flush()
    return row.id


def data_revision(session: Session) -> int:
    """The current data revision: 0 before any change."""
    return int(session.scalar(select(func.coalesce(func.max(PolicyDataChange.id), 0))) or 0)


def changed_at(session: Session, revision: int) -> datetime | None:
    """When that revision was made (None for 0 or an unknown revision)."""
    return session.scalar(
        select(PolicyDataChange.changed_at).where(PolicyDataChange.id == revision)
    )
