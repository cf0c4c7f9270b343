"""Statistics tokens: counts from tokens equal counts from decrypting, nothing is decrypted
to count, writes change the counts at once, rotation re-tokens (resuming), the backfill
resumes, tokens are domain-separated from blind indexes and never leave the database."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

import vault.rotation as rotation_module
import vault.services as services_module
from access.stats.measures import MEASURES, TOTAL
from access.stats.tables import Counted, count, places, residents_query
from tests.factories import household, person, place
from tests.test_migrations import _downgrade
from tests.test_rotation import SimulatedCrashError, _interrupt_after
from vault.catalogue import CatalogueError, parse_catalogue
from vault.context import Vault
from vault.crypto import blind_index_message
from vault.db import migrate
from vault.models import BlindIndexEntry, Building, Resident
from vault.rotation import rotate_kek
from vault.services import NewResident, Provenance
from vault.stat_tokens import (
    ResidentStatToken,
    StatTokenField,
    backfill,
    closed_labels,
    retoken,
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
    tree = places(session, list(session.scalars(select(Building.id))))
    scoped = residents_query().where(Resident.id.in_(ids))
    counted: Counted = count(session, vault.store, MEASURES[measure], tree, scoped, today=TODAY)
    return {k: v for k, v in counted.table.values.items() if v}


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
    with vault.sessions() as session:
        assert not session.scalars(
            select(ResidentStatToken).where(ResidentStatToken.resident_id == ids[1])
        ).all()


def test_rotation_retokens_resuming_after_a_crash_and_counts_still_agree(
    vault: Vault, buildings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    people = [
        (i % 4, _resident(i, ["visual", "none"][i % 2], "dibao", i % 3 == 0)) for i in range(12)
    ]
    ids = _create(vault, buildings, people)
    before = {m: _both(vault, m, ids)[0] for m in MEASURED}
    with vault.sessions() as session:
        old = {
            (r.resident_id, r.field): r.token for r in session.scalars(select(ResidentStatToken))
        }

    def crashing(*args: Any, **kwargs: Any) -> int:
        return retoken(*args, **{**kwargs, "batch_size": 5, "progress": _interrupt_after(1)})

    monkeypatch.setattr(rotation_module, "retoken", crashing)
    with pytest.raises(SimulatedCrashError):
        rotate_kek(vault.sessions, vault.store, batch_size=5)
    monkeypatch.undo()
    target = vault.keyring.active_kek_id()
    with vault.sessions() as session:
        epochs = list(session.scalars(select(ResidentStatToken.epoch)))
        assert epochs.count(target) == 5 and len(epochs) == len(old)  # one batch, no more
        # Mid-rotation, tokens of two epochs still count right.
        assert {m: _count(vault, session, m, ids) for m in MEASURED} == before
    report = rotate_kek(vault.sessions, vault.store, batch_size=5)
    assert report.resumed and report.retokened == len(old) - 5
    with vault.sessions() as session:
        rows = list(session.scalars(select(ResidentStatToken)))
    assert {r.epoch for r in rows} == {target}
    assert all(old[(r.resident_id, r.field)] != r.token for r in rows)
    for measure in MEASURED:
        tokens, decrypted = _both(vault, measure, ids)
        assert tokens == decrypted == before[measure]


def _lookup_rows(vault: Vault) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    with vault.sessions() as session:
        tokens = {
            (r.resident_id, r.field, r.epoch, r.token)
            for r in session.scalars(select(ResidentStatToken))
        }
        blind = {
            (r.resident_id, r.field, r.scheme, r.digest)
            for r in session.scalars(select(BlindIndexEntry))
        }
    return tokens, blind


def test_lookup_rows_written_before_migration_0025_are_kept_and_still_work(
    vault: Vault, buildings: list[str]
) -> None:
    """0025 drops an index (and on SQLite copies the tokens and the blind indexes into
    their keys' b-trees): every row written before it is still there after it, and after
    going back; counts and identifier look-ups still answer."""
    _downgrade(vault.engine, "0024")
    people = [
        (i % 3, _resident(i, ["visual", "none"][i % 2], "dibao", i % 2 == 0)) for i in range(9)
    ]
    ids = _create(vault, buildings, people)
    before = {m: _both(vault, m, ids) for m in MEASURED}
    assert all(tokens == decrypted for tokens, decrypted in before.values())
    rows = _lookup_rows(vault)
    assert rows[0] and rows[1]
    someone = people[4][1]["id_number"]
    for step in ("up", "down", "up"):
        if step == "up":
            migrate(vault.engine)
        else:
            _downgrade(vault.engine, "0024")
        assert _lookup_rows(vault) == rows
        assert {m: _both(vault, m, ids) for m in MEASURED} == before
        with vault.sessions() as session:
            assert vault.store.find(session, "id_number", someone) == [ids[4]]


def test_the_backfill_fills_an_upgraded_vault_resuming_and_counts_fall_back_meanwhile(
    vault: Vault, buildings: list[str]
) -> None:
    people = [(i % 3, _resident(i, "physical", "tekun", True)) for i in range(9)]
    ids = _create(vault, buildings, people)
    # What a vault upgraded to 0016 looks like: residents, no tokens, fields incomplete.
    with vault.sessions() as session, session.begin():
        session.execute(delete(ResidentStatToken))
        session.execute(update(StatTokenField).values(complete=False))
    with vault.sessions() as session, structlog.testing.capture_logs() as logs:
        assert _count(vault, session, "disability", ids)[("all", TOTAL)] == 9  # decrypted
    assert any(e["event"] == "stats.tokens_incomplete" for e in logs)
    with pytest.raises(SimulatedCrashError):
        backfill(vault.sessions, vault.store, batch_size=4, progress=_interrupt_after(1))
    with vault.sessions() as session:
        assert len(session.scalars(select(ResidentStatToken)).all()) == 4
        assert not session.scalar(
            select(StatTokenField.complete).where(StatTokenField.field == "disability")
        )
    report = backfill(vault.sessions, vault.store, batch_size=4)
    assert report.resumed and sorted(report.fields) == sorted(
        ["disability", "low_income_status", "elderly_living_alone"]
    )
    assert report.processed == 9 * 3 - 4
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
            stored = list(session.scalars(select(ResidentStatToken.token)))
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
