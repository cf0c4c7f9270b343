"""Monthly partitions of the audit log on PostgreSQL: list, create ahead, archive and detach.

`audit_entries` is range-partitioned by `recorded_at`, one partition a month, created ahead
by `audit_ensure_partitions` (migration 0002) with a default partition behind them so an
insert never fails for want of one. A city's log grows by gigabytes a month; old months
leave the database as archive files that remain verifiable:

- the archive holds each entry's canonical bytes (what its leaf hashes) and leaf index;
- its manifest, a signed note under the log's own key, names the partition, its month,
  how many entries, which leaf indexes, and a digest of those leaves' hashes;
- the leaves, tree nodes and checkpoints stay in the database, so every checkpoint still
  verifies, inclusion proofs still work, and `audit verify` can tell an archived entry
  (its leaf is in a signed manifest) from a removed one (it is in none);
- detaching and recording the manifest (`audit_archives`) happen in one transaction,
  after the file has been written, re-read and verified.

An archive file alone verifies too (`verify_archive_file`): the signature, that every
entry hashes to a leaf the manifest's digest covers, that none is missing or added, and
that every entry falls in the partition's month.

Only the schema owner can detach (ALTER TABLE); the service's role cannot (see
deploy/postgres/roles.sql). Archives hold access metadata (resident ids, who looked and
why), never field values; store them as carefully as backups.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import gzip
import hashlib
import io
import itertools
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Connection, LargeBinary, column, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from audit.checkpoint import CheckpointError, sign_note_with, verify_note
from audit.encoding import ENTRY_COLUMN_NAMES, canonical_bytes, canonical_of
from audit.errors import AuditError, VerificationFailed
from audit.log import SIGNING_KEY_NAME, AuditLog, operator_event
from audit.merkle import leaf_hash
from audit.models import ENTRY_COLUMNS, AuditArchive
from vault.i18n import Message
from vault.models import utcnow

ARCHIVE_FORMAT = "resident-vault audit archive v1"
ARCHIVE_SUFFIX = ".rvaudit.jsonl.gz"
PARENT = "audit_entries"
DEFAULT_PARTITION = "audit_entries_default"
# DETACH takes an exclusive lock on audit_entries; waiting longer than this behind a long
# query would stall every access (each writes an entry), so give up and let the operator
# retry. (DETACH ... CONCURRENTLY is refused while a default partition exists.)
DETACH_LOCK_TIMEOUT = "5s"


class PartitionError(AuditError):
    """A partition operation was refused; the message says why and what to do. Most are
    for the operator who runs the maintenance and stay English; a refusal anyone running
    the command line meets carries a catalogue `Message` (shown in their language)."""

    def __init__(self, detail: str | Message) -> None:
        if isinstance(detail, Message):
            super().__init__(detail.text("en"))  # logs and tracebacks read English
            self.message = detail
        else:
            super().__init__(detail)


# -- partitions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime | None  # None for the default partition
    upper: datetime | None
    rows_estimate: int  # the planner's count (pg_class.reltuples): exact counts scan
    total_bytes: int  # heap, indexes and TOAST

    @property
    def is_default(self) -> bool:
        return self.lower is None


def require_postgresql(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        raise PartitionError(Message("error.audit.partitions-need-postgresql"))


def _bound(expression: str) -> tuple[datetime | None, datetime | None]:
    """Parse `FOR VALUES FROM ('…') TO ('…')`, or DEFAULT, as PostgreSQL prints them."""
    if expression.strip() == "DEFAULT":
        return None, None
    quoted = expression.split("'")
    return datetime.fromisoformat(quoted[1]), datetime.fromisoformat(quoted[3])


def list_partitions(connection: Connection) -> list[Partition]:
    """Attached partitions of audit_entries, oldest first, the default last."""
    require_postgresql(connection)
    rows = connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), "
            "GREATEST(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    ).all()
    partitions = [
        Partition(name, *_bound(bound), int(estimate), int(size))
        for name, bound, estimate, size in rows
    ]
    return sorted(partitions, key=lambda p: (p.lower is None, p.lower or datetime.min))


def ensure_partitions(connection: Connection, months_ahead: int) -> int:
    """Create the monthly partitions from last month to `months_ahead` from now; returns
    how many were new. Run monthly: the migration made twelve months."""
    require_postgresql(connection)
    if not 1 <= months_ahead <= 120:
        raise PartitionError("months ahead must be between 1 and 120")
    try:
        created = connection.execute(
            text("SELECT audit_ensure_partitions(:months)"), {"months": months_ahead}
        ).scalar_one()
    except DBAPIError as exc:
        # PostgreSQL refuses a new partition when the default one already holds rows of
        # its range: entries arrived for a month nobody created in time.
        if "default partition" in str(exc.orig):
            raise PartitionError(
                "the default partition holds entries of a month that has no partition yet; "
                "those months stay in the default partition (create partitions further "
                "ahead in future: `audit partitions ensure` monthly)"
            ) from exc
        raise
    return int(created)


# -- manifests -----------------------------------------------------------------------------


def _leaf_record(index: int, digest: bytes) -> bytes:
    return struct.pack(">Q", index) + digest


@dataclass(frozen=True)
class Manifest:
    """What an archive holds, in the body of a note the log's key signs."""

    origin: str
    partition: str
    from_at: datetime
    to_at: datetime
    entries: int
    leaf_ranges: tuple[tuple[int, int], ...]  # inclusive, ascending, disjoint
    leaf_digest: str  # SHA-256 over u64be(index) || leaf hash, in index order
    checkpoint_size: int

    def body(self) -> str:
        ranges = ",".join(f"{a}-{b}" for a, b in self.leaf_ranges) or "none"
        return (
            f"{ARCHIVE_FORMAT}\norigin {self.origin}\npartition {self.partition}\n"
            f"from {self.from_at.isoformat()}\nto {self.to_at.isoformat()}\n"
            f"entries {self.entries}\nleaves {ranges}\nleaf-digest {self.leaf_digest}\n"
            f"checkpoint-size {self.checkpoint_size}\n"
        )

    @classmethod
    def parse(cls, body: str) -> Manifest:
        lines = body.rstrip("\n").split("\n")
        if not lines or lines[0] != ARCHIVE_FORMAT:
            raise VerificationFailed("not an audit archive manifest")
        values: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(" ")
            values[key] = value
        try:
            ranges: list[tuple[int, int]] = []
            if values["leaves"] != "none":
                for part in values["leaves"].split(","):
                    first, _, last = part.partition("-")
                    ranges.append((int(first), int(last)))
            return cls(
                origin=values["origin"],
                partition=values["partition"],
                from_at=datetime.fromisoformat(values["from"]),
                to_at=datetime.fromisoformat(values["to"]),
                entries=int(values["entries"]),
                leaf_ranges=tuple(ranges),
                leaf_digest=values["leaf-digest"],
                checkpoint_size=int(values["checkpoint-size"]),
            )
        except (KeyError, ValueError) as exc:
            raise VerificationFailed(f"the archive manifest is malformed ({exc})") from exc

    @classmethod
    def verified(cls, note: str, verifier_key: str) -> Manifest:
        try:
            body = verify_note(note, verifier_key)
        except CheckpointError as exc:
            raise VerificationFailed(f"an archive manifest's signature fails: {exc}") from exc
        manifest = cls.parse(body)
        if manifest.origin != verifier_key.strip().split("+", 1)[0]:
            raise VerificationFailed(f"archive {manifest.partition} is of another log")
        return manifest


