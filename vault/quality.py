"""Data quality: find values that are placeholders rather than data.

The papers tell of a committee that typed its own office number in place of residents'
phones under inspection pressure. These checks find such values, mostly through the blind
index (no decryption): one phone shared by many unrelated households, a phone equal to an
organisation's or community's office number, an ID number held by two residents. Only the
ID-number consistency check decrypts, and only the three fields it compares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from vault.blind_index import digest, normalise_for_index
from vault.errors import InvalidValue
from vault.i18n import DEFAULT_LANG, Message
from vault.models import BlindIndexEntry, Community, Organisation, Resident
from vault.services import ResidentStore
from vault.validators import validate_record


@dataclass(frozen=True)
class QualityIssue:
    resident_id: str
    field: str
    code: str
    detail: Message

    def message(self, lang: str = DEFAULT_LANG) -> str:
        return self.detail.text(lang)


def _identifier_field(store: ResidentStore, validator: str) -> str | None:
    """The searchable field checked by `validator` (the catalogue names it, not this code)."""
    for spec in store.catalogue.searchable:
        if spec.validator == validator:
            return spec.name
    return None


def _real() -> ColumnElement[bool]:
    """Decoy rows of traceable exports are no one's data: never a quality finding, which
    would also tell an operator's report reader which rows are decoys."""
    return Resident.is_decoy.is_(False)


def shared_phones(
    session: Session, store: ResidentStore, min_households: int = 3
) -> Iterator[QualityIssue]:
    phone = _identifier_field(store, "cn_mobile")
    if phone is None:
        return
    crowded = (
        select(BlindIndexEntry.digest)
        .join(Resident, Resident.id == BlindIndexEntry.resident_id)
        .where(BlindIndexEntry.field == phone, Resident.status == "active", _real())
        .group_by(BlindIndexEntry.digest)
        .having(
            func.count(func.distinct(func.coalesce(Resident.household_id, Resident.id)))
            >= min_households
        )
    )
    rows = session.execute(
        select(BlindIndexEntry.resident_id, BlindIndexEntry.digest)
        .join(Resident, Resident.id == BlindIndexEntry.resident_id)
        .where(BlindIndexEntry.field == phone, BlindIndexEntry.digest.in_(crowded), _real())
        .order_by(BlindIndexEntry.digest, BlindIndexEntry.resident_id)
    )
    for resident_id, _ in rows:
        yield QualityIssue(
            resident_id,
            phone,
            "shared-phone",
            Message("quality.shared-phone", {"households": min_households}),
        )


def office_phones(session: Session, store: ResidentStore) -> Iterator[QualityIssue]:
    phone = _identifier_field(store, "cn_mobile")
    if phone is None:
        return
    spec = store.catalogue[phone]
    offices = [
        *session.scalars(
            select(Organisation.office_phone).where(Organisation.office_phone.is_not(None))
        ),
        *session.scalars(select(Community.office_phone).where(Community.office_phone.is_not(None))),
    ]
    digests = set()
    for number in offices:
        if number is None:
            continue
        try:
            digests.add(digest(store.keyring, spec, normalise_for_index(spec, number)))
        except InvalidValue:
            digests.add(digest(store.keyring, spec, number.strip()))  # landlines stay as typed
    if not digests:
        return
    for resident_id in session.scalars(
        select(BlindIndexEntry.resident_id)
        .join(Resident, Resident.id == BlindIndexEntry.resident_id)
        .where(BlindIndexEntry.field == phone, BlindIndexEntry.digest.in_(digests), _real())
        .order_by(BlindIndexEntry.resident_id)
    ):
        yield QualityIssue(
            resident_id,
            phone,
            "office-phone",
            Message("quality.office-phone"),
        )


def duplicate_id_numbers(session: Session, store: ResidentStore) -> Iterator[QualityIssue]:
    id_field = _identifier_field(store, "gb11643")
    if id_field is None:
        return
    shared = (
        select(BlindIndexEntry.digest)
        .join(Resident, Resident.id == BlindIndexEntry.resident_id)
        .where(BlindIndexEntry.field == id_field, _real())
        .group_by(BlindIndexEntry.digest)
        .having(func.count() > 1)
    )
    for resident_id in session.scalars(
        select(BlindIndexEntry.resident_id)
        .join(Resident, Resident.id == BlindIndexEntry.resident_id)
        .where(BlindIndexEntry.field == id_field, BlindIndexEntry.digest.in_(shared), _real())
        .order_by(BlindIndexEntry.resident_id)
    ):
        yield QualityIssue(
            resident_id,
            id_field,
            "duplicate-id-number",
            Message("quality.duplicate-id-number"),
        )


def inconsistent_id_numbers(
    session: Session, store: ResidentStore, batch_size: int = 500
) -> Iterator[QualityIssue]:
    """Re-validate the ID number against birth date and gender (records from before checks)."""
    id_field = _identifier_field(store, "gb11643")
    if id_field is None:
        return
    spec = store.catalogue[id_field]
    names = [id_field, *spec.matches.values()]
    ids = list(
        session.scalars(
            select(Resident.id).where(Resident.status == "active", _real()).order_by(Resident.id)
        )
    )
    for start in range(0, len(ids), batch_size):
        records = store.read_many(session, ids[start : start + batch_size], names)
        for resident_id, record in records.items():
            if id_field not in record:
                continue
            _, problems = validate_record(store.catalogue, record)
            for problem in problems:
                yield QualityIssue(
                    resident_id,
                    problem.field,
                    f"invalid-{problem.code}",
                    problem.detail,
                )


CHECKS: dict[str, Callable[[Session, ResidentStore], Iterator[QualityIssue]]] = {
    "shared-phone": shared_phones,
    "office-phone": office_phones,
    "duplicate-id-number": duplicate_id_numbers,
    "id-number-consistency": inconsistent_id_numbers,
}


def run_checks(session: Session, store: ResidentStore) -> list[QualityIssue]:
    return [issue for check in CHECKS.values() for issue in check(session, store)]
