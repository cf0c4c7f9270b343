"""Consent: grant, change, revoke, request and answer; and the gate's consent look-up.

Rules (PIPL, summarised in CONTEXT.md):

- A consent names one resident, one recipient organisation and one purpose from the
  purpose registry whose legal basis is `consent`; the fields it covers are a subset of the
  purpose's fields (categories are expanded through the catalogue when granted).
- **Separate consent** (`separate=True`) is a consent the resident gave on its own, for this
  recipient and these fields, and not bundled with anything else. It is required
  - for every sensitive field (catalogue `sensitive: true`; PIPL Art. 29), and
  - for provision to any organisation other than the residents' committee of the
    resident's own community (PIPL Art. 23: another handler). In practice that is every
    consent-based purpose in the registry today (property companies, owners' committees).
  A general consent (`separate=False`) therefore covers only non-sensitive fields, and only
  for the resident's own residents' committee.
- Guardian consent (channel `guardian`, PIPL Art. 31) by a registered guardian; for a
  parent's guardianship of a minor it expires when the child turns 14 (00:00 China time
  on the 14th birthday), computed from the birth date at grant and stored in `expires_at`.
- Active = no revocation row and `expires_at` unset or later than now, checked in SQL at
  every look-up: no cache, so a revocation holds from the next request and expiry needs
  no job.

Every grant, change, revocation, request and answer writes an audit event in the
caller's transaction, and every grant and revocation issues a signed receipt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from audit import AuditLog, EntryDraft
from consent.errors import ConsentConflict, ConsentNotFound, InvalidConsent
from consent.models import CHANNELS, Consent, ConsentReceipt, ConsentRequest, ConsentRevocation
from consent.receipts import KANTARA_VERSION, sign_receipt
from policies.bundle import load_bundle
from vault.crypto import open_field, seal_field
from vault.i18n import Message
from vault.models import (
    Building,
    Guardianship,
    Household,
    Organisation,
    OrganisationCommunity,
    Resident,
    Room,
    new_id,
    utcnow,
)
from vault.services import ResidentStore

CHINA = timezone(timedelta(hours=8))
WARD_AGE = 14
_CHUNK = 500

DEFAULT_CONTROLLER: dict[str, Any] = {
    "piiController": "社区居民数据保险库（街道办事处）/ Resident data vault (street office)",
    "contact": "居民数据保护负责人 / Data protection officer",
    "address": "街道办事处 / Street office",
    "email": "privacy@resident-vault.example",
    "phone": "12345",
}

NOT_NEEDED = {"zh": "无需您的同意", "en": "does not require your consent"}
BASIS_LABELS: dict[str, dict[str, str]] = {
    "statutory-duty": {"zh": "履行法定职责所必需", "en": "necessary to perform a statutory duty"},
    "public-health-emergency": {
        "zh": "应对突发公共卫生事件所必需",
        "en": "necessary to respond to a public-health emergency",
    },
    "vital-interests": {
        "zh": "紧急情况下保护生命健康和财产安全所必需",
        "en": "necessary to protect life, health or property in an emergency",
    },
    "contract": {"zh": "订立、履行合同所必需", "en": "necessary to conclude or perform a contract"},
}


@dataclass(frozen=True)
class ConsentCover:
    """What a resident's active consents cover for one recipient and purpose."""

    consent_ids: tuple[str, ...]
    fields: frozenset[str]

    @property
    def consent_id(self) -> str:
        return self.consent_ids[0]


@dataclass(frozen=True)
class Grant:
    """One consent to record. `recorded_by` is the username or client that recorded it."""

    resident_id: str
    recipient: str
    purpose: str
    channel: str
    recorded_by: str
    fields: Sequence[str] | None = None
    categories: Sequence[str] | None = None
    separate: bool = False
    expires_at: datetime | None = None
    notice_version: str | None = None
    guardian_id: str | None = None
    supersedes: str | None = None
    request_id: str | None = None
    evidence: bytes | None = None
    evidence_media_type: str | None = None
    witness: str | None = None
    subject_type: str | None = None
    client: str | None = None
    audit_request_id: str | None = None


