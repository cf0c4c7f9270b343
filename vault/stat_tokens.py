"""Statistics tokens: keyed deterministic tokens of a field's category, so SQL can count.

A statistics table counts residents by place and by the category of one field. Decrypting
that field for every resident is what made a table cost 70 times a COUNT. Instead, every
write of a field the catalogue marks `stat_token: true` also stores

    token = MAC(token key, "rv-stat-token-v1" | field | category label)   (first 16 bytes)

and the statistics service groups by it in SQL. It maps tokens back to labels by
computing the token of every allowed value of the field (the catalogue's closed set), so
only fields with a closed set of values can be tokenised: an enum, a boolean, or a
disability record (its category). Free text, dates and amounts cannot.

Where they are kept: one row of `resident_stats` per counted resident (active, not a
decoy), with their building and household, and `tokens`: one 16-byte slot per statistics
field (`stat_token_slots` says which), all under the row's epoch. A slot is the token,
`NOT_SET` (zeros) for a field without a value, or `UNKNOWN` (ones) for one not computed
yet (a field still being backfilled). A table is then one GROUP BY of this one table
joined to the buildings: no join of residents, households, rooms and a row per field,
which cost 14 times the plain GROUP BY at 10^6 residents (and 250 bytes a resident on
SQLite, against about 130 now). Homes are copied when a resident is created: no code
moves a household, and code that one day does must move its rows' home with it.

Before migration 0027 (this release's contract) the tokens were rows of
`resident_stat_tokens`, one per resident and field with a value. Until it has run, this
code writes and counts those rows, as older nodes do; the contract builds `resident_stats`
from them and drops them.

The token key of an epoch is the keyring's blind-index MAC over a message of its own
("rv-stat-token-key-v1" | epoch), so it works with the local keyring and in an HSM
alike, and no token can equal a blind-index digest (different messages, different key).
The epoch is the key-encryption key that was active when the tokens were written: a KEK
rotation re-tokens every row under the new epoch (`retoken`), without decrypting, by
mapping each old token to its label. Tokens never leave the database and this module:
they are in no answer, export, log line or audit entry.

What they reveal to someone who reads the database: equal categories have equal tokens,
so the frequency of each category per building is visible (docs/threat-model.md).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import structlog
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from vault.catalogue import Catalogue, FieldSpec
from vault.crypto import keyed_mac
from vault.db import migration_applied
from vault.errors import ConfigurationError
from vault.interfaces import Keyring
from vault.models import Base, Household, Resident, Room
from vault.validators import DISABILITY_CATEGORIES

if TYPE_CHECKING:  # services imports this module for its hooks
    from vault.services import ResidentStore

log = structlog.get_logger(__name__)

TOKENS_IN_ONE_ROW: Final = "0027"
"""The contract that builds `resident_stats` and drops `resident_stat_tokens`."""
TOKEN_BYTES: Final = 16  # 128 bits: no collisions among a field's handful of labels
NOT_SET: Final = bytes(TOKEN_BYTES)
UNKNOWN: Final = b"\xff" * TOKEN_BYTES
_SLOTS_REREAD_SECONDS: Final = 5.0
_KEY_TAG: Final = b"rv-stat-token-key-v1"
_TOKEN_TAG: Final = b"rv-stat-token-v1"


class ResidentStats(Base):
    """A counted resident's home and statistics tokens (none for a decoy; an erasure
    deletes it)."""

    __tablename__ = "resident_stats"
    # On SQLite the rows live in their key's b-tree: a count reads the table once.
    __table_args__ = ({"sqlite_with_rowid": False},)
    resident_id: Mapped[str] = mapped_column(ForeignKey("residents.id"), primary_key=True)
    # Copies of the resident's home (no foreign keys: the resident's row holds the one
    # that counts; a resident without a home has none, and is not counted).
    building_id: Mapped[str | None] = mapped_column(String(32))
    household_id: Mapped[str | None] = mapped_column(String(32))
    epoch: Mapped[str | None] = mapped_column(String(64))
    tokens: Mapped[bytes] = mapped_column(LargeBinary())


class StatTokenSlot(Base):
    """Each statistics field's slot in `resident_stats.tokens`, given once, never reused."""

    __tablename__ = "stat_token_slots"
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, unique=True)


