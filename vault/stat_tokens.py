"""Statistics tokens: keyed deterministic tokens of a field's category, so SQL can count.

A statistics table counts residents by place and by the category of one field. Decrypting
that field for every resident is what made a table cost 70 times a COUNT. Instead, every
write of a field the catalogue marks `stat_token: true` also stores

    token = MAC(token key, "rv-stat-token-v1" | field | category label)   (first 16 bytes)

in `resident_stat_tokens`, and the statistics service groups by it in SQL. It maps tokens
back to labels by computing the token of every allowed value of the field (the catalogue's
closed set), so only fields with a closed set of values can be tokenised: an enum, a
boolean, or a disability record (its category). Free text, dates and amounts cannot.

The token key of an epoch is the keyring's blind-index MAC over a message of its own
("rv-stat-token-key-v1" | epoch), so it works with the local keyring and in an HSM
alike, and no token can equal a blind-index digest (different messages, different key).
The epoch is the key-encryption key that was active when the token was written: a KEK
rotation re-tokens every row under the new epoch (`retoken`), without decrypting, by
mapping each old token to its label. Tokens never leave the database and this module:
they are in no answer, export, log line or audit entry.

What they reveal to someone who reads the database: equal categories have equal tokens,
so the frequency of each category per building is visible (docs/threat-model.md).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog
from sqlalchemy import (
    Boolean,
    ForeignKey,
    LargeBinary,
    Select,
    String,
    delete,
    exists,
    func,
    insert,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from vault.catalogue import Catalogue, FieldSpec
from vault.crypto import keyed_mac
from vault.errors import ConfigurationError
from vault.interfaces import Keyring
from vault.models import Base, Resident
from vault.validators import DISABILITY_CATEGORIES

if TYPE_CHECKING:  # services imports this module for its hooks
    from vault.services import ResidentStore

log = structlog.get_logger(__name__)

TOKEN_BYTES: Final = 16  # 128 bits: no collisions among a field's handful of labels
_KEY_TAG: Final = b"rv-stat-token-key-v1"
_TOKEN_TAG: Final = b"rv-stat-token-v1"


class ResidentStatToken(Base):
    """One resident's token of one statistics field (absent: the field is not set)."""

    __tablename__ = "resident_stat_tokens"
    # Counting probes (resident, field) for each resident in scope: on SQLite the rows live
    # in that key's b-tree, one look-up each and no second copy of the keys (migration
    # 0025). No other index: the counts drive from residents, rotation walks the key.
    __table_args__ = ({"sqlite_with_rowid": False},)
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64))
    token: Mapped[bytes] = mapped_column(LargeBinary(32))


class StatTokenField(Base):
    """Whether every resident's value of a field has its token (after the backfill), so the
    statistics service knows it may count from tokens alone."""

    __tablename__ = "stat_token_fields"
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    complete: Mapped[bool] = mapped_column(Boolean)


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


# -- the closed sets -----------------------------------------------------------------------


def closed_labels(spec: FieldSpec) -> tuple[str, ...]:
    """Every label a tokenised field's value can have (what the service maps back)."""
    if spec.type == "enum":
        return tuple(spec.values)
    if spec.type == "boolean":
        return ("true", "false")
    if spec.validator == "disability":
        return ("none", *DISABILITY_CATEGORIES)
    raise ValueError(f"field {spec.name!r} has no closed set of values")


def label_of(spec: FieldSpec, value: Any) -> str | None:
    """The label of a stored (normalised) value; None if it is outside the closed set."""
    if spec.type == "boolean":
        return None if not isinstance(value, bool) else ("true" if value else "false")
    if spec.validator == "disability":
        value = value.get("category") if isinstance(value, Mapping) else None
    label = value if isinstance(value, str) else None
    return label if label in closed_labels(spec) else None


def representative(spec: FieldSpec, label: str) -> Any:
    """A value with this label, for a measure's classifier (which reads only the label's
    part of a value: the category of a disability, the enum value, the boolean)."""
    if spec.type == "boolean":
        return label == "true"
    if spec.validator == "disability":
        return {"category": label}
    return label


# -- tokens --------------------------------------------------------------------------------


