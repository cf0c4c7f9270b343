"""The audit log on a real database: append-only, integrated, signed, verifiable, queryable."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from access.runtime import Runtime, init_runtime
from api.settings import Settings
from audit import AuditUnavailable, EntryDraft, VerificationFailed
from audit.checkpoint import format_tlog_proof, verify_checkpoint, verify_tlog_proof
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.queries import CHINA, WORKING_HOURS, EntryFilter, out_of_hours, search, to_csv
from audit.verify import verify_log
from vault.models import utcnow


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    rt = init_runtime(Settings(home=tmp_path / "home", database_url=database_url))
    yield rt
    rt.close()


def _draft(n: int, **overrides: object) -> EntryDraft:
    values: dict[str, object] = {
        "action": "read",
        "outcome": "allowed",
        "channel": "api",
        "subject_type": "department",
        "organisation": "org_civil_affairs" if n % 2 else "org_health",
        "user": f"u{n % 3}",
        "purpose": "subsidy-review",
        "resident_id": f"r_{n:04d}",
        "fields": {"name": "masked", "low_income_status": "clear"},
        "decision_id": f"d{n}",
        "policy_revision": "rev-test",
        "request_id": f"req{n}",
    }
    values.update(overrides)
    return EntryDraft(**values)  # type: ignore[arg-type]


def _record(rt: Runtime, count: int, start: int = 0) -> None:
    with rt.transaction() as session:
        rt.audit.record(session, [_draft(n) for n in range(start, start + count)])


def test_entries_are_integrated_signed_and_provable(runtime: Runtime) -> None:
    _record(runtime, 7)
    first = runtime.audit.checkpoint(runtime.vault.sessions)
    assert first is not None and first.tree_size == 7
    _record(runtime, 6, start=7)
    second = runtime.audit.checkpoint(runtime.vault.sessions)
    assert second is not None and second.tree_size == 13
    assert runtime.audit.checkpoint(runtime.vault.sessions) is None  # nothing new to sign
    key = runtime.audit.verifier_key
    head = verify_checkpoint(second.checkpoint, key)
    with runtime.vault.sessions() as session:
        for index in range(13):
            entry = runtime.audit.entry_at(session, index)
            assert entry is not None
            proof = runtime.audit.inclusion_proof(session, index, 13)
            assert verify_inclusion(leaf_hash(entry.canonical), index, 13, proof, head.root)
            document = format_tlog_proof(entry.canonical, index, proof, second.checkpoint)
            assert verify_tlog_proof(document, key).index == index
        consistency = runtime.audit.consistency_proof(session, 7, 13)
    assert verify_consistency(7, 13, first.root_hash, head.root, consistency)
    with runtime.vault.sessions() as session:
        report = verify_log(session, key, external_checkpoint=first.checkpoint)
    assert (report.entries, report.checkpoints, report.external_checked) == (13, 2, True)


def test_entries_carry_no_field_values(runtime: Runtime) -> None:
    _record(runtime, 1)
    with runtime.vault.sessions() as session:
        entry = search(session, EntryFilter()).items
    assert entry == []  # not yet integrated: searches list integrated entries
    runtime.audit.integrate(runtime.vault.sessions)
    with runtime.vault.sessions() as session:
        (index, entry_row), *_ = search(session, EntryFilter()).items
        assert index == 0
        assert set(entry_row.fields.values()) <= {"clear", "masked", "generalised", "denied"}


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET outcome = 'denied'",
        "DELETE FROM audit_entries",
        "UPDATE audit_leaves SET leaf_hash = leaf_hash",
        "DELETE FROM audit_tree_nodes",
        "UPDATE audit_checkpoints SET checkpoint = 'x'",
        "DELETE FROM audit_checkpoints",
    ],
)
def test_the_database_refuses_to_change_the_log(runtime: Runtime, statement: str) -> None:
    _record(runtime, 16)  # the first tree node kept above the leaves covers 16 of them
    runtime.audit.checkpoint(runtime.vault.sessions)
    with pytest.raises(DBAPIError, match="append-only"), runtime.transaction() as session:
        session.execute(text(statement))


def test_truncate_is_refused_on_postgresql(runtime: Runtime) -> None:
    if runtime.vault.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    _record(runtime, 2)
    for table in ("audit_entries", "audit_leaves"):
        with pytest.raises(DBAPIError, match="append-only"), runtime.transaction() as session:
            session.execute(text(f"TRUNCATE {table}"))
    with runtime.vault.engine.connect() as connection:
        partition = connection.execute(
            text(
                "SELECT inhrelid::regclass::text FROM pg_inherits "
                "WHERE inhparent = 'audit_entries'::regclass LIMIT 1"
            )
        ).scalar_one()
    with pytest.raises(DBAPIError, match="append-only"), runtime.transaction() as session:
        session.execute(text(f"TRUNCATE {partition}"))


def _bypass_guards(runtime: Runtime, *statements: str) -> None:
    """What an insider with the database owner's rights could do; verify must notice."""
    with runtime.vault.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            for statement in statements:
                connection.execute(text(statement))
            return
        triggers = connection.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        ).all()
        for name, _ in triggers:
            connection.execute(text(f"DROP TRIGGER {name}"))
        for statement in statements:
            connection.execute(text(statement))
        for _, sql in triggers:
            connection.execute(text(sql))


