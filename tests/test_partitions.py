"""Monthly audit partitions on PostgreSQL: created ahead, archived, detached, still verifiable.

What an operator and an auditor rely on: a month leaves the database as a file that
verifies on its own; the log left behind still verifies, telling archived entries from
removed ones; a tampered file or a forged claim of archiving fails; and the service's
own database role can neither detach a month nor rewrite the log (deploy/postgres/roles.sql).
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import secrets
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, ProgrammingError

from access.runtime import Runtime, init_runtime, open_runtime
from api.settings import Settings
from audit import EntryDraft, VerificationFailed
from audit.models import AuditEntry
from audit.partitions import (
    ArchivedLeaves,
    Manifest,
    PartitionError,
    _LeafRun,
    detach_before,
    ensure_partitions,
    list_partitions,
    verify_archive_file,
    verify_archives_against_log,
)
from audit.verify import verify_log
from tests.conftest import _require_postgres
from tests.demo_server import run_cli
from tests.pg_support import fresh_database
from vault.models import utcnow

ROLES_SQL = Path(__file__).parent.parent / "deploy" / "postgres" / "roles.sql"


# -- manifests and leaf runs (no database) -------------------------------------------------


@given(st.sets(st.integers(min_value=0, max_value=10_000), max_size=200))
def test_leaf_ranges_cover_exactly_the_leaves_folded_in(indexes: set[int]) -> None:
    run = _LeafRun()
    for index in sorted(indexes):
        run.add(index, index.to_bytes(32, "big"))
    covered = {i for first, last in run.ranges for i in range(first, last + 1)}
    assert covered == indexes
    assert all(b + 1 < c for (_, b), (c, _) in itertools.pairwise(run.ranges))


@given(
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 50)), max_size=6),
    st.integers(0, 10**9),
)
def test_a_manifest_reads_back_as_written(spans: list[tuple[int, int]], size: int) -> None:
    ranges, start = [], 0
    for gap, length in spans:
        first = start + gap
        ranges.append((first, first + length))
        start = first + length + 2
    manifest = Manifest(
        origin="vault.example.gov.cn/log",
        partition="audit_entries_2026_01",
        from_at=datetime(2026, 1, 1, tzinfo=UTC),
        to_at=datetime(2026, 2, 1, tzinfo=UTC),
        entries=sum(b - a + 1 for a, b in ranges),
        leaf_ranges=tuple(ranges),
        leaf_digest="ab" * 32,
        checkpoint_size=size,
    )
    assert Manifest.parse(manifest.body()) == manifest


def test_two_manifests_claiming_one_leaf_are_refused() -> None:
    def manifest(name: str, first: int, last: int) -> Manifest:
        return Manifest(
            "log",
            name,
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 2, 1, tzinfo=UTC),
            last - first + 1,
            ((first, last),),
            "00" * 32,
            100,
        )

    with pytest.raises(VerificationFailed, match="both claim leaf 5"):
        ArchivedLeaves([manifest("a", 0, 5), manifest("b", 5, 9)])


def test_partitions_need_postgresql(tmp_path: Path) -> None:
    rt = init_runtime(Settings(home=tmp_path / "h", database_url=f"sqlite:///{tmp_path}/v"))
    try:
        with rt.vault.engine.connect() as connection, pytest.raises(PartitionError, match="SQLite"):
            list_partitions(connection)
    finally:
        rt.close()


# -- on PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def pg_url(postgres_template: str | None) -> Iterator[str]:
    with fresh_database(postgres_template, "rv_part") as url:
        yield url


@pytest.fixture
def runtime(tmp_path: Path, pg_url: str) -> Iterator[Runtime]:
    rt = init_runtime(Settings(home=tmp_path / "home", database_url=pg_url))
    yield rt
    rt.close()


def _last_month() -> datetime:
    """A moment well inside last month (its partition exists from the migration on)."""
    first_of_month = utcnow().replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return first_of_month - timedelta(days=10)


def _record(runtime: Runtime, count: int, at: datetime | None = None) -> None:
    drafts = [
        EntryDraft(
            action="resident.read",
            outcome="allowed",
            channel="api",
            organisation="org_civil_affairs",
            user=f"worker{n % 3}",
            purpose="subsidy-review",
            resident_id=f"r_{n:04d}",
            fields={"name": "masked"},
        )
        for n in range(count)
    ]
    clock = patch("audit.log.utcnow", return_value=at) if at is not None else nullcontext()
    with clock, runtime.transaction() as session:
        runtime.audit.record(session, drafts)


def _this_month() -> str:
    return utcnow().strftime("%Y-%m")


def _archive_last_month(runtime: Runtime, archive_dir: Path, *, drop: bool = False) -> Path:
    done = detach_before(
        runtime.vault.sessions, runtime.audit, _this_month(), archive_dir, actor="ops", drop=drop
    )
    assert [d.partition for d in done] == [f"audit_entries_{_last_month():%Y_%m}"]
    return done[0].archive


def test_partitions_are_monthly_with_a_default_behind_them(runtime: Runtime) -> None:
    with runtime.vault.engine.connect() as connection:
        partitions = list_partitions(connection)
    assert partitions[-1].is_default
    monthly = partitions[:-1]
    assert len(monthly) >= 13  # last month, this month and twelve ahead
    for earlier, later in itertools.pairwise(monthly):
        assert earlier.upper == later.lower  # no gap, no overlap
    now = datetime.now(UTC)
    assert any(p.lower and p.upper and p.lower <= now < p.upper for p in monthly)


def test_ensure_creates_months_ahead_once(runtime: Runtime) -> None:
    with runtime.vault.engine.begin() as connection:
        before = len(list_partitions(connection))
        created = ensure_partitions(connection, 15)
        assert created >= 3
        assert len(list_partitions(connection)) == before + created
        assert ensure_partitions(connection, 15) == 0


def test_an_archived_month_leaves_a_log_that_still_verifies(
    runtime: Runtime, tmp_path: Path
) -> None:
    _record(runtime, 30, at=_last_month())
    _record(runtime, 5)
    archive = _archive_last_month(runtime, tmp_path / "archives")

    report = verify_archive_file(archive, runtime.audit.verifier_key)
    assert report.entries == 30
    assert report.from_at <= _last_month() < report.to_at
    with runtime.vault.sessions() as session:
        # last month's 30 are gone from the table; this month's 5 and the archiving event stay
        live = session.scalar(select(func.count()).select_from(AuditEntry))
        assert live == 6
        events = session.scalars(
            select(AuditEntry.details).where(AuditEntry.action == "audit.partition_archived")
        ).all()
        assert events == [
            {
                "partition": report.partition,
                "entries": 30,
                "file": archive.name,
                "file_sha256": report.file_sha256,
                "dropped": False,
            }
        ]
        result = verify_log(session, runtime.audit.verifier_key)
        assert result.archived == 30
        assert verify_archives_against_log(session, [report])
    # checkpoints still cover the archived leaves: an inclusion proof of one still works
    runtime.audit.checkpoint(runtime.vault.sessions)
    with runtime.vault.sessions() as session:
        size = runtime.audit.tree_size(session)
        assert runtime.audit.inclusion_proof(session, 0, size)


def test_a_current_month_cannot_be_archived(runtime: Runtime, tmp_path: Path) -> None:
    next_month = (utcnow().replace(day=28) + timedelta(days=5)).strftime("%Y-%m")
    with pytest.raises(PartitionError, match="over"):
        detach_before(runtime.vault.sessions, runtime.audit, next_month, tmp_path, actor="ops")
    with pytest.raises(PartitionError, match="YYYY-MM"):
        detach_before(runtime.vault.sessions, runtime.audit, "last year", tmp_path, actor="ops")


def _rewrite(archive: Path, change: object) -> None:
    with gzip.open(archive, "rb") as stream:
        lines = stream.readlines()
    lines = change(lines)  # type: ignore[operator]
    with gzip.open(archive, "wb") as stream:
        stream.writelines(lines)


def _alter_first_entry(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[0])
    canonical = base64.b64decode(record["entry"]).replace(b"worker0", b"worker9")
    record["entry"] = base64.b64encode(canonical).decode()
    return [json.dumps(record, separators=(",", ":")).encode() + b"\n", *lines[1:]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_alter_first_entry, "not the leaves its manifest signs"),
        (lambda lines: lines[1:], "holds 29 entries; its manifest says 30"),
        (lambda lines: lines[:-1], "truncated"),
        (lambda lines: [*lines[:-1], lines[0], lines[-1]], "out of order or repeated"),
    ],
    ids=["altered-entry", "entry-removed", "manifest-cut-off", "entry-duplicated"],
)
def test_a_tampered_archive_fails_verification(
    runtime: Runtime, tmp_path: Path, change: object, message: str
) -> None:
    _record(runtime, 30, at=_last_month())
    archive = _archive_last_month(runtime, tmp_path / "archives")
    _rewrite(archive, change)
    with pytest.raises(VerificationFailed, match=message):
        verify_archive_file(archive, runtime.audit.verifier_key)


def test_an_archive_signed_by_another_log_is_refused(
    runtime: Runtime, tmp_path: Path, pg_url: str
) -> None:
    _record(runtime, 3, at=_last_month())
    archive = _archive_last_month(runtime, tmp_path / "archives")
    other = init_runtime(
        Settings(home=tmp_path / "other", database_url=f"sqlite:///{tmp_path}/o.db")
    )
    try:
        with pytest.raises(VerificationFailed, match="signature"):
            verify_archive_file(archive, other.audit.verifier_key)
    finally:
        other.close()


def _as_owner_bypassing_guards(runtime: Runtime, statement: str) -> None:
    """What a DBA with the owner's rights could do; verification must notice."""
    with runtime.vault.engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(statement))


