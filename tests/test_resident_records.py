"""One row per resident (issue 20): the document envelope, its provenance map, the store's
writes on it, and the move from the per-field rows of 0001 through 0017 and 0019."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.util import CommandError
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, inspect, select

from tests.factories import household, person, place
from tests.test_rotation import SimulatedCrashError, _interrupt_after
from vault.context import Vault
from vault.crypto import DataKey, Suite, new_key, seal_field
from vault.db import alembic_config, migrate
from vault.errors import DecryptionFailed
from vault.models import Resident, ResidentRecord, utcnow
from vault.record_move import move_records
from vault.records import (
    CLASSES,
    FIELD_CODES,
    LEGACY_FIELDS,
    FieldProvenance,
    decode_provenance,
    encode_provenance,
    open_class,
    seal_class,
)
from vault.services import NewResident, Provenance, ResidentStore, encode_value

WORKER = Provenance("worker:w-007", "desk")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
field_names = st.sampled_from(FIELD_CODES) | st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1)
documents = st.dictionaries(field_names, json_values, min_size=1, max_size=8)
resident_ids = st.text("0123456789abcdef", min_size=1, max_size=16).map(lambda s: f"r_{s}")
suites = st.sampled_from(list(Suite))


def _key(resident_id: str, version: int, suite: Suite, raw: bytes | None = None) -> DataKey:
    return DataKey(resident_id, version, suite, raw or new_key(suite))


# -- the envelope ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(resident_ids, st.sampled_from(CLASSES), documents, suites, st.integers(1, 2**31))
def test_a_document_round_trips(
    resident_id: str, doc_class: str, values: dict[str, Any], suite: Suite, version: int
) -> None:
    key = _key(resident_id, version, suite)
    sealed = seal_class(key, doc_class, values)
    assert sealed is not None
    assert open_class(key, doc_class, sealed) == values


@settings(max_examples=60, deadline=None)
@given(resident_ids, resident_ids, st.sampled_from(CLASSES), st.sampled_from(CLASSES), documents)
def test_a_document_moved_to_another_resident_class_or_key_version_does_not_open(
    resident_id: str, other_id: str, doc_class: str, other_class: str, values: dict[str, Any]
) -> None:
    suite = Suite.AES_256_GCM
    raw = new_key(suite)
    key = _key(resident_id, 1, suite, raw)
    sealed = seal_class(key, doc_class, values)
    if other_id != resident_id:  # the same key bytes: only the binding differs
        with pytest.raises(DecryptionFailed):
            open_class(_key(other_id, 1, suite, raw), doc_class, sealed)
    if other_class != doc_class:
        with pytest.raises(DecryptionFailed):
            open_class(key, other_class, sealed)
    with pytest.raises(DecryptionFailed):
        open_class(_key(resident_id, 2, suite, raw), doc_class, sealed)


@settings(max_examples=80, deadline=None)
@given(documents, suites, st.data())
def test_a_tampered_document_does_not_open(
    values: dict[str, Any], suite: Suite, data: st.DataObject
) -> None:
    key = _key("r_1", 1, suite)
    sealed = seal_class(key, "L4", values)
    assert sealed is not None
    position = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(sealed)
    tampered[position] ^= 1 << bit
    with pytest.raises(DecryptionFailed):
        open_class(key, "L4", bytes(tampered))
    with pytest.raises(DecryptionFailed):
        open_class(key, "L4", sealed[: data.draw(st.integers(0, len(sealed) - 1))])


def test_an_empty_class_has_no_document() -> None:
    key = _key("r_1", 1, Suite.AES_256_GCM)
    assert seal_class(key, "L1", {}) is None
    assert open_class(key, "L1", None) == {}


# -- provenance -----------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
provenances = st.builds(
    FieldProvenance,
    st.text(min_size=1, max_size=30),
    st.sampled_from(["import", "cli", "api", "desk", "self"]),
    moments,
    st.none() | moments,
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(field_names, provenances, max_size=25))
def test_provenance_round_trips(fields: dict[str, FieldProvenance]) -> None:
    assert decode_provenance(encode_provenance(fields)) == fields


def test_provenance_of_an_import_is_one_short_entry() -> None:
    at = utcnow()
    written = FieldProvenance("import:batch-7", "import", at, None)
    encoded = encode_provenance(dict.fromkeys(FIELD_CODES, written))
    assert len(encoded) < 80
    assert decode_provenance(encoded) == dict.fromkeys(FIELD_CODES, written)


# -- the store on the one row ---------------------------------------------------------------


def _create(vault: Vault, seed: int) -> str:
    with vault.sessions() as session, session.begin():
        hh = household(session, place(session, f"{seed}"), f"{seed:03d}")
        return vault.store.create(session, person(seed), WORKER, household_id=hh.id)


def test_an_update_of_one_field_keeps_the_others_and_their_provenance(vault: Vault) -> None:
    resident_id = _create(vault, 11)
    with vault.sessions() as session:
        before = vault.store.read(session, resident_id)
        provenance_before = vault.store.provenance(session, resident_id)
        documents_before = session.get_one(ResidentRecord, resident_id)
        untouched = (documents_before.doc_l1, documents_before.doc_l2, documents_before.doc_l4)
    resident_self = Provenance(f"resident:{resident_id}", "self", utcnow() + timedelta(seconds=1))
    with vault.sessions() as session, session.begin():
        vault.store.update(session, resident_id, {"phone": "13700001111"}, resident_self)
    with vault.sessions() as session:
        after = vault.store.read(session, resident_id)
        provenance_after = vault.store.provenance(session, resident_id)
        row = session.get_one(ResidentRecord, resident_id)
        # Only the phone's class was re-sealed; the other documents are byte for byte.
        assert (row.doc_l1, row.doc_l2, row.doc_l4) == untouched
    assert after == {**before, "phone": "13700001111"}
    assert provenance_after["phone"].written_by == f"resident:{resident_id}"
    assert provenance_after["phone"].written_at == resident_self.at
    assert {k: v for k, v in provenance_after.items() if k != "phone"} == {
        k: v for k, v in provenance_before.items() if k != "phone"
    }


def test_clearing_a_field_drops_its_value_and_provenance_only(vault: Vault) -> None:
    resident_id = _create(vault, 12)
    with vault.sessions() as session:
        before = vault.store.read(session, resident_id)
    with vault.sessions() as session, session.begin():
        vault.store.update(session, resident_id, {"gender": None, "phone": None}, WORKER)
    with vault.sessions() as session:
        after = vault.store.read(session, resident_id)
        provenance = vault.store.provenance(session, resident_id)
        row = session.get_one(ResidentRecord, resident_id)
    assert after == {k: v for k, v in before.items() if k not in {"gender", "phone"}}
    assert set(provenance) == set(after)
    assert row.doc_l1 is None  # gender was the resident's only L1 field


def test_mark_verified_changes_only_the_named_fields(vault: Vault) -> None:
    resident_id = _create(vault, 13)
    checked = utcnow()
    with vault.sessions() as session, session.begin():
        vault.store.mark_verified(session, resident_id, ["phone", "address"], checked)
    with vault.sessions() as session:
        provenance = vault.store.provenance(session, resident_id)
    assert {n for n, p in provenance.items() if p.verified_at == checked} == {"phone", "address"}
    assert all(
        p.verified_at is None for n, p in provenance.items() if n not in {"phone", "address"}
    )


# -- expand, move, contract -----------------------------------------------------------------


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _legacy_vault(vault: Vault, count: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The vault back at 0015 with `count` residents written as the code before 0017 wrote
    them (a row per field), one of them later erased; their values and provenance."""
    _downgrade(vault.engine, "0015")
    store = vault.store
    values: dict[str, dict[str, Any]] = {}
    provenance: dict[str, Any] = {}
    at = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
    with vault.sessions() as session, session.begin():
        hh = household(session, place(session), "101")
        for seed in range(count):
            resident_id = f"r_legacy{seed:04d}"
            session.add(Resident(id=resident_id, household_id=hh.id, status="active"))
            session.flush()
            key = store.data_keys.create(session, resident_id, 1)
            normalised = store.validate(person(seed))
            rows = [
                {
                    "resident_id": resident_id,
                    "field": name,
                    "ciphertext": seal_field(key, name, encode_value(value)),
                    "key_version": 1,
                    "written_by": f"import:{seed}",
                    "channel": "import",
                    "written_at": at + timedelta(seconds=seed),
                    "verified_at": at if name == "phone" else None,
                }
                for name, value in normalised.items()
            ]
            session.execute(insert(LEGACY_FIELDS), rows)
            values[resident_id] = dict(normalised)
            provenance[resident_id] = {
                r["field"]: (r["written_by"], r["channel"], r["written_at"], r["verified_at"])
                for r in rows
            }
    return values, provenance