LEGACY_TOKENS: Final = Table(
    "resident_stat_tokens",
    MetaData(),  # not the models': migration 0027 drops it
    Column("resident_id", String(32), ForeignKey("residents.id"), primary_key=True),
    Column("field", String(64), primary_key=True),
    Column("epoch", String(64), nullable=False),
    Column("token", LargeBinary(32), nullable=False),
)
"""One row per resident and field with a value, as the code before migration 0027 kept
the tokens (absent: the field is not set). Written and read only until that contract."""

_STATS: Final = cast(Table, ResidentStats.__table__)


class StatTokenField(Base):
    """Whether every resident's value of a field has its token (after the backfill), so the
    statistics service knows it may count from tokens alone."""

    __tablename__ = "stat_token_fields"
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    complete: Mapped[bool] = mapped_column(Boolean)


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def slot_of(tokens: bytes | None, slot: int) -> bytes | None:
    """The token at `slot`; None when the tokens stop before it."""
    start = slot * TOKEN_BYTES
    if tokens is None or len(tokens) < start + TOKEN_BYTES:
        return None
    return bytes(tokens[start : start + TOKEN_BYTES])


def slot_sql(column: Any, slot: int) -> ColumnElement[bytes]:
    """The same, in SQL (SQLite and PostgreSQL alike count bytes of a blob from 1)."""
    return func.substr(column, slot * TOKEN_BYTES + 1, TOKEN_BYTES, type_=LargeBinary())


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


# -- tokens --------------------------------------------------------------------------------


