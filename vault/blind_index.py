"""Blind indexes: exact-match lookup on identifiers without storing them in clear.

The digest is a keyed MAC (HMAC-SHA256 or HMAC-SM3, with a key of its own in the keyring)
over the field name and the *normalised* value, so "+86 138-1234-5678" finds the resident
stored as "13812345678". Which fields are searchable is the catalogue's word.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.catalogue import Catalogue, FieldSpec
from vault.crypto import blind_index_message
from vault.errors import UnknownField
from vault.interfaces import Keyring
from vault.models import BlindIndexEntry, Resident
from vault.validators import VALIDATORS, normalise_id_number, normalise_phone

# A searchable field's value is normalised by the function its validator names, so
# the lookup side and the storage side can never disagree.
_NORMALISERS: dict[str, Callable[[str], str]] = {
    "gb11643": normalise_id_number,
    "cn_mobile": normalise_phone,
}


def normalise_for_index(spec: FieldSpec, raw: str) -> str:
    if spec.validator in _NORMALISERS:
        return _NORMALISERS[spec.validator](raw)
    if spec.validator in VALIDATORS:
        return str(VALIDATORS[spec.validator](raw, spec))
    return raw.strip()


def digest(keyring: Keyring, spec: FieldSpec, normalised: str) -> bytes:
    return keyring.blind_index(blind_index_message(spec.name, normalised))


def find_residents(
    session: Session, keyring: Keyring, catalogue: Catalogue, field: str, raw: str
) -> list[str]:
    """Ids of active residents whose `field` equals `raw` after normalisation."""
    if field not in catalogue or not catalogue[field].searchable:
        raise UnknownField(field)
    spec = catalogue[field]
    normalised = normalise_for_index(spec, raw)  # InvalidValue: the caller says what is wrong
    rows = session.scalars(
        select(BlindIndexEntry.resident_id)
        .join(Resident, Resident.id == BlindIndexEntry.resident_id)
        .where(
            BlindIndexEntry.field == field,
            BlindIndexEntry.digest == digest(keyring, spec, normalised),
            Resident.status == "active",
        )
        .order_by(BlindIndexEntry.resident_id)
    )
    return list(rows)