def _blob(runtime: Runtime, hex_digits: str) -> str:
    """A SQL literal of these bytes, for the tampering statements."""
    if runtime.vault.engine.dialect.name == "postgresql":
        return f"decode('{hex_digits}', 'hex')"
    return f"X'{hex_digits}'"


def _tampered(runtime: Runtime, *statements: str, entries: int = 9) -> VerificationFailed:
    _record(runtime, entries)
    runtime.audit.checkpoint(runtime.vault.sessions)
    _bypass_guards(runtime, *statements)
    with runtime.vault.sessions() as session, pytest.raises(VerificationFailed) as failed:
        verify_log(session, runtime.audit.verifier_key)
    return failed.value


def test_verify_names_an_entry_whose_column_was_altered(runtime: Runtime) -> None:
    failure = _tampered(
        runtime, "UPDATE audit_entries SET outcome = 'denied' WHERE resident_id = 'r_0004'"
    )
    assert failure.leaf_index == 4 and "entry 4" in str(failure)


def test_verify_names_an_entry_whose_field_list_was_altered(runtime: Runtime) -> None:
    """The bytes a leaf hashes are made from every column, JSON ones included."""
    failure = _tampered(
        runtime,
        """UPDATE audit_entries SET fields = '{"name": "masked"}' WHERE resident_id = 'r_0006'""",
    )
    assert failure.leaf_index == 6


def test_verify_catches_a_removed_entry(runtime: Runtime) -> None:
    failure = _tampered(runtime, "DELETE FROM audit_entries WHERE resident_id = 'r_0002'")
    assert failure.leaf_index == 2


def test_verify_catches_reordered_entries(runtime: Runtime) -> None:
    failure = _tampered(
        runtime,
        "UPDATE audit_leaves SET entry_id = 'moving' WHERE leaf_index = 3",
        "UPDATE audit_leaves SET entry_id = (SELECT entry_id FROM audit_entries "
        "WHERE resident_id = 'r_0003') WHERE leaf_index = 1",
        "UPDATE audit_leaves SET entry_id = (SELECT entry_id FROM audit_entries "
        "WHERE resident_id = 'r_0001') WHERE leaf_index = 3",
    )
    assert failure.leaf_index == 1


def test_verify_catches_a_rewritten_tail_with_forged_leaves(runtime: Runtime) -> None:
    """Even bytes and leaf hash changed together disagree with the stored tree nodes, which
    place the change among the 16 entries the lowest kept node covers."""
    _record(runtime, 20)
    runtime.audit.checkpoint(runtime.vault.sessions)
    with runtime.vault.sessions() as session:
        entry = runtime.audit.entry_at(session, 2)
        assert entry is not None
        forged = entry.canonical.replace(b'"allowed"', b'"denied"')
    hex_hash = leaf_hash(forged).hex()
    _bypass_guards(
        runtime,
        f"UPDATE audit_entries SET outcome = 'denied' WHERE entry_id = '{entry.entry_id}'",  # noqa: S608 - test's own values
    )
    _bypass_guards(
        runtime,
        f"UPDATE audit_leaves SET leaf_hash = {_blob(runtime, hex_hash)} WHERE leaf_index = 2",  # noqa: S608
    )
    with runtime.vault.sessions() as session, pytest.raises(VerificationFailed) as failed:
        verify_log(session, runtime.audit.verifier_key)
    assert failed.value.leaf_index == 0 and "0 to 15" in str(failed.value)


def test_verify_catches_an_altered_tree_node_that_proofs_are_served_from(
    runtime: Runtime,
) -> None:
    """Level 0 is the leaves themselves; every stored node above is checked too (the tree
    keeps one level in four: level 4 is the first above the leaves)."""
    failure = _tampered(
        runtime,
        f"UPDATE audit_tree_nodes SET hash = {_blob(runtime, '00' * 32)}"  # noqa: S608
        ' WHERE level = 4 AND "index" = 1',
        entries=33,
    )
    assert failure.leaf_index == 16 and "(4, 1)" in str(failure) and "16 to 31" in str(failure)


def test_a_checkpoint_from_another_key_is_rejected(runtime: Runtime, tmp_path: Path) -> None:
    _record(runtime, 2)
    head = runtime.audit.checkpoint(runtime.vault.sessions)
    assert head is not None
    other = init_runtime(
        Settings(home=tmp_path / "other", database_url=f"sqlite:///{tmp_path / 'other.db'}")
    )
    try:
        with runtime.vault.sessions() as session, pytest.raises(VerificationFailed):
            verify_log(session, other.audit.verifier_key)
    finally:
        other.close()


