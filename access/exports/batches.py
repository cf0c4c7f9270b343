"""The gate's side of a fingerprinted export: which rows, in which order, with which decoys.

`Gate.export(..., fingerprint=...)` comes here. The export's rows are planned once: every
resident in scope plus the decoys the export's secret picks from the pool in that scope,
each under the keyed hash of the id the caller sees. The plan is written to
`export_plan_rows` a chunk at a time, so a serving process holds one chunk of it, not the
whole scope (about 540 B a row in memory, half a gigabyte at 10^6). Batches are then
read back in that order; each batch re-checks scope (an erasure or a move since the plan
takes effect), decrypts and renders through the gate's own `record_views` (consent,
treatments, audit entries), renders its decoys the same way, and commits every entry,
decoys' ones marked `decoy`, before the batch is handed out. The plan is deleted when the
last batch is out; a plan whose export never finished is swept a day later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Boolean, Integer, LargeBinary, Select, String, Table, delete, select, tuple_
from sqlalchemy.orm import Mapped, Session, mapped_column

from access.exports.decoys import create_decoys, pool_target
from access.exports.fingerprints import Fingerprint
from audit import EntryDraft
from consent import ConsentCover
from policies import Decision
from policies.rows import by_area
from vault.db import bulk_insert
from vault.models import Base, Building, Resident, TZDateTime, utcnow

if TYPE_CHECKING:
    from access.gate import Gate
    from access.subjects import Access
    from access.views import Place, RecordView

DECOY_KIND = "decoy"
# Residents planned per transaction: a short write each, and one chunk in memory.
PLAN_CHUNK = 5_000
# A plan older than this belongs to an export that never finished (its stream was cut, or
# its node stopped); the next export deletes it.
PLAN_KEPT = timedelta(days=1)


class ExportPlan(Base):
    """One planned export: when, so that an unfinished one's rows can be swept."""

    __tablename__ = "export_plans"
    export_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    planned_at: Mapped[datetime] = mapped_column(TZDateTime(), index=True)


class ExportPlanRow(Base):
    """One row of a planned export, under its keyed sort key. `consent_rank` numbers the
    consenting residents (in id order) when the purpose rests on consent: a decoy shows
    the fields one of their consents covers, chosen by rank."""

    __tablename__ = "export_plan_rows"
    __table_args__ = ({"sqlite_with_rowid": False},)
    export_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sort_key: Mapped[bytes] = mapped_column(LargeBinary(8), primary_key=True)
    resident_id: Mapped[str] = mapped_column(String(32), primary_key=True)  # vault id
    decoy: Mapped[bool] = mapped_column(Boolean)
    consent_rank: Mapped[int | None] = mapped_column(Integer)


_PLAN_ROWS = cast(Table, ExportPlanRow.__table__)
# Working space of exports in progress, empty between them.
PLAN_TABLES = (ExportPlan.__tablename__, ExportPlanRow.__tablename__)

_Q = TypeVar("_Q", bound="Select[*tuple[Any, ...]]")


def _placed(query: _Q, place: Place) -> _Q:
    return query.where(place.filter())


def _sweep(session: Session) -> None:
    cutoff = utcnow() - PLAN_KEPT
    stale = select(ExportPlan.export_id).where(ExportPlan.planned_at < cutoff)
    session.execute(delete(ExportPlanRow).where(ExportPlanRow.export_id.in_(stale)))
    session.execute(delete(ExportPlan).where(ExportPlan.planned_at < cutoff))


def _forget(gate: Gate, export_id: str) -> None:
    with gate.runtime.transaction() as session:
        session.execute(delete(ExportPlanRow).where(ExportPlanRow.export_id == export_id))
        session.execute(delete(ExportPlan).where(ExportPlan.export_id == export_id))


