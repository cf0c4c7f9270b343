"""Group commit of audit entries: concurrent accesses share one transaction for their
entries, and each waits until that transaction is durable before it answers.

A read's entry is the only thing the read writes, so it need not be in the read's own
transaction; it must only be committed before the answer leaves (fail closed). Committing
each request on its own makes the log's commits (and, on SQLite, its fsyncs) the hot
path's ceiling. Here one committer thread commits everything queued so far, in one
transaction; each request waits for the commit that carries its entries. Nothing is
delayed on purpose: batches form only while a commit is under way, so one lone request
commits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from audit.errors import AuditUnavailable
from audit.log import AuditLog, EntryDraft

log = structlog.get_logger(__name__)

# Entries per transaction, at most: a burst of exports' entries must not make one huge one.
MAX_BATCH = 2000


@dataclass
class _Ticket:
    drafts: Sequence[EntryDraft]
    # Called (from the committer thread) once the ticket's transaction has ended.
    settle: Callable[[], None]
    failed: bool = False
    entry_ids: list[str] = field(default_factory=list)


class GroupCommit:
    """One committer thread drains the queue, a batch per transaction.

    A thread that records blocks until its ticket is settled. A coroutine
    (`record_async`) awaits it instead, so a read served on the event loop costs no
    threadpool hop of its own: its entry rides in the committer's next transaction.
    """

    def __init__(
        self, sessions: Callable[[], AbstractContextManager[Session]], audit: AuditLog
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._queue: list[_Ticket] = []
        self._committer: threading.Thread | None = None
        self._closed = False

    def record(self, drafts: Sequence[EntryDraft]) -> list[str]:
        """Commit these entries (with whatever else is queued); their ids once durable.
        Raises AuditUnavailable if the transaction carrying them failed."""
        if not drafts:
            return []
        settled = threading.Event()
        ticket = _Ticket(drafts, settled.set)
        self._enqueue(ticket)
        settled.wait()
        return self._outcome(ticket)

    async def record_async(self, drafts: Sequence[EntryDraft]) -> list[str]:
        """`record` for a coroutine: the same batches, awaited instead of blocked on."""
        if not drafts:
            return []
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, settled)

        ticket = _Ticket(drafts, settle)
        self._enqueue(ticket)
        # Shielded: a client that hangs up must not cancel the wait for a commit under way.
        await asyncio.shield(settled)
        return self._outcome(ticket)

    def close(self) -> None:
        """Commit what is queued, then stop the committer."""
        with self._lock:
            self._closed = True
            self._queued.notify_all()
            committer = self._committer
        if committer is not None:
            committer.join()

    def _enqueue(self, ticket: _Ticket) -> None:
        with self._lock:
            if self._closed:
                ticket.failed = True
                ticket.settle()
                return
            self._queue.append(ticket)
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._run, name="audit-group-commit", daemon=True
                )
                self._committer.start()
            self._queued.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._queued.wait()
                if not self._queue:
                    self._committer = None
                    return
                batch = self._take()
            self._commit(batch)

    @staticmethod
    def _outcome(ticket: _Ticket) -> list[str]:
        if ticket.failed:
            raise AuditUnavailable("the audit entry could not be written")
        return ticket.entry_ids

    def _take(self) -> list[_Ticket]:
        batch: list[_Ticket] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].drafts) <= MAX_BATCH):
            ticket = self._queue.pop(0)
            batch.append(ticket)
            size += len(ticket.drafts)
        return batch

    def _commit(self, batch: list[_Ticket]) -> None:
        drafts = [draft for ticket in batch for draft in ticket.drafts]
        failed = False
        ids: list[str] = []
        try:
            with self._sessions() as session, session.begin():
                ids = self._audit.record(session, drafts)
        except (AuditUnavailable, SQLAlchemyError) as exc:
            log.error("audit.group_commit_failed", error=type(exc).__name__, entries=len(drafts))
            failed = True
        except Exception:  # every waiter must hear of it, not hang
            log.exception("audit.group_commit_failed", entries=len(drafts))
            failed = True
        start = 0
        for ticket in batch:
            count = len(ticket.drafts)
            ticket.entry_ids = ids[start : start + count]
            ticket.failed = failed
            start += count
            ticket.settle()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
