"""Backup and restore throughput, beside the database's own dump measured in the same run.

`resident-vault backup` reads every table in one snapshot and streams it, encrypted, to a
file; `resident-vault restore` decrypts it, loads an empty database and proves the result
(row counts and hashes, the whole audit log verified against the backup's checkpoint, a
sample of residents decrypted and found by their blind indexes). The baseline is what an
operator would otherwise script, sealed with the very same encryption (X25519, HKDF,
AES-256-GCM chunks: `vault.backup.EncryptedWriter`):

- PostgreSQL: `pg_dump` of the same database, its output encrypted as it streams; restored
  by decrypting into `psql` on a fresh database (no verification of any kind).
- SQLite: a plain copy of the database file (SQLite's online backup), encrypted; restored
  by decrypting it back to a file.

Printed: seconds, MB/s (of the encrypted file written or read), residents/s, and the ratio
resident-vault / baseline (time: above 1 means slower). Generated data: the demo street
with `--residents` people (households, consents, organisations) and `--accesses` audit
entries shaped like reads, integrated and checkpointed, as a working vault has them.

    python bench/bench_backup.py                                   # SQLite, 20,000 residents
    python bench/bench_backup.py --postgres postgresql+psycopg://postgres@127.0.0.1:55440/postgres
    python bench/bench_backup.py --postgres URL --residents 100000 --accesses 500000

With --postgres the URL names a server and a database to connect to for administration;
the benchmark creates its own databases there and drops them afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import vault  # noqa: F401 - only to find out whether the package is importable
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from access.runtime import open_runtime
from api.cli.backup import create_backup, restore_backup
from api.settings import Settings
from audit import EntryDraft
from vault.backup import EncryptedWriter, decrypted_chunks, generate_key_pair, load_identity
from vault.backup import load_recipient as load_recipient_key
from vault.models import Resident

MB = 1_000_000
ACCESS_BATCH = 5_000


# -- the data ------------------------------------------------------------------------------


def _populate(settings: Settings, residents: int, accesses: int) -> int:
    """`resident-vault init --demo` (the street, households, consents, clients), then
    read-shaped audit entries, integrated and checkpointed."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    made = subprocess.run(  # noqa: S603 - our own fixed arguments
        [
            sys.executable,
            "-c",
            "from api.cli.main import main; main()",
            "init",
            "--demo",
            "--residents",
            str(residents),
        ],
        env={
            **clean,
            "VAULT_HOME": str(settings.home),
            "VAULT_DATABASE_URL": str(settings.database_url),
        },
        capture_output=True,
        check=False,  # the demo logins it prints stay unread
    )
    if made.returncode != 0:
        raise SystemExit(f"init --demo failed: {made.stderr.decode()[-500:]}")
    runtime = open_runtime(settings)
    try:
        with runtime.vault.sessions() as session:
            ids = list(session.scalars(select(Resident.id)))
        rng = random.Random(20261202)
        fields = {"name": "clear", "phone": "masked", "id_number": "masked", "address": "clear"}
        for start in range(0, accesses, ACCESS_BATCH):
            drafts = [
                EntryDraft(
                    action="read",
                    outcome="allowed",
                    channel="api",
                    organisation="org:bench",
                    client="bench-client",
                    purpose="subsidy-review",
                    legal_basis="consent",
                    resident_id=rng.choice(ids),
                    fields=fields,
                    decision_id=secrets.token_hex(8),
                    policy_revision="bench",
                    request_id=secrets.token_hex(8),
                )
                for _ in range(min(ACCESS_BATCH, accesses - start))
            ]
            with runtime.transaction() as session:
                runtime.audit.record(session, drafts)
        runtime.audit.checkpoint(runtime.vault.sessions)
    finally:
        runtime.close()
    return len(ids)


# -- the same encryption for the baselines -----------------------------------------------


def _encrypt_stream(source: IO[bytes], sink: IO[bytes], recipient: Path) -> int:
    writer = EncryptedWriter(sink, load_recipient_key(recipient))
    for block in iter(lambda: source.read(1 << 20), b""):
        writer.write(block)
    writer.close()
    return writer.bytes_written


def _decrypt_stream(archive: Path, identity: Path, sink: IO[bytes]) -> None:
    with archive.open("rb") as source:
        for chunk in decrypted_chunks(source, load_identity(identity)):
            sink.write(chunk)


# -- databases -----------------------------------------------------------------------------


