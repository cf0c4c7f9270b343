"""Consistent, encrypted backups of every table, and loading one into an empty database.

The archive, `FILE.rvbackup`:

    "RVBACKUP" | u32 header length | header (JSON, in clear) | chunks...
    chunk = u32 ciphertext length | u8 final flag | AES-256-GCM(plaintext part)

The header names the recipient key (by fingerprint) and an ephemeral X25519 public key.
The archive key is HKDF-SHA256 over X25519(ephemeral, recipient), so only the holder of the
recipient's private key (the *identity*, kept offline) can read it; the backup host needs
only the public key. Each chunk's associated data binds the header's hash, the chunk's
index and whether it is the last, so a truncated, reordered, spliced or altered archive
fails to open instead of restoring part of a database.

Inside, a stream of JSON lines: a header record, then per table a `table` record, one JSON
array per row (ordered by primary key, bytes in base64, times ISO 8601 with zone) and an
`end` record with the row count and the SHA-256 of the row lines; finally the manifest.
Rows are streamed from the database to the file and back, never held as whole tables
(into PostgreSQL with COPY).

Nothing here knows what the tables mean: `api/cli/backup.py` adds the audit checkpoint and
the key-encryption key ids to the manifest and proves a restore with them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    LargeBinary,
    String,
    Table,
    Text,
    column,
    func,
    insert,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import TableClause

from vault.errors import VaultError

FORMAT_VERSION = 1
MAGIC = b"RVBACKUP"
CIPHER = "X25519-HKDF-SHA256-AES-256-GCM"
CHUNK_SIZE = 1 << 20  # 1 MiB of plaintext per authenticated chunk
_MAX_HEADER = 64 * 1024
_HKDF_INFO = b"resident-vault backup v1"
_FRAME = struct.Struct(">IB")  # ciphertext length, final flag
_TAG = 16
INSERT_BATCH = 1_000


class BackupError(VaultError):
    """A backup cannot be written or read; the message is one line for the operator."""


# -- keys ----------------------------------------------------------------------------------


def key_fingerprint(public_key: X25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "x25519:" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class KeyPair:
    public_path: Path
    private_path: Path
    fingerprint: str


def generate_key_pair(directory: Path) -> KeyPair:
    """A new X25519 pair as PEM: the public key for the backup host, the private one (0600)
    to keep offline. Refuses to overwrite either file."""
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / "backup-recipient.pem"
    private_path = directory / "backup-identity.pem"
    for path in (public_path, private_path):
        if path.exists():
            raise BackupError(f"{path} already exists; refusing to overwrite a backup key")
    private = X25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(public_path, private_path, key_fingerprint(private.public_key()))


def load_recipient(path: Path) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"cannot read the backup public key {path} ({type(exc).__name__})"
        ) from None
    if not isinstance(key, X25519PublicKey):
        raise BackupError(f"{path} is not an X25519 public key (make one with `backup keygen`)")
    return key


def load_identity(path: Path) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BackupError(
            f"cannot read the backup identity {path} ({type(exc).__name__})"
        ) from None
    if not isinstance(key, X25519PrivateKey):
        raise BackupError(f"{path} is not an X25519 private key (made by `backup keygen`)")
    return key


def _archive_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_HKDF_INFO
    ).derive(shared)


def _nonce(index: int) -> bytes:
    return index.to_bytes(8, "big") + b"\0\0\0\0"  # the key is new for every archive


def _aad(header_hash: bytes, index: int, final: bool) -> bytes:
    return MAGIC + header_hash + index.to_bytes(8, "big") + (b"\1" if final else b"\0")


# -- the encrypted container ---------------------------------------------------------------


class EncryptedWriter:
    """Encrypts a byte stream to a recipient in authenticated chunks as it is written."""

    def __init__(
        self, sink: IO[bytes], recipient: X25519PublicKey, chunk_size: int = CHUNK_SIZE
    ) -> None:
        ephemeral = X25519PrivateKey.generate()
        ephemeral_raw = ephemeral.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        recipient_raw = recipient.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        header = json.dumps(
            {
                "format": FORMAT_VERSION,
                "cipher": CIPHER,
                "chunk_size": chunk_size,
                "recipient": key_fingerprint(recipient),
                "ephemeral": base64.b64encode(ephemeral_raw).decode(),
            },
            sort_keys=True,
        ).encode()
        self._aead = AESGCM(
            _archive_key(ephemeral.exchange(recipient), ephemeral_raw, recipient_raw)
        )
        self._header_hash = hashlib.sha256(header).digest()
        self._sink = sink
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._closed = False
        self.bytes_written = 0
        self._emit(MAGIC + struct.pack(">I", len(header)) + header)

    def _emit(self, data: bytes) -> None:
        self._sink.write(data)
        self.bytes_written += len(data)

    def _seal(self, plaintext: bytes, final: bool) -> None:
        sealed = self._aead.encrypt(
            _nonce(self._index), plaintext, _aad(self._header_hash, self._index, final)
        )
        self._emit(_FRAME.pack(len(sealed), int(final)) + sealed)
        self._index += 1

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= self._chunk_size:
            self._seal(bytes(self._buffer[: self._chunk_size]), final=False)
            del self._buffer[: self._chunk_size]

    def close(self) -> None:
        if not self._closed:
            self._seal(bytes(self._buffer), final=True)
            self._buffer.clear()
            self._closed = True


def _read_exactly(source: IO[bytes], size: int) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise BackupError("the backup is truncated: it ends before its last chunk")
    return data


def decrypted_chunks(source: IO[bytes], identity: X25519PrivateKey) -> Iterator[bytes]:
    """The plaintext, chunk by chunk; BackupError on a wrong key, tampering or truncation."""
    if source.read(len(MAGIC)) != MAGIC:
        raise BackupError("not a resident-vault backup (wrong magic bytes)")
    (length,) = struct.unpack(">I", _read_exactly(source, 4))
    if length > _MAX_HEADER:
        raise BackupError("the backup's header is damaged")
    header_bytes = _read_exactly(source, length)
    try:
        header = json.loads(header_bytes)
        ephemeral_raw = base64.b64decode(header["ephemeral"], validate=True)
        ephemeral = X25519PublicKey.from_public_bytes(ephemeral_raw)
        chunk_size = int(header["chunk_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"the backup's header is damaged ({type(exc).__name__})") from exc
    if header.get("format") != FORMAT_VERSION or header.get("cipher") != CIPHER:
        raise BackupError(f"unsupported backup format {header.get('format')!r}")
    mine = key_fingerprint(identity.public_key())
    if header.get("recipient") != mine:
        raise BackupError(
            f"this backup is encrypted to {header.get('recipient')}, not to the identity "
            f"given ({mine})"
        )
    recipient_raw = identity.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    aead = AESGCM(_archive_key(identity.exchange(ephemeral), ephemeral_raw, recipient_raw))
    header_hash = hashlib.sha256(header_bytes).digest()
    index = 0
    while True:
        frame = source.read(_FRAME.size)
        if len(frame) < _FRAME.size:
            raise BackupError("the backup is truncated: it ends before its last chunk")
        size, final = _FRAME.unpack(frame)
        if size > chunk_size + _TAG or final > 1:
            raise BackupError(f"chunk {index} of the backup is damaged")
        sealed = _read_exactly(source, size)
        try:
            yield aead.decrypt(_nonce(index), sealed, _aad(header_hash, index, bool(final)))
        except InvalidTag:
            raise BackupError(
                f"chunk {index} of the backup does not authenticate: altered, reordered or "
                "cut short"
            ) from None
        index += 1
        if final:
            if source.read(1):
                raise BackupError("the backup has data after its last chunk")
            return


def decrypted_lines(source: IO[bytes], identity: X25519PrivateKey) -> Iterator[bytes]:
    """The plaintext split into lines (without the newline), across chunk boundaries."""
    pending = b""
    for chunk in decrypted_chunks(source, identity):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        raise BackupError("the backup's content ends in the middle of a record")


# -- rows as JSON lines --------------------------------------------------------------------


def _is(column_: Column[Any], kind: type | tuple[type, ...]) -> bool:
    return isinstance(column_.type, kind) or isinstance(
        getattr(column_.type, "impl_instance", None), kind
    )


def _encoder(column_: Column[Any]) -> Callable[[Any], Any] | None:
    """How a non-null value of the column becomes JSON; None when it already is."""
    if _is(column_, LargeBinary):
        return lambda v: base64.b64encode(v).decode()
    if _is(column_, DateTime):
        return lambda v: v.isoformat()
    return None


def _decoder(column_: Column[Any]) -> Callable[[Any], Any] | None:
    """The inverse of `_encoder`."""
    if _is(column_, LargeBinary):
        return base64.b64decode
    if _is(column_, DateTime):
        return datetime.fromisoformat
    return None


def _converters(
    columns: Sequence[Column[Any]], make: Callable[[Column[Any]], Callable[[Any], Any] | None]
) -> list[tuple[int, Callable[[Any], Any]]]:
    """(position, converter) of the columns that need one: most values pass as they are,
    and a backup converts every value of millions of rows."""
    found = [(i, make(c)) for i, c in enumerate(columns)]
    return [(i, convert) for i, convert in found if convert is not None]


def _convert(values: list[Any], converters: Sequence[tuple[int, Callable[[Any], Any]]]) -> None:
    for index, convert in converters:
        if values[index] is not None:
            values[index] = convert(values[index])


# One encoder for every line (json.dumps with options would build one per call); the
# output is byte for byte what json.dumps gives with the same options.
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _row_line(converters: Sequence[tuple[int, Callable[[Any], Any]]], row: Sequence[Any]) -> bytes:
    values = list(row)
    _convert(values, converters)
    return _LINE_ENCODER.encode(values).encode()


def _ordered(connection: Connection, table_: Table) -> list[ColumnElement[Any]]:
    """Primary-key order by byte value on both databases, so hashes agree across them."""
    keys: list[ColumnElement[Any]] = []
    for key in table_.primary_key.columns:
        if connection.dialect.name == "postgresql" and _is(key, (String, Text)):
            keys.append(key.collate("C"))
        else:
            keys.append(key)
    return keys


@dataclass
class TableDigest:
    rows: int = 0
    sha256: str = ""


def table_rows(
    connection: Connection, table_: Table, columns: Sequence[str], batch: int = 2_000
) -> Iterator[bytes]:
    """Each row of the table as its JSON line, in primary-key order, streamed."""
    selected = [table_.c[name] for name in columns]
    converters = _converters(selected, _encoder)
    statement = select(*selected).order_by(*_ordered(connection, table_))
    result = connection.execution_options(yield_per=batch).execute(statement)
    with result:
        for row in result:
            yield _row_line(converters, row)


def table_digest(connection: Connection, table_: Table, columns: Sequence[str]) -> TableDigest:
    digest = hashlib.sha256()
    rows = 0
    for line in table_rows(connection, table_, columns):
        digest.update(line + b"\n")
        rows += 1
    return TableDigest(rows, digest.hexdigest())


# -- writing a backup ----------------------------------------------------------------------


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only view of the whole database at one instant.

    PostgreSQL: one REPEATABLE READ READ ONLY transaction (its snapshot is taken by the
    first query and kept for all tables), what `pg_dump` does. SQLite: one explicit read
    transaction; in WAL mode writers go on while it reads, unseen.
    """
    if engine.dialect.name == "postgresql":
        with (
            engine.connect().execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            ) as connection,
            connection.begin(),
        ):
            # The service's limits are for requests: reading every table takes longer than
            # a statement may, and a slow disk may keep the snapshot idle between batches
            # longer than a forgotten transaction would be (the server would end it).
            connection.execute(text("SET LOCAL statement_timeout = 0"))
            connection.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
            yield connection
        return
    with engine.connect() as connection:
        # The sqlite3 module only opens transactions for writes: take the read one ourselves.
        connection.exec_driver_sql("BEGIN")
        try:
            connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
            yield connection
        finally:
            connection.rollback()