def test_failure_to_write_the_entry_fails_the_transaction(runtime: Runtime) -> None:
    refuse = {
        "postgresql": [
            "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION refuse_insert()",
        ],
        "sqlite": [
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        ],
    }[runtime.vault.engine.dialect.name]
    with runtime.vault.engine.begin() as connection:
        for statement in refuse:
            connection.execute(text(statement))

    def access_with_its_entry() -> None:
        with runtime.transaction() as session:
            session.execute(text("INSERT INTO streets (id, name, district) VALUES ('s', 'x', 'y')"))
            runtime.audit.record(session, [_draft(1)])

    with pytest.raises(AuditUnavailable):
        access_with_its_entry()
    with runtime.vault.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM streets")).scalar() == 0


def test_search_filters_pages_and_exports(runtime: Runtime) -> None:
    _record(runtime, 12)
    runtime.audit.integrate(runtime.vault.sessions)
    with runtime.vault.sessions() as session:
        civil = search(session, EntryFilter(organisation="org_civil_affairs"), limit=4)
        assert len(civil.items) == 4 and civil.next_cursor is not None
        rest = search(
            session,
            EntryFilter(organisation="org_civil_affairs"),
            limit=4,
            cursor=civil.next_cursor,
        )
        indexes = [i for i, _ in civil.items + rest.items]
        assert indexes == sorted(indexes, reverse=True) and len(set(indexes)) == 6
        assert rest.next_cursor is None
        one = search(session, EntryFilter(resident_id="r_0005")).items
        assert [e.resident_id for _, e in one] == ["r_0005"]
        by_field = search(session, EntryFilter(field="low_income_status")).items
        assert len(by_field) == 12
        assert search(session, EntryFilter(field="religion")).items == []
        later = search(session, EntryFilter(since=utcnow() + timedelta(minutes=1))).items
        assert later == []
        csv_text = to_csv(civil.items)
    header, *rows = csv_text.strip().splitlines()
    assert header.startswith("index,recorded_at") and len(rows) == 4
    assert "low_income_status=clear;name=masked" in rows[0]


def test_out_of_hours_report_follows_china_time(runtime: Runtime) -> None:
    _record(runtime, 1)
    local = utcnow().astimezone(CHINA)
    expected = local.weekday() >= 5 or not WORKING_HOURS[0] <= local.time() < WORKING_HOURS[1]
    with runtime.vault.sessions() as session:
        assert bool(out_of_hours(session, EntryFilter())) == expected


def test_canonical_bytes_are_the_documented_json(runtime: Runtime) -> None:
    _record(runtime, 1)
    runtime.audit.integrate(runtime.vault.sessions)
    with runtime.vault.sessions() as session:
        entry = runtime.audit.entry_at(session, 0)
    assert entry is not None
    assert entry.canonical.startswith(b'{"action":"read"')
    assert b'"v":1' in entry.canonical and b" " not in entry.canonical
    assert base64.b64encode(entry.canonical)  # serves as the tlog-proof `extra` line


def _race(
    monkeypatch: pytest.MonkeyPatch, pause_in: str, work: Callable[[], object]
) -> list[BaseException]:
    """Run `work` twice at once: the first holds still in `audit.log.<pause_in>` (after its
    reads, before its writes) until the second has finished, or for a second when the
    second waits for it. Returns what either raised."""
    import audit.log as module

    first_has_read, second_done = threading.Event(), threading.Event()
    original = getattr(module, pause_in)

    def paused(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if threading.current_thread().name == "first":
            first_has_read.set()
            second_done.wait(1.0)
        return result

    monkeypatch.setattr(module, pause_in, paused)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported to the test
            failures.append(exc)
        finally:
            if threading.current_thread().name == "second":
                second_done.set()

    first = threading.Thread(target=run, name="first")
    first.start()
    assert first_has_read.wait(10)
    second = threading.Thread(target=run, name="second")
    second.start()
    first.join(20)
    second.join(20)
    return failures


def test_two_integrators_at_once_give_each_entry_one_leaf(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(runtime, 9)
    failures = _race(
        monkeypatch,
        "DbNodeReader",
        lambda: runtime.audit.integrate(runtime.vault.sessions),
    )
    assert failures == []
    with runtime.vault.sessions() as session:
        assert runtime.audit.tree_size(session) == 9
        report = verify_log(session, runtime.audit.verifier_key)
    assert report.entries == 9


def test_two_signers_at_once_sign_one_checkpoint(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(runtime, 5)
    runtime.audit.integrate(runtime.vault.sessions)
    failures = _race(
        monkeypatch,
        "read_root",
        lambda: runtime.audit.checkpoint(runtime.vault.sessions),
    )
    assert failures == []
    with runtime.vault.sessions() as session:
        sizes = session.scalars(text("SELECT tree_size FROM audit_checkpoints")).all()
    assert sizes == [5]