class StatTokens:
    """Computes and stores tokens; derived keys are cached per epoch (one keyring call)."""

    def __init__(self, keyring: Keyring, catalogue: Catalogue) -> None:
        self.keyring = keyring
        self.fields: dict[str, FieldSpec] = {s.name: s for s in catalogue if s.stat_token}
        self._keys: dict[str, bytes] = {}

    def epoch(self) -> str:
        return self.keyring.active_kek_id()

    def _key(self, epoch: str) -> bytes:
        key = self._keys.get(epoch)
        if key is None:
            key = self.keyring.blind_index(_length_prefixed(_KEY_TAG, epoch.encode()))
            self._keys[epoch] = key
        return key

    def token(self, field: str, label: str, epoch: str) -> bytes:
        algorithm = self.keyring.blind_index_scheme.split(":", 1)[0]
        message = _length_prefixed(_TOKEN_TAG, field.encode(), label.encode())
        return keyed_mac(algorithm, self._key(epoch), message)[:TOKEN_BYTES]

    def labels(self, field: str, epoch: str) -> dict[bytes, str]:
        """Token -> label for every allowed value of the field under this epoch."""
        spec = self.fields[field]
        return {self.token(field, label, epoch): label for label in closed_labels(spec)}

    def rows(
        self, resident_id: str, values: Mapping[str, Any], epoch: str | None = None
    ) -> list[dict[str, Any]]:
        """The token rows of these (normalised) values; fields not tokenised are skipped."""
        epoch = epoch or self.epoch()
        rows = []
        for name, value in values.items():
            spec = self.fields.get(name)
            label = label_of(spec, value) if spec is not None else None
            if label is not None:
                token = self.token(name, label, epoch)
                rows.append(
                    {"resident_id": resident_id, "field": name, "epoch": epoch, "token": token}
                )
        return rows

    # -- hooks of ResidentStore ---------------------------------------------------------

    def replace(self, session: Session, resident_id: str, values: Mapping[str, Any]) -> None:
        """An update wrote these fields: their tokens change with them."""
        names = [n for n in values if n in self.fields]
        if not names:
            return
        self.drop(session, resident_id, names)
        rows = self.rows(resident_id, values)
        if rows:
            session.execute(insert(ResidentStatToken), rows)

    def drop(self, session: Session, resident_id: str, fields: Iterable[str] | None = None) -> None:
        """Cleared fields (or, with None, an erased resident) lose their tokens."""
        where = [ResidentStatToken.resident_id == resident_id]
        if fields is not None:
            names = [n for n in fields if n in self.fields]
            if not names:
                return
            where.append(ResidentStatToken.field.in_(names))
        session.execute(delete(ResidentStatToken).where(*where))


def incomplete_fields(session: Session, fields: Sequence[str]) -> list[str]:
    """Which of these fields' tokens are not known to be complete (backfill pending)."""
    complete = set(
        session.scalars(
            select(StatTokenField.field).where(
                StatTokenField.field.in_(list(fields)), StatTokenField.complete.is_(True)
            )
        )
    )
    return [f for f in fields if f not in complete]


# -- backfill and rotation -----------------------------------------------------------------

Progress = Callable[[int, int], None]
"""Called after each batch with (done so far, total at the start)."""


@dataclass(frozen=True)
class BackfillReport:
    fields: list[str]  # the fields that were incomplete and now are complete
    processed: int  # residents whose value was read to token it
    resumed: bool  # some of their tokens were there already (an earlier, interrupted run)


