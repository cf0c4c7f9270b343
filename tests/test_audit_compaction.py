"""The audit log's compactions (issue 20), each a vault whose older code wrote more that
upgrades with nothing lost, every old leaf still proving, and refuses, naming what differs,
if the copy to be dropped no longer matches what it copies: entries' canonical bytes
(migrations 0020 and 0023), level 0 of the tree (0024), the levels between those kept
(0026)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.util import CommandError
from sqlalchemy import LargeBinary, MetaData, Table, inspect, select, text

from access.runtime import Runtime, init_runtime, open_runtime
from api.settings import Settings
from audit import EntryDraft
from audit.encoding import ENTRY_COLUMN_NAMES, canonical_bytes
from audit.log import AuditLog
from audit.merkle import STRATUM, MemoryTree, leaf_hash, verify_inclusion
from audit.models import AuditEntry
from audit.verify import verify_log
from tests.test_migrations import _downgrade
from vault.db import migrate


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url)


def _draft(n: int, outcome: str = "allowed") -> EntryDraft:
    return EntryDraft(
        action="read",
        outcome=outcome,
        channel="api",
        user=f"u{n}",
        resident_id=f"r_{n:04d}",
        fields={"name": "masked", "phone": "clear"},
        details={"note": f"第{n}次", "n": n, "ratio": 0.1 * n},
        request_id=f"req{n}",
    )


def _as_older_code_wrote(runtime: Runtime, drafts: list[EntryDraft], **changed: Any) -> list[str]:
    """Entries as the code before 0020 recorded them: with their bytes stored (made before
    any `changed` column is applied, as a tampered row would be)."""
    engine = runtime.vault.engine
    entries = Table("audit_entries", MetaData(), autoload_with=engine)
    with runtime.transaction() as session:
        ids = runtime.audit.record(session, drafts)
    with engine.begin() as connection:
        # What the older code wrote at insert: past the append-only guards, as setup.
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_entries_no_update")
        for entry_id in ids:
            row = connection.execute(
                select(*(AuditEntry.__table__.c[n] for n in ENTRY_COLUMN_NAMES)).where(
                    AuditEntry.__table__.c.entry_id == entry_id
                )
            ).one()
            stored = canonical_bytes(dict(zip(ENTRY_COLUMN_NAMES, row, strict=True)))
            connection.execute(
                entries.update()
                .where(entries.c.entry_id == entry_id)
                .values(canonical=stored, **changed)
            )
    return ids


def _hashes(engine: Any, statement: str) -> dict[int, bytes]:
    """(index, hash) rows of `statement`, as a dict."""
    with engine.connect() as connection:
        return {int(i): bytes(h) for i, h in connection.exec_driver_sql(statement)}


def _level_zero(engine: Any) -> dict[int, bytes]:
    return _hashes(engine, 'SELECT "index", hash FROM audit_tree_nodes WHERE level = 0')


def _leaf_hashes(engine: Any) -> dict[int, bytes]:
    return _hashes(engine, "SELECT leaf_index, leaf_hash FROM audit_leaves")


def _tamper_node(engine: Any, level: int, index: int) -> None:
    """Tampering, as setup: a stored tree node zeroed, past the append-only guard."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            connection.exec_driver_sql("DROP TRIGGER audit_tree_nodes_no_update")
        connection.execute(
            text('UPDATE audit_tree_nodes SET hash = :hash WHERE level = :level AND "index" = :i'),
            {"hash": b"\x00" * 32, "level": level, "i": index},
        )


def _record_and_integrate(runtime: Runtime, drafts: list[EntryDraft]) -> None:
    with runtime.transaction() as session:
        runtime.audit.record(session, drafts)
    runtime.audit.integrate(runtime.vault.sessions)


def _every_entry_proves(runtime: Runtime) -> int:
    """Verify the log and every entry's inclusion proof under a fresh head; the head's
    size."""
    runtime.audit.checkpoint(runtime.vault.sessions, force=True)
    with runtime.vault.sessions() as session:
        verify_log(session, runtime.audit.verifier_key)
        head = runtime.audit.latest_checkpoint(session)
        assert head is not None
        for index in range(head.tree_size):
            entry = runtime.audit.entry_at(session, index)
            assert entry is not None
            proof = runtime.audit.inclusion_proof(session, index, head.tree_size)
            assert verify_inclusion(
                leaf_hash(entry.canonical), index, head.tree_size, proof, head.root_hash
            )
        return head.tree_size