class StatTokens:
    """Computes and stores tokens; derived keys are cached per epoch (one keyring call),
    slots until a statistics field of the catalogue has none (then read again)."""

    def __init__(self, keyring: Keyring, catalogue: Catalogue) -> None:
        self.keyring = keyring
        self.fields: dict[str, FieldSpec] = {s.name: s for s in catalogue if s.stat_token}
        self._keys: dict[str, bytes] = {}
        self._slots: dict[str, int] = {}
        self._slots_read = -math.inf
        self._contracted = False

    def epoch(self) -> str:
        return self.keyring.active_kek_id()

    def epochs(self) -> list[str]:
        """Every epoch a stored token can be under: the keyring's KEKs (tokens of one it no
        longer holds are retokened before it goes, or counted by decrypting)."""
        return [kek.kek_id for kek in self.keyring.keks()]

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

    def slots(self, session: Session, *, fresh: bool = False) -> dict[str, int]:
        """Each statistics field's slot (a field the backfill has not reached has none;
        while one has none, the slots are read again at most every few seconds)."""
        missing = any(name not in self._slots for name in self.fields)
        stale = time.monotonic() - self._slots_read > _SLOTS_REREAD_SECONDS
        if fresh or (missing and stale):
            rows = session.execute(select(StatTokenSlot.field, StatTokenSlot.slot)).all()
            self._slots = {f: slot for f, slot in rows if f in self.fields}
            self._slots_read = time.monotonic()
        return self._slots

    def contracted(self, session: Session) -> bool:
        """Whether migration 0027 has run (then it stays so: the answer is kept)."""
        if not self._contracted:
            self._contracted = migration_applied(session.connection(), TOKENS_IN_ONE_ROW)
        return self._contracted

    def _token_of(self, name: str, value: Any, epoch: str) -> bytes:
        label = label_of(self.fields[name], value) if value is not None else None
        return NOT_SET if label is None else self.token(name, label, epoch)

    def packed(
        self,
        session: Session,
        values: Mapping[str, Any],
        epoch: str,
        *,
        into: bytes | None = None,
        names: Iterable[str] | None = None,
    ) -> bytes:
        """`into` with the slots of `names` (every statistics field unless told) set from
        (normalised) `values`, where a field missing from them is not set. Slots it grows
        past are UNKNOWN: not computed, so the backfill still sees them."""
        slots = self.slots(session)
        tokens = bytearray(into or b"")
        for name in self.fields if names is None else names:
            slot = slots.get(name)
            if slot is None:
                continue
            start = slot * TOKEN_BYTES
            if len(tokens) < start + TOKEN_BYTES:
                tokens += UNKNOWN * (slot + 1 - len(tokens) // TOKEN_BYTES)
            tokens[start : start + TOKEN_BYTES] = self._token_of(name, values.get(name), epoch)
        return bytes(tokens)

    # -- hooks of ResidentStore ---------------------------------------------------------

    def created_row(
        self,
        session: Session,
        resident_id: str,
        values: Mapping[str, Any],
        home: tuple[str | None, str | None],
        epoch: str,
    ) -> dict[str, Any]:
        """A new resident's `resident_stats` row (home: household, building)."""
        household, building = home
        return {
            "resident_id": resident_id,
            "building_id": building,
            "household_id": household,
            "epoch": epoch,
            "tokens": self.packed(session, values, epoch),
        }

    def replace(
        self,
        session: Session,
        resident_id: str,
        values: Mapping[str, Any],
        cleared: Iterable[str] = (),
    ) -> None:
        """An update wrote these fields and cleared those: their tokens change with them
        (in the caller's transaction, which the resident's row version guards)."""
        names = [n for n in [*values, *cleared] if n in self.fields]
        if not names:
            return
        if not self.contracted(session):
            self._drop_legacy(session, resident_id, names)
            rows = self.legacy_rows(resident_id, {n: values[n] for n in names if n in values})
            if rows:
                session.execute(insert(LEGACY_TOKENS), rows)
            return
        row = session.get(ResidentStats, resident_id)
        if row is None:  # a decoy: never counted
            return
        epoch = row.epoch or self.epoch()
        row.tokens = self.packed(session, values, epoch, into=row.tokens, names=names)
        row.epoch = epoch

    def drop(self, session: Session, resident_id: str) -> None:
        """An erased resident loses their tokens."""
        if self.contracted(session):
            session.execute(delete(ResidentStats).where(ResidentStats.resident_id == resident_id))
        else:
            self._drop_legacy(session, resident_id)

    def legacy_rows(self, resident_id: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows the code before 0027 counts from: one per field with a value."""
        epoch = self.epoch()
        rows = []
        for name, value in values.items():
            token = self._token_of(name, value, epoch) if name in self.fields else NOT_SET
            if token != NOT_SET:
                rows.append(
                    {"resident_id": resident_id, "field": name, "epoch": epoch, "token": token}
                )
        return rows

    @staticmethod
    def _drop_legacy(
        session: Session, resident_id: str, names: Sequence[str] | None = None
    ) -> None:
        where = [LEGACY_TOKENS.c.resident_id == resident_id]
        if names is not None:
            where.append(LEGACY_TOKENS.c.field.in_(list(names)))
        session.execute(delete(LEGACY_TOKENS).where(*where))


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


def home_buildings(session: Session, household_ids: Iterable[str]) -> dict[str, str]:
    """Each household's building (a household without a room, or unknown, is left out)."""
    wanted = sorted(set(household_ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 5000):  # under every driver's bound-parameter limit
        rows = session.execute(
            select(Household.id, Room.building_id)
            .join(Room, Room.id == Household.room_id)
            .where(Household.id.in_(wanted[start : start + 5000]))
        ).all()
        found.update(dict(rows))
    return found


# -- backfill and rotation -----------------------------------------------------------------

Progress = Callable[[int, int], None]
"""Called after each batch with (done so far, total at the start)."""


@dataclass(frozen=True)
class BackfillReport:
    fields: list[str]  # the fields that were incomplete and now are complete
    processed: int  # residents whose values were read to token them
    resumed: bool  # some of them had their tokens already (an earlier, interrupted run)


def _counted() -> ColumnElement[bool]:
    return and_(Resident.status == "active", Resident.is_decoy.is_(False))


def _lacking(slots: Iterable[int]) -> ColumnElement[bool]:
    """Counted residents without a row, or with one of these slots not computed."""
    terms: list[ColumnElement[bool]] = [_STATS.c.resident_id.is_(None)]
    for slot in slots:
        terms.append(func.length(_STATS.c.tokens) < (slot + 1) * TOKEN_BYTES)
        terms.append(slot_sql(_STATS.c.tokens, slot) == UNKNOWN)
    return and_(_counted(), or_(*terms))


def _candidates() -> Any:
    return select(Resident.id, Resident.household_id, _STATS.c.epoch, _STATS.c.tokens).outerjoin(
        _STATS, _STATS.c.resident_id == Resident.id
    )


def _assign_slots(session: Session, names: Sequence[str]) -> None:
    """The next free slot, and a row marked incomplete, for each field that has none."""
    slots = dict(session.execute(select(StatTokenSlot.field, StatTokenSlot.slot)).all())
    known = set(session.scalars(select(StatTokenField.field)))
    taken = max(slots.values(), default=-1)
    for name in names:
        if name not in slots:  # a field the catalogue marked later
            taken += 1
            session.add(StatTokenSlot(field=name, slot=taken))
        if name not in known:
            session.add(StatTokenField(field=name, complete=False))
    session.flush()


def backfill(
    factory: sessionmaker[Session],
    store: ResidentStore,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> BackfillReport:
    """Token every stored value of the fields whose tokens are incomplete, then mark them
    complete. Each batch is its own transaction, and takes only residents with one of
    those slots not computed yet, so an interrupted run (kill -9 included) resumes where
    it stopped. Runs once this release's contract (0027) has."""
    tokens = store.stat_tokens
    names = sorted(tokens.fields)
    with factory() as session, session.begin():
        if not tokens.contracted(session):
            raise ConfigurationError(
                "statistics token backfill: run `resident-vault db upgrade` first (migration 0027)"
            )
        _assign_slots(session, names)
        pending = incomplete_fields(session, names)
        slots = tokens.slots(session, fresh=True)
        lacking = _lacking([slots[n] for n in pending])
        counted = select(func.count()).select_from(Resident).where(_counted())
        candidates = _candidates().where(lacking).subquery()
        total = int(session.scalar(select(func.count()).select_from(candidates)) or 0)
        resumed = bool(pending) and total < int(session.scalar(counted) or 0)
    log.info("stats.backfill.started", fields=pending, pending=total, resumed=resumed)
    done, after = 0, ""
    while pending:
        ids, after = _backfill_batch(factory, store, pending, lacking, after, batch_size)
        if not ids:
            break
        done += len(ids)
        if progress:
            progress(done, total)
    with factory() as session, session.begin():
        for name in pending:
            session.get_one(StatTokenField, name).complete = True
            log.info("stats.backfill.field_complete", field=name)
    log.info("stats.backfill.finished", fields=pending, processed=done)
    return BackfillReport(pending, done, resumed)


def _backfill_batch(  # noqa: PLR0917 - one batch's whole state
    factory: sessionmaker[Session],
    store: ResidentStore,
    names: list[str],
    lacking: ColumnElement[bool],
    after: str,
    size: int,
) -> tuple[list[str], str]:
    """One batch of residents after id `after`; (its residents, the last id)."""
    tokens = store.stat_tokens
    with factory() as session, session.begin():
        # Writers of these residents wait (PostgreSQL), so no value changes between
        # reading it here and storing its token.
        rows = session.execute(
            _candidates()
            .where(lacking, Resident.id > after)
            .order_by(Resident.id)
            .limit(size)
            .with_for_update(of=Resident)
        ).all()
        if not rows:
            return [], after
        ids = [r[0] for r in rows]
        # A resident without a row has every slot to compute; one with a row, the pending.
        values = store.read_many(session, ids, sorted(tokens.fields))
        buildings = home_buildings(session, [r[1] for r in rows if r[1]])
        changes, created = [], []
        for resident_id, household, written_under, current in rows:
            epoch = written_under or tokens.epoch()
            held = values.get(resident_id, {})
            if current is None:
                home = (household, buildings.get(household or ""))
                created.append(tokens.created_row(session, resident_id, held, home, epoch))
                continue
            packed = tokens.packed(session, held, epoch, into=current, names=names)
            changes.append({"rid": resident_id, "epoch": epoch, "tokens": packed})
        del values
        if created:
            session.execute(insert(ResidentStats), created)
        _write_tokens(session, changes)
    return ids, ids[-1]


def _write_tokens(session: Session, changes: list[dict[str, Any]]) -> None:
    if changes:
        session.execute(_WRITE_TOKENS, changes)


_WRITE_TOKENS: Final = (
    update(_STATS)
    .where(_STATS.c.resident_id == bindparam("rid"))
    .values(epoch=bindparam("epoch"), tokens=bindparam("tokens"))
)


def retoken(
    factory: sessionmaker[Session],
    store: ResidentStore,
    epoch: str,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> int:
    """Move every resident's tokens to `epoch` (a KEK rotation's new key), batch by batch.
    An old token is mapped to its label under its own epoch, so nothing is decrypted; one
    that maps to nothing (a damaged slot) is re-read from its field, and the slot of a
    field no longer counted becomes UNKNOWN. Stateless, so it resumes. Before 0027 it
    moves the rows older nodes count from instead (the contract builds the slots from
    them)."""
    with factory() as session:
        if not store.stat_tokens.contracted(session):
            return _retoken_legacy(factory, store, epoch, batch_size=batch_size, progress=progress)
    stale = and_(_STATS.c.epoch.is_not(None), _STATS.c.epoch != epoch)
    with factory() as session:
        total = int(session.scalar(select(func.count()).select_from(_STATS).where(stale)) or 0)
    done, after = 0, ""
    labels: dict[tuple[str, str], dict[bytes, str]] = {}
    while True:
        with factory() as session, session.begin():
            rows = session.execute(
                select(_STATS.c.resident_id, _STATS.c.epoch, _STATS.c.tokens)
                .where(stale, _STATS.c.resident_id > after)
                .order_by(_STATS.c.resident_id)
                .limit(batch_size)
                .with_for_update()
            ).all()
            if not rows:
                break
            after = rows[-1][0]
            _write_tokens(session, [_moved(session, store, row, epoch, labels) for row in rows])
        done += len(rows)
        if progress:
            progress(done, total)
    log.info("stats.tokens_retokened", retokened=done)
    return done


def _moved(
    session: Session,
    store: ResidentStore,
    row: Any,
    epoch: str,
    labels: dict[tuple[str, str], dict[bytes, str]],
) -> dict[str, Any]:
    """One resident's tokens under `epoch` (`labels` caches each field's and epoch's)."""
    tokens = store.stat_tokens
    resident_id, old, current = row
    counted = {slot: name for name, slot in tokens.slots(session).items()}
    moved = bytearray(current)
    for slot in range(len(moved) // TOKEN_BYTES):
        token = slot_of(current, slot)
        name = counted.get(slot)
        if token in (NOT_SET, UNKNOWN) or token is None:
            continue
        if name is None:  # no longer a statistics field: its tokens go
            new = UNKNOWN
        else:
            if (name, old) not in labels:
                labels[(name, old)] = tokens.labels(name, old)
            label = labels[(name, old)].get(token)
            if label is None:  # damaged: read the value again
                values = store.read_many(session, [resident_id], [name])
                label = label_of(tokens.fields[name], values.get(resident_id, {}).get(name))
            new = NOT_SET if label is None else tokens.token(name, label, epoch)
        moved[slot * TOKEN_BYTES : (slot + 1) * TOKEN_BYTES] = new
    return {"rid": resident_id, "epoch": epoch, "tokens": bytes(moved)}


def _retoken_legacy(
    factory: sessionmaker[Session],
    store: ResidentStore,
    epoch: str,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> int:
    """`retoken` of the rows older nodes count from, before 0027 (as the older code did)."""
    tokens = store.stat_tokens
    table = LEGACY_TOKENS.c
    stale = table.epoch != epoch
    with factory() as session:
        total = int(
            session.scalar(select(func.count()).select_from(LEGACY_TOKENS).where(stale)) or 0
        )
    done = 0
    after = ("", "")  # the key walked to: each batch starts past the last, not from the top
    key = tuple_(table.resident_id, table.field)
    while True:
        with factory() as session, session.begin():
            batch = session.execute(
                select(table.resident_id, table.field, table.epoch, table.token)
                .where(stale, key > tuple_(*after))
                .order_by(table.resident_id, table.field)
                .limit(batch_size)
            ).all()
            if not batch:
                break
            after = (batch[-1][0], batch[-1][1])
            moved, gone = [], []
            for resident_id, name, old, token in batch:
                spec = tokens.fields.get(name)
                label = tokens.labels(name, old).get(bytes(token)) if spec else None
                if spec is not None and label is None:  # damaged: read the value again
                    value = store.read_many(session, [resident_id], [name])
                    label = label_of(spec, value.get(resident_id, {}).get(name))
                if label is None:  # no value, or no longer a statistics field
                    gone.append({"rid": resident_id, "f": name})
                else:
                    new = tokens.token(name, label, epoch)
                    moved.append({"rid": resident_id, "f": name, "e": epoch, "t": new})
            one = and_(table.resident_id == bindparam("rid"), table.field == bindparam("f"))
            if moved:
                retokened = update(LEGACY_TOKENS).where(one)
                session.execute(retokened.values(epoch=bindparam("e"), token=bindparam("t")), moved)
            if gone:
                session.execute(delete(LEGACY_TOKENS).where(one), gone)
        done += len(batch)
        if progress:
            progress(done, total)
    log.info("stats.tokens_retokened", retokened=done)
    return done
