"""The gate's side of a fingerprinted export: which rows, in which order, with which decoys.

`Gate.export(..., fingerprint=...)` comes here. The export's rows are planned once: every
resident in scope (ids and building/community names only, nothing decrypted) plus the
decoys the export's secret picks from the pool in that scope, sorted by the keyed hash of
the id the caller sees. Batches then go out in that order; each batch re-checks scope
(an erasure or a move since the plan takes effect), decrypts and renders through the
gate's own `record_views` (consent, treatments, audit entries), renders its decoys the same way,
and commits every entry, decoys' ones marked `decoy`, before the batch is handed out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from access.exports.decoys import create_decoys, pool_target
from access.exports.fingerprints import Fingerprint
from audit import EntryDraft
from policies import Decision
from policies.rows import by_area
from vault.models import Building, Resident

if TYPE_CHECKING:
    from access.gate import Gate
    from access.subjects import Access
    from access.views import Place, RecordView

DECOY_KIND = "decoy"


_Q = TypeVar("_Q", bound="Select[*tuple[Any, ...]]")


def _placed(query: _Q, place: Place) -> _Q:
    return query.where(place.filter())


@dataclasses.dataclass(frozen=True)
class _Planned:
    order: bytes
    resident_id: str  # vault id
    building: str
    community: str
    decoy: bool


def _plan(
    gate: Gate,
    *,
    access: Access,
    decision: Decision,
    place: Place,
    requested: Sequence[str] | None,
    fingerprint: Fingerprint,
) -> tuple[list[_Planned], dict[str, RecordView]]:
    from access.views import RecordView, narrowed_to, place_context  # noqa: PLC0415 - gate imports us

    key = fingerprint.key
    treatments = gate.treatments_for(decision, requested)
    with gate.runtime.transaction() as session:
        real = [
            (r[0], r[1], r[2])
            for r in session.execute(_placed(gate.scoped_rows(access, decision), place))
        ]
        # With a consent-based purpose, decoys are as many as the consenting residents
        # warrant, and each shows the fields one of their consents covers.
        covers = gate.consent_covers(session, access, decision, [r[0] for r in real], treatments)
        consenting = sorted(covers)
        exported = len(consenting) if decision.rows.consent_required else len(real)
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
        views: dict[str, RecordView] = {}
        if decoys:
            fetch = [n for n, t in treatments.items() if t != "denied"]
            values = gate.runtime.vault.store.read_many(session, [d[0] for d in decoys], fetch)
            for rid, building, community in decoys:
                mine = treatments
                if consenting:
                    like = consenting[key.choice("decoy-cover", rid, len(consenting))]
                    mine = narrowed_to(treatments, covers[like])
                shown = gate.render(
                    values.get(rid, {}), mine, place_context(building, community), decision.levels
                )
                views[rid] = RecordView(gate.present(access, decision, rid), shown, mine)
    fingerprint.decoys = [d[0] for d in decoys]
    fingerprint.decoy_views = list(views.values())
    planned = [
        _Planned(key.order_key(gate.present(access, decision, rid)), rid, b, c, False)
        for rid, b, c in real
    ] + [_Planned(key.order_key(views[rid].resident_id), rid, b, c, True) for rid, b, c in decoys]
    planned.sort(key=lambda p: p.order)
    return planned, views


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
    planned, decoy_views = _plan(
        gate,
        access=access,
        decision=decision,
        place=place,
        requested=requested,
        fingerprint=fingerprint,
    )
    key = fingerprint.key

    def batches() -> Iterator[list[RecordView]]:
        for start in range(0, len(planned), batch_size):
            chunk = planned[start : start + batch_size]
            # Rows and ciphertexts from the read replica, if any; entries on the primary.
            with gate.runtime.transaction() as session, gate.reading(session) as read:
                ids = [p.resident_id for p in chunk if not p.decoy]
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
                decoys = [p for p in chunk if p.decoy]
                gate.runtime.audit.record(
                    session,
                    [
                        _decoy_entry(
                            gate,
                            access=access,
                            decision=decision,
                            view=decoy_views[p.resident_id],
                            vault_id=p.resident_id,
                            export_id=fingerprint.export_id,
                        )
                        for p in decoys
                    ],
                )
            merged = views + [decoy_views[p.resident_id] for p in decoys]
            merged.sort(key=lambda v: key.order_key(v.resident_id))
            summary["rows"] += len(merged)
            summary["left_out"] += left_out
            if merged:
                yield merged

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