def _plan(
    gate: Gate,
    *,
    access: Access,
    decision: Decision,
    place: Place,
    requested: Sequence[str] | None,
    fingerprint: Fingerprint,
) -> dict[str, RecordView]:
    """Write the export's plan; return its decoys' views (by vault id)."""
    from access.views import RecordView, narrowed_to, place_context  # noqa: PLC0415 - gate imports us

    key, export_id = fingerprint.key, fingerprint.export_id
    treatments = gate.treatments_for(decision, requested)
    with gate.runtime.transaction() as session:
        _sweep(session)
        session.add(ExportPlan(export_id=export_id, planned_at=utcnow()))
    real, consenting = _plan_residents(
        gate,
        access=access,
        decision=decision,
        place=place,
        treatments=treatments,
        fingerprint=fingerprint,
    )
    exported = consenting if decision.rows.consent_required else real
    views: dict[str, RecordView] = {}
    with gate.runtime.transaction() as session:
        decoys: list[tuple[str, str, str]] = []
        if exported and by_area(decision.rows):
            wanted = fingerprint.decoys_for(exported)
            decoys = _pool(session, gate, access, decision, place)
            if len(decoys) < pool_target(wanted):
                _grow(
                    session,
                    gate,
                    access=access,
                    decision=decision,
                    place=place,
                    count=pool_target(wanted) - len(decoys),
                )
                decoys = _pool(session, gate, access, decision, place)
            decoys = sorted(decoys, key=lambda d: key.decoy_rank(d[0]))[:wanted]
        likes = (
            _covers_shown(
                session,
                gate,
                access=access,
                decision=decision,
                treatments=treatments,
                fingerprint=fingerprint,
                decoys=decoys,
                consenting=consenting,
            )
            if decoys and consenting
            else {}
        )
        # Without a cover to show, a decoy is left out (none, if every consent went).
        decoys = [d for d in decoys if d[0] in likes or not consenting]
        if decoys:
            fetch = [n for n, t in treatments.items() if t != "denied"]
            values = gate.runtime.vault.store.read_many(session, [d[0] for d in decoys], fetch)
            for rid, building, community in decoys:
                mine = narrowed_to(treatments, likes[rid]) if consenting else treatments
                shown = gate.render(
                    values.get(rid, {}), mine, place_context(building, community), decision.levels
                )
                views[rid] = RecordView(gate.present(access, decision, rid), shown, mine)
            bulk_insert(
                session,
                _PLAN_ROWS,
                [
                    {
                        "export_id": export_id,
                        "sort_key": key.order_key(view.resident_id),
                        "resident_id": rid,
                        "decoy": True,
                        "consent_rank": None,
                    }
                    for rid, view in views.items()
                ],
            )
    fingerprint.decoys = list(views)
    fingerprint.decoy_views = list(views.values())
    return views


def _plan_residents(
    gate: Gate,
    *,
    access: Access,
    decision: Decision,
    place: Place,
    treatments: Mapping[str, str],
    fingerprint: Fingerprint,
) -> tuple[int, int]:
    """Write the plan's real rows, a chunk per transaction; return how many residents are
    in scope and how many of them consent (for a consent-based purpose)."""
    key, export_id = fingerprint.key, fingerprint.export_id
    in_scope = _placed(gate.scoped_rows(access, decision), place).with_only_columns(Resident.id)
    real = consenting = 0
    after: str | None = None
    while True:
        with gate.runtime.transaction() as session:
            page = in_scope if after is None else in_scope.where(Resident.id > after)
            ids = list(session.scalars(page.order_by(Resident.id).limit(PLAN_CHUNK)))
            # With a consent-based purpose, decoys are as many as the consenting residents
            # warrant, and each shows the fields one of their consents covers.
            covers = gate.consent_covers(session, access, decision, ids, treatments)
            rows = []
            for rid in ids:
                rank = None
                if rid in covers:
                    rank, consenting = consenting, consenting + 1
                rows.append(
                    {
                        "export_id": export_id,
                        "sort_key": key.order_key(gate.present(access, decision, rid)),
                        "resident_id": rid,
                        "decoy": False,
                        "consent_rank": rank,
                    }
                )
            bulk_insert(session, _PLAN_ROWS, rows)
        real += len(ids)
        if len(ids) < PLAN_CHUNK:
            break
        after = ids[-1]
    return real, consenting


def _covers_shown(
    session: Session,
    gate: Gate,
    *,
    access: Access,
    decision: Decision,
    treatments: Mapping[str, str],
    fingerprint: Fingerprint,
    decoys: Sequence[tuple[str, str, str]],
    consenting: int,
) -> dict[str, ConsentCover]:
    """For each decoy, the consent cover of a consenting resident (chosen by rank with the
    export's key) whose fields it shows."""
    key, export_id = fingerprint.key, fingerprint.export_id
    ranks = {rid: key.choice("decoy-cover", rid, consenting) for rid, _, _ in decoys}
    chosen = select(ExportPlanRow.consent_rank, ExportPlanRow.resident_id).where(
        ExportPlanRow.export_id == export_id,
        ExportPlanRow.consent_rank.in_(sorted(set(ranks.values()))),
    )
    ranked: dict[int | None, str] = dict(session.execute(chosen).all())
    covers = gate.consent_covers(
        session, access, decision, sorted(set(ranked.values())), treatments
    )
    # A consent withdrawn since its rank was counted: the decoy takes another's, or none
    # is shown when every consent went.
    spare = [covers[r] for r in sorted(covers)]
    likes: dict[str, ConsentCover] = {}
    for rid, rank in ranks.items():
        like = ranked.get(rank)
        if like is not None and like in covers:
            likes[rid] = covers[like]
        elif spare:
            likes[rid] = spare[rank % len(spare)]
    return likes