class _LeafRun:
    """Folds leaves, in index order, into the manifest's ranges and digest."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.ranges: list[tuple[int, int]] = []
        self.count = 0

    def add(self, index: int, digest: bytes) -> None:
        if self.ranges and index <= self.ranges[-1][1]:
            raise VerificationFailed(f"leaf {index} is out of order or repeated", index)
        if self.ranges and index == self.ranges[-1][1] + 1:
            self.ranges[-1] = (self.ranges[-1][0], index)
        else:
            self.ranges.append((index, index))
        self.digest.update(_leaf_record(index, digest))
        self.count += 1


# -- archive files -------------------------------------------------------------------------


def _entry_line(index: int, canonical: bytes) -> bytes:
    record = {"leaf": index, "entry": base64.b64encode(canonical).decode()}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _recorded_at(canonical: bytes, index: int) -> datetime:
    """The entry's time, after checking its bytes are the canonical encoding of itself."""
    try:
        document = json.loads(canonical)
        columns = {k: v for k, v in document.items() if k != "v"}
        recorded = datetime.fromisoformat(columns["recorded_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationFailed(f"archived entry {index} is not an audit entry", index) from exc
    if canonical_bytes(columns) != canonical:
        raise VerificationFailed(f"archived entry {index} is not in canonical form", index)
    return recorded


@dataclass
class ArchiveReport:
    path: Path
    partition: str
    entries: int
    from_at: datetime
    to_at: datetime
    manifest: str
    file_sha256: str
    notes: list[str] = field(default_factory=list)


class _HashingReader(io.RawIOBase):
    """The archive file's bytes, hashed as gzip reads them: one pass for both."""

    def __init__(self, raw: io.FileIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer) or 0
        self.digest.update(memoryview(buffer)[:count])
        return count

    def drain(self) -> str:
        """Hash whatever gzip left unread (nothing, normally) and return the file's SHA-256."""
        for block in iter(lambda: self._raw.read(1 << 20), b""):
            self.digest.update(block)
        return self.digest.hexdigest()


def _archive_lines(path: Path, source: _HashingReader) -> Iterator[bytes]:
    try:
        with gzip.GzipFile(fileobj=source, mode="rb") as stream:
            yield from stream
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise VerificationFailed(f"{path.name} is not a readable archive ({exc})") from exc


def verify_archive_file(path: Path, verifier_key: str) -> ArchiveReport:
    """Check an archive on its own; raise VerificationFailed naming the first problem."""
    run = _LeafRun()
    earliest: datetime | None = None
    latest: datetime | None = None
    note: str | None = None
    # One pass: gzip reads through the hashing reader, so the file's SHA-256 comes with it.
    with path.open("rb", buffering=0) as raw:
        source = _HashingReader(raw)
        for line in _archive_lines(path, source):
            if note is not None:
                raise VerificationFailed(f"{path.name} has lines after its manifest")
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise VerificationFailed(f"{path.name} has a line that is not JSON") from exc
            if not isinstance(record, dict):
                raise VerificationFailed(f"{path.name} has a line that is not a record")
            if "manifest" in record:
                note = str(record["manifest"])
                continue
            try:
                index = int(record["leaf"])
                canonical = base64.b64decode(record["entry"], validate=True)
            except (KeyError, ValueError, TypeError, binascii.Error) as exc:
                raise VerificationFailed(f"{path.name} has a malformed entry line") from exc
            recorded = _recorded_at(canonical, index)
            earliest = recorded if earliest is None else min(earliest, recorded)
            latest = recorded if latest is None else max(latest, recorded)
            run.add(index, leaf_hash(canonical))
        file_sha256 = source.drain()
    if note is None:
        raise VerificationFailed(f"{path.name} has no manifest: it is truncated")
    manifest = Manifest.verified(note, verifier_key)
    if run.count != manifest.entries:
        raise VerificationFailed(
            f"{path.name} holds {run.count} entries; its manifest says {manifest.entries}"
        )
    if tuple(run.ranges) != manifest.leaf_ranges or run.digest.hexdigest() != manifest.leaf_digest:
        raise VerificationFailed(f"{path.name}: its entries are not the leaves its manifest signs")
    if (earliest is not None and earliest < manifest.from_at) or (
        latest is not None and latest >= manifest.to_at
    ):
        raise VerificationFailed(f"{path.name} holds entries outside {manifest.partition}'s month")
    return ArchiveReport(
        path,
        manifest.partition,
        manifest.entries,
        manifest.from_at,
        manifest.to_at,
        note,
        file_sha256,
    )


# -- archived leaves, for verifying the log without the files --------------------------------


class ArchivedLeaves:
    """The leaves whose entries left with a detached partition, by signed manifest.

    `verify_log` feeds it every leaf in index order; a leaf with no entry must fall in
    some manifest's ranges, and each manifest's digest must come out as signed.
    """

    def __init__(self, manifests: Iterable[Manifest]) -> None:
        self.manifests = sorted(manifests, key=lambda m: m.partition)
        spans = sorted(
            (first, last, number)
            for number, manifest in enumerate(self.manifests)
            for first, last in manifest.leaf_ranges
        )
        for (_, last, _), (first, _, _) in itertools.pairwise(spans):
            if first <= last:
                raise VerificationFailed(f"two archive manifests both claim leaf {first}", first)
        self._starts = [first for first, _, _ in spans]
        self._spans = spans
        self._runs = [_LeafRun() for _ in self.manifests]

    def __len__(self) -> int:
        return len(self.manifests)

    @property
    def entries(self) -> int:
        return sum(m.entries for m in self.manifests)

    def claim(self, index: int, digest: bytes) -> bool:
        """Fold this leaf into its manifest's digest; True if some manifest covers it."""
        position = bisect.bisect_right(self._starts, index) - 1
        if position < 0:
            return False
        first, last, number = self._spans[position]
        if not first <= index <= last:
            return False
        self._runs[number].add(index, digest)
        return True

    def check_complete(self) -> None:
        for manifest, run in zip(self.manifests, self._runs, strict=True):
            if run.count != manifest.entries or run.digest.hexdigest() != manifest.leaf_digest:
                raise VerificationFailed(
                    f"the leaves of archived partition {manifest.partition} are not those "
                    "its signed manifest names"
                )


def archived_leaves(session: Session, verifier_key: str) -> ArchivedLeaves:
    notes = session.scalars(select(AuditArchive.manifest)).all()
    return ArchivedLeaves(Manifest.verified(note, verifier_key) for note in notes)


# -- detaching -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Detached:
    partition: str
    entries: int
    archive: Path
    file_sha256: str
    dropped: bool


def _quote(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def _write_archive(
    connection: Connection, partition: Partition, log: AuditLog, checkpoint_size: int, path: Path
) -> Manifest:
    """Stream the partition's entries with their leaves into `path`, manifest last."""
    if partition.lower is None or partition.upper is None:
        raise PartitionError("the default partition is never archived")
    bounds = (partition.lower, partition.upper)
    temporary = path.with_name(path.name + ".partial")
    # Partition names come from pg_inherits and are quoted: no user text reaches the SQL.
    entry_columns = ", ".join(f"e.{_quote(connection, n)}" for n in ENTRY_COLUMN_NAMES)
    rows = connection.execution_options(yield_per=5_000).execute(
        text(
            f"SELECT l.leaf_index, l.leaf_hash, {entry_columns} "  # noqa: S608
            f"FROM {_quote(connection, partition.name)} e "
            "LEFT JOIN audit_leaves l ON l.entry_id = e.entry_id "
            "ORDER BY l.leaf_index NULLS FIRST"
        ).columns(
            # Typed as the table is, so the bytes made from them are the ones hashed.
            column("leaf_index", BigInteger),
            column("leaf_hash", LargeBinary),
            *(column(c.name, c.type) for c in ENTRY_COLUMNS),
        )
    )
    try:
        manifest = _stream_entries(
            rows, partition.name, bounds, log, checkpoint_size=checkpoint_size, out_path=temporary
        )
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    with temporary.open("rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, path)
    return manifest


def _stream_entries(
    rows: Iterable[Any],
    name: str,
    bounds: tuple[datetime, datetime],
    log: AuditLog,
    *,
    checkpoint_size: int,
    out_path: Path,
) -> Manifest:
    run = _LeafRun()
    with gzip.open(out_path, "wb", compresslevel=6) as out:
        for index, stored, *values in rows:
            canonical = canonical_of(values)
            if index is None or index >= checkpoint_size:
                raise PartitionError(
                    f"{name} holds entries no checkpoint covers yet: run "
                    "`resident-vault audit checkpoint` and try again"
                )
            if leaf_hash(canonical) != bytes(stored):
                raise PartitionError(
                    f"entry {index} in {name} no longer matches its leaf: run "
                    "`resident-vault audit verify` (see docs/incident-response.md)"
                )
            run.add(index, bytes(stored))
            out.write(_entry_line(index, bytes(canonical)))
        manifest = Manifest(
            origin=log.origin,
            partition=name,
            from_at=bounds[0],
            to_at=bounds[1],
            entries=run.count,
            leaf_ranges=tuple(run.ranges),
            leaf_digest=run.digest.hexdigest(),
            checkpoint_size=checkpoint_size,
        )
        note = sign_note_with(
            manifest.body(),
            log.origin,
            log.public_key,
            lambda message: log.keyring.sign(SIGNING_KEY_NAME, message),
        )
        out.write(json.dumps({"manifest": note}, ensure_ascii=False).encode() + b"\n")
    return manifest


def detach_before(
    sessions: sessionmaker[Session],
    log: AuditLog,
    before: str,
    archive_dir: Path,
    *,
    actor: str | None,
    drop: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Detached]:
    """Archive and detach every monthly partition that ends on or before `before`
    (YYYY-MM: the first instant of that month, in the database's time zone).

    Months not yet over are refused; entries are integrated and covered by a fresh
    checkpoint first, so every archived entry is one a checkpoint already commits to.
    """
    try:
        datetime.strptime(before, "%Y-%m")
    except ValueError:
        raise PartitionError(f"--before wants a month as YYYY-MM, not {before!r}") from None
    archive_dir.mkdir(parents=True, exist_ok=True)
    with sessions() as session:
        connection = session.connection()
        require_postgresql(connection)
        cutoff, this_month = connection.execute(
            text("SELECT CAST(:before AS timestamptz), date_trunc('month', now())"),
            {"before": f"{before}-01"},
        ).one()
        if cutoff > this_month:
            raise PartitionError("only months that are over can be archived")
        chosen = [
            p for p in list_partitions(connection) if p.upper is not None and p.upper <= cutoff
        ]
    done: list[Detached] = []
    for partition in chosen:
        progress(partition.name)
        done.append(_detach_one(sessions, log, partition, archive_dir, actor=actor, drop=drop))
    return done


def _detach_one(
    sessions: sessionmaker[Session],
    log: AuditLog,
    partition: Partition,
    archive_dir: Path,
    *,
    actor: str | None,
    drop: bool,
) -> Detached:
    head = log.checkpoint(sessions, force=True)
    checkpoint_size = 0 if head is None else head.tree_size
    path = archive_dir / f"{partition.name}{ARCHIVE_SUFFIX}"
    if path.exists():
        raise PartitionError(f"{path} exists: move it away rather than overwrite an archive")
    # One snapshot for the whole read, so the file is one consistent view of the month.
    with sessions() as session, session.begin():
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        session.execute(text("SET LOCAL statement_timeout = 0"))
        manifest = _write_archive(session.connection(), partition, log, checkpoint_size, path)
    try:
        return _verify_and_detach(sessions, log, partition, manifest, path, actor=actor, drop=drop)
    except BaseException:
        # Nothing was detached: the next run writes the archive afresh.
        path.unlink(missing_ok=True)
        raise


def _verify_and_detach(
    sessions: sessionmaker[Session],
    log: AuditLog,
    partition: Partition,
    manifest: Manifest,
    path: Path,
    *,
    actor: str | None,
    drop: bool,
) -> Detached:
    report = verify_archive_file(path, log.verifier_key)  # re-read what was written
    with sessions() as session, session.begin():
        connection = session.connection()
        quoted = _quote(connection, partition.name)
        # Count under a lock on the old month alone (only a skewed clock could still write
        # there), so the count stays true through the detach; the exclusive lock DETACH
        # takes on audit_entries, which every access waits on, is held only from there on.
        session.execute(text("SET LOCAL statement_timeout = 0"))
        session.execute(text(f"SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'"))
        try:
            session.execute(text(f"LOCK TABLE {quoted} IN SHARE MODE"))
            remaining = session.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one()  # noqa: S608
            if remaining != manifest.entries:
                raise PartitionError(
                    f"{partition.name} gained entries after it was archived (clock skew on a "
                    "service node?): nothing was detached; check the clocks and try again"
                )
            session.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {quoted}"))
        except DBAPIError as exc:
            if "lock timeout" in str(exc.orig):
                raise PartitionError(
                    f"{PARENT} stayed busy for {DETACH_LOCK_TIMEOUT}: nothing was detached; "
                    "try again at a quieter time"
                ) from exc
            raise
        session.execute(
            insert(AuditArchive).values(
                partition=partition.name,
                from_at=manifest.from_at,
                to_at=manifest.to_at,
                entries=manifest.entries,
                manifest=report.manifest,
                file_sha256=report.file_sha256,
                archived_at=utcnow(),
            )
        )
        details: dict[str, Any] = {
            "partition": partition.name,
            "entries": manifest.entries,
            "file": path.name,
            "file_sha256": report.file_sha256,
            "dropped": drop,
        }
        log.record(session, [operator_event("audit.partition_archived", actor, details)])
        if drop:
            session.execute(text(f"DROP TABLE {quoted}"))
    return Detached(partition.name, manifest.entries, path, report.file_sha256, drop)


def verify_archives_against_log(session: Session, reports: Sequence[ArchiveReport]) -> list[str]:
    """Each verified file must be the archive this log recorded for its partition."""
    recorded = dict(session.execute(select(AuditArchive.partition, AuditArchive.manifest)).all())
    notes: list[str] = []
    for report in reports:
        if report.partition not in recorded:
            raise VerificationFailed(
                f"{report.path.name}: this log has no record of archiving {report.partition}"
            )
        if recorded[report.partition] != report.manifest:
            raise VerificationFailed(
                f"{report.path.name} is not the archive this log recorded for {report.partition}"
            )
        notes.append(f"archive {report.path.name}: {report.entries} entries verified")
    return notes
