"""PostgreSQL helpers shared by the production-profile tests: a demo service on given
settings, a database of its own, and the streaming standby `.ci/run` starts.

The standby is a real one (`pg_basebackup -R`), named by VAULT_TEST_REPLICA_URL; under
CI=true its absence fails the run. A database created on the primary appears on it once
replay reaches the primary's WAL position (`wait_for_replay`).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from api.http.app import create_app
from api.settings import Settings
from tests.conftest import IN_CI, _require_postgres
from tests.demo_server import DemoServer, collect_stray_connections, prepare_demo, serving

REPLICA_ENV = "VAULT_TEST_REPLICA_URL"
# Pausing replay stops it for every test using the standby: one pauser at a time, and
# nobody waits for replay meanwhile (xdist workers are processes, hence a file lock).
_PAUSE_LOCK = Path(tempfile.gettempdir()) / "rv-test-replica.lock"


def require_replica() -> str:
    url = os.environ.get(REPLICA_ENV)
    if not url:
        if IN_CI:
            pytest.fail(f"CI=true but {REPLICA_ENV} is not set: the replica tests cannot skip")
        pytest.skip(f"no streaming standby configured ({REPLICA_ENV})")
    return url


@contextmanager
def fresh_database(template: str | None, prefix: str, *, empty: bool = False) -> Iterator[str]:
    """A database of our own on the primary, copied from the migrated template (or, with
    `empty`, with no schema at all, for tests that migrate it themselves)."""
    url = _require_postgres()
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if empty:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            assert template is not None
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template).database}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        collect_stray_connections()


def on_replica(database_url: str) -> str:
    """The same database on the standby."""
    replica = make_url(require_replica())
    return replica.set(database=make_url(database_url).database).render_as_string(
        hide_password=False
    )


@contextmanager
def _exclusive() -> Iterator[None]:
    with _PAUSE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def wait_for_replay(primary: Engine, timeout: float = 30.0) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    standby = create_engine(require_replica(), isolation_level="AUTOCOMMIT")
    try:
        with _exclusive(), primary.connect() as conn:
            target = conn.scalar(text("SELECT pg_current_wal_lsn()"))
            deadline = time.monotonic() + timeout
            with standby.connect() as replica:
                while not replica.scalar(
                    text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)"),
                    {"lsn": target},
                ):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the standby did not replay up to {target}")
                    time.sleep(0.05)
    finally:
        standby.dispose()


@contextmanager
def replay_paused() -> Iterator[None]:
    """The standby keeps receiving WAL but applies none of it: a lagging replica."""
    standby = create_engine(require_replica(), isolation_level="AUTOCOMMIT")
    try:
        with _exclusive(), standby.connect() as conn:
            conn.execute(text("SELECT pg_wal_replay_pause()"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_wal_replay_resume()"))
    finally:
        standby.dispose()


@contextmanager
def serve(settings: Settings, residents: int = 40) -> Iterator[DemoServer]:
    """A demo service on exactly these settings (populated through the primary first)."""
    setup = Settings(home=settings.home, database_url=settings.database_url)
    credentials = prepare_demo(setup, residents)
    app = create_app(settings)
    with serving(app) as port:
        yield DemoServer(f"http://127.0.0.1:{port}", credentials, settings, app)