def test_a_removed_entry_cannot_pass_as_archived(runtime: Runtime, tmp_path: Path) -> None:
    _record(runtime, 10, at=_last_month())
    _record(runtime, 4)
    _archive_last_month(runtime, tmp_path / "archives")
    runtime.audit.checkpoint(runtime.vault.sessions)
    with runtime.vault.sessions() as session:
        verify_log(session, runtime.audit.verifier_key)
    # remove one of this month's entries: no manifest names its leaf
    _as_owner_bypassing_guards(
        runtime,
        "DELETE FROM audit_entries WHERE entry_id = "
        "(SELECT entry_id FROM audit_entries WHERE action = 'resident.read' LIMIT 1)",
    )
    with runtime.vault.sessions() as session, pytest.raises(VerificationFailed, match="removed"):
        verify_log(session, runtime.audit.verifier_key)
    # and a manifest rewritten to claim it no longer carries the log's signature
    _as_owner_bypassing_guards(
        runtime,
        "UPDATE audit_archives SET manifest = replace(manifest, 'entries 10', 'entries 11')",
    )
    with runtime.vault.sessions() as session, pytest.raises(VerificationFailed, match="signature"):
        verify_log(session, runtime.audit.verifier_key)


def test_an_archive_of_another_partition_history_is_not_accepted(
    runtime: Runtime, tmp_path: Path
) -> None:
    _record(runtime, 3, at=_last_month())
    archive = _archive_last_month(runtime, tmp_path / "archives")
    report = verify_archive_file(archive, runtime.audit.verifier_key)
    forged = type(report)(
        report.path,
        "audit_entries_1999_01",
        report.entries,
        report.from_at,
        report.to_at,
        report.manifest,
        report.file_sha256,
    )
    with runtime.vault.sessions() as session, pytest.raises(VerificationFailed, match="no record"):
        verify_archives_against_log(session, [forged])


