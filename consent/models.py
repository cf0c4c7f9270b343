"""Consent records, their revocations, requests from organisations, and signed receipts.

Consent rows are never edited. A revocation is a row of its own (`consent_revocations`);
a change is a new consent that names the one it `supersedes`, and the old one gets a
revocation with reason `superseded`, so the history stays whole. A consent is active when
it has no revocation and its `expires_at` (if any) lies in the future: expiry is a
comparison at query time, never a job.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vault.models import Base, TZDateTime, utcnow

CHANNELS = ("self", "assisted", "guardian")


class Consent(Base):
    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_lookup", "recipient", "purpose", "resident_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), index=True)
    recipient: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    purpose: Mapped[str] = mapped_column(String(64))
    # The fields covered (categories already expanded through the catalogue) and the
    # categories as the resident chose them, for display.
    fields: Mapped[list[str]] = mapped_column(JSON)
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    legal_basis: Mapped[str] = mapped_column(String(32))
    # Separate consent (PIPL Art. 23 provision to another handler, Art. 29 sensitive fields).
    separate: Mapped[bool] = mapped_column(Boolean, default=False)
    channel: Mapped[str] = mapped_column(String(16))  # self | assisted | guardian
    recorded_by: Mapped[str] = mapped_column(String(128))  # username or client id
    guardian_id: Mapped[str | None] = mapped_column(String(32))
    notice_version: Mapped[str] = mapped_column(String(32))
    granted_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    supersedes: Mapped[str | None] = mapped_column(String(32), index=True)
    request_id: Mapped[str | None] = mapped_column(String(32))
    # Assisted consent: the signed form's SHA-256 (hex), the form sealed under the
    # resident's data key (field name `consent_evidence:<id>`), and who witnessed it.
    evidence_sha256: Mapped[str | None] = mapped_column(String(64))
    evidence_blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    evidence_key_version: Mapped[int | None] = mapped_column(Integer)
    evidence_media_type: Mapped[str | None] = mapped_column(String(100))
    witness: Mapped[str | None] = mapped_column(String(128))


class ConsentRevocation(Base):
    """The end of a consent: revoked by someone, or superseded by a newer record."""

    __tablename__ = "consent_revocations"
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    revoked_by: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))  # revoked | superseded


class ConsentRequest(Base):
    """An organisation asks a resident for consent; pending until the resident answers."""

    __tablename__ = "consent_requests"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), index=True)
    recipient: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    purpose: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list[str]] = mapped_column(JSON)
    separate: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str | None] = mapped_column(String(500))
    requested_by: Mapped[str] = mapped_column(String(128))
    requested_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|granted|refused
    answered_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    consent_id: Mapped[str | None] = mapped_column(String(32))


class ConsentReceipt(Base):
    """A signed receipt as issued, one per grant or revocation; kept so it never changes."""

    __tablename__ = "consent_receipts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), index=True)
    event: Mapped[str] = mapped_column(String(16))  # granted | revoked
    issued_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    kid: Mapped[str] = mapped_column(String(64))
    jws: Mapped[str] = mapped_column(Text)


class ReceiptKey(Base):
    """Every public key that ever signed a receipt; never pruned (receipts live for years)."""

    __tablename__ = "consent_receipt_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    first_used_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class BreakGlassGrant(Base):
    """An emergency opening for one worker and one resident, beyond normal policy.

    Time-limited (`expires_at`), with the worker's written justification; every access
    under it is flagged in the audit log, the resident is told, and an auditor reviews it
    (`review_status`: pending, then justified or unjustified). The grant itself is never
    edited except by that one review, which the audit log records too.
    """

    __tablename__ = "break_glass_grants"
    __table_args__ = (Index("ix_break_glass_lookup", "user", "resident_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(128))
    subject_type: Mapped[str] = mapped_column(String(32))
    organisation: Mapped[str | None] = mapped_column(String(64))
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    justification: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime())
    review_status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    review_note: Mapped[str | None] = mapped_column(Text)


class ResidentNotification(Base):
    """Something a resident is told (PIPL Art. 18(2): after an emergency access)."""

    __tablename__ = "resident_notifications"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    text_zh: Mapped[str] = mapped_column(Text)
    text_en: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