@dataclass(frozen=True)
class Actor:
    """Who acts, for the audit entry: a username or a client, and as what."""

    name: str
    subject_type: str
    channel: str = "self"
    client: str | None = None
    organisation: str | None = None
    request_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class ConsentService:
    def __init__(
        self,
        store: ResidentStore,
        audit: AuditLog,
        *,
        purposes: Mapping[str, Mapping[str, Any]] | None = None,
        controller: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.audit = audit
        self.keyring = audit.keyring
        self.purposes: Mapping[str, Mapping[str, Any]] = (
            purposes if purposes is not None else load_bundle().data.get("purposes", {})
        )
        self.controller = dict(controller or DEFAULT_CONTROLLER)
        self.clock = clock
        self.catalogue = store.catalogue

    # -- the gate's look-up --------------------------------------------------------------

    def consenting(
        self,
        session: Session,
        recipient: str,
        purpose: str,
        resident_ids: Sequence[str],
        fields: Sequence[str],
        *,
        at: datetime | None = None,
    ) -> dict[str, ConsentCover]:
        """resident id -> what their active consents cover among `fields`, for those whose
        consents cover at least one. One query per 500 residents, none per resident."""
        if not resident_ids or not recipient:
            return {}
        now = at or self.clock()
        wanted = set(fields)
        sensitive = {n for n in wanted if n in self.catalogue and self.catalogue[n].sensitive}
        organisation = session.get(Organisation, recipient)
        if organisation is None:
            return {}
        ids = list(dict.fromkeys(resident_ids))
        rows: list[tuple[str, str, list[str], bool]] = []
        own: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows += [
                (r[0], r[1], list(r[2] or []), bool(r[3]))
                for r in session.execute(
                    select(Consent.id, Consent.resident_id, Consent.fields, Consent.separate)
                    .where(
                        Consent.recipient == recipient,
                        Consent.purpose == purpose,
                        Consent.resident_id.in_(chunk),
                        or_(Consent.expires_at.is_(None), Consent.expires_at > now),
                        ~exists().where(ConsentRevocation.consent_id == Consent.id),
                    )
                    .order_by(Consent.granted_at, Consent.id)
                )
            ]
            if organisation.type == "residents_committee" and any(not r[3] for r in rows):
                own |= set(self._own_committee(session, recipient, chunk))
        covers: dict[str, tuple[list[str], set[str]]] = {}
        for consent_id, resident_id, consented, separate in rows:
            general_ok = resident_id in own
            covered = {
                n
                for n in consented
                if n in wanted and (separate or (general_ok and n not in sensitive))
            }
            if not covered:
                continue
            ids_, names = covers.setdefault(resident_id, ([], set()))
            ids_.append(consent_id)
            names |= covered
        return {r: ConsentCover(tuple(i), frozenset(n)) for r, (i, n) in covers.items()}

    @staticmethod
    def _own_committee(session: Session, recipient: str, resident_ids: Sequence[str]) -> list[str]:
        """Of these residents, those living in a community the recipient committee serves."""
        return list(
            session.scalars(
                select(Resident.id)
                .join(Household, Household.id == Resident.household_id)
                .join(Room, Room.id == Household.room_id)
                .join(Building, Building.id == Room.building_id)
                .join(
                    OrganisationCommunity,
                    and_(
                        OrganisationCommunity.community_id == Building.community_id,
                        OrganisationCommunity.organisation_id == recipient,
                    ),
                )
                .where(Resident.id.in_(list(resident_ids)))
            )
        )

    # -- validation ----------------------------------------------------------------------

    def purpose_spec(self, purpose: str) -> Mapping[str, Any]:
        spec = self.purposes.get(purpose)
        if spec is None:
            raise InvalidConsent(
                Message("error.consent.unknown-purpose", {"purpose": purpose}), field="purpose"
            )
        if spec.get("legal_basis") != "consent":
            raise InvalidConsent(Message("error.consent.not-by-consent"), field="purpose")
        return spec

    def purpose_fields(self, spec: Mapping[str, Any]) -> list[str]:
        """Fields a purpose uses (any treatment but denied), categories expanded."""
        names = [n for n, t in (spec.get("fields") or {}).items() if t != "denied"]
        for category, treatment in (spec.get("categories") or {}).items():
            if treatment == "denied":
                continue
            for item in self.catalogue.by_category(category):
                if item.name not in (spec.get("fields") or {}) and item.name not in names:
                    names.append(item.name)
        return names

    def _recipient(self, session: Session, recipient: str, spec: Mapping[str, Any]) -> Organisation:
        organisation = session.get(Organisation, recipient)
        if organisation is None:
            raise InvalidConsent(
                Message("error.consent.unknown-recipient", {"recipient": recipient}),
                field="recipient",
            )
        if organisation.type not in (spec.get("recipient_types") or []):
            raise InvalidConsent(Message("error.consent.recipient-type"), field="recipient")
        return organisation

    def _fields(
        self,
        spec: Mapping[str, Any],
        fields: Sequence[str] | None,
        categories: Sequence[str] | None,
    ) -> list[str]:
        allowed = self.purpose_fields(spec)
        chosen: list[str] = []
        for name in fields or ():
            if name not in self.catalogue:
                raise InvalidConsent(
                    Message("error.consent.unknown-field", {"name": name}), field="fields"
                )
            chosen.append(name)
        for category in categories or ():
            if category not in self.catalogue.categories:
                raise InvalidConsent(
                    Message("error.consent.unknown-category", {"category": category}),
                    field="categories",
                )
            chosen += [s.name for s in self.catalogue.by_category(category) if s.name in allowed]
        if not fields and not categories:
            chosen = list(allowed)
        outside = sorted({n for n in chosen if n not in allowed})
        if outside:
            raise InvalidConsent(
                Message("error.consent.fields-unused", {"fields": ", ".join(outside)}),
                field="fields",
            )
        result = list(dict.fromkeys(chosen))
        if not result:
            raise InvalidConsent(Message("error.consent.no-fields"), field="fields")
        return result

    def _resident(self, session: Session, resident_id: str) -> Resident:
        resident = session.get(Resident, resident_id)
        if resident is None or resident.status != "active" or resident.is_decoy:
            raise ConsentNotFound(Message("error.consent.no-resident"), field="resident_id")
        return resident

    def ward_limit(
        self, session: Session, guardian_id: str, ward_id: str, now: datetime
    ) -> datetime | None:
        """When a guardian's consent for this ward must end (the 14th birthday of a minor
        in a parent's care), or None for an appointed guardianship; refuses non-guardians."""
        ship = session.scalars(
            select(Guardianship).where(
                Guardianship.guardian_id == guardian_id,
                Guardianship.ward_id == ward_id,
                or_(Guardianship.until.is_(None), Guardianship.until > now),
            )
        ).first()
        if ship is None:
            raise ConsentNotFound(Message("error.consent.not-a-ward"), field="on_behalf_of")
        limit = ship.until
        if ship.basis == "parent":
            birth = self._birth_date(session, ward_id)
            if birth is not None:
                turns = _fourteenth(birth)
                limit = turns if limit is None else min(limit, turns)
        if limit is not None and limit <= now:
            raise InvalidConsent(Message("error.consent.ward-fourteen"), field="on_behalf_of")
        return limit

    def _birth_date(self, session: Session, resident_id: str) -> date | None:
        spec = next((s for s in self.catalogue if s.validator == "past_date"), None)
        if spec is None:
            return None
        value = self.store.read(session, resident_id, [spec.name]).get(spec.name)
        try:
            return date.fromisoformat(str(value)) if value else None
        except ValueError:
            return None

    # -- granting ------------------------------------------------------------------------

    def grant(self, session: Session, grant: Grant) -> Consent:
        now = self.clock()
        if grant.channel not in CHANNELS:
            raise InvalidConsent(
                Message("error.consent.unknown-channel", {"channel": grant.channel}),
                field="channel",
            )
        spec = self.purpose_spec(grant.purpose)
        organisation = self._recipient(session, grant.recipient, spec)
        resident = self._resident(session, grant.resident_id)
        fields = self._fields(spec, grant.fields, grant.categories)
        notice = str(spec.get("notice_version") or "")
        if grant.notice_version is not None and grant.notice_version != notice:
            raise InvalidConsent(
                Message("error.consent.notice-outdated", {"notice": notice}),
                field="notice_version",
            )
        expires = self._expiry(session, grant, now)
        self._check_evidence(grant)
        previous = self._previous(session, grant, now)
        consent = Consent(
            id=new_id("cn"),
            resident_id=resident.id,
            recipient=organisation.id,
            purpose=grant.purpose,
            fields=fields,
            categories=list(grant.categories or []),
            legal_basis="consent",
            separate=grant.separate,
            channel=grant.channel,
            recorded_by=grant.recorded_by,
            guardian_id=grant.guardian_id,
            notice_version=notice,
            granted_at=now,
            expires_at=expires,
            supersedes=grant.supersedes,
            request_id=grant.request_id,
            witness=grant.witness,
        )
        if grant.evidence:
            key = self.store.data_keys.get(session, resident.id, resident.key_version)
            consent.evidence_sha256 = hashlib.sha256(grant.evidence).hexdigest()
            consent.evidence_blob = seal_field(
                key, f"consent_evidence:{consent.id}", grant.evidence
            )
            consent.evidence_key_version = resident.key_version
            consent.evidence_media_type = grant.evidence_media_type or "application/octet-stream"
        session.add(consent)
        session.flush()
        actor = Actor(
            name=grant.recorded_by,
            subject_type=grant.subject_type or "resident",
            channel=grant.channel,
            client=grant.client,
            request_id=grant.audit_request_id,
        )
        drafts = [
            self._event(
                "consent.granted",
                consent,
                actor,
                details={
                    "separate": consent.separate,
                    "expires_at": _iso(consent.expires_at),
                    "notice_version": notice,
                    "supersedes": grant.supersedes,
                    "evidence_sha256": consent.evidence_sha256,
                    "witness": grant.witness,
                    "guardian": grant.guardian_id,
                    "consent_request": grant.request_id,
                },
            )
        ]
        if previous is not None:
            session.add(
                ConsentRevocation(
                    consent_id=previous.id,
                    revoked_at=now,
                    revoked_by=grant.recorded_by,
                    channel=grant.channel,
                    reason="superseded",
                )
            )
            drafts.append(
                self._event(
                    "consent.superseded", previous, actor, details={"superseded_by": consent.id}
                )
            )
        session.flush()
        self.issue_receipt(session, consent, "granted")
        self.audit.record(session, drafts)
        return consent

    def _expiry(self, session: Session, grant: Grant, now: datetime) -> datetime | None:
        expires = grant.expires_at
        if expires is not None:
            if expires.tzinfo is None:
                raise InvalidConsent(Message("error.consent.time-zone"), field="expires_at")
            if expires <= now:
                raise InvalidConsent(Message("error.consent.expired"), field="expires_at")
        if grant.channel == "guardian":
            if not grant.guardian_id:
                raise InvalidConsent(
                    Message("error.consent.guardian-required"), field="on_behalf_of"
                )
            limit = self.ward_limit(session, grant.guardian_id, grant.resident_id, now)
            if limit is not None and (expires is None or expires > limit):
                expires = limit
        return expires

    @staticmethod
    def _check_evidence(grant: Grant) -> None:
        if grant.channel != "assisted":
            return
        if not grant.evidence:
            raise InvalidConsent(Message("error.consent.evidence-required"), field="evidence")
        if not grant.witness:
            raise InvalidConsent(Message("error.consent.witness-required"), field="witness")

    def _previous(self, session: Session, grant: Grant, now: datetime) -> Consent | None:
        """The consent a change supersedes: the same resident's, recipient and purpose,
        still active."""
        if not grant.supersedes:
            return None
        previous = session.get(Consent, grant.supersedes)
        if previous is None or previous.resident_id != grant.resident_id:
            raise ConsentNotFound(Message("error.consent.supersedes-none"), field="supersedes")
        if (previous.recipient, previous.purpose) != (grant.recipient, grant.purpose):
            raise InvalidConsent(Message("error.consent.supersedes-other"), field="supersedes")
        if not self._is_active(session, previous, now):
            raise ConsentConflict(Message("error.consent.supersedes-inactive"), field="supersedes")
        return previous

    def revoke(
        self, session: Session, consent_id: str, resident_ids: Iterable[str], actor: Actor
    ) -> Consent:
        """Revoke one of these residents' consents; the next look-up no longer sees it."""
        consent = session.get(Consent, consent_id)
        if consent is None or consent.resident_id not in set(resident_ids):
            raise ConsentNotFound(Message("error.consent.not-found"))
        if session.get(ConsentRevocation, consent_id) is not None:
            raise ConsentConflict(Message("error.consent.revoked"))
        session.add(
            ConsentRevocation(
                consent_id=consent.id,
                revoked_at=self.clock(),
                revoked_by=actor.name,
                channel=actor.channel,
                reason="revoked",
            )
        )
        session.flush()
        self.issue_receipt(session, consent, "revoked")
        self.audit.record(session, [self._event("consent.revoked", consent, actor)])
        return consent

    def _is_active(self, session: Session, consent: Consent, now: datetime) -> bool:
        if session.get(ConsentRevocation, consent.id) is not None:
            return False
        return consent.expires_at is None or consent.expires_at > now

    # -- requests ------------------------------------------------------------------------

    def request(
        self,
        session: Session,
        *,
        resident_id: str,
        recipient: str,
        purpose: str,
        fields: Sequence[str] | None,
        separate: bool,
        message: str | None,
        actor: Actor,
    ) -> ConsentRequest:
        spec = self.purpose_spec(purpose)
        self._recipient(session, recipient, spec)
        self._resident(session, resident_id)
        chosen = self._fields(spec, fields, None)
        row = ConsentRequest(
            id=new_id("crq"),
            resident_id=resident_id,
            recipient=recipient,
            purpose=purpose,
            fields=chosen,
            separate=separate,
            message=message,
            requested_by=actor.name,
            requested_at=self.clock(),
            status="pending",
        )
        session.add(row)
        session.flush()
        self.audit.record(
            session,
            [
                EntryDraft(
                    action="consent.requested",
                    outcome="allowed",
                    channel="api",
                    kind="event",
                    subject_type=actor.subject_type,
                    organisation=recipient,
                    client=actor.client,
                    user=None if actor.client == actor.name else actor.name,
                    purpose=purpose,
                    legal_basis="consent",
                    resident_id=resident_id,
                    fields=dict.fromkeys(chosen, "asked"),
                    request_id=actor.request_id,
                    details={"consent_request": row.id, "separate": separate},
                )
            ],
        )
        return row

    def requests_for(self, session: Session, resident_ids: Sequence[str]) -> list[ConsentRequest]:
        return list(
            session.scalars(
                select(ConsentRequest)
                .where(ConsentRequest.resident_id.in_(list(resident_ids)))
                .order_by(ConsentRequest.requested_at.desc(), ConsentRequest.id)
            )
        )

    def answer(
        self,
        session: Session,
        request_id: str,
        resident_ids: Sequence[str],
        *,
        accept: bool,
        actor: Actor,
        guardian_id: str | None = None,
        expires_at: datetime | None = None,
        notice_version: str | None = None,
    ) -> tuple[ConsentRequest, Consent | None]:
        row = session.get(ConsentRequest, request_id)
        if row is None or row.resident_id not in set(resident_ids):
            raise ConsentNotFound(Message("error.consent.request-not-found"))
        if row.status != "pending":
            raise ConsentConflict(Message("error.consent.request-answered"))
        consent: Consent | None = None
        if accept:
            consent = self.grant(
                session,
                Grant(
                    resident_id=row.resident_id,
                    recipient=row.recipient,
                    purpose=row.purpose,
                    channel="guardian" if guardian_id else "self",
                    recorded_by=actor.name,
                    fields=list(row.fields),
                    separate=row.separate,
                    expires_at=expires_at,
                    notice_version=notice_version,
                    guardian_id=guardian_id,
                    request_id=row.id,
                    subject_type=actor.subject_type,
                    client=actor.client,
                    audit_request_id=actor.request_id,
                ),
            )
        row.status = "granted" if accept else "refused"
        row.answered_at = self.clock()
        row.consent_id = consent.id if consent else None
        self.audit.record(
            session,
            [
                EntryDraft(
                    action="consent.request_answered",
                    outcome="allowed",
                    channel="api",
                    kind="event",
                    subject_type=actor.subject_type,
                    organisation=row.recipient,
                    client=actor.client,
                    user=actor.name,
                    purpose=row.purpose,
                    legal_basis="consent",
                    consent_id=row.consent_id,
                    resident_id=row.resident_id,
                    request_id=actor.request_id,
                    details={"consent_request": row.id, "answer": row.status},
                )
            ],
        )
        return row, consent

    # -- reading -------------------------------------------------------------------------

    def consents_of(self, session: Session, resident_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Every consent of these residents, newest first, with status and revocation."""
        rows = session.execute(
            select(Consent, ConsentRevocation)
            .outerjoin(ConsentRevocation, ConsentRevocation.consent_id == Consent.id)
            .where(Consent.resident_id.in_(list(resident_ids)))
            .order_by(Consent.granted_at.desc(), Consent.id)
        ).all()
        return [self.describe(c, r) for c, r in rows]

    def get(self, session: Session, consent_id: str) -> tuple[Consent, ConsentRevocation | None]:
        consent = session.get(Consent, consent_id)
        if consent is None:
            raise ConsentNotFound(Message("error.consent.not-found"))
        return consent, session.get(ConsentRevocation, consent_id)

    def describe(self, consent: Consent, revocation: ConsentRevocation | None) -> dict[str, Any]:
        """A consent as shown to residents and workers; evidence only as hash and witness."""
        now = self.clock()
        if revocation is not None:
            status = "superseded" if revocation.reason == "superseded" else "revoked"
        elif consent.expires_at is not None and consent.expires_at <= now:
            status = "expired"
        else:
            status = "active"
        spec = self.purposes.get(consent.purpose, {})
        return {
            "kind": "consent",
            "consent_id": consent.id,
            "resident_id": consent.resident_id,
            "recipient": consent.recipient,
            "purpose": consent.purpose,
            "purpose_name": spec.get("name"),
            "fields": list(consent.fields),
            "categories": list(consent.categories or []),
            "legal_basis": consent.legal_basis,
            "legal_reference": spec.get("legal_reference"),
            "separate": consent.separate,
            "channel": consent.channel,
            "recorded_by": consent.recorded_by,
            "guardian_id": consent.guardian_id,
            "notice_version": consent.notice_version,
            "granted_at": _iso(consent.granted_at),
            "expires_at": _iso(consent.expires_at),
            "revoked_at": _iso(revocation.revoked_at) if revocation else None,
            "revoked_by": revocation.revoked_by if revocation else None,
            "supersedes": consent.supersedes,
            "status": status,
            "requires_consent": True,
            "evidence": (
                {
                    "sha256": consent.evidence_sha256,
                    "media_type": consent.evidence_media_type,
                    "encrypted": consent.evidence_blob is not None,
                    "witness": consent.witness,
                }
                if consent.evidence_sha256
                else None
            ),
        }

    def open_evidence(self, session: Session, consent: Consent) -> bytes:
        """The scanned form in clear, for the resident's own download (never to recipients)."""
        if consent.evidence_blob is None or consent.evidence_key_version is None:
            raise ConsentNotFound(Message("error.consent.no-evidence"))
        key = self.store.data_keys.get(session, consent.resident_id, consent.evidence_key_version)
        return open_field(key, f"consent_evidence:{consent.id}", consent.evidence_blob)

    def legal_bases(self) -> list[dict[str, Any]]:
        """Purposes that do not rest on consent, shown to residents with the reason."""
        items = []
        for code, spec in sorted(self.purposes.items()):
            basis = spec.get("legal_basis")
            if basis == "consent":
                continue
            items.append(
                {
                    "kind": "legal-basis",
                    "purpose": code,
                    "purpose_name": spec.get("name"),
                    "legal_basis": basis,
                    "legal_basis_label": BASIS_LABELS.get(str(basis)),
                    "legal_reference": spec.get("legal_reference"),
                    "fields": self.purpose_fields(spec),
                    "recipient_types": list(spec.get("recipient_types") or []),
                    "retention_days": spec.get("retention_days"),
                    "notice_version": spec.get("notice_version"),
                    "requires_consent": False,
                    "note": NOT_NEEDED,
                    "status": "in-force",
                }
            )
        return items

    # -- receipts and audit ------------------------------------------------------------

    def receipt(self, session: Session, consent_id: str) -> ConsentReceipt:
        """The latest receipt of a consent (the revocation's, once revoked)."""
        row = session.scalars(
            select(ConsentReceipt)
            .where(ConsentReceipt.consent_id == consent_id)
            .order_by(ConsentReceipt.issued_at.desc(), ConsentReceipt.event.desc())
            .limit(1)
        ).first()
        if row is None:
            raise ConsentNotFound(Message("error.consent.no-receipt"))
        return row

    def issue_receipt(self, session: Session, consent: Consent, event: str) -> ConsentReceipt:
        revocation = session.get(ConsentRevocation, consent.id)
        organisation = session.get(Organisation, consent.recipient)
        body = self.receipt_body(consent, revocation, organisation, event)
        kid, token = sign_receipt(session, self.keyring, body)
        row = ConsentReceipt(
            id=str(body["consentReceiptID"]),
            consent_id=consent.id,
            event=event,
            issued_at=self.clock(),
            kid=kid,
            jws=token,
        )
        session.add(row)
        session.flush()
        return row

    def receipt_body(
        self,
        consent: Consent,
        revocation: ConsentRevocation | None,
        organisation: Organisation | None,
        event: str,
    ) -> dict[str, Any]:
        spec = self.purposes.get(consent.purpose, {})
        name = spec.get("name") or {}
        recipient_name = (
            f"{organisation.name_zh} / {organisation.name_en}"
            if organisation
            else consent.recipient
        )
        spi = [n for n in consent.fields if n in self.catalogue and self.catalogue[n].sensitive]
        categories = sorted(
            {self.catalogue[n].category for n in consent.fields if n in self.catalogue}
        )
        termination = (
            f"until {consent.expires_at.isoformat()} or revocation"
            if consent.expires_at
            else "until revoked"
        ) + f"; revoke at any time: POST /v1/me/consents/{consent.id}/revoke"
        method = {
            "self": "online, by the resident (portal)",
            "assisted": "in person, recorded by a worker with a signed form and a witness",
            "guardian": "online, by the resident's registered guardian",
        }[consent.channel]
        return {
            "version": KANTARA_VERSION,
            "jurisdiction": "CN",
            "consentTimestamp": int(
                (
                    revocation.revoked_at
                    if revocation and event == "revoked"
                    else consent.granted_at
                ).timestamp()
            ),
            "collectionMethod": method,
            "consentReceiptID": f"rcpt_{new_id('x')[2:]}{event[0]}",
            "language": "zh-CN",
            "piiPrincipalId": consent.resident_id,
            "piiControllers": [
                {**self.controller, "onBehalf": False},
                {
                    "piiController": recipient_name,
                    "onBehalf": False,
                    "contact": consent.recipient,
                    "address": "",
                    "email": "",
                    "phone": "",
                },
            ],
            "policyUrl": f"/v1/purposes#{consent.purpose}",
            "services": [
                {
                    "service": " / ".join(
                        str(name.get(lang, consent.purpose)) for lang in ("zh", "en")
                    ),
                    "purposes": [
                        {
                            "purpose": str(name.get("en", consent.purpose)),
                            "purposeCategory": [consent.purpose],
                            "consentType": "EXPLICIT",
                            "piiCategory": categories,
                            "primaryPurpose": True,
                            "termination": termination,
                            "thirdPartyDisclosure": True,
                            "thirdPartyName": recipient_name,
                        }
                    ],
                }
            ],
            "sensitive": bool(spi),
            "spiCat": spi,
            # extensions
            "consentId": consent.id,
            "event": event,
            "recipient": consent.recipient,
            "purposeCode": consent.purpose,
            "fields": list(consent.fields),
            "legalBasis": consent.legal_basis,
            "legalReference": spec.get("legal_reference"),
            "separateConsent": consent.separate,
            "channel": consent.channel,
            "noticeVersion": consent.notice_version,
            "grantedAt": _iso(consent.granted_at),
            "expiresAt": _iso(consent.expires_at),
            "revokedAt": _iso(revocation.revoked_at) if revocation else None,
            "supersedes": consent.supersedes,
            "guardianId": consent.guardian_id,
            "evidenceSha256": consent.evidence_sha256,
            "witness": consent.witness,
        }

    def _event(
        self,
        action: str,
        consent: Consent,
        actor: Actor,
        details: Mapping[str, Any] | None = None,
    ) -> EntryDraft:
        return EntryDraft(
            action=action,
            outcome="allowed",
            channel="api",
            kind="event",
            subject_type=actor.subject_type,
            organisation=consent.recipient,
            client=actor.client,
            user=actor.name,
            on_behalf_of=consent.resident_id if actor.channel != "self" else None,
            purpose=consent.purpose,
            legal_basis=consent.legal_basis,
            consent_id=consent.id,
            resident_id=consent.resident_id,
            fields=dict.fromkeys(consent.fields, "consented"),
            request_id=actor.request_id,
            details={
                "consent_channel": consent.channel,
                "actor_channel": actor.channel,
                **{k: v for k, v in {**actor.details, **(details or {})}.items() if v is not None},
            },
        )


def _fourteenth(birth: date) -> datetime:
    """00:00 China time on the 14th birthday (29 February becomes 1 March)."""
    try:
        day = birth.replace(year=birth.year + WARD_AGE)
    except ValueError:
        day = date(birth.year + WARD_AGE, 3, 1)
    return datetime(day.year, day.month, day.day, tzinfo=CHINA).astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
