"""Statistics tokens: counts from tokens equal counts from decrypting, nothing is decrypted
to count, writes change the counts at once, rotation re-tokens (resuming), the backfill
resumes, tokens are domain-separated from blind indexes and never leave the database; the
slots in one row per resident, and the move into them (0027) in a rolling deploy."""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import structlog
from alembic.util import CommandError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import and_, delete, inspect, select, true, update
from sqlalchemy.orm import Session

import vault.rotation as rotation_module
import vault.services as services_module
from access.stats.measures import MEASURES, TOTAL
from access.stats.tables import Counted, count, places
from tests.factories import household, person, place
from tests.test_migrations import _downgrade
from tests.test_rotation import SimulatedCrashError, _interrupt_after
from vault.catalogue import CatalogueError, parse_catalogue
from vault.context import Vault
from vault.crypto import blind_index_message
from vault.db import migrate
from vault.models import (
    BlindIndexEntry,
    Building,
    Household,
    KeyRotation,
    Resident,
    Room,
    utcnow,
)
from vault.rotation import rotate_kek
from vault.services import NewResident, Provenance
from vault.stat_tokens import (
    LEGACY_TOKENS,
    NOT_SET,
    TOKEN_BYTES,
    UNKNOWN,
    ResidentStats,
    StatTokenField,
    StatTokens,
    StatTokenSlot,
    backfill,
    closed_labels,
    retoken,
    slot_of,
)

TODAY = date(2026, 12, 8)
MEASURED = ("disability", "low-income-households", "elderly-living-alone")
PROVENANCE = Provenance("test", "import")
_numbers = itertools.count(100)


@pytest.fixture
def buildings(vault: Vault) -> list[str]:
    with vault.sessions() as session, session.begin():
        return [place(session, "1").id, place(session, "2").id]


def _disability(category: str) -> dict[str, Any]:
    return {"category": "none"} if category == "none" else {"category": category, "grade": 2}


def _resident(seed: int, disability: str | None, income: str | None, alone: bool | None) -> dict:
    values = person(seed)
    for name, value in (
        ("disability", None if disability is None else _disability(disability)),
        ("low_income_status", income),
        ("elderly_living_alone", alone),
    ):
        values.pop(name, None)
        if value is not None:
            values[name] = value
    return values


def _create(vault: Vault, building_ids: list[str], people: list[tuple[int, dict]]) -> list[str]:
    """People as (household number within the example, values), spread over buildings."""
    with vault.sessions() as session, session.begin():
        homes: dict[int, str] = {}
        residents = []
        for number, values in people:
            if number not in homes:
                building = session.get_one(Building, building_ids[number % len(building_ids)])
                homes[number] = household(session, building, str(next(_numbers))).id
            residents.append(NewResident(values, homes[number]))
        return vault.store.create_many(session, residents, PROVENANCE)


def _count(vault: Vault, session: Session, measure: str, ids: list[str]) -> dict[Any, int]:
    tree = places(session, true())
    counted: Counted = count(
        session,
        vault.store,
        MEASURES[measure],
        tree,
        lambda residents: and_(residents.id.in_(ids), residents.active),
        today=TODAY,
    )
    return {k: v for k, v in counted.table.values.items() if v}


def _tokens(vault: Vault) -> dict[str, tuple[str | None, bytes]]:
    """Every counted resident's (epoch, slots) as stored."""
    with vault.sessions() as session:
        rows = session.scalars(select(ResidentStats))
        return {r.resident_id: (r.epoch, bytes(r.tokens)) for r in rows}


def _slot(vault: Vault, field: str) -> int:
    with vault.sessions() as session:
        return vault.store.stat_tokens.slots(session, fresh=True)[field]


def _before_the_contract(vault: Vault) -> None:
    """The schema as older nodes run it, and this code as it starts there."""
    _downgrade(vault.engine, "0026")
    vault.store.stat_tokens = StatTokens(vault.keyring, vault.store.catalogue)


def _both(vault: Vault, measure: str, ids: list[str]) -> tuple[dict[Any, int], dict[Any, int]]:
    """(from tokens, from decrypting): the second with the field marked incomplete."""
    with vault.sessions() as session:
        tokens = _count(vault, session, measure, ids)
        session.execute(update(StatTokenField).values(complete=False))
        decrypted = _count(vault, session, measure, ids)
        session.rollback()
    return tokens, decrypted