def _provenance_of(store: ResidentStore, vault: Vault, resident_id: str) -> dict[str, Any]:
    with vault.sessions() as session:
        return {
            name: (p.written_by, p.channel, p.written_at, p.verified_at)
            for name, p in store.provenance(session, resident_id).items()
        }


def test_expand_move_contract_loses_nothing_and_the_move_resumes(vault: Vault) -> None:
    values, provenance = _legacy_vault(vault, 12)
    engine = vault.engine
    migrate(engine, "0017")  # expand: both tables
    store = ResidentStore(vault.keyring, vault.store.catalogue)  # new code, old rows
    ids = sorted(values)
    with vault.sessions() as session:
        assert store.read_many(session, ids) == values  # found in the old place
    assert _provenance_of(store, vault, ids[0]) == provenance[ids[0]]

    # New code writing during the window moves that resident whole.
    with vault.sessions() as session, session.begin():
        store.update(session, ids[1], {"phone": "13911112222"}, WORKER)
    values[ids[1]]["phone"] = "13911112222"
    # An erasure during the window leaves nothing for the move to bring back.
    with vault.sessions() as session, session.begin():
        store.erase(session, ids[2], "cli:operator", "resident's request")
    erased = values.pop(ids[2])
    ids.remove(ids[2])

    # The contract refuses while a per-field row is left; nothing is dropped.
    with pytest.raises(CommandError):
        migrate(engine)
    with engine.connect() as connection:
        assert inspect(connection).has_table("resident_fields")

    # The move, interrupted after its first batch, resumes and finishes.
    with pytest.raises(SimulatedCrashError):
        move_records(vault.sessions, store, batch_size=4, progress=_interrupt_after(1))
    with vault.sessions() as session:
        left = session.scalar(select(func.count(func.distinct(LEGACY_FIELDS.c.resident_id))))
        assert left == 10 - 4  # 12, less the updated and the erased, less one batch
        assert store.read_many(session, ids) == values  # half moved, all found
    report = move_records(vault.sessions, store, batch_size=4)
    assert report.resumed and report.residents == 6
    assert move_records(vault.sessions, store).residents == 0  # nothing left

    migrate(engine)  # the contract
    with engine.connect() as connection:
        assert not inspect(connection).has_table("resident_fields")
    fresh = ResidentStore(vault.keyring, vault.store.catalogue)
    fresh.data_keys.cache.clear()
    with vault.sessions() as session:
        assert fresh.read_many(session, ids) == values  # every value, decrypted again
        assert session.scalar(select(func.count()).select_from(ResidentRecord)) == len(ids)
        assert erased and session.get(ResidentRecord, "r_legacy0002") is None
    for resident_id in ids:
        expected = provenance[resident_id]
        if resident_id == "r_legacy0001":
            phone = _provenance_of(fresh, vault, resident_id).pop("phone")
            assert phone[:2] == (WORKER.actor, WORKER.channel)
            expected = {k: v for k, v in expected.items() if k != "phone"}
            got = _provenance_of(fresh, vault, resident_id)
            got.pop("phone")
            assert got == expected
            continue
        assert _provenance_of(fresh, vault, resident_id) == expected


def test_a_new_vault_needs_no_move(vault: Vault) -> None:
    with vault.sessions() as session, session.begin():
        hh = household(session, place(session), "101")
        vault.store.create_many(session, [NewResident(person(1), hh.id)], WORKER)
    report = move_records(vault.sessions, vault.store)
    assert report.table_gone and report.residents == 0
