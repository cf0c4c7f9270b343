"""The composition root: a vault and its audit log, opened together from one configuration.

`api` is the only package that sees both, so this is where an access and its audit entry
meet in one transaction. The configuration is `RuntimeSettings` (the vault's, the audit
log's and access's own settings), which `api.settings.Settings` is.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

import audit.models  # noqa: F401 - registers the audit tables before migrations run
from access.settings import RuntimeSettings
from audit import AuditLog
from audit.group_commit import GroupCommit
from vault.context import Vault, init_vault, open_vault


@dataclass
class Runtime:
    vault: Vault
    audit: AuditLog
    settings: RuntimeSettings
    # Where a read's entries are committed, with concurrent reads' (audit.group_commit).
    entries: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.entries = GroupCommit(self.vault.sessions, self.audit)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.vault.sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.entries.close()
        self.vault.close()


def _with_audit(vault: Vault, settings: RuntimeSettings) -> Runtime:
    return Runtime(vault, AuditLog(vault.keyring, settings.resolved_log_origin), settings)


def operator_name(explicit: str | None = None) -> str:
    """Who runs a command line operation, for provenance and the audit log."""
    return explicit or f"cli:{getpass.getuser()}"


def open_runtime(settings: RuntimeSettings) -> Runtime:
    return _with_audit(open_vault(settings), settings)


def init_runtime(settings: RuntimeSettings) -> Runtime:
    return _with_audit(init_vault(settings), settings)
