"""Group commit of audit entries (audit/group_commit.py): concurrent accesses share
transactions, every caller returns only once its own entries are committed, and a failed
transaction fails every caller it carried, with nothing written."""

from __future__ import annotations

import asyncio
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


def test_coroutines_await_their_entries_without_blocking_the_loop(vault: Vault) -> None:
    """The hot read path awaits its entry's commit on the event loop: each coroutine
    returns with its entries committed, in batches shared with threads' entries, and the
    loop keeps running while commits are under way."""
    group = GroupCommit(vault.sessions, AuditLog(vault.keyring, "test.example/log"))
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> list[list[str]]:
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        threaded = asyncio.to_thread(
            lambda: _together(4, lambda n: group.record([_draft(CALLERS + n)]))
        )
        results = await asyncio.gather(
            *(group.record_async([_draft(n), _draft(n)]) for n in range(CALLERS)), threaded
        )
        stop.set()
        await ticking
        return list(results[:CALLERS])

    results = asyncio.run(main())
    entries = _entries(vault)
    for n, ids in enumerate(results):
        assert {entries[i] for i in ids} == {f"req_{n}"} and len(ids) == 2
    assert len(entries) == 2 * CALLERS + 4
    assert ticks > CALLERS  # the loop ran other work while the commits were under way


def test_a_closed_group_refuses_new_entries(vault: Vault) -> None:
    """After close (the runtime shutting down), an entry is refused, never silently lost."""
    group = GroupCommit(vault.sessions, AuditLog(vault.keyring, "test.example/log"))
    assert len(group.record([_draft(0)])) == 1
    group.close()
    with pytest.raises(AuditUnavailable):
        group.record([_draft(1)])
    with pytest.raises(AuditUnavailable):
        asyncio.run(group.record_async([_draft(2)]))
    assert len(_entries(vault)) == 1
