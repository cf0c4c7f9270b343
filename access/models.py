"""The community's queue of residents' correction requests (PIPL Art. 46, right to correct).

The proposed value and the note are personal data: they are sealed under the resident's
data key (AAD names the request), like every field value, so erasing the resident's key
erases them too. Only their field name is in clear.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from vault.models import Base, TZDateTime, utcnow


class CorrectionRequest(Base):
    __tablename__ = "correction_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), index=True)
    community_id: Mapped[str] = mapped_column(ForeignKey("communities.id"), index=True)
    field: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    key_version: Mapped[int] = mapped_column(Integer)
    requested_by: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    requested_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(64))