# -- the command line ----------------------------------------------------------------------


def test_an_operator_archives_a_month_and_an_auditor_verifies_it(
    runtime: Runtime, tmp_path: Path, pg_url: str
) -> None:
    home = runtime.vault.settings.home
    _record(runtime, 12, at=_last_month())
    partition = f"audit_entries_{_last_month():%Y_%m}"

    listing = run_cli(home, pg_url, "audit", "partitions", "list")
    assert listing.returncode == 0, listing.stderr
    assert partition in listing.stdout and "(default)" in listing.stdout

    archives = tmp_path / "archives"
    detached = run_cli(
        home,
        pg_url,
        "audit",
        "partitions",
        "detach",
        "--before",
        _this_month(),
        "--archive",
        str(archives),
        "--drop",
    )
    assert detached.returncode == 0, detached.stderr
    assert f"archived and detached {partition}: 12 entries" in detached.stdout
    archive = archives / f"{partition}.rvaudit.jsonl.gz"
    with runtime.vault.engine.connect() as connection:
        assert connection.scalar(text(f"SELECT to_regclass('{partition}')")) is None  # dropped

    verified = run_cli(home, pg_url, "audit", "verify", "--archive", str(archive))
    assert verified.returncode == 0, verified.stderr
    assert "12 of them archived" in verified.stdout
    assert f"archive {archive.name} intact: {partition}, 12 entries" in verified.stdout

    key = runtime.audit.verifier_key
    alone = run_cli(
        home,
        "sqlite:///nowhere",
        "audit",
        "verify",
        "--archive-only",
        "--key",
        key,
        "--archive",
        str(archive),
    )
    assert alone.returncode == 0, alone.stderr
    assert "12 entries" in alone.stdout

    again = run_cli(
        home,
        pg_url,
        "audit",
        "partitions",
        "detach",
        "--before",
        "2999-01",
        "--archive",
        str(archives),
    )
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0
    assert "over" in again.stderr


# -- roles: the service cannot detach or rewrite the log -----------------------------------