@pytest.fixture
def no_decryption(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a field was decrypted to count it")

    monkeypatch.setattr(services_module, "open_field", refuse)
    yield
    monkeypatch.undo()


people_strategy = st.lists(
    st.tuples(
        st.integers(0, 5),  # household
        st.sampled_from([None, "none", "visual", "physical", "multiple"]),
        st.sampled_from([None, "none", "dibao", "dibao_edge", "tekun"]),
        st.sampled_from([None, True, False]),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(people=people_strategy, seed=st.integers(0, 10_000))
def test_counts_from_tokens_equal_counts_from_decrypting(
    vault: Vault, buildings: list[str], people: list[tuple[Any, ...]], seed: int
) -> None:
    ids = _create(
        vault,
        buildings,
        [(n, _resident(seed + i, d, inc, a)) for i, (n, d, inc, a) in enumerate(people)],
    )
    for measure in MEASURED:
        tokens, decrypted = _both(vault, measure, ids)
        assert tokens == decrypted, measure
    expected = sum(1 for _, d, _, _ in people if d not in (None, "none"))
    tokens, _ = _both(vault, "disability", ids)
    assert tokens.get(("all", TOTAL), 0) == expected


def test_no_field_is_decrypted_to_count(
    vault: Vault, buildings: list[str], no_decryption: None
) -> None:
    ids = _create(vault, buildings, [(0, _resident(1, "visual", "dibao", True))])
    with vault.sessions() as session:
        for measure in (*MEASURED, "residents"):
            assert _count(vault, session, measure, ids)[("all", TOTAL)] == 1


def test_an_update_a_clear_and_an_erasure_change_the_counts_at_once(
    vault: Vault, buildings: list[str], no_decryption: None
) -> None:
    ids = _create(
        vault,
        buildings,
        [(0, _resident(1, "visual", "dibao", True)), (1, _resident(2, "none", None, None))],
    )

    def disabled() -> int:
        with vault.sessions() as session:
            return _count(vault, session, "disability", ids).get(("all", TOTAL), 0)

    assert disabled() == 1
    with vault.sessions() as session, session.begin():
        vault.store.update(session, ids[1], {"disability": _disability("hearing")}, PROVENANCE)
    assert disabled() == 2
    with vault.sessions() as session, session.begin():
        vault.store.update(session, ids[0], {"disability": None}, PROVENANCE)
    assert disabled() == 1
    with vault.sessions() as session, session.begin():
        vault.store.erase(session, ids[1], "test", "request")
    assert disabled() == 0
    assert ids[1] not in _tokens(vault)
    assert slot_of(_tokens(vault)[ids[0]][1], _slot(vault, "disability")) == NOT_SET


def test_rotation_retokens_resuming_after_a_crash_and_counts_still_agree(
    vault: Vault, buildings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    people = [
        (i % 4, _resident(i, ["visual", "none"][i % 2], "dibao", i % 3 == 0)) for i in range(12)
    ]
    ids = _create(vault, buildings, people)
    before = {m: _both(vault, m, ids)[0] for m in MEASURED}
    old = _tokens(vault)

    def crashing(*args: Any, **kwargs: Any) -> int:
        return retoken(*args, **{**kwargs, "batch_size": 5, "progress": _interrupt_after(1)})

    monkeypatch.setattr(rotation_module, "retoken", crashing)
    with pytest.raises(SimulatedCrashError):
        rotate_kek(vault.sessions, vault.store, batch_size=5)
    monkeypatch.undo()
    target = vault.keyring.active_kek_id()
    epochs = [epoch for epoch, _ in _tokens(vault).values()]
    assert epochs.count(target) == 5 and len(epochs) == len(old)  # one batch, no more
    with vault.sessions() as session:
        # Mid-rotation, tokens of two epochs still count right.
        assert {m: _count(vault, session, m, ids) for m in MEASURED} == before
    report = rotate_kek(vault.sessions, vault.store, batch_size=5)
    assert report.resumed and report.retokened == len(old) - 5
    after = _tokens(vault)
    assert {epoch for epoch, _ in after.values()} == {target}
    # Every token moved (all three fields are set for everyone here); none was left behind.
    for resident, (_, tokens) in after.items():
        assert NOT_SET not in _slots_of(tokens)
        assert all(
            a != b for a, b in zip(_slots_of(old[resident][1]), _slots_of(tokens), strict=True)
        )
    for measure in MEASURED:
        tokens, decrypted = _both(vault, measure, ids)
        assert tokens == decrypted == before[measure]


def _slots_of(tokens: bytes) -> list[bytes]:
    return [tokens[i : i + TOKEN_BYTES] for i in range(0, len(tokens), TOKEN_BYTES)]


def _lookup_rows(vault: Vault) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """The token rows of the schema before 0027, and the blind indexes (raw SQL: this
    code's models describe the schema after it)."""
    with vault.engine.connect() as connection:
        tokens = {tuple(r) for r in connection.execute(select(*LEGACY_TOKENS.c))}
        table = BlindIndexEntry.__table__.c
        columns = (table.resident_id, table.field, table.scheme, table.digest)
        blind = {tuple(r) for r in connection.execute(select(*columns))}
    return tokens, blind


def test_lookup_rows_written_before_migration_0025_are_kept_and_still_work(
    vault: Vault, buildings: list[str]
) -> None:
    """0025 drops an index (and on SQLite copies the tokens and the blind indexes into
    their keys' b-trees): every row written before it is still there after it, and after
    going back; and through 0027's downgrade and upgrade, counts and identifier look-ups
    still answer as before."""
    people = [
        (i % 3, _resident(i, ["visual", "none"][i % 2], "dibao", i % 2 == 0)) for i in range(9)
    ]
    ids = _create(vault, buildings, people)
    before = {m: _both(vault, m, ids) for m in MEASURED}
    assert all(tokens == decrypted for tokens, decrypted in before.values())
    slots = _tokens(vault)
    _downgrade(vault.engine, "0024")
    rows = _lookup_rows(vault)
    assert len(rows[0]) == 9 * 3 and rows[1]  # every field is set here: one row each
    for step in ("0025", "0024", "0025"):
        if step == "0025":
            migrate(vault.engine, "0025")
        else:
            _downgrade(vault.engine, "0024")
        assert _lookup_rows(vault) == rows
    migrate(vault.engine)
    assert _tokens(vault) == slots
    assert {m: _both(vault, m, ids) for m in MEASURED} == before
    someone = people[4][1]["id_number"]
    with vault.sessions() as session:
        assert vault.store.find(session, "id_number", someone) == [ids[4]]


def test_the_backfill_fills_an_upgraded_vault_resuming_and_counts_fall_back_meanwhile(
    vault: Vault, buildings: list[str]
) -> None:
    people = [(i % 3, _resident(i, "physical", "tekun", True)) for i in range(9)]
    ids = _create(vault, buildings, people)
    # What a vault upgraded to 0016 looks like: residents, no tokens, fields incomplete.
    with vault.sessions() as session, session.begin():
        session.execute(delete(ResidentStats))
        session.execute(update(StatTokenField).values(complete=False))
    with vault.sessions() as session, structlog.testing.capture_logs() as logs:
        assert _count(vault, session, "disability", ids)[("all", TOTAL)] == 9  # decrypted
    assert any(e["event"] == "stats.tokens_incomplete" for e in logs)
    with pytest.raises(SimulatedCrashError):
        backfill(vault.sessions, vault.store, batch_size=4, progress=_interrupt_after(1))
    assert len(_tokens(vault)) == 4
    with vault.sessions() as session:
        assert not session.scalar(
            select(StatTokenField.complete).where(StatTokenField.field == "disability")
        )
    report = backfill(vault.sessions, vault.store, batch_size=4)
    assert report.resumed and sorted(report.fields) == sorted(
        ["disability", "low_income_status", "elderly_living_alone"]
    )
    assert report.processed == 9 - 4
    with vault.sessions() as session:
        assert all(session.scalars(select(StatTokenField.complete)))
    for measure in MEASURED:
        tokens, decrypted = _both(vault, measure, ids)
        assert tokens == decrypted


def test_a_token_is_domain_separated_from_the_blind_index_of_the_same_value(
    vault: Vault,
) -> None:
    tokens = vault.store.stat_tokens
    epoch = tokens.epoch()
    for field in tokens.fields:
        for label in closed_labels(tokens.fields[field]):
            token = tokens.token(field, label, epoch)
            digest = vault.keyring.blind_index(blind_index_message(field, label))
            assert token != digest[: len(token)] and token not in digest
    # A token is deterministic within an epoch and changes with it.
    assert tokens.token("disability", "visual", epoch) == tokens.token(
        "disability", "visual", epoch
    )
    assert tokens.token("disability", "visual", epoch) != tokens.token("disability", "visual", "x")


def test_only_a_field_with_a_closed_set_of_values_can_have_tokens() -> None:
    head = "version: 1\ncategories:\n  c: {zh: 类, en: C}\nfields:\n  f:\n"
    field = "    label: {zh: 字段, en: F}\n    category: c\n    sensitive: false\n    grade: L1\n"
    rest = "    mask: {rule: redact}\n    searchable: false\n    stat_token: true\n"
    with pytest.raises(CatalogueError):
        parse_catalogue(head + field + "    type: string\n" + rest)
    assert parse_catalogue(head + field + "    type: boolean\n" + rest)["f"].stat_token


def test_tokens_never_appear_in_an_answer_a_log_line_or_an_audit_entry(
    tmp_path: Path, database_url: str
) -> None:
    from access.gate import Gate
    from access.runtime import init_runtime
    from access.settings import StatsSettings
    from access.stats.service import StatsService
    from access.subjects import Access, organisation_subject
    from api.http.app import policy_engine
    from api.settings import Settings
    from audit.models import AuditEntry
    from policies.district import follow_district
    from vault.demo import populate

    configured = Settings(home=tmp_path / "svc", database_url=database_url)
    runtime = init_runtime(configured)
    try:
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, 120)
        gate = Gate(runtime, follow_district(policy_engine(configured), runtime.vault.sessions))
        service = StatsService(gate, StatsSettings(epsilon_per_month=100.0))
        with runtime.vault.sessions() as session:
            subject = organisation_subject(session, "org_civil_affairs")
            stored = [
                token
                for tokens in session.scalars(select(ResidentStats.tokens))
                for token in _slots_of(tokens)
                if token not in (NOT_SET, UNKNOWN)
            ]
        assert stored
        with structlog.testing.capture_logs() as logs:
            answers = [
                service.query(Access(subject, "community-statistics", f"req_{n}"), m, "community")
                for n, m in enumerate(("disability", "low-income-households"))
            ]
        with runtime.vault.sessions() as session:
            entries = [e.details for e in session.scalars(select(AuditEntry))]
        text = json.dumps(
            [repr(a) for a in answers] + entries + logs, default=str, ensure_ascii=False
        )
        for token in set(stored):
            for form in (token.hex(), token.hex().upper(), repr(token)):
                assert form not in text
        assert answers[0].totals[0].values[TOTAL] is not None or answers[0].suppressed
    finally:
        runtime.close()


# -- the slots, and the move into them -------------------------------------------------------


def _values(vault: Vault, ids: list[str]) -> dict[str, dict[str, Any]]:
    with vault.sessions() as session:
        return vault.store.read_many(session, ids, sorted(vault.store.stat_tokens.fields))


def _expected_slot(vault: Vault, field: str, value: Any, epoch: str) -> bytes:
    """What a slot should hold for this value (the definition, not the code's packing)."""
    tokens = vault.store.stat_tokens
    spec = tokens.fields[field]
    for label in closed_labels(spec):
        if value is not None and label in (value, str(value).lower(), _category(value)):
            return tokens.token(field, label, epoch)
    return NOT_SET


def _category(value: Any) -> Any:
    return value.get("category") if isinstance(value, dict) else None


def _assert_slots_hold_the_values(vault: Vault, ids: list[str]) -> None:
    """Each counted resident has a row at home, whose slots are the tokens of their values
    (NOT_SET where a field is not set); a decoy, or someone erased, has none."""
    values = _values(vault, ids)
    stored = _tokens(vault)
    with vault.sessions() as session:
        residents = {r.id: r for r in session.scalars(select(Resident))}
        homes = {
            r.resident_id: (r.household_id, r.building_id)
            for r in session.scalars(select(ResidentStats))
        }
        building_of = dict(
            session.execute(
                select(Household.id, Room.building_id).join(Room, Room.id == Household.room_id)
            ).all()
        )
    counted = [i for i in ids if residents[i].status == "active" and not residents[i].is_decoy]
    assert sorted(stored) == sorted(counted)
    for resident in counted:
        household = residents[resident].household_id
        assert homes[resident] == (household, building_of[household or ""])
        epoch, tokens = stored[resident]
        for field in vault.store.stat_tokens.fields:
            found = slot_of(tokens, _slot(vault, field))
            value = values.get(resident, {}).get(field)
            # A resident whose rows were all "not set" has no epoch: no token to map.
            expected = NOT_SET if epoch is None else _expected_slot(vault, field, value, epoch)
            assert found == expected


labels_strategy = st.tuples(
    st.sampled_from([None, "none", "visual", "hearing"]),
    st.sampled_from([None, "dibao", "tekun"]),
    st.sampled_from([None, True, False]),
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    first=labels_strategy,
    then=labels_strategy,
    prior=st.lists(st.binary(min_size=TOKEN_BYTES, max_size=TOKEN_BYTES), max_size=5),
)
def test_packing_sets_the_named_slots_keeps_the_others_and_marks_grown_ones_unknown(
    vault: Vault, first: tuple[Any, ...], then: tuple[Any, ...], prior: list[bytes]
) -> None:
    tokens = vault.store.stat_tokens
    epoch = tokens.epoch()
    names = ("disability", "low_income_status", "elderly_living_alone")
    with vault.sessions() as session:
        slots = tokens.slots(session)
        values = {
            n: (_disability(v) if n == "disability" else v)
            for n, v in zip(names, first, strict=True)
            if v is not None
        }
        into = b"".join(prior)
        named = [n for n, v in zip(names, then, strict=True) if v is not None]
        packed = tokens.packed(session, values, epoch, into=into, names=named)
    assert len(packed) == max(
        len(into), (max(slots[n] for n in named) + 1) * TOKEN_BYTES if named else 0
    )
    for slot in range(len(packed) // TOKEN_BYTES):
        name = next((n for n in named if slots[n] == slot), None)
        if name is not None:
            assert slot_of(packed, slot) == _expected_slot(vault, name, values.get(name), epoch)
        elif slot < len(prior):
            assert slot_of(packed, slot) == prior[slot]
        else:
            assert slot_of(packed, slot) == UNKNOWN


def test_every_counted_resident_has_a_row_at_home_and_a_decoy_none(
    vault: Vault, buildings: list[str]
) -> None:
    people = [(0, _resident(1, None, "dibao", None)), (1, _resident(2, "visual", None, True))]
    ids = _create(vault, buildings, people)
    with vault.sessions() as session, session.begin():
        vault.store.update(
            session, ids[1], {"disability": None, "low_income_status": "tekun"}, PROVENANCE
        )
        home = session.get_one(Resident, ids[0]).household_id
        planted = NewResident(_resident(3, "visual", "dibao", True), home, is_decoy=True)
        decoy = vault.store.create_many(session, [planted], PROVENANCE)
    with vault.sessions() as session:
        rows = session.scalars(select(ResidentStats))
        assert {r.resident_id: r.building_id for r in rows} == dict(
            zip(ids, buildings, strict=True)
        )
    _assert_slots_hold_the_values(vault, [*ids, *decoy])


def test_a_rolling_deploy_counts_from_the_token_rows_until_the_contract_builds_the_slots(
    vault: Vault, buildings: list[str]
) -> None:
    """Before 0027 (older nodes still run) this code writes and counts the token rows as
    the older code does; the contract builds every counted resident's row from them, and
    every count is the same after it."""
    _before_the_contract(vault)
    people = [
        (i % 4, _resident(i, [None, "none", "visual"][i % 3], [None, "dibao"][i % 2], None))
        for i in range(12)
    ]
    ids = _create(vault, buildings, people)
    with vault.sessions() as session, session.begin():
        vault.store.update(session, ids[0], {"elderly_living_alone": True}, PROVENANCE)
        vault.store.update(session, ids[2], {"disability": None}, PROVENANCE)
        vault.store.erase(session, ids[3], "test", "request")
    values = _values(vault, ids)
    rows = _lookup_rows(vault)[0]
    assert {(r, f) for r, f, _, _ in rows} == {
        (r, f) for r in ids for f in values.get(r, {}) if f in vault.store.stat_tokens.fields
    }
    window = {m: _both(vault, m, ids) for m in (*MEASURED, "residents")}
    assert all(tokens == decrypted for tokens, decrypted in window.values())
    migrate(vault.engine)
    assert not inspect(vault.engine).has_table("resident_stat_tokens")
    _assert_slots_hold_the_values(vault, ids)
    assert {m: _both(vault, m, ids) for m in (*MEASURED, "residents")} == window


def test_the_contract_refuses_while_a_key_rotation_is_unfinished(
    vault: Vault, buildings: list[str]
) -> None:
    _before_the_contract(vault)
    ids = _create(vault, buildings, [(0, _resident(1, "visual", "dibao", True))])
    with vault.sessions() as session, session.begin():
        session.add(KeyRotation(kind="kek", target="kek-next"))
    with pytest.raises(CommandError) as refused:
        migrate(vault.engine)
    assert "keys rotate" in str(refused.value)
    assert inspect(vault.engine).has_table("resident_stat_tokens")  # nothing changed
    assert not inspect(vault.engine).has_table("resident_stats")
    with vault.sessions() as session, session.begin():
        session.execute(update(KeyRotation).values(finished_at=utcnow()))
    migrate(vault.engine)
    _assert_slots_hold_the_values(vault, ids)


def test_a_resident_with_tokens_of_two_epochs_is_left_to_the_backfill(
    vault: Vault, buildings: list[str]
) -> None:
    _before_the_contract(vault)
    people = [(i % 2, _resident(i, "visual", "dibao", True)) for i in range(4)]
    ids = _create(vault, buildings, people)
    with vault.engine.begin() as connection:  # only a damaged table holds this
        connection.execute(
            update(LEGACY_TOKENS)
            .where(LEGACY_TOKENS.c.resident_id == ids[1], LEGACY_TOKENS.c.field == "disability")
            .values(epoch="kek-elsewhere")
        )
    migrate(vault.engine)
    assert slot_of(_tokens(vault)[ids[1]][1], _slot(vault, "disability")) == UNKNOWN
    with vault.sessions() as session:
        complete = select(StatTokenField.complete).where(StatTokenField.field == "disability")
        assert session.scalar(complete) is False
    tokens, decrypted = _both(vault, "disability", ids)  # decrypted meanwhile
    assert tokens == decrypted and tokens[("all", TOTAL)] == 4
    report = backfill(vault.sessions, vault.store)
    assert report.fields == ["disability"] and report.processed == 1
    _assert_slots_hold_the_values(vault, ids)


def test_a_field_marked_later_gets_the_next_slot_and_the_backfill_fills_it(
    vault: Vault, buildings: list[str]
) -> None:
    people = [(i % 3, _resident(i, "none", "dibao", i % 2 == 0)) for i in range(6)]
    ids = _create(vault, buildings, people)
    before = _both(vault, "elderly-living-alone", ids)
    # As a node that has just been given a catalogue marking the field finds it.
    with vault.sessions() as session, session.begin():
        for model in (StatTokenField, StatTokenSlot):
            session.execute(delete(model).where(model.field == "elderly_living_alone"))
    vault.store.stat_tokens = StatTokens(vault.keyring, vault.store.catalogue)
    with vault.sessions() as session, structlog.testing.capture_logs() as logs:
        assert _count(vault, session, "elderly-living-alone", ids) == before[1]  # decrypted
    assert any(e["event"] == "stats.tokens_incomplete" for e in logs)
    report = backfill(vault.sessions, vault.store)
    assert report.fields == ["elderly_living_alone"] and report.processed == len(ids)
    assert _slot(vault, "elderly_living_alone") == 3  # after the three that were given
    _assert_slots_hold_the_values(vault, ids)
    assert _both(vault, "elderly-living-alone", ids) == before


def test_the_contract_packs_as_this_code_reads() -> None:
    contract = importlib.import_module("migrations.versions.0027_stat_tokens_in_one_row")
    assert (contract.TOKEN_BYTES, contract.NOT_SET, contract.UNKNOWN) == (
        TOKEN_BYTES,
        NOT_SET,
        UNKNOWN,
    )


def test_a_slot_that_maps_to_no_label_makes_the_table_decrypt_and_says_so(
    vault: Vault, buildings: list[str]
) -> None:
    people = [(i % 2, _resident(i, ["visual", "none"][i % 2], "dibao", True)) for i in range(6)]
    ids = _create(vault, buildings, people)
    before = _both(vault, "disability", ids)
    assert before[0] == before[1]
    slot = _slot(vault, "disability")
    tokens = bytearray(_tokens(vault)[ids[0]][1])
    tokens[slot * TOKEN_BYTES : (slot + 1) * TOKEN_BYTES] = b"\x01" * TOKEN_BYTES
    damaged = bytes(tokens)
    with vault.sessions() as session, session.begin():
        session.execute(
            update(ResidentStats).where(ResidentStats.resident_id == ids[0]).values(tokens=damaged)
        )
    with vault.sessions() as session, structlog.testing.capture_logs() as logs:
        assert _count(vault, session, "disability", ids) == before[1]  # decrypted instead
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["stats.token_unknown"]
