"""vault core: hierarchy, organisations, encrypted residents

Revision ID: 0001
Revises:
Create Date: 2026-11-25 15:34:42.494710
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand/contract (docs/postgresql.md): 0001-0010 predate the rule and are grandfathered.
phase: str = "expand"


def upgrade() -> None:

    op.create_table(
        "erasures",
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("resident_id", name=op.f("pk_erasures")),
    )
    op.create_table(
        "key_rotations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_rotations")),
    )
    op.create_table(
        "organisations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("name_zh", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("office_phone", sa.String(length=20), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
    )
    with op.batch_alter_table("organisations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_organisations_type"), ["type"], unique=False)

    op.create_table(
        "streets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_streets")),
    )
    op.create_table(
        "communities",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("street_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("office_phone", sa.String(length=20), nullable=True),
        sa.ForeignKeyConstraint(
            ["street_id"], ["streets.id"], name=op.f("fk_communities_street_id_streets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_communities")),
    )
    with op.batch_alter_table("communities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_communities_street_id"), ["street_id"], unique=False)

    op.create_table(
        "grids",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("community_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"], ["communities.id"], name=op.f("fk_grids_community_id_communities")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grids")),
    )
    with op.batch_alter_table("grids", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grids_community_id"), ["community_id"], unique=False)

    op.create_table(
        "organisation_communities",
        sa.Column("organisation_id", sa.String(length=32), nullable=False),
        sa.Column("community_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_organisation_communities_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_organisation_communities_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint(
            "organisation_id", "community_id", name=op.f("pk_organisation_communities")
        ),
    )
    op.create_table(
        "buildings",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("community_id", sa.String(length=32), nullable=False),
        sa.Column("grid_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"], ["communities.id"], name=op.f("fk_buildings_community_id_communities")
        ),
        sa.ForeignKeyConstraint(["grid_id"], ["grids.id"], name=op.f("fk_buildings_grid_id_grids")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buildings")),
    )
    with op.batch_alter_table("buildings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_buildings_community_id"), ["community_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_buildings_grid_id"), ["grid_id"], unique=False)

    op.create_table(
        "organisation_buildings",
        sa.Column("organisation_id", sa.String(length=32), nullable=False),
        sa.Column("building_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["building_id"],
            ["buildings.id"],
            name=op.f("fk_organisation_buildings_building_id_buildings"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_organisation_buildings_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint(
            "organisation_id", "building_id", name=op.f("pk_organisation_buildings")
        ),
    )
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("building_id", sa.String(length=32), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["building_id"], ["buildings.id"], name=op.f("fk_rooms_building_id_buildings")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rooms")),
        sa.UniqueConstraint("building_id", "unit", "number", name=op.f("uq_rooms_building_id")),
    )
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rooms_building_id"), ["building_id"], unique=False)

    op.create_table(
        "households",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("room_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name=op.f("fk_households_room_id_rooms")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_households")),
    )
    with op.batch_alter_table("households", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_households_room_id"), ["room_id"], unique=False)

    op.create_table(
        "residents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("household_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("row_version", sa.Integer(), nullable=False),
        sa.Column("is_decoy", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_residents_household_id_households")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_residents")),
    )
    with op.batch_alter_table("residents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_residents_household_id"), ["household_id"], unique=False
        )

    op.create_table(
        "blind_indexes",
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("scheme", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_blind_indexes_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("resident_id", "field", name=op.f("pk_blind_indexes")),
    )
    with op.batch_alter_table("blind_indexes", schema=None) as batch_op:
        batch_op.create_index("ix_blind_indexes_lookup", ["field", "digest"], unique=False)

    op.create_table(
        "data_keys",
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(length=16), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_data_keys_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("resident_id", "version", name=op.f("pk_data_keys")),
    )
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_keys_kek_id"), ["kek_id"], unique=False)

    op.create_table(
        "resident_fields",
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("written_by", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_resident_fields_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("resident_id", "field", name=op.f("pk_resident_fields")),
    )


def downgrade() -> None:

    op.drop_table("resident_fields")
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_keys_kek_id"))

    op.drop_table("data_keys")
    with op.batch_alter_table("blind_indexes", schema=None) as batch_op:
        batch_op.drop_index("ix_blind_indexes_lookup")

    op.drop_table("blind_indexes")
    with op.batch_alter_table("residents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_residents_household_id"))

    op.drop_table("residents")
    with op.batch_alter_table("households", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_households_room_id"))

    op.drop_table("households")
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rooms_building_id"))

    op.drop_table("rooms")
    op.drop_table("organisation_buildings")
    with op.batch_alter_table("buildings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_buildings_grid_id"))
        batch_op.drop_index(batch_op.f("ix_buildings_community_id"))

    op.drop_table("buildings")
    op.drop_table("organisation_communities")
    with op.batch_alter_table("grids", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grids_community_id"))

    op.drop_table("grids")
    with op.batch_alter_table("communities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_communities_street_id"))

    op.drop_table("communities")
    op.drop_table("streets")
    with op.batch_alter_table("organisations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_organisations_type"))

    op.drop_table("organisations")
    op.drop_table("key_rotations")
    op.drop_table("erasures")