def _line(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def write_backup(
    connection: Connection,
    tables: Sequence[Table],
    writer: EncryptedWriter,
    head: Mapping[str, Any],
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Stream every table (in the given, foreign-key order) into the archive; the manifest
    (the head plus each table's row count and SHA-256) is the last record."""
    writer.write(_line({"kind": "header", **head, "tables": [t.name for t in tables]}) + b"\n")
    digests: dict[str, dict[str, Any]] = {}
    for table_ in tables:
        columns = [c.name for c in table_.columns]
        writer.write(_line({"kind": "table", "name": table_.name, "columns": columns}) + b"\n")
        digest = hashlib.sha256()
        rows = 0
        for line in table_rows(connection, table_, columns):
            writer.write(line + b"\n")
            digest.update(line + b"\n")
            rows += 1
            if progress is not None and rows % 10_000 == 0:
                progress(table_.name, rows)
        digests[table_.name] = {"columns": columns, "rows": rows, "sha256": digest.hexdigest()}
        end = {"kind": "end", "name": table_.name, "rows": rows, "sha256": digest.hexdigest()}
        writer.write(_line(end) + b"\n")
    manifest = {"kind": "manifest", **head, "tables": digests}
    writer.write(_line(manifest) + b"\n")
    writer.close()
    return manifest


# -- reading a backup ----------------------------------------------------------------------


@dataclass
class Batch:
    """Rows of one table, decoded to column values, ready to insert."""

    table: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def read_backup(
    lines: Iterator[bytes],
    tables: Mapping[str, Table],
    on_batch: Callable[[Batch], None] | None = None,
    batch_size: int = INSERT_BATCH,
) -> dict[str, Any]:
    """Check every table's count and hash as the rows stream past, hand rows to `on_batch`
    (or only verify, without it), and return the manifest once it matches what was read."""
    first = next(lines, None)
    header = _record(first, "header")
    unknown = [name for name in header.get("tables", []) if name not in tables]
    if unknown:
        raise BackupError(f"the backup has tables this version does not know: {unknown}")
    seen: dict[str, dict[str, Any]] = {}
    for raw in lines:
        record = _record(raw, "table", "manifest")
        if record["kind"] == "manifest":
            _check_manifest(header, record, seen)
            if next(lines, None) is not None:
                raise BackupError("the backup has records after its manifest")
            return record
        name, columns = str(record["name"]), [str(c) for c in record["columns"]]
        if name not in tables or name in seen:
            raise BackupError(f"the backup's table {name!r} is unexpected or repeated")
        seen[name] = _read_table(lines, tables[name], columns, on_batch, batch_size)
    raise BackupError("the backup ends before its manifest")


def _read_table(
    lines: Iterator[bytes],
    table_: Table,
    columns: list[str],
    on_batch: Callable[[Batch], None] | None,
    batch_size: int,
) -> dict[str, Any]:
    missing = [c for c in columns if c not in table_.c]
    if missing:
        raise BackupError(f"table {table_.name}: columns {missing} are not in this schema")
    converters = _converters([table_.c[c] for c in columns], _decoder)
    digest = hashlib.sha256()
    rows = 0
    batch = Batch(table_.name, columns)
    for raw in lines:
        if raw.startswith(b"{"):
            end = _record(raw, "end")
            if end.get("name") != table_.name:
                raise BackupError(f"table {table_.name}: its rows end in another table's record")
            found = {"rows": rows, "sha256": digest.hexdigest()}
            if {"rows": end.get("rows"), "sha256": end.get("sha256")} != found:
                raise BackupError(f"table {table_.name}: rows do not match their count and hash")
            if on_batch is not None and batch.rows:
                on_batch(batch)
            return {"columns": columns, **found}
        digest.update(raw + b"\n")
        rows += 1  # noqa: SIM113 - the loop also ends on a record, not only on rows
        if on_batch is not None:
            values = json.loads(raw)
            if not isinstance(values, list) or len(values) != len(columns):
                raise BackupError(f"table {table_.name}: a row does not match its columns")
            _convert(values, converters)
            batch.rows.append(dict(zip(columns, values, strict=True)))
            if len(batch.rows) >= batch_size:
                on_batch(batch)
                batch = Batch(table_.name, columns)
    raise BackupError(f"table {table_.name}: the backup ends in its rows")


def _record(raw: bytes | None, *kinds: str) -> dict[str, Any]:
    try:
        record = json.loads(raw) if raw is not None else None
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("kind") not in kinds:
        raise BackupError(f"the backup's content is out of order (expected {'/'.join(kinds)})")
    return record


def _check_manifest(
    header: Mapping[str, Any], manifest: Mapping[str, Any], seen: Mapping[str, Any]
) -> None:
    if dict(manifest.get("tables", {})) != dict(seen):
        raise BackupError("the backup's manifest does not match its tables")
    if list(header.get("tables", [])) != list(seen):
        raise BackupError("the backup's tables are not those its header lists")


# -- loading into an empty database ----------------------------------------------------------


def lightweight_table(table_: Table, columns: Sequence[str]) -> TableClause:
    """The named columns only, with their types and no defaults: rows go in exactly as
    they were, whatever the current models would fill in."""
    return table(table_.name, *(column(c, table_.c[c].type) for c in columns))


def insert_batch(connection: Connection, tables: Mapping[str, Table], batch: Batch) -> None:
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        _copy_batch(connection, tables[batch.table], batch)
        return
    target = lightweight_table(tables[batch.table], batch.columns)
    connection.execute(insert(target), batch.rows)


def _copy_batch(connection: Connection, table_: Table, batch: Batch) -> None:
    """PostgreSQL: the rows through COPY, in the connection's transaction: executemany
    sends one INSERT per row, and a restore loads millions (COPY is about three times
    faster here). Each value goes through its column type's bind processing, as an
    INSERT's would (JSON, UTC times)."""
    dialect = connection.dialect
    processors = [
        table_.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in batch.columns
    ]
    quote = dialect.identifier_preparer.quote
    statement = (
        f"COPY {quote(table_.name)} ({', '.join(quote(name) for name in batch.columns)}) FROM STDIN"
    )
    raw: Any = connection.connection.dbapi_connection
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in batch.rows:
                copy.write_row(
                    [
                        value if process is None else process(value)
                        for process, value in zip(
                            processors, (row[name] for name in batch.columns), strict=True
                        )
                    ]
                )
    except dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy would have raised it for an INSERT (IntegrityError, ...).
        raise DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error) from exc


def user_tables(engine: Engine) -> list[str]:
    return [name for name in inspect(engine).get_table_names() if not name.startswith("sqlite_")]


def count_rows(connection: Connection, tables: Sequence[Table]) -> dict[str, int]:
    existing = set(inspect(connection).get_table_names())
    return {
        t.name: int(connection.scalar(select(func.count()).select_from(t)) or 0)
        for t in tables
        if t.name in existing
    }


def reset_sequences(connection: Connection, tables: Sequence[Table]) -> None:
    """PostgreSQL serial columns continue after the restored rows, not at 1."""
    if connection.dialect.name != "postgresql":
        return
    for table_ in tables:
        for key in table_.primary_key.columns:
            sequence = connection.scalar(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table_.name, "c": key.name}
            )
            if sequence:
                last = connection.scalar(select(func.max(key)))
                connection.execute(
                    text("SELECT setval(CAST(:s AS regclass), :next, false)"),
                    {"s": sequence, "next": int(last or 0) + 1},
                )