@dataclass
class Target:
    """Where the benchmark's databases live: a PostgreSQL server, or files in a directory."""

    admin_url: str | None
    directory: Path

    @property
    def postgres(self) -> bool:
        return self.admin_url is not None

    def url(self, name: str) -> str:
        if self.admin_url is None:
            return f"sqlite:///{self.directory / (name + '.db')}"
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    @contextmanager
    def database(self, name: str) -> Iterator[str]:
        """An empty database for the duration, dropped (or deleted) afterwards."""
        if self.admin_url is None:
            try:
                yield self.url(name)
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.directory / name}.db{suffix}").unlink(missing_ok=True)
            return
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield self.url(name)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    def size(self, url: str) -> int:
        if self.admin_url is None:
            return Path(make_url(url).database or "").stat().st_size
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                size = connection.scalar(select(func.pg_database_size(func.current_database())))
                return int(size or 0)
        finally:
            engine.dispose()


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string for pg_dump and psql."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _baseline_backup(target: Target, url: str, out: Path, recipient: Path) -> int:
    if target.postgres:
        dump = subprocess.Popen(  # noqa: S603 - our own fixed arguments
            ["pg_dump", "--no-owner", "--no-privileges", _libpq(url)],  # noqa: S607
            stdout=subprocess.PIPE,
        )
        if dump.stdout is None:
            raise SystemExit("pg_dump gave no output stream")
        with out.open("wb") as sink:
            written = _encrypt_stream(dump.stdout, sink, recipient)
            sink.flush()
            os.fsync(sink.fileno())
        if dump.wait() != 0:
            raise SystemExit("pg_dump failed")
        return written
    # SQLite's online backup API: a consistent copy of the live file, then encrypted.
    copy = out.with_suffix(".copy.db")
    source = sqlite3.connect(make_url(url).database or "")
    destination = sqlite3.connect(copy)
    with destination:
        source.backup(destination)
    source.close()
    destination.close()
    with copy.open("rb") as plain, out.open("wb") as sink:
        written = _encrypt_stream(plain, sink, recipient)
        sink.flush()
        os.fsync(sink.fileno())
    copy.unlink()
    return written


def _baseline_restore(target: Target, archive: Path, identity: Path, url: str) -> None:
    if target.postgres:
        load = subprocess.Popen(  # noqa: S603 - our own fixed arguments
            ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", _libpq(url)],  # noqa: S607
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        if load.stdin is None:
            raise SystemExit("psql gave no input stream")
        _decrypt_stream(archive, identity, load.stdin)
        load.stdin.close()
        if load.wait() != 0:
            raise SystemExit("psql failed to load the dump")
        return
    with Path(make_url(url).database or "").open("wb") as sink:
        _decrypt_stream(archive, identity, sink)
        sink.flush()
        os.fsync(sink.fileno())


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=20_000)
    parser.add_argument(
        "--accesses", type=int, default=None, help="audit entries (default 5 per resident)"
    )
    parser.add_argument(
        "--postgres", metavar="URL", help="a PostgreSQL server to run on (default SQLite)"
    )
    args = parser.parse_args()
    accesses = 5 * args.residents if args.accesses is None else args.accesses
    if args.postgres and not (shutil.which("pg_dump") and shutil.which("psql")):
        print("pg_dump and psql are needed for the PostgreSQL baseline", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="rv-bench-backup-") as tmp:
        root = Path(tmp)
        target = Target(args.postgres, root)
        run_id = secrets.token_hex(3)
        keys = generate_key_pair(root / "keys")
        home = root / "home"
        names = [f"rv_bench_{kind}_{run_id}" for kind in ("source", "restored", "baseline")]
        with (
            target.database(names[0]) as source_url,
            target.database(names[1]) as restored_url,
            target.database(names[2]) as baseline_url,
        ):
            settings = Settings(home=home, database_url=source_url)
            started = time.perf_counter()
            residents = _populate(settings, args.residents, accesses)
            print(
                f"{'PostgreSQL' if target.postgres else 'SQLite'}: {residents:,} residents, "
                f"{accesses:,} access entries, database {target.size(source_url) / MB:.1f} MB "
                f"(generated in {time.perf_counter() - started:.0f} s)"
            )

            ours, theirs = root / "vault.rvbackup", root / "baseline.rvbackup"
            runtime = open_runtime(settings)
            try:
                backup_s = _timed(lambda: create_backup(runtime, ours, keys.public_path))
            finally:
                runtime.close()
            baseline_backup_s = _timed(
                lambda: _baseline_backup(target, source_url, theirs, keys.public_path)
            )
            restore_settings = Settings(home=home, database_url=restored_url)
            restore_s = _timed(
                lambda: restore_backup(restore_settings, ours, keys.private_path, None)
            )
            baseline_restore_s = _timed(
                lambda: _baseline_restore(target, theirs, keys.private_path, baseline_url)
            )
            ours_mb, theirs_mb = ours.stat().st_size / MB, theirs.stat().st_size / MB
        baseline = "pg_dump | encrypt" if target.postgres else "file copy | encrypt"
        baseline_in = "decrypt | psql" if target.postgres else "decrypt to file"
        print(f"{'':<34}{'seconds':>9}{'MB/s':>8}{'residents/s':>13}{'file MB':>9}")
        rows = [
            ("backup (resident-vault)", backup_s, ours_mb),
            (f"backup ({baseline})", baseline_backup_s, theirs_mb),
            ("restore + proof (resident-vault)", restore_s, ours_mb),
            (f"restore ({baseline_in})", baseline_restore_s, theirs_mb),
        ]
        for name, seconds, size in rows:
            print(
                f"{name:<34}{seconds:>9.2f}{size / seconds:>8.1f}{residents / seconds:>13,.0f}"
                f"{size:>9.1f}"
            )
        print(
            f"ratio resident-vault / baseline (time): backup {backup_s / baseline_backup_s:.2f}, "
            f"restore {restore_s / baseline_restore_s:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