def _pool(
    session: Session, gate: Gate, access: Access, decision: Decision, place: Place
) -> list[tuple[str, str, str]]:
    query = _placed(gate.scoped_rows(access, decision, decoys=True), place)
    return [(r[0], r[1], r[2]) for r in session.execute(query.order_by(Resident.id))]


def _grow(
    session: Session, gate: Gate, *, access: Access, decision: Decision, place: Place, count: int
) -> None:
    """New decoys in the buildings the export covers, recorded as an operational event."""
    query = _placed(gate.scoped_rows(access, decision), place)
    buildings = sorted(set(session.scalars(query.with_only_columns(Building.id).distinct())))
    created = create_decoys(session, gate.runtime.vault.store, buildings, count)
    gate.runtime.audit.record(
        session,
        [access.entry("decoy.created", "allowed", kind="event", details={"count": len(created)})],
    )


def fingerprinted_batches(
    gate: Gate,
    *,
    access: Access,
    decision: Decision,
    place: Place,
    requested: Sequence[str] | None,
    batch_size: int,
    fingerprint: Fingerprint,
    summary: dict[str, int],
) -> Iterator[list[RecordView]]:
    """Plan now (so the decoys are known before the first row), stream later."""
    decoy_views = _plan(
        gate,
        access=access,
        decision=decision,
        place=place,
        requested=requested,
        fingerprint=fingerprint,
    )
    key, export_id = fingerprint.key, fingerprint.export_id
    planned = select(ExportPlanRow.sort_key, ExportPlanRow.resident_id, ExportPlanRow.decoy).where(
        ExportPlanRow.export_id == export_id
    )
    in_order = (ExportPlanRow.sort_key, ExportPlanRow.resident_id)

    def batches() -> Iterator[list[RecordView]]:
        after: tuple[bytes, str] | None = None
        while True:
            # Rows and ciphertexts from the read replica, if any; plan and entries on the
            # primary.
            with gate.runtime.transaction() as session, gate.reading(session) as read:
                page = planned if after is None else planned.where(tuple_(*in_order) > after)
                chunk = session.execute(page.order_by(*in_order).limit(batch_size)).all()
                if chunk:
                    after = (chunk[-1][0], chunk[-1][1])
                ids = [rid for _, rid, decoy in chunk if not decoy]
                query = gate.scoped_rows(access, decision).where(Resident.id.in_(ids))
                current = {r[0]: (r[0], r[1], r[2]) for r in read.execute(query)} if ids else {}
                rows = [current[i] for i in ids if i in current]
                views, left_out = gate.record_views(
                    session,
                    access,
                    decision,
                    rows,
                    requested=requested,
                    action="export",
                    read=read,
                )
                decoys = [rid for _, rid, decoy in chunk if decoy]
                gate.runtime.audit.record(
                    session,
                    [
                        _decoy_entry(
                            gate,
                            access=access,
                            decision=decision,
                            view=decoy_views[rid],
                            vault_id=rid,
                            export_id=export_id,
                        )
                        for rid in decoys
                    ],
                )
            merged = views + [decoy_views[rid] for rid in decoys]
            merged.sort(key=lambda v: key.order_key(v.resident_id))
            summary["rows"] += len(merged)
            summary["left_out"] += left_out
            if merged:
                yield merged
            if len(chunk) < batch_size:
                break
        _forget(gate, export_id)

    return batches()


def _decoy_entry(
    gate: Gate,
    *,
    access: Access,
    decision: Decision,
    view: RecordView,
    vault_id: str,
    export_id: str,
) -> EntryDraft:
    """A decoy row's entry: like any export entry, but of kind `decoy`, so reports of real
    accesses (kind `access`) and residents' views never count it."""
    entry = gate.access_entry(
        access,
        "export",
        decision,
        resident_id=vault_id,
        fields=view.treatments,
        details={"decoy": True, "export_id": export_id},
    )
    return dataclasses.replace(entry, kind=DECOY_KIND)
