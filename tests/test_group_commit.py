"""Group commit of audit entries (audit/group_commit.py): concurrent accesses share
transactions, every caller returns only once its own entries are committed, and a failed
transaction fails every caller it carried, with nothing written."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from audit import AuditLog, AuditUnavailable, EntryDraft
from audit.group_commit import GroupCommit
from audit.models import AuditEntry
from vault.context import Vault

CALLERS = 24


def _draft(n: int) -> EntryDraft:
    return EntryDraft(action="read", outcome="allowed", channel="api", request_id=f"req_{n}")


def _together(calls: int, work: Any) -> list[Any]:
    """Run `work(n)` on `calls` threads released at once; each one's result or error."""
    start = threading.Barrier(calls)
    results: list[Any] = [None] * calls

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = work(n)
        except Exception as exc:  # the test looks at what each caller got
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _entries(vault: Vault) -> dict[str, str | None]:
    with vault.sessions() as session:
        return dict(session.execute(select(AuditEntry.entry_id, AuditEntry.request_id)).all())


def test_every_caller_returns_with_its_own_entries_committed(vault: Vault) -> None:
    commits = 0

    @event.listens_for(vault.engine, "commit")
    def _count(_: Any) -> None:
        nonlocal commits
        commits += 1

    group = GroupCommit(vault.sessions, AuditLog(vault.keyring, "test.example/log"))
    committed_at_return: list[bool] = []

    def record(n: int) -> list[str]:
        ids = group.record([_draft(n), _draft(n)])
        # What another connection sees the moment the caller is told: its entries.
        with vault.sessions() as session:
            found = session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.entry_id.in_(ids))
            )
        committed_at_return.append(found == 2)
        return ids

    results = _together(CALLERS, record)
    entries = _entries(vault)
    for n, ids in enumerate(results):
        assert isinstance(ids, list) and len(ids) == 2
        assert {entries[i] for i in ids} == {f"req_{n}"}
    assert len(entries) == 2 * CALLERS
    assert committed_at_return == [True] * CALLERS
    assert commits <= CALLERS


def test_a_failed_transaction_fails_every_caller_it_carried_and_writes_nothing(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = AuditLog(vault.keyring, "test.example/log")
    real = audit.record

    def failing(session: Session, drafts: Sequence[EntryDraft]) -> list[str]:
        real(session, drafts)
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(audit, "record", failing)
    group = GroupCommit(vault.sessions, audit)
    results = _together(CALLERS, lambda n: group.record([_draft(n)]))
    assert all(isinstance(r, AuditUnavailable) for r in results)
    assert _entries(vault) == {}
    # The log is writable again: the next caller commits.
    monkeypatch.setattr(audit, "record", real)
    assert len(group.record([_draft(0)])) == 1
    assert len(_entries(vault)) == 1
