"""Statistics tokens: keyed deterministic tokens of a field's category, so SQL can count.

A statistics table counts residents by place and by the category of one field. Decrypting
that field for every resident is what made a table cost 70 times a COUNT. Instead, every
write of a field the catalogue marks `stat_token: true` also stores

    token = MAC(token key, "rv-stat-token-v1" | field | category label)   (first 16 bytes)

in `resident_stat_tokens`, and the statistics service groups by it in SQL. It maps tokens
back to labels by computing the token of every allowed value of the field (the catalogue's
closed set), so only fields with a closed set of values can be tokenised: an enum, a
boolean, or a disability record (its category). Free text, dates and amounts cannot.

The token key of an epoch is the keyring's blind-index MAC over a message of its own
("rv-stat-token-key-v1" | epoch), so it works with the local keyring and in an HSM
alike, and no token can equal a blind-index digest (different messages, different key).
The epoch is the key-encryption key that was active when the token was written: a KEK
rotation re-tokens every row under the new epoch (`retoken`), without decrypting, by
mapping each old token to its label. Tokens never leave the database and this module:
they are in no answer, export, log line or audit entry.

What they reveal to someone who reads the database: equal categories have equal tokens,
so the frequency of each category per building is visible (docs/threat-model.md).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import structlog
from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String, delete, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from vault.catalogue import Catalogue, FieldSpec
from vault.crypto import keyed_mac
from vault.interfaces import Keyring
from vault.models import Base
from vault.validators import DISABILITY_CATEGORIES

log = structlog.get_logger(__name__)

TOKEN_BYTES: Final = 16  # 128 bits: no collisions among a field's handful of labels
_KEY_TAG: Final = b"rv-stat-token-key-v1"
_TOKEN_TAG: Final = b"rv-stat-token-v1"


class ResidentStatToken(Base):
    """One resident's token of one statistics field (absent: the field is not set)."""

    __tablename__ = "resident_stat_tokens"
    # Grouping reads (field, token) for the residents in scope; rotation finds stale epochs.
    __table_args__ = (Index("ix_resident_stat_tokens_grouping", "field", "epoch", "token"),)
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64))
    token: Mapped[bytes] = mapped_column(LargeBinary(32))


class StatTokenField(Base):
    """Whether every resident's value of a field has its token (after the backfill), so the
    statistics service knows it may count from tokens alone."""

    __tablename__ = "stat_token_fields"
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    complete: Mapped[bool] = mapped_column(Boolean)


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


# -- the closed sets -----------------------------------------------------------------------


def closed_labels(spec: FieldSpec) -> tuple[str, ...]:
    """Every label a tokenised field's value can have (what the service maps back)."""
    if spec.type == "enum":
        return tuple(spec.values)
    if spec.type == "boolean":
        return ("true", "false")
    if spec.validator == "disability":
        return ("none", *DISABILITY_CATEGORIES)
    raise ValueError(f"field {spec.name!r} has no closed set of values")


def label_of(spec: FieldSpec, value: Any) -> str | None:
    """The label of a stored (normalised) value; None if it is outside the closed set."""
    if spec.type == "boolean":
        return None if not isinstance(value, bool) else ("true" if value else "false")
    if spec.validator == "disability":
        value = value.get("category") if isinstance(value, Mapping) else None
    label = value if isinstance(value, str) else None
    return label if label in closed_labels(spec) else None


def representative(spec: FieldSpec, label: str) -> Any:
    """A value with this label, for a measure's classifier (which reads only the label's
    part of a value: the category of a disability, the enum value, the boolean)."""
    if spec.type == "boolean":
        return label == "true"
    if spec.validator == "disability":
        return {"category": label}
    return label


# -- tokens --------------------------------------------------------------------------------


class StatTokens:
    """Computes and stores tokens; derived keys are cached per epoch (one keyring call)."""

    def __init__(self, keyring: Keyring, catalogue: Catalogue) -> None:
        self.keyring = keyring
        self.fields: dict[str, FieldSpec] = {s.name: s for s in catalogue if s.stat_token}
        self._keys: dict[str, bytes] = {}

    def epoch(self) -> str:
        return self.keyring.active_kek_id()

    def _key(self, epoch: str) -> bytes:
        key = self._keys.get(epoch)
        if key is None:
            key = self.keyring.blind_index(_length_prefixed(_KEY_TAG, epoch.encode()))
            self._keys[epoch] = key
        return key

    def token(self, field: str, label: str, epoch: str) -> bytes:
        algorithm = self.keyring.blind_index_scheme.split(":", 1)[0]
        message = _length_prefixed(_TOKEN_TAG, field.encode(), label.encode())
        return keyed_mac(algorithm, self._key(epoch), message)[:TOKEN_BYTES]

    def labels(self, field: str, epoch: str) -> dict[bytes, str]:
        """Token -> label for every allowed value of the field under this epoch."""
        spec = self.fields[field]
        return {self.token(field, label, epoch): label for label in closed_labels(spec)}

    def rows(
        self, resident_id: str, values: Mapping[str, Any], epoch: str | None = None
    ) -> list[dict[str, Any]]:
        """The token rows of these (normalised) values; fields not tokenised are skipped."""
        epoch = epoch or self.epoch()
        rows = []
        for name, value in values.items():
            spec = self.fields.get(name)
            label = label_of(spec, value) if spec is not None else None
            if label is not None:
                token = self.token(name, label, epoch)
                rows.append(
                    {"resident_id": resident_id, "field": name, "epoch": epoch, "token": token}
                )
        return rows

    # -- hooks of ResidentStore ---------------------------------------------------------

    def replace(self, session: Session, resident_id: str, values: Mapping[str, Any]) -> None:
        """An update wrote these fields: their tokens change with them."""
        names = [n for n in values if n in self.fields]
        if not names:
            return
        self.drop(session, resident_id, names)
        rows = self.rows(resident_id, values)
        if rows:
            session.execute(insert(ResidentStatToken), rows)

    def drop(self, session: Session, resident_id: str, fields: Iterable[str] | None = None) -> None:
        """Cleared fields (or, with None, an erased resident) lose their tokens."""
        where = [ResidentStatToken.resident_id == resident_id]
        if fields is not None:
            names = [n for n in fields if n in self.fields]
            if not names:
                return
            where.append(ResidentStatToken.field.in_(names))
        session.execute(delete(ResidentStatToken).where(*where))


def incomplete_fields(session: Session, fields: Sequence[str]) -> list[str]:
    """Which of these fields' tokens are not known to be complete (backfill pending)."""
    complete = set(
        session.scalars(
            select(StatTokenField.field).where(
                StatTokenField.field.in_(list(fields)), StatTokenField.complete.is_(True)
            )
        )
    )
    return [f for f in fields if f not in complete]