def test_stored_bytes_are_checked_then_dropped_and_old_leaves_still_prove(
    settings: Settings,
) -> None:
    runtime = init_runtime(settings)
    engine = runtime.vault.engine
    _downgrade(engine, "0020")
    assert "canonical" in {c["name"] for c in inspect(engine).get_columns("audit_entries")}
    old = _as_older_code_wrote(runtime, [_draft(n) for n in range(5)])
    runtime.close()

    migrate(engine)
    assert "canonical" not in {c["name"] for c in inspect(engine).get_columns("audit_entries")}
    engine.dispose()
    runtime = open_runtime(settings)
    try:
        _every_entry_proves(runtime)
        with runtime.vault.sessions() as session:
            assert {runtime.audit.entry_at(session, i).entry_id for i in range(5)} == set(old)  # type: ignore[union-attr]
    finally:
        runtime.close()


def test_a_stored_byte_string_that_no_longer_matches_stops_the_upgrade(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_LANG", "en")
    runtime = init_runtime(settings)
    engine = runtime.vault.engine
    _downgrade(engine, "0020")
    _as_older_code_wrote(runtime, [_draft(1)])
    (altered,) = _as_older_code_wrote(runtime, [_draft(2)], outcome="denied")
    runtime.close()
    with pytest.raises(CommandError) as refused:
        migrate(engine)
    assert altered in str(refused.value) and "audit verify" in str(refused.value)
    # Nothing was dropped: the evidence is still there.
    assert "canonical" in {c["name"] for c in inspect(engine).get_columns("audit_entries")}
    stored = Table("audit_entries", MetaData(), autoload_with=engine)
    assert isinstance(stored.c.canonical.type, LargeBinary)
    engine.dispose()


def test_an_entry_s_bytes_are_made_from_its_columns(settings: Settings) -> None:
    """What the leaf hashes is the documented JSON of the columns, JSON ones included."""
    runtime = init_runtime(settings)
    try:
        log: AuditLog = runtime.audit
        with runtime.transaction() as session:
            (entry_id,) = log.record(session, [_draft(7)])
        with runtime.vault.sessions() as session:
            entry = session.get(
                AuditEntry,
                (
                    entry_id,
                    session.scalar(
                        select(AuditEntry.recorded_at).where(AuditEntry.entry_id == entry_id)
                    ),
                ),
            )
            assert entry is not None
            assert entry.canonical.startswith(b'{"action":"read"')
            assert '"note":"第7次"'.encode() in entry.canonical
    finally:
        runtime.close()


# -- level 0 of the tree lives in audit_leaves alone (migration 0024) ------------------------


def test_level_zero_is_written_until_the_contract_then_dropped_and_proofs_still_hold(
    settings: Settings,
) -> None:
    runtime = init_runtime(settings)
    engine = runtime.vault.engine
    try:
        # At head the leaves are level 0: no copy is written.
        _record_and_integrate(runtime, [_draft(n) for n in range(3)])
        assert _level_zero(engine) == {}
        _every_entry_proves(runtime)
    finally:
        runtime.close()
    # The rolling deploy: the schema before the contract, older nodes serving proofs from
    # level-0 rows. This release's integrator writes them as the older code did.
    _downgrade(engine, "0023")
    assert _level_zero(engine) == _leaf_hashes(engine)
    runtime = open_runtime(settings.model_copy(update={"migrate_on_start": False}))
    try:
        _record_and_integrate(runtime, [_draft(n) for n in range(3, 8)])
        assert _level_zero(engine) == _leaf_hashes(engine) and len(_leaf_hashes(engine)) >= 8
    finally:
        runtime.close()
    migrate(engine)
    assert _level_zero(engine) == {}
    runtime = open_runtime(settings)
    try:
        _record_and_integrate(runtime, [_draft(n) for n in range(8, 13)])
        assert _level_zero(engine) == {}
        assert _every_entry_proves(runtime) == len(_leaf_hashes(engine))
    finally:
        runtime.close()
    engine.dispose()


def test_a_level_zero_node_that_differs_from_its_leaf_stops_the_contract(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_LANG", "en")
    runtime = init_runtime(settings)
    engine = runtime.vault.engine
    _record_and_integrate(runtime, [_draft(n) for n in range(4)])
    runtime.close()
    _downgrade(engine, "0023")
    _tamper_node(engine, 0, 2)
    kept = _level_zero(engine)
    with pytest.raises(CommandError) as refused:
        migrate(engine)
    assert "2" in str(refused.value).split("nodes ")[1].split(" differ")[0]
    assert "audit verify" in str(refused.value)
    assert _level_zero(engine) == kept  # the evidence stays
    engine.dispose()


# -- the tree keeps one level in four; leaves keep no integration time (migration 0026) -----


def _stored_nodes(engine: Any) -> dict[tuple[int, int], bytes]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql('SELECT level, "index", hash FROM audit_tree_nodes')
        return {(int(level), int(i)): bytes(h) for level, i, h in rows}


def _full_tree(engine: Any) -> dict[tuple[int, int], bytes]:
    """Every node above the leaves of the tree the stored leaves make."""
    leaves = _leaf_hashes(engine)
    tree = MemoryTree(leaves[i] for i in range(len(leaves)))
    nodes = {}
    level = 1
    while len(leaves) >> level:
        for index in range(len(leaves) >> level):
            nodes[(level, index)] = tree.get_node((level, index))
        level += 1
    return nodes


def _leaf_columns(engine: Any) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("audit_leaves")}


def test_every_level_is_written_until_the_contract_then_one_in_four_and_proofs_still_hold(
    settings: Settings,
) -> None:
    runtime = init_runtime(settings)
    engine = runtime.vault.engine
    try:
        _record_and_integrate(runtime, [_draft(n) for n in range(20)])
        # At head: levels 4, 8, ... only, and no integration time.
        assert set(_stored_nodes(engine)) == {(4, 0)}
        assert "integrated_at" not in _leaf_columns(engine)
        _every_entry_proves(runtime)
    finally:
        runtime.close()
    # The rolling deploy: older nodes serve proofs from every level. The downgrade makes
    # the levels between again, and this release's integrator writes them as the older
    # code did, with the integration time the older schema requires.
    _downgrade(engine, "0025")
    assert _stored_nodes(engine) == _full_tree(engine)
    runtime = open_runtime(settings.model_copy(update={"migrate_on_start": False}))
    try:
        _record_and_integrate(runtime, [_draft(n) for n in range(20, 40)])
        assert _stored_nodes(engine) == _full_tree(engine) and len(_leaf_hashes(engine)) == 40
        with engine.connect() as connection:
            untimed = connection.exec_driver_sql(
                "SELECT count(*) FROM audit_leaves WHERE integrated_at IS NULL"
            ).scalar()
        assert untimed == 0
        assert _every_entry_proves(runtime) == 40
    finally:
        runtime.close()
    migrate(engine)
    assert set(_stored_nodes(engine)) == {(4, 0), (4, 1)}
    assert "integrated_at" not in _leaf_columns(engine)
    runtime = open_runtime(settings)
    try:
        _record_and_integrate(runtime, [_draft(n) for n in range(40, 300)])
        stored = _stored_nodes(engine)
        assert stored == {c: h for c, h in _full_tree(engine).items() if c[0] % STRATUM == 0}
        assert (8, 0) in stored
        assert _every_entry_proves(runtime) == 300
        with runtime.vault.sessions() as session:
            for old, new in ((1, 300), (17, 255), (64, 299)):
                proof = runtime.audit.consistency_proof(session, old, new)
                tree = MemoryTree(_leaf_hashes(engine)[i] for i in range(300))
                assert proof == tree.consistency_proof(old, new)
    finally:
        runtime.close()
    engine.dispose()


def test_a_node_between_kept_levels_that_differs_stops_the_contract(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_LANG", "en")
    runtime = init_runtime(settings)
    engine = runtime.vault.engine
    _record_and_integrate(runtime, [_draft(n) for n in range(8)])
    runtime.close()
    _downgrade(engine, "0025")
    _tamper_node(engine, 2, 1)
    kept = _stored_nodes(engine)
    with pytest.raises(CommandError) as refused:
        migrate(engine)
    assert "(2, 1)" in str(refused.value) and "audit verify" in str(refused.value)
    assert _stored_nodes(engine) == kept  # the evidence stays
    assert "integrated_at" in _leaf_columns(engine)
    engine.dispose()


def test_the_contract_keeps_the_levels_the_code_folds_from() -> None:
    """0026 writes its kept levels out (a migration must not change with the code):
    they are the code's."""
    script = Path(__file__).parents[1] / "migrations" / "versions" / "0026_tree_in_strata.py"
    assert f"_KEPT_EVERY = {STRATUM}\n" in script.read_text(encoding="utf-8")