def backfill(
    factory: sessionmaker[Session],
    store: ResidentStore,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> BackfillReport:
    """Token every stored value of the fields whose tokens are incomplete, then mark them
    complete. Each batch is its own transaction, and a batch only takes residents without
    a token yet, so an interrupted run (kill -9 included) resumes where it stopped."""
    tokens = store.stat_tokens
    names = list(tokens.fields)
    with factory() as session, session.begin():
        known = set(session.scalars(select(StatTokenField.field)))
        for name in names:
            if name not in known:  # a field the catalogue marked after migration 0016
                session.add(StatTokenField(field=name, complete=False))
        session.flush()
        pending = incomplete_fields(session, names)
        total = _untokened(session, pending).count()
        resumed = bool(
            pending
            and session.scalar(
                select(func.count())
                .select_from(ResidentStatToken)
                .where(ResidentStatToken.field.in_(pending))
            )
        )
    log.info("stats.backfill.started", fields=pending, pending=total, resumed=resumed)
    done = 0
    for name in pending:
        after = ""
        while True:
            ids, after = _backfill_batch(factory, store, name, after, batch_size)
            if not ids:
                break
            done += len(ids)
            if progress:
                progress(done, total)
        with factory() as session, session.begin():
            session.get_one(StatTokenField, name).complete = True
        log.info("stats.backfill.field_complete", field=name)
    log.info("stats.backfill.finished", fields=pending, processed=done)
    return BackfillReport(pending, done, resumed)


class _Untokened:
    """Active residents with no token of one of `fields` yet. Whether a resident holds a
    value of the field is inside their sealed record, so a resident with none is read once
    and gets no token; the resident-id cursor moves past them."""

    def __init__(self, session: Session, fields: Sequence[str]) -> None:
        self.session = session
        self.fields = list(fields)

    def query_for(self, name: str) -> Select[str]:
        return select(Resident.id).where(
            Resident.status == "active",
            ~exists().where(
                ResidentStatToken.resident_id == Resident.id, ResidentStatToken.field == name
            ),
        )

    def count(self) -> int:
        return sum(
            int(self.session.scalar(select(func.count()).select_from(q.subquery())) or 0)
            for q in map(self.query_for, self.fields)
        )


def _untokened(session: Session, fields: Sequence[str]) -> _Untokened:
    return _Untokened(session, fields)


def _backfill_batch(
    factory: sessionmaker[Session], store: ResidentStore, name: str, after: str, size: int
) -> tuple[list[str], str]:
    """One batch of one field after resident id `after`; (its residents, the last id)."""
    for attempt in range(3):
        try:
            with factory() as session, session.begin():
                ids = list(
                    session.scalars(
                        _untokened(session, [name])
                        .query_for(name)
                        .where(Resident.id > after)
                        .order_by(Resident.id)
                        .limit(size)
                    )
                )
                if not ids:
                    return [], after
                # Writers of these residents wait (PostgreSQL), so no value changes between
                # reading it here and storing its token.
                session.execute(select(Resident.id).where(Resident.id.in_(ids)).with_for_update())
                values = store.read_many(session, ids, [name])
                rows = [
                    row
                    for resident_id in ids
                    if name in values.get(resident_id, {})
                    for row in store.stat_tokens.rows(
                        resident_id, {name: values[resident_id][name]}
                    )
                ]
                del values
                if rows:
                    session.execute(insert(ResidentStatToken), rows)
            return ids, ids[-1]
        except IntegrityError:
            # A concurrent write tokened one of them first: the next try skips it.
            log.info("stats.backfill.batch_retried", field=name, attempt=attempt + 1)
    raise ConfigurationError("statistics token backfill: a batch kept conflicting; run it again")


def retoken(
    factory: sessionmaker[Session],
    store: ResidentStore,
    epoch: str,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> int:
    """Move every token to `epoch` (a KEK rotation's new key), batch by batch. An old token
    is mapped to its label under its own epoch, so nothing is decrypted; one that maps to
    nothing (a damaged row) is re-read from its field. Stateless, so it resumes."""
    tokens = store.stat_tokens
    stale = ResidentStatToken.epoch != epoch
    with factory() as session:
        total = int(
            session.scalar(select(func.count()).select_from(ResidentStatToken).where(stale)) or 0
        )
    done = 0
    labels: dict[tuple[str, str], dict[bytes, str]] = {}
    after = ("", "")  # the key walked to: each batch starts past the last, not from the top
    key = tuple_(ResidentStatToken.resident_id, ResidentStatToken.field)
    while True:
        with factory() as session, session.begin():
            batch = list(
                session.scalars(
                    select(ResidentStatToken)
                    .where(stale, key > tuple_(*after))
                    .order_by(ResidentStatToken.resident_id, ResidentStatToken.field)
                    .limit(batch_size)
                )
            )
            if not batch:
                break
            after = (batch[-1].resident_id, batch[-1].field)
            for row in batch:
                spec = tokens.fields.get(row.field)
                if spec is None:  # no longer a statistics field: its tokens go
                    session.delete(row)
                    continue
                if (row.field, row.epoch) not in labels:
                    labels[(row.field, row.epoch)] = tokens.labels(row.field, row.epoch)
                label = labels[(row.field, row.epoch)].get(bytes(row.token))
                if label is None:
                    value = store.read_many(session, [row.resident_id], [row.field])
                    label = label_of(spec, value.get(row.resident_id, {}).get(row.field))
                if label is None:
                    session.delete(row)
                    continue
                row.epoch, row.token = epoch, tokens.token(row.field, label, epoch)
        done += len(batch)
        if progress:
            progress(done, total)
    log.info("stats.tokens_retokened", retokened=done)
    return done
