"""The people who log in: residents, grid and community workers, auditors.

An account names a role, the organisation a worker serves and their jurisdiction; policy
reads them through `access.subjects`. Passwords are stored only as Argon2 hashes. The table
keeps its first name (`oauth_users`): the OAuth server was its first reader.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from vault.models import Base, TZDateTime, utcnow


class User(Base):
    """A person who logs in: a resident, a grid or community worker, or an auditor."""

    __tablename__ = "oauth_users"
    __table_args__ = (
        CheckConstraint(
            "role IN ('resident', 'grid_worker', 'community_worker', 'auditor', 'operator')",
            name="role",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    organisation_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    resident_id: Mapped[str | None] = mapped_column(ForeignKey("residents.id"), index=True)
    badge_number: Mapped[str | None] = mapped_column(String(32))
    # {"community": id, "grids": [ids], "buildings": [ids]} for workers.
    jurisdiction: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    purposes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(TZDateTime())
