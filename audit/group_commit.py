"""Group commit of audit entries: concurrent accesses share one transaction for their
entries, and each waits until that transaction is durable before it answers.

A read's entry is the only thing the read writes, so it need not be in the read's own
transaction; it must only be committed before the answer leaves (fail closed). Committing
each request on its own makes the log's commits (and, on SQLite, its fsyncs) the hot
path's ceiling. Here, whoever finds no commit in flight commits everything queued so far;
the others wait for the commit that carries theirs. Nothing is delayed on purpose: batches
form only while a commit is under way, so one lone request commits at once.
"""

from __future__ import annotations

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
    done: bool = False
    failed: bool = False
    entry_ids: list[str] = field(default_factory=list)


class GroupCommit:
    def __init__(
        self, sessions: Callable[[], AbstractContextManager[Session]], audit: AuditLog
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._lock = threading.Lock()
        self._committed = threading.Condition(self._lock)
        self._queue: list[_Ticket] = []
        self._committing = False

    def record(self, drafts: Sequence[EntryDraft]) -> list[str]:
        """Commit these entries (with whatever else is queued); their ids once durable.
        Raises AuditUnavailable if the transaction carrying them failed."""
        if not drafts:
            return []
        ticket = _Ticket(drafts)
        with self._lock:
            self._queue.append(ticket)
            while not ticket.done:
                if self._committing:
                    self._committed.wait()
                    continue
                self._committing = True
                batch = self._take()
                self._lock.release()
                try:
                    self._commit(batch)
                finally:
                    self._lock.acquire()
                    self._committing = False
                    self._committed.notify_all()
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
            ticket.done = True
            start += count
