"""Database models of the vault: the community hierarchy, organisations, and encrypted residents.

Structure (which household lives in which room of which building, grid and community) is
kept in clear, because jurisdiction filters run on it in SQL. Personal values are not:
a resident's live in one `resident_records` row, one sealed document per sensitivity class
under the resident's data key, and only identifiers marked searchable also get a keyed
blind index.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Opaque ids with a readable prefix; random so they reveal no order or count."""
    return f"{prefix}_{secrets.token_hex(8)}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused; use an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- the hierarchy ------------------------------------------------------------------------


class Street(Base):
    __tablename__ = "streets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    district: Mapped[str] = mapped_column(String(100))
    retired_at: Mapped[datetime | None] = mapped_column(TZDateTime())  # vault.places


class Community(Base):
    __tablename__ = "communities"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    street_id: Mapped[str] = mapped_column(ForeignKey("streets.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    office_phone: Mapped[str | None] = mapped_column(String(20))
    retired_at: Mapped[datetime | None] = mapped_column(TZDateTime())  # vault.places


class Grid(Base):
    __tablename__ = "grids"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    community_id: Mapped[str] = mapped_column(ForeignKey("communities.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    retired_at: Mapped[datetime | None] = mapped_column(TZDateTime())  # vault.places


class Building(Base):
    __tablename__ = "buildings"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    community_id: Mapped[str] = mapped_column(ForeignKey("communities.id"), index=True)
    grid_id: Mapped[str] = mapped_column(ForeignKey("grids.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    retired_at: Mapped[datetime | None] = mapped_column(TZDateTime())  # vault.places


class Room(Base):
    """A unit (单元) and room (室) in a building: where a household lives."""

    __tablename__ = "rooms"
    __table_args__ = (UniqueConstraint("building_id", "unit", "number"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    building_id: Mapped[str] = mapped_column(ForeignKey("buildings.id"), index=True)
    unit: Mapped[str] = mapped_column(String(20))
    number: Mapped[str] = mapped_column(String(20))


class Household(Base):
    __tablename__ = "households"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


# -- organisations -------------------------------------------------------------------------

ORGANISATION_TYPES = (
    "department",
    "street_office",
    "residents_committee",
    "property_company",
    "owners_committee",
    "social_organisation",
)


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), index=True)
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    # Public office number; residents' phones equal to it are flagged as placeholders.
    office_phone: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    communities: Mapped[list[Community]] = relationship(secondary="organisation_communities")
    buildings: Mapped[list[Building]] = relationship(secondary="organisation_buildings")


class OrganisationCommunity(Base):
    __tablename__ = "organisation_communities"
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    community_id: Mapped[str] = mapped_column(ForeignKey("communities.id"), primary_key=True)


class OrganisationBuilding(Base):
    __tablename__ = "organisation_buildings"
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    building_id: Mapped[str] = mapped_column(ForeignKey("buildings.id"), primary_key=True)


# -- residents -----------------------------------------------------------------------------


class Resident(Base):
    __tablename__ = "residents"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    household_id: Mapped[str | None] = mapped_column(ForeignKey("households.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | erased
    # The data-key version new ciphertexts use; older versions exist only mid-rotation.
    key_version: Mapped[int] = mapped_column(Integer, default=1)
    # Optimistic concurrency: each write bumps it, a stale write is refused.
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    # Fictional records planted for export tracing; never counted or shown as people.
    is_decoy: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(TZDateTime())

    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012 - SQLAlchemy's API


class Guardianship(Base):
    """A guardian (a parent, or one appointed) of a minor or of a resident under guardianship.

    Guardians see and decide for their wards (PIPL Art. 31); the record says since when and
    on what basis, and ends (`until`) when the ward turns 14 or the guardianship ends.
    """

    __tablename__ = "guardianships"
    guardian_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), primary_key=True)
    ward_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), primary_key=True, index=True)
    basis: Mapped[str] = mapped_column(String(32))  # parent | appointed
    since: Mapped[datetime] = mapped_column(TZDateTime())
    until: Mapped[datetime | None] = mapped_column(TZDateTime())


class DataKeyRecord(Base):
    """A resident's data key, wrapped by a key-encryption key. Erasure deletes these rows."""

    __tablename__ = "data_keys"
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite: Mapped[str] = mapped_column(String(16))
    kek_id: Mapped[str] = mapped_column(String(64), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ResidentRecord(Base):
    """A resident's values: one AEAD document per sensitivity class, and their provenance.

    Each `doc_*` column is the sealed JSON object of that class's fields (vault.records,
    vault.crypto.seal_document), None when the resident has none; every document is sealed
    under data key `key_version`. `provenance` is the compact map of who wrote each field,
    through which channel, when, and when it was last verified (vault.records).
    """

    __tablename__ = "resident_records"
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), primary_key=True)
    key_version: Mapped[int] = mapped_column(Integer)
    doc_l1: Mapped[bytes | None] = mapped_column(LargeBinary)
    doc_l2: Mapped[bytes | None] = mapped_column(LargeBinary)
    doc_l3: Mapped[bytes | None] = mapped_column(LargeBinary)
    doc_l4: Mapped[bytes | None] = mapped_column(LargeBinary)
    provenance: Mapped[str] = mapped_column(Text)


class BlindIndexEntry(Base):
    """Keyed MAC of a normalised identifier, for exact-match lookup without the plaintext."""

    __tablename__ = "blind_indexes"
    # On SQLite the rows live in their key's b-tree: no second copy of it (migration 0025).
    __table_args__ = (
        Index("ix_blind_indexes_lookup", "field", "digest"),
        {"sqlite_with_rowid": False},
    )
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    scheme: Mapped[str] = mapped_column(String(64))
    digest: Mapped[bytes] = mapped_column(LargeBinary(64))


class Erasure(Base):
    """Tombstone of a crypto-shredded resident: replayed on restore so no one comes back."""

    __tablename__ = "erasures"
    resident_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(TZDateTime())
    erased_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(500))


class KeyRotation(Base):
    """Progress of a rotation, so an interrupted one resumes where it stopped."""

    __tablename__ = "key_rotations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # kek | data_keys
    target: Mapped[str] = mapped_column(String(64))  # the new KEK id, or the start time
    started_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    processed: Mapped[int] = mapped_column(Integer, default=0)