@pytest.fixture
def roles() -> Iterator[dict[str, str]]:
    """deploy/postgres/roles.sql with names of this test's own (roles are cluster-wide)."""
    suffix = secrets.token_hex(4)
    names = {"vault_owner": f"vault_owner_{suffix}", "vault_app": f"vault_app_{suffix}"}
    yield names
    admin = create_engine(_require_postgres(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for role in names.values():
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    admin.dispose()


def _apply_roles(superuser_url: str, names: dict[str, str]) -> None:
    script = ROLES_SQL.read_text(encoding="utf-8")
    for placeholder, name in names.items():
        script = script.replace(placeholder, name)
    # As psql runs it: one script, no parameters (psycopg would read `%I` as a placeholder).
    url = make_url(superuser_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(script.encode())


def test_the_service_role_cannot_detach_or_rewrite_the_log(
    tmp_path: Path, roles: dict[str, str]
) -> None:
    # An empty database the owner role migrates, as a deployment does.
    with fresh_database(None, "rv_roles", empty=True) as empty:
        _apply_roles(empty, roles)
        owner_url = make_url(empty).set(username=roles["vault_owner"]).render_as_string(False)
        app_url = make_url(empty).set(username=roles["vault_app"]).render_as_string(False)
        home = tmp_path / "home"
        init_runtime(Settings(home=home, database_url=owner_url)).close()
        _apply_roles(empty, roles)  # after the upgrade, as the file says

        service = open_runtime(Settings(home=home, database_url=app_url))
        try:
            _record(service, 3)  # the service writes the log...
            service.audit.checkpoint(service.vault.sessions)  # ...and integrates and signs it
            with service.vault.sessions() as session:
                verify_log(session, service.audit.verifier_key)
            partition = f"audit_entries_{utcnow():%Y_%m}"
            for statement in (
                f"ALTER TABLE audit_entries DETACH PARTITION {partition}",
                f"DROP TABLE {partition}",
                "UPDATE audit_entries SET reason = 'x'",
                f"UPDATE {partition} SET reason = 'x'",  # noqa: S608 - our own partition name
                "DELETE FROM audit_leaves",
                f"TRUNCATE {partition}",
                "TRUNCATE audit_checkpoints",
                "SET session_replication_role = replica",
            ):
                with (
                    pytest.raises((ProgrammingError, DBAPIError), match=r"owner|permission denied"),
                    service.vault.engine.begin() as connection,
                ):
                    connection.execute(text(statement))
        finally:
            service.close()


def test_a_restored_log_still_accounts_for_its_archived_months(
    runtime: Runtime, tmp_path: Path, pg_url: str
) -> None:
    """Backups hold audit_archives with the rest: after the disaster and the restore, the
    log verifies, its archived month counted as archived (not as removed), and the archive
    file is still the one this log recorded."""
    home = runtime.vault.settings.home
    _record(runtime, 8, at=_last_month())
    archives = tmp_path / "archives"
    assert (
        run_cli(
            home,
            pg_url,
            "audit",
            "partitions",
            "detach",
            "--before",
            _this_month(),
            "--archive",
            str(archives),
            "--drop",
        ).returncode
        == 0
    )
    keys = tmp_path / "keys"
    assert run_cli(home, pg_url, "backup", "keygen", "-o", str(keys)).returncode == 0
    backup = tmp_path / "vault.rvbackup"
    made = run_cli(
        home,
        pg_url,
        "backup",
        "-o",
        str(backup),
        VAULT_BACKUP_KEY_FILE=str(keys / "backup-recipient.pem"),
    )
    assert made.returncode == 0, made.stderr
    runtime.close()
    with fresh_database(None, "rv_part_restored", empty=True) as target:
        restored = run_cli(
            home,
            target,
            "restore",
            str(backup),
            "--identity",
            str(keys / "backup-identity.pem"),
            "--yes",
        )
        assert restored.returncode == 0, restored.stderr + restored.stdout
        archive = archives / f"audit_entries_{_last_month():%Y_%m}.rvaudit.jsonl.gz"
        verified = run_cli(home, target, "audit", "verify", "--archive", str(archive))
        assert verified.returncode == 0, verified.stderr
        assert "8 of them archived" in verified.stdout


def test_a_busy_log_is_not_detached_and_leaves_no_archive(runtime: Runtime, tmp_path: Path) -> None:
    """A long reader on audit_entries holds DETACH off: after the lock timeout nothing is
    detached, no file is left to block the next run, and that run succeeds."""
    _record(runtime, 4, at=_last_month())
    archives = tmp_path / "archives"
    with runtime.vault.engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM audit_entries"))  # holds ACCESS SHARE
        with pytest.raises(PartitionError, match="stayed busy"):
            _archive_last_month(runtime, archives)
        reader.rollback()
    assert list(archives.iterdir()) == []
    with runtime.vault.engine.connect() as connection:
        names = [p.name for p in list_partitions(connection)]
    assert f"audit_entries_{_last_month():%Y_%m}" in names  # still attached
    assert verify_archive_file(_archive_last_month(runtime, archives), runtime.audit.verifier_key)
