"""The access gate: every read and write of resident data passes here (ARCHITECTURE.md).

HTTP-free orchestration of one access: build the subject, decide once per request (never
per record), turn the decision's row constraints into SQL, fetch and decrypt only the
fields the decision lets out, derive masked and generalised values, and record one audit
entry per (request, resident) in the same transaction before anything is returned. Denied
attempts are recorded too. Errors are domain errors; `api.http.routes.residents` maps them to
problem details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Select, bindparam, select
from sqlalchemy.orm import Session

from access.errors import (
    BreakGlassRequired,
    ConsentRequired,
    GateError,
    InvalidCursor,
    JustificationRequired,
    NotInScope,
    PolicyDenied,
    PurposeRequired,
    RateLimited,
    Suspended,
    UnknownPurpose,
)
from access.exports.batches import fingerprinted_batches
from access.exports.fingerprints import Fingerprint
from access.limits import RateLimiter
from access.runtime import Runtime
from access.subjects import Access, Subject, Subjects
from access.views import EVERYWHERE, Place, RecordView, narrowed_to, place_context
from audit import EntryDraft
from audit.detection import is_suspended
from consent import ConsentCover, ConsentService
from consent.breakglass import BreakGlass
from policies import Decision, PolicyEngine
from policies import rows as row_sql
from policies.inputs import catalogue_fields, decision_input, recorded_input
from vault.catalogue import Catalogue
from vault.errors import ResidentNotFound, UnknownField, given_text
from vault.i18n import Message
from vault.masking import generalise_value, mask_value
from vault.models import Building, Community, Resident
from vault.pseudonyms import Pseudonyms, is_pseudonym
from vault.purposes import LivePurposes
from vault.services import Provenance
from vault.stamps import StampedCache

EVALUATION_ACTION = "policy.evaluated"


# -- who is asking and what the gate answers ------------------------------------------------


class GateObserver(Protocol):
    """Counts what the gate decides (api.http.observability.Metrics); sees codes, no data."""

    def decided(self, decision: Decision, purpose: str | None) -> None: ...

    def refused(self, slug: str) -> None: ...


class ConsentLookup(Protocol):
    """What residents' active consents cover for this recipient and purpose (issue 5).

    One call per batch of residents (never per resident), inside the request's
    transaction, with no caching: a revocation that committed before the call is seen.
    """

    def consenting(
        self,
        session: Session,
        recipient: str,
        purpose: str,
        resident_ids: Sequence[str],
        fields: Sequence[str],
    ) -> dict[str, ConsentCover]:
        """resident id -> the consents and the subset of `fields` they cover, for residents
        whose active, unexpired consents cover at least one of `fields`."""
        ...


@dataclass(frozen=True)
class Visibility:
    """What one subject would see of a resident for one purpose (a dry run): `status` is
    allowed (a basis other than consent), consented, or needs-consent (nothing shown)."""

    subject: Subject
    purpose: str
    decision: Decision
    treatments: dict[str, str]
    status: str


@dataclass
class Listing:
    items: list[RecordView]
    next_cursor: str | None
    left_out: int
    decision: Decision


@dataclass(frozen=True)
class FieldView:
    """What a read under one decision lets out of one field of one resident, for a service
    outside the API (the pages' correction queue): the field's treatment for this resident
    (never denied), the names a generalisation shows, and the consent the read rests on."""

    resident_id: str
    field: str
    treatment: str
    context: Mapping[str, str | None]
    cover: ConsentCover | None


# -- the gate -------------------------------------------------------------------------------


class Gate:
    def __init__(
        self,
        runtime: Runtime,
        engine: PolicyEngine,
        consents: ConsentLookup | None = None,
    ) -> None:
        self.runtime = runtime
        self.engine = engine
        self.consents: ConsentLookup = consents or ConsentService(
            runtime.vault.store, runtime.audit, purposes=LivePurposes(runtime.vault.sessions)
        )
        self.catalogue: Catalogue = runtime.vault.store.catalogue
        self.field_input = catalogue_fields(self.catalogue)
        self.pseudonyms = Pseudonyms(runtime.vault.keyring)
        settings = runtime.settings
        self.break_glass = BreakGlass(
            runtime.audit, settings.break_glass_minutes, settings.break_glass_max_minutes
        )
        settings = runtime.settings
        self.limiter = RateLimiter(
            {
                "standard": (settings.rate_limit_standard, 60.0),
                "sensitive": (settings.rate_limit_sensitive, 60.0),
                "bulk": (settings.rate_limit_bulk, 3600.0),
            }
        )
        self.observer: GateObserver | None = None
        # Subjects and suspensions, kept for as long as the change stamp stays put.
        stamps = runtime.vault.stamps
        self.stamps = stamps
        self.subjects = Subjects(runtime.vault.sessions, stamps)
        self._suspensions: StampedCache[tuple[str | None, str | None], bool] = StampedCache()
        self._statements: dict[tuple[Any, ...], Select[str, str, str]] = {}

    def _suspended(self, subject: Subject) -> bool:
        def load() -> bool:
            with self.runtime.vault.sessions() as session:
                return is_suspended(session, subject.user, subject.client)

        key = (subject.user, subject.client)
        return self._suspensions.lookup(key, self.stamps.current(), load)

    # -- naming residents ------------------------------------------------------------------

    @staticmethod
    def recipient(subject: Subject) -> str:
        """Whose pseudonyms a subject sees: its organisation's (a client without one: its own)."""
        return subject.organisation or f"client:{subject.client or '?'}"

    def present(self, access: Access, decision: Decision, resident_id: str) -> str:
        """The id the caller sees: the vault id, or its organisation's pseudonym."""
        if decision.pseudonymous:
            return self.pseudonyms.of(self.recipient(access.subject), resident_id)
        return resident_id

    def resolve(self, access: Access, given: str) -> str | None:
        """The vault id behind an id the caller gave (its pseudonym, or a vault id); None
        for a pseudonym that is not the caller's. Whether the caller may use this kind of
        id at all is the decision's word (`matches`)."""
        if is_pseudonym(given):
            return self.pseudonyms.resolve(self.recipient(access.subject), given)
        return given

    @staticmethod
    def matches(decision: Decision, given: str) -> bool:
        """A pseudonymous caller must name residents by its pseudonyms, everyone else by
        vault ids: a vault id that leaked to an organisation opens nothing."""
        return decision.pseudonymous == is_pseudonym(given)

    def hypothetical(self, subject: Subject, purpose: str | None, action: str) -> Decision:
        """The decision a request would get, for explanations and routes outside the gate;
        never raises for a denial and records nothing (no resident data is touched)."""
        return self.engine.evaluate(self._input(subject, purpose, action, "other"))

    def identifier_decision(self, access: Access, purpose: str | None = None) -> Decision:
        """A decision that says how residents are named to this caller (e.g. for consent
        requests); the identifier is defined even when the access is denied."""
        return self.hypothetical(access.subject, purpose or access.purpose, "read")

    # -- deciding ------------------------------------------------------------------------

    def decide(
        self, access: Access, action: str, target: str = "other", *, dry_run: bool = False
    ) -> Decision:
        """One policy decision for the request; raises (after auditing) when it denies.

        A dry run (a resident asking who could see their data) asks policy only: it neither
        counts against the subject's rate limit nor consults their suspension."""
        subject = access.subject
        if not dry_run and subject.type != "resident" and self._suspended(subject):
            raise Suspended(Message("error.gate.suspended"), decision_id=access.decision_id)
        if subject.type == "resident" and target in ("self", "child"):
            purpose = access.purpose
        else:
            if not access.purpose:
                raise PurposeRequired(
                    Message("error.gate.purpose-required"), decision_id=access.decision_id
                )
            purpose = access.purpose
        input = self._input(subject, purpose, action, target)
        decision = self.engine.evaluate(input)
        if self.observer is not None:
            self.observer.decided(decision, purpose)
        if not decision.from_cache:
            self._record_evaluation(access, input, decision)
        if not decision.allow:
            code = decision.reason.code
            error_type: type[GateError] = {
                "unknown-purpose": UnknownPurpose,
                "purpose-required": PurposeRequired,
            }.get(code, PolicyDenied)
            # The policy's reason, worded in both languages by the bundle itself.
            reason = given_text(decision.reason.zh, decision.reason.en)
            raise error_type(reason, decision, decision_id=access.decision_id)
        caller = subject.user or subject.client
        rate_class = str(decision.obligations.rate_class)
        wait = self.limiter.check(caller, rate_class) if caller and not dry_run else None
        if wait is not None:
            raise RateLimited(
                Message("error.gate.rate-limited"),
                decision,
                decision_id=access.decision_id,
                retry_after=wait,
            )
        if decision.obligations.break_glass and action != "read":
            # Defence in depth: a break-glass purpose opens one record at a time, whatever
            # a purpose's data might say.
            raise PolicyDenied(
                Message("error.gate.break-glass-one"), decision, decision_id=access.decision_id
            )
        return decision

    def _input(
        self, subject: Subject, purpose: str | None, action: str, target: str
    ) -> dict[str, Any]:
        """The policy input for one decision (`policies.inputs.decision_input`): the
        subject as policy sees them and the whole catalogue's public metadata."""
        return decision_input(
            subject.policy_input(),
            purpose=purpose,
            action=action,
            target=target,
            fields=self.field_input,
        )

    def _record_evaluation(
        self, access: Access, input: Mapping[str, Any], decision: Decision
    ) -> None:
        """Each fresh evaluation goes into the log with the policy's whole answer, so any
        past decision can be explained from the signed record, whatever the policy says
        today. Cached decisions name this evaluation; there is one per cache miss."""
        with self.runtime.transaction() as session:
            self.runtime.audit.record(
                session,
                [
                    access.entry(
                        EVALUATION_ACTION,
                        "allowed" if decision.allow else "denied",
                        kind="event",
                        evaluation_id=decision.evaluation_id,
                        policy_revision=decision.revision,
                        details={
                            "input": recorded_input(input, self.catalogue.version),
                            "result": decision.to_result(),
                        },
                    )
                ],
            )

    @contextmanager
    def denials_recorded(
        self, access: Access, action: str, resident_id: str | None = None
    ) -> Iterator[None]:
        """Record a refusal (and say 404 for a resident who is not there) before raising it.

        `resident_id` is the id as the caller gave it: a pseudonym is recorded beside the
        vault id it stands for, so the resident sees the refused attempt too."""
        try:
            yield
        except ResidentNotFound as exc:
            error = NotInScope(None, decision_id=access.decision_id)
            self.record_denial(access, error, action, resident_id)
            raise error from exc
        except GateError as error:
            self.record_denial(access, error, action, resident_id)
            raise

    def record_denial(
        self, access: Access, error: GateError, action: str, resident_id: str | None = None
    ) -> None:
        """Denied attempts are recorded too (insider-abuse detection reads them)."""
        if self.observer is not None:
            self.observer.refused(error.slug)
        decision = error.decision
        pseudonym = resident_id if resident_id and is_pseudonym(resident_id) else None
        vault_id = self.resolve(access, resident_id) if resident_id else None
        # A pseudonym that is not the caller's (or a forgery) is kept as given, unresolved.
        details = {"unresolved": True} if pseudonym and vault_id is None else {}
        with self.runtime.transaction() as session:
            entry = self._entry(
                access,
                action,
                "denied",
                decision,
                resident_id=vault_id,
                fields={},
                reason=error.slug,
                details=details,
                pseudonym=pseudonym[:64] if pseudonym else None,
            )
            if vault_id and session.scalar(
                select(Resident.is_decoy).where(Resident.id == vault_id)
            ):
                # Someone probed a decoy: kept apart from real accesses, as decoy rows are.
                entry = replace(entry, kind="decoy", details={**entry.details, "decoy": True})
            self.runtime.audit.record(session, [entry])

    # -- rows ----------------------------------------------------------------------------

    def row_filter(
        self,
        access: Access,
        decision: Decision,
        residents: row_sql.ResidentColumns = row_sql.RESIDENTS,
    ) -> ColumnElement[bool]:
        """The decision's row constraints as SQL with bound parameters, compiled by
        `policies.rows` for this caller's own id and wards (reads `residents`, Resident's
        table unless told, and Building)."""
        subject = access.subject
        return row_sql.row_filter(
            decision.rows,
            resident_id=subject.resident_id,
            children=subject.children,
            residents=residents,
        )

    def scoped_rows(
        self, access: Access, decision: Decision, *, decoys: bool = False
    ) -> Select[str, str, str]:
        """Residents within the decision's rows, with their building's and community's
        names (what the building and community generalisations show). Decoys (fictional
        people for export tracing) are never among them; `decoys=True` gives only the
        decoys in the same rows, which fingerprinted exports alone ask for.

        Kept per (rows, caller's own id and wards): building the statement costs more than
        running it, and a statement is immutable, so threads share it safely."""
        subject = access.subject
        key = (decision.rows, subject.resident_id, subject.children, decoys)
        found = self._statements.get(key)
        if found is None:
            found = (
                row_sql.with_building(select(Resident.id, Building.name, Community.name))
                .join(Community, Community.id == Building.community_id)
                .where(self.row_filter(access, decision), Resident.is_decoy.is_(decoys))
            )
            self._remember(key, found)
        return found

    def _one_scoped(self, access: Access, decision: Decision) -> Select[str, str, str]:
        """`scoped_rows` of one resident, named by the bound parameter `resident_id`."""
        subject = access.subject
        key = (decision.rows, subject.resident_id, subject.children, "one")
        found = self._statements.get(key)
        if found is None:
            found = self.scoped_rows(access, decision).where(
                Resident.id == bindparam("resident_id")
            )
            self._remember(key, found)
        return found

    def _remember(self, key: tuple[Any, ...], statement: Select[str, str, str]) -> None:
        if len(self._statements) >= 4096:  # bounded: many callers' jurisdictions
            self._statements.clear()
        self._statements[key] = statement

    def holds(self, session: Session, access: Access, decision: Decision, resident_id: str) -> bool:
        """Whether the decision's rows hold this resident (active, not a decoy): the very
        check a read makes, for routes outside the gate that act on one resident."""
        found = session.execute(
            self._one_scoped(access, decision), {"resident_id": resident_id}
        ).first()
        return found is not None

    # -- reading -------------------------------------------------------------------------

    def treatments_for(self, decision: Decision, requested: Sequence[str] | None) -> dict[str, str]:
        """Treatments of the fields asked for (`?fields=`), or of every catalogue field, so
        the caller sees what was withheld as well as what was shown."""
        names = list(requested) if requested else list(self.catalogue.names)
        for name in names:
            if name not in self.catalogue:
                raise UnknownField(name)
        return {name: str(decision.treatment(name)) for name in names}

    def render(
        self,
        values: Mapping[str, Any],
        treatments: Mapping[str, str],
        context: Mapping[str, str | None],
        levels: Mapping[str, str],
    ) -> dict[str, Any]:
        """Values under their treatments; generalised ones at the decision's level, with the
        building's and community's names in `context`."""
        shown: dict[str, Any] = {}
        for name, treatment in treatments.items():
            if treatment == "denied" or name not in values:
                continue
            spec = self.catalogue[name]
            value = values[name]
            if treatment == "clear":
                shown[name] = value
            elif treatment == "masked":
                shown[name] = mask_value(spec, value)
            elif treatment == "generalised":
                shown[name] = generalise_value(spec, value, level=levels.get(name), context=context)
        return shown

    def read(
        self,
        access: Access,
        resident_id: str,
        requested: Sequence[str] | None = None,
        target: str = "other",
    ) -> tuple[RecordView, Decision]:
        """One resident's record as this access may see it, its entry durable first."""
        view, decision, entry = self.read_unrecorded(access, resident_id, requested, target)
        # Durable before the answer leaves, in one commit with concurrent reads' entries.
        self.runtime.entries.record([entry])
        return view, decision

    async def read_async(
        self,
        access: Access,
        resident_id: str,
        requested: Sequence[str] | None = None,
        target: str = "other",
    ) -> tuple[RecordView, Decision]:
        """`read` for the hot path, on the event loop: on SQLite its few short statements run
        inline (a threadpool hop costs more than they do); on PostgreSQL in one worker
        thread, where the round trips of concurrent reads overlap. Either way the entry's
        commit is awaited, not blocked on."""
        if self.runtime.vault.engine.dialect.name == "sqlite":
            view, decision, entry = self.read_unrecorded(access, resident_id, requested, target)
        else:
            # Its round trips overlap other requests' in a worker thread (measured faster
            # than waiting them out on the loop).
            view, decision, entry = await asyncio.to_thread(
                self.read_unrecorded, access, resident_id, requested, target
            )
        await self.runtime.entries.record_async([entry])
        return view, decision

    def read_unrecorded(
        self,
        access: Access,
        resident_id: str,
        requested: Sequence[str] | None = None,
        target: str = "other",
    ) -> tuple[RecordView, Decision, EntryDraft]:
        """A read up to its entry, which the caller must commit before answering.
        A refusal is recorded here, before it is raised."""
        action = "read"
        given = resident_id
        with self.denials_recorded(access, action, given):
            decision = self.decide(access, action, target)
            vault_id = self.resolve(access, given) if self.matches(decision, given) else None
            if vault_id is None:
                raise NotInScope(decision, decision_id=access.decision_id)
            resident_id = vault_id
            with self.runtime.vault.sessions() as session:
                grant = self._grant_for(session, access, decision, resident_id)
                row, treatments, cover = self._plan_read(
                    session, access, decision, resident_id, requested
                )
                fetch = [n for n, t in treatments.items() if t != "denied"]
                # The scoped row above is an active resident's: no second look at it.
                values = self.runtime.vault.store.read_many(session, [resident_id], fetch).get(
                    resident_id, {}
                )
                shown = self.render(
                    values, treatments, place_context(row[1], row[2]), decision.levels
                )
                presented = self.present(access, decision, resident_id)
                view = RecordView(presented, shown, treatments)
                read = {n: t for n, t in treatments.items() if n in values or t == "denied"}
                entry = self.access_entry(
                    access,
                    action,
                    decision,
                    resident_id=resident_id,
                    fields=read,
                    cover=cover.get(resident_id),
                    details={"break_glass": grant} if grant else None,
                    presented=presented,
                )
            return view, decision, entry

    def _grant_for(
        self, session: Session, access: Access, decision: Decision, resident_id: str
    ) -> str | None:
        """The break-glass grant a read rests on (its id), when the purpose is break-glass;
        BreakGlassRequired without an active one for this worker and this resident."""
        if not decision.obligations.break_glass:
            return None
        grant = self.break_glass.active(session, access.subject.user, resident_id)
        if grant is None:
            raise BreakGlassRequired(
                Message("error.gate.break-glass-required"),
                decision,
                decision_id=access.decision_id,
            )
        return grant.id

    def _plan_read(
        self,
        session: Session,
        access: Access,
        decision: Decision,
        resident_id: str,
        requested: Sequence[str] | None,
    ) -> tuple[Any, dict[str, str], dict[str, ConsentCover]]:
        """What a read of one resident would return, before anything is decrypted: the
        row, each field's treatment for this resident, and the consents it rests on.
        Raises ConsentRequired, then NotInScope, in the order docs/api.md gives. The resident's
        dry run (`visibility`) uses this very method, so it cannot differ from a read."""
        # Core on the connection: the ORM adds nothing to a plain row read.
        row = (
            session.connection()
            .execute(self._one_scoped(access, decision), {"resident_id": resident_id})
            .first()
        )
        treatments = self.treatments_for(decision, requested)
        cover = self.consent_covers(session, access, decision, [resident_id], treatments)
        if decision.rows.consent_required:
            if resident_id not in cover:
                raise ConsentRequired(
                    Message("error.gate.consent-required"),
                    decision,
                    decision_id=access.decision_id,
                )
            treatments = narrowed_to(treatments, cover[resident_id])
        if row is None:
            raise NotInScope(decision, decision_id=access.decision_id)
        return row, treatments, cover

    def visibility(
        self,
        resident: Access,
        resident_id: str,
        subjects: Sequence[Subject],
        purposes: Sequence[str],
    ) -> list[Visibility]:
        """A dry run of every subject x purpose against one resident's record and consents:
        what a read by each would return (treatments only; nothing is decrypted). One
        entry records that the resident looked."""
        decided: list[tuple[Access, Decision]] = []
        for subject in subjects:  # decisions first: a fresh one records its evaluation
            for purpose in purposes:
                access = Access(subject=subject, purpose=purpose, request_id=resident.request_id)
                try:
                    decided.append((access, self.decide(access, "read", dry_run=True)))
                except GateError:
                    continue  # outside the mandate: nothing to show
        found: list[Visibility] = []
        with self.runtime.transaction() as session:
            for access, decision in decided:
                subject, purpose = access.subject, access.purpose or ""
                try:
                    _, treatments, cover = self._plan_read(
                        session, access, decision, resident_id, None
                    )
                except ConsentRequired:
                    found.append(Visibility(subject, purpose, decision, {}, "needs-consent"))
                    continue
                except NotInScope:
                    continue  # the resident is outside their rows
                status = "consented" if cover else "allowed"
                if decision.obligations.break_glass:
                    status = "break-glass"  # only in an emergency, flagged and reviewed
                found.append(Visibility(subject, purpose, decision, treatments, status))
            self.runtime.audit.record(
                session,
                [
                    self._entry(
                        resident,
                        "visibility",
                        "allowed",
                        None,
                        resident_id=resident_id,
                        fields={},
                        details={"combinations": len(found)},
                    )
                ],
            )
        return found

    def consent_covers(
        self,
        session: Session,
        access: Access,
        decision: Decision,
        resident_ids: Sequence[str],
        treatments: Mapping[str, str],
    ) -> dict[str, ConsentCover]:
        """One look-up for the batch; empty when the purpose does not rest on consent."""
        if not decision.rows.consent_required or not resident_ids:
            return {}
        recipient = access.subject.organisation or ""
        fields = [n for n, t in treatments.items() if t != "denied"]
        return self.consents.consenting(
            session, recipient, access.purpose or "", resident_ids, fields
        )

    def list_residents(
        self,
        access: Access,
        *,
        place: Place = EVERYWHERE,
        requested: Sequence[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        action: str = "list",
    ) -> Listing:
        """A page of residents within scope; those lacking a required consent are left out."""
        with self.denials_recorded(access, action):
            decision = self.decide(access, action)
            after = None
            if cursor:
                # Cursors are resident ids as the caller sees them, so they leak no vault id.
                after = self.resolve(access, cursor) if self.matches(decision, cursor) else None
                if after is None:
                    raise InvalidCursor(
                        Message("error.invalid-cursor"), decision, decision_id=access.decision_id
                    )
        with self.runtime.transaction() as session, self.reading(session) as read:
            page = self._page(
                read,
                access,
                decision,
                place=place,
                limit=limit,
                cursor=after,
            )
            items, left_out = self.record_views(
                session, access, decision, page[0], requested=requested, action=action, read=read
            )
        next_cursor = self.present(access, decision, page[1]) if page[1] else None
        return Listing(items, next_cursor, left_out, decision)

    @contextmanager
    def reading(self, session: Session) -> Iterator[Session]:
        """Where a list or an export reads residents' rows: the read replica's session
        (data keys from the primary, see vault.db), or `session` when there is none."""
        vault = self.runtime.vault
        if vault.read_engine is vault.engine:
            yield session
            return
        with vault.read_sessions() as read:
            yield read

    def _page(
        self,
        session: Session,
        access: Access,
        decision: Decision,
        *,
        place: Place,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[tuple[str, str, str]], str | None]:
        query = self.scoped_rows(access, decision).where(place.filter())
        if cursor:
            query = query.where(Resident.id > cursor)
        rows = [
            (r[0], r[1], r[2])
            for r in session.execute(query.order_by(Resident.id).limit(limit + 1))
        ]
        next_cursor = rows[limit - 1][0] if len(rows) > limit else None
        return rows[:limit], next_cursor

    def record_views(
        self,
        session: Session,
        access: Access,
        decision: Decision,
        rows: list[tuple[str, str, str]],
        *,
        requested: Sequence[str] | None,
        action: str,
        read: Session | None = None,
    ) -> tuple[list[RecordView], int]:
        """Decrypt a batch, render it and record its entries, in the caller's transaction.

        With a consent-based purpose, residents whose consents cover none of the fields are
        left out (and counted), and each kept resident's fields that their consents do not
        cover are denied: treatments are per resident. Rows and ciphertexts may come from
        a replica (`read`); consents, erasures, data keys and the entries are the primary's
        (`session`), so a replica's lag never shows an erased resident or a revoked consent."""
        if read is not None and read is not session:
            rows = _still_active(session, rows)
        treatments = self.treatments_for(decision, requested)
        covers = self.consent_covers(session, access, decision, [r[0] for r in rows], treatments)
        per_resident: dict[str, dict[str, str]] = {}
        if decision.rows.consent_required:
            kept = [row for row in rows if row[0] in covers]
            for rid, _, _ in kept:
                per_resident[rid] = narrowed_to(treatments, covers[rid])
            fetch = sorted(
                {n for t in per_resident.values() for n, v in t.items() if v != "denied"}
            )
        else:
            kept = rows
            fetch = [n for n, t in treatments.items() if t != "denied"]
        values = self.runtime.vault.store.read_many(read or session, [r[0] for r in kept], fetch)
        views = []
        entries = []
        for rid, building, community in kept:
            mine = per_resident.get(rid, treatments)
            shown = self.render(
                values.get(rid, {}), mine, place_context(building, community), decision.levels
            )
            presented = self.present(access, decision, rid)
            views.append(RecordView(presented, shown, mine))
            entries.append(
                self.access_entry(
                    access,
                    action,
                    decision,
                    resident_id=rid,
                    fields=mine,
                    cover=covers.get(rid),
                    presented=presented,
                )
            )
        self.runtime.audit.record(session, entries)
        return views, len(rows) - len(kept)

    def export(
        self,
        access: Access,
        *,
        place: Place = EVERYWHERE,
        requested: Sequence[str] | None = None,
        batch_size: int = 500,
        fingerprint: Fingerprint | None = None,
    ) -> tuple[Decision, Iterator[list[RecordView]], dict[str, int]]:
        """A streamed export: each batch's entries commit before the batch is handed out.

        With a `fingerprint`, rows go out in the export's keyed order with its decoys
        (`access.exports.batches`); the decoys are chosen here, before the first row."""
        action = "export"
        with self.denials_recorded(access, action):
            decision = self.decide(access, action)
            if decision.obligations.justification_required and not access.justification:
                raise JustificationRequired(
                    Message("error.gate.justification-required"),
                    decision,
                    decision_id=access.decision_id,
                )
        summary = {"rows": 0, "left_out": 0}
        if fingerprint is not None:
            return (
                decision,
                fingerprinted_batches(
                    self,
                    access=access,
                    decision=decision,
                    place=place,
                    requested=requested,
                    batch_size=batch_size,
                    fingerprint=fingerprint,
                    summary=summary,
                ),
                summary,
            )

        def batches() -> Iterator[list[RecordView]]:
            cursor: str | None = None
            while True:
                with self.runtime.transaction() as session, self.reading(session) as read:
                    rows, cursor = self._page(
                        read,
                        access,
                        decision,
                        place=place,
                        limit=batch_size,
                        cursor=cursor,
                    )
                    views, left_out = self.record_views(
                        session,
                        access,
                        decision,
                        rows,
                        requested=requested,
                        action=action,
                        read=read,
                    )
                summary["rows"] += len(views)
                summary["left_out"] += left_out
                if views:
                    yield views
                if cursor is None:
                    return

        return decision, batches(), summary

    def search(
        self,
        access: Access,
        field_name: str,
        raw_value: str,
        requested: Sequence[str] | None = None,
    ) -> Listing:
        """Look up by identifier through the blind index, then read within scope."""
        action = "search"
        with self.denials_recorded(access, action):
            decision = self.decide(access, action)
        with self.runtime.transaction() as session:
            ids = self.runtime.vault.store.find(session, field_name, raw_value)
            rows = (
                [
                    (r[0], r[1], r[2])
                    for r in session.execute(
                        self.scoped_rows(access, decision).where(Resident.id.in_(ids))
                    )
                ]
                if ids
                else []
            )
            items, left_out = self.record_views(
                session, access, decision, rows, requested=requested, action=action
            )
            if not items:
                self.runtime.audit.record(
                    session,
                    [
                        self._entry(
                            access,
                            action,
                            "allowed",
                            decision,
                            fields={},
                            reason="no-match",
                            details={"by": field_name},
                        )
                    ],
                )
        return Listing(items, None, left_out, decision)

    # -- writing -------------------------------------------------------------------------

    def write(
        self,
        access: Access,
        resident_id: str | None,
        values: Mapping[str, Any],
        household_id: str | None = None,
        target: str = "other",
    ) -> tuple[str, Decision]:
        """Create or update within policy: every written field must be writable (clear)."""
        action = "write"
        with self.denials_recorded(access, action, resident_id):
            decision = self.decide(access, action, target)
            if resident_id is not None:
                given = resident_id
                vault_id = self.resolve(access, given) if self.matches(decision, given) else None
                if vault_id is None:
                    raise NotInScope(decision, decision_id=access.decision_id)
                resident_id = vault_id
            not_writable = sorted(n for n in values if decision.treatment(n) != "clear")
            if not_writable:
                raise PolicyDenied(
                    Message("error.gate.write-denied", {"fields": ", ".join(not_writable)}),
                    decision,
                    decision_id=access.decision_id,
                )
            provenance = Provenance(
                actor=access.subject.user or access.subject.client or "?",
                channel="self" if target == "self" else access.channel,
            )
            with self.runtime.transaction() as session:
                if resident_id is None:
                    resident_id = self.runtime.vault.store.create(
                        session, values, provenance, household_id=household_id
                    )
                else:
                    if (
                        session.execute(
                            self.scoped_rows(access, decision).where(Resident.id == resident_id)
                        ).first()
                        is None
                    ):
                        raise NotInScope(decision, decision_id=access.decision_id)
                    self.runtime.vault.store.update(session, resident_id, values, provenance)
                presented = self.present(access, decision, resident_id)
                written = dict.fromkeys(values, "written")
                self.runtime.audit.record(
                    session,
                    [
                        self.access_entry(
                            access, action, decision, resident_id=resident_id, fields=written
                        )
                    ],
                )
            return presented, decision

    # -- one field, for services outside the API ----------------------------------------

    def scoped_ids(self, access: Access, decision: Decision) -> Select[str]:
        """The ids of residents within the decision's rows (no decoys), as a subquery a
        service narrows its own table with before it pages."""
        return self.scoped_rows(access, decision).with_only_columns(Resident.id)

    def field_views(
        self,
        session: Session,
        access: Access,
        decision: Decision,
        wanted: Sequence[tuple[str, str]],
    ) -> dict[tuple[str, str], FieldView]:
        """Of (resident, field) pairs, those a read under `decision` would show, keyed by
        the pair: the same rows, consent narrowing and treatments as `list_residents`.
        Pairs it would not show (outside the rows, no consent, field denied, or nothing
        there) are simply absent: a caller cannot tell "not yours" from "not there"."""
        if decision.obligations.break_glass:
            return {}  # a grant opens one `read`, never a service's list
        known = [(rid, name) for rid, name in wanted if name in self.catalogue]
        if not known:
            return {}
        ids = sorted({rid for rid, _ in known})
        rows = {
            r[0]: r
            for r in session.execute(self.scoped_rows(access, decision).where(Resident.id.in_(ids)))
        }
        treatments = self.treatments_for(decision, sorted({name for _, name in known}))
        covers = self.consent_covers(session, access, decision, list(rows), treatments)
        found: dict[tuple[str, str], FieldView] = {}
        for rid, name in known:
            row = rows.get(rid)
            if row is None or (decision.rows.consent_required and rid not in covers):
                continue
            mine = narrowed_to(treatments, covers[rid]) if rid in covers else treatments
            if mine[name] != "denied":
                found[rid, name] = FieldView(
                    rid, name, mine[name], place_context(row[1], row[2]), covers.get(rid)
                )
        return found

    def field_view(
        self, session: Session, access: Access, decision: Decision, resident_id: str, name: str
    ) -> FieldView:
        """One field of one resident as `read` would show it, planned by `read`'s own
        `_plan_read` (ConsentRequired, then NotInScope); PolicyDenied for a field it would
        withhold. Nothing is decrypted and nothing recorded: the caller records."""
        if decision.obligations.break_glass:
            raise PolicyDenied(
                Message("error.gate.break-glass-one"), decision, decision_id=access.decision_id
            )
        if name not in self.catalogue:
            raise NotInScope(decision, decision_id=access.decision_id)
        row, treatments, cover = self._plan_read(session, access, decision, resident_id, [name])
        if treatments[name] == "denied":
            raise PolicyDenied(
                Message("error.gate.read-denied", {"field": name}),
                decision,
                decision_id=access.decision_id,
            )
        return FieldView(
            resident_id,
            name,
            treatments[name],
            place_context(row[1], row[2]),
            cover.get(resident_id),
        )

    def render_field(self, decision: Decision, view: FieldView, value: Any) -> Any:
        """`value` of the view's field as a read shows it: clear, masked, or generalised at
        the decision's level; None if the treatment withholds it."""
        return self.render(
            {view.field: value}, {view.field: view.treatment}, view.context, decision.levels
        ).get(view.field)

    def access_entry(
        self,
        access: Access,
        action: str,
        decision: Decision,
        *,
        resident_id: str,
        fields: Mapping[str, str],
        cover: ConsentCover | None = None,
        details: Mapping[str, Any] | None = None,
        presented: str | None = None,
    ) -> EntryDraft:
        """An allowed access's entry about one resident (purpose, legal basis, decision,
        evaluation, consent, pseudonym), as the gate writes its own and for a service
        outside the gate to record in the transaction that answers. `presented` is the id
        the caller was shown, when already worked out."""
        presented = presented or self.present(access, decision, resident_id)
        return self._entry(
            access,
            action,
            "allowed",
            decision,
            resident_id=resident_id,
            fields=fields,
            details=details,
            pseudonym=presented if decision.pseudonymous else None,
            **_consent_ids(cover),
        )

    # -- audit entries -------------------------------------------------------------------

    def _entry(
        self,
        access: Access,
        action: str,
        outcome: str,
        decision: Decision | None,
        *,
        resident_id: str | None = None,
        fields: Mapping[str, str] | None = None,
        consent_id: str | None = None,
        consent_ids: Sequence[str] = (),
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        pseudonym: str | None = None,
    ) -> EntryDraft:
        return access.entry(
            action,
            outcome,
            legal_basis=decision.rows.legal_basis if decision else None,
            consent_id=consent_id,
            resident_id=resident_id,
            resident_pseudonym=pseudonym,
            fields=dict(fields or {}),
            decision_id=access.decision_id,
            evaluation_id=decision.evaluation_id if decision else None,
            policy_revision=decision.revision if decision else self.engine.revision,
            reason=reason,
            details={
                **(details or {}),
                **({"consents": list(consent_ids)} if len(consent_ids) > 1 else {}),
                **({"justification": access.justification[:500]} if access.justification else {}),
            },
        )


def _still_active(session: Session, rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Rows a replica served whose residents the primary still holds active."""
    if not rows:
        return rows
    active = set(
        session.scalars(
            select(Resident.id).where(
                Resident.id.in_([r[0] for r in rows]), Resident.status == "active"
            )
        )
    )
    return [row for row in rows if row[0] in active]


def _consent_ids(cover: ConsentCover | None) -> dict[str, Any]:
    if cover is None:
        return {}
    return {"consent_id": cover.consent_id, "consent_ids": cover.consent_ids}
