"""Insider-abuse detection: patterns in the access log that look like a leak in progress.

A scan looks at the log per actor (a person by username, else a system by client id) and
raises an alert when the actor

* reads far more than their work explains (`volume`: resident-reads over the last day
  above the most of three allowances: a floor, a number of passes over the residents
  their jurisdiction or mandate covers, and a multiple of their own usual day),
* reads sensitive fields in clear far more than their work explains (`sensitive-bulk`,
  the same three allowances over those reads),
* is refused again and again within the short window (`repeated-denials`: reading
  outside their jurisdiction or mandate, or probing pseudonyms),
* works at unusual hours (`off-hours`: distinct residents read between 22:00 and 06:00
  China time, within the short window),
* asks for a decoy (`decoy-probe`): decoys exist only as rows of fingerprinted exports,
  so a read or search naming one means someone is working from an exported file. That
  can be the recipient following up on its own export, so it alerts but, by default,
  does not suspend.

A resident-read is one resident covered by one allowed access: a read is one, a list or an
export of N residents is one access event covering N. So a grid worker listing their grid
twice, or a department's one justified export of the population its mandate covers, is
judged against the size of that population (the jurisdiction, counted from the vault's
tables: a worker's grids or buildings, an organisation's communities and buildings), not
against a fixed floor.

Alerts go to a table the auditor console reads, to the verifiable log as `alert.raised`
events, and to the structured log; each names what it saw (counts, window, baseline,
jurisdiction size) in its details and its catalogue message (`alert.<kind>`). Kinds named
in `suspend_on` also suspend the actor pending review: the gate then refuses them
(`suspended`) until an auditor lifts it (`lift_suspension`, with a reason that the log
keeps). Everything here is HTTP-free; `api` runs scans in the background and on demand.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import structlog
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from audit.errors import AuditError
from audit.log import AuditLog, EntryDraft
from audit.models import AuditAlert, AuditEntry, Suspension
from audit.settings import AuditSettings
from vault.accounts import User
from vault.i18n import Message
from vault.models import (
    Building,
    Household,
    OrganisationBuilding,
    OrganisationCommunity,
    Resident,
    Room,
    new_id,
    utcnow,
)

__all__ = [
    "ALERT_KINDS",
    "DetectionRules",
    "Detector",
    "LiftRefused",
    "NotSuspended",
    "RaisedAlert",
    "ReasonRequired",
    "Usual",
    "active_suspensions",
    "is_suspended",
    "lift_suspension",
    "volume_threshold",
]

log = structlog.get_logger(__name__)

CHINA = timezone(timedelta(hours=8))
ALERT_KINDS = ("volume", "repeated-denials", "sensitive-bulk", "off-hours", "decoy-probe")
_READS = ("read", "list", "search", "export")
# People who read their own record, and the vault's own staff, are not what this watches.
_UNWATCHED = ("resident", "operator", "auditor")
# An hour is cached once it is this far in the past: entries commit a little after their
# time is taken, so the hour just ended may still grow.
_SETTLED = timedelta(minutes=5)
LIFT_REASON_MIN = 10  # like a break-glass justification: a sentence, not "ok"
LIFT_REASON_MAX = 500


@dataclass(frozen=True)
class DetectionRules:
    """Thresholds. `volume` and `sensitive-bulk` count resident-reads over `volume_window`;
    the others count distinct residents (or refusals) over the short `window`."""

    window: timedelta = timedelta(hours=1)
    volume_window: timedelta = timedelta(hours=24)
    baseline_days: int = 14
    volume_floor: int = 200  # never a volume alert below this many resident-reads a day
    volume_factor: float = 3.0  # ... nor within this multiple of the actor's usual day
    jurisdiction_passes: float = 3.0  # ... nor within this many passes over their residents
    sensitive_residents: int = 100  # the floor of sensitive-bulk, resident-reads a day
    denials: int = 15
    off_hours_residents: int = 25
    night_start: int = 22  # China time
    night_end: int = 6
    decoy_probes: int = 1  # decoys are fictional: one request naming one is a signal
    suspend_on: frozenset[str] = field(default_factory=lambda: frozenset({"volume"}))

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> DetectionRules:
        """The rules `VAULT_ALERT_*` configure; the rest keep their defaults."""
        return cls(
            volume_window=timedelta(hours=settings.alert_volume_window_hours),
            baseline_days=settings.alert_baseline_days,
            volume_floor=settings.alert_volume_floor,
            volume_factor=settings.alert_volume_factor,
            jurisdiction_passes=settings.alert_jurisdiction_passes,
            sensitive_residents=settings.alert_sensitive_floor,
            suspend_on=frozenset(
                k.strip() for k in settings.alert_suspend_on.split(",") if k.strip()
            ),
        )


@dataclass(frozen=True)
class RaisedAlert:
    alert_id: str
    kind: str
    actor: str
    actor_kind: str
    organisation: str | None
    observed: int
    threshold: int
    suspended: bool
    message: Message


@dataclass(frozen=True)
class Usual:
    """An actor's usual day: resident-reads, and those with sensitive fields in clear (95th
    percentiles over the days they read anything in the baseline)."""

    residents: int = 0
    sensitive: int = 0


class LiftRefused(AuditError):
    """A suspension that cannot be lifted as asked; nothing was written."""

    slug: ClassVar[str] = "conflict"
    message: Message

    def __init__(self, message: Message) -> None:
        super().__init__(message.text("en"))
        self.message = message


class NotSuspended(LiftRefused):
    def __init__(self, actor: str) -> None:
        super().__init__(Message("alert.lift.not-suspended", {"actor": actor}))


class ReasonRequired(LiftRefused):
    slug: ClassVar[str] = "validation-error"

    def __init__(self) -> None:
        super().__init__(
            Message(
                "alert.lift.reason-required", {"least": LIFT_REASON_MIN, "most": LIFT_REASON_MAX}
            )
        )


def volume_threshold(
    floor: int, passes: float, jurisdiction: int, factor: float, usual: int
) -> tuple[int, str]:
    """The fewest resident-reads that alert, and which allowance set it: above the floor,
    above `passes` times the residents the actor may legitimately cover, and above
    `factor` times their usual day. Work that any one of them explains does not alarm."""
    limbs = {
        "floor": floor,
        "jurisdiction": math.floor(passes * jurisdiction) + 1 if jurisdiction else 0,
        "history": math.floor(factor * usual) + 1 if usual else 0,
    }
    limb = max(limbs, key=lambda name: limbs[name])
    return limbs[limb], limb


def _p95(counts: Iterable[int]) -> int:
    ordered = sorted(counts)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0


@dataclass
class _Activity:
    """An actor in the short window."""

    organisation: str | None = None
    actor_kind: str = "client"
    residents: set[str] = field(default_factory=set)
    night: set[str] = field(default_factory=set)
    denials: int = 0
    decoys_probed: set[str] = field(default_factory=set)


@dataclass
class _Tally:
    """An actor's resident-reads over some hours."""

    organisation: str | None = None
    actor_kind: str = "client"
    reads: int = 0
    sensitive: int = 0

    def add(self, other: _Tally) -> None:
        self.organisation = other.organisation or self.organisation
        self.actor_kind = other.actor_kind
        self.reads += other.reads
        self.sensitive += other.sensitive


def _actor(user: str | None, client: str | None) -> tuple[str, str] | None:
    if user:
        return user, "user"
    if client:
        return client, "client"
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _watched() -> ColumnElement[bool]:
    return or_(AuditEntry.subject_type.is_(None), AuditEntry.subject_type.not_in(_UNWATCHED))


def _china_day(moment: datetime) -> datetime:
    return _aware(moment).astimezone(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)


def is_suspended(session: Session, user: str | None, client: str | None) -> bool:
    """Whether either identity of the caller is suspended pending review (one query)."""
    actors = [a for a in (user, client) if a]
    if not actors:
        return False
    found = session.scalars(
        select(Suspension.id).where(Suspension.actor.in_(actors), Suspension.lifted_at.is_(None))
    ).first()
    return found is not None


def active_suspensions(session: Session) -> list[Suspension]:
    """Every suspension not yet lifted, oldest first."""
    return list(
        session.scalars(
            select(Suspension)
            .where(Suspension.lifted_at.is_(None))
            .order_by(Suspension.created_at, Suspension.id)
        )
    )


def lift_suspension(
    session: Session,
    audit: AuditLog,
    actor: str,
    *,
    lifted_by: str,
    reason: str,
    channel: str = "api",
    subject_type: str = "auditor",
    alert_id: str | None = None,
) -> list[Suspension]:
    """End every open suspension of `actor`, in the caller's transaction, with one
    `suspension.lifted` entry naming who lifted it and why. Refuses (NotSuspended,
    ReasonRequired) before writing anything."""
    reason = " ".join(reason.split())
    if not LIFT_REASON_MIN <= len(reason) <= LIFT_REASON_MAX:
        raise ReasonRequired
    open_ = list(
        session.scalars(
            select(Suspension).where(Suspension.actor == actor, Suspension.lifted_at.is_(None))
        )
    )
    if not open_:
        raise NotSuspended(actor)
    now = utcnow()
    for suspension in open_:
        suspension.lifted_at = now
        suspension.lifted_by = lifted_by
    audit.record(
        session,
        [
            EntryDraft(
                action="suspension.lifted",
                outcome="allowed",
                channel=channel,
                kind="event",
                subject_type=subject_type,
                user=lifted_by,
                reason="lifted",
                details={
                    "actor": actor,
                    "actor_kind": open_[0].actor_kind,
                    "suspensions": [s.id for s in open_],
                    "alerts": sorted({s.alert_id for s in open_ if s.alert_id}),
                    "by": lifted_by,
                    "why": reason,
                    **({"review_of": alert_id} if alert_id else {}),
                },
            )
        ],
    )
    # The reason is the reviewer's own words, in the log; the service's log says only that.
    log.info("suspension.lifted", actor=actor, by=lifted_by, suspensions=len(open_))
    return open_


class Detector:
    def __init__(
        self, audit: AuditLog, rules: DetectionRules, sensitive_fields: Iterable[str]
    ) -> None:
        self.audit = audit
        self.rules = rules
        self.sensitive = frozenset(sensitive_fields)
        self._baselines: dict[str, Usual] = {}
        self._baseline_day: datetime | None = None
        self._hours: dict[datetime, dict[str, _Tally]] = {}
        self._sizes: dict[tuple[str, datetime], int] = {}

    # -- the short window ---------------------------------------------------------------------

    def _window(self, session: Session, start: datetime, end: datetime) -> dict[str, _Activity]:
        activity: dict[str, _Activity] = defaultdict(_Activity)
        # Columns, not entries: a scan's window holds every access of the last hours.
        rows = session.execute(
            select(
                AuditEntry.user,
                AuditEntry.client,
                AuditEntry.organisation,
                AuditEntry.kind,
                AuditEntry.outcome,
                AuditEntry.action,
                AuditEntry.resident_id,
                AuditEntry.recorded_at,
                AuditEntry.details,
            ).where(
                AuditEntry.recorded_at >= start,
                AuditEntry.recorded_at < end,
                AuditEntry.kind.in_(["access", "decoy"]),
                _watched(),
            )
        )
        for user, client, organisation, kind, outcome, action, resident, at, details in rows:
            who = _actor(user, client)
            if who is None:
                continue
            if kind == "decoy" or (details or {}).get("decoy"):
                # Decoy rows of an export are expected; a refused request naming one is not.
                if outcome == "denied" and resident:
                    probed = activity[who[0]]
                    probed.actor_kind, probed.organisation = who[1], organisation
                    probed.decoys_probed.add(resident)
                continue
            seen = activity[who[0]]
            seen.actor_kind, seen.organisation = who[1], organisation
            if outcome == "denied":
                seen.denials += 1
                continue
            if action not in _READS or not resident:
                continue
            seen.residents.add(resident)
            hour = _aware(at).astimezone(CHINA).hour
            if hour >= self.rules.night_start or hour < self.rules.night_end:
                seen.night.add(resident)
        return activity

    # -- resident-reads over the volume window ----------------------------------------------------

    def _clear_sensitive(self, fields: dict[str, str] | None) -> bool:
        return any((fields or {}).get(n) == "clear" for n in self.sensitive)

    def _tallies(self, session: Session, start: datetime, end: datetime) -> dict[str, _Tally]:
        tallies: dict[str, _Tally] = defaultdict(_Tally)
        # Only the time range in SQL: its index is the one to use (outcome's reads them all).
        rows = session.execute(
            select(
                AuditEntry.user,
                AuditEntry.client,
                AuditEntry.organisation,
                AuditEntry.fields,
                AuditEntry.kind,
                AuditEntry.outcome,
                AuditEntry.action,
                AuditEntry.resident_id,
                AuditEntry.subject_type,
            ).where(AuditEntry.recorded_at >= start, AuditEntry.recorded_at < end)
        )
        for user, client, organisation, fields, kind, outcome, action, resident, type_ in rows:
            who = _actor(user, client)
            if (
                who is None
                or kind != "access"
                or outcome != "allowed"
                or action not in _READS
                or not resident
                or type_ in _UNWATCHED
            ):
                continue
            tally = tallies[who[0]]
            tally.actor_kind, tally.organisation = who[1], organisation or tally.organisation
            tally.reads += 1
            if self._clear_sensitive(fields):
                tally.sensitive += 1
        return tallies

    def _volume(self, session: Session, end: datetime) -> tuple[dict[str, _Tally], datetime]:
        """Resident-reads per actor from the start of the hour `volume_window` back, to
        `end`. Settled hours are counted once and kept, so a scan every minute reads the
        log of the last hour or so, not of the whole day."""
        end = _aware(end)
        # The hour `end` falls in (the one before, when on the hour), and the hours before.
        hour = (end - timedelta(microseconds=1)).replace(minute=0, second=0, microsecond=0)
        first = hour - self.rules.volume_window + timedelta(hours=1)
        totals: dict[str, _Tally] = defaultdict(_Tally)
        slot = first
        while slot < end:
            slot_end = min(slot + timedelta(hours=1), end)
            cached = self._hours.get(slot)
            if cached is None:
                cached = self._tallies(session, slot, slot_end)
                if slot_end == slot + timedelta(hours=1) and slot_end <= end - _SETTLED:
                    self._hours[slot] = cached
            for actor, tally in cached.items():
                totals[actor].add(tally)
            slot += timedelta(hours=1)
        for old in [s for s in self._hours if s < first]:
            del self._hours[old]
        return totals, first

    def _usual(self, session: Session, actors: Sequence[str], before: datetime) -> dict[str, Usual]:
        """Each actor's usual day: the 95th percentile, over the days on which they read
        anything during the `baseline_days` before the day of `before` (China time), of
        their resident-reads (and of those with sensitive fields in clear). Only active days
        count, so a weekday worker is judged against their weekdays. Computed once a day,
        for every actor in the baseline at once (the baseline is read once, not once per
        actor who becomes busy later in the day)."""
        day = _china_day(before)
        if self._baseline_day != day:
            self._baselines = self._compute_usual(session, day)
            self._baseline_day = day
        return {a: self._baselines.get(a, Usual()) for a in actors}

    def _compute_usual(self, session: Session, before: datetime) -> dict[str, Usual]:
        start = before - timedelta(days=self.rules.baseline_days)
        reads: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        sensitive: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        rows = session.execute(
            select(
                AuditEntry.user,
                AuditEntry.client,
                AuditEntry.recorded_at,
                AuditEntry.fields,
                AuditEntry.kind,
                AuditEntry.outcome,
                AuditEntry.action,
                AuditEntry.resident_id,
            ).where(AuditEntry.recorded_at >= start, AuditEntry.recorded_at < before)
        )
        for user, client, recorded, fields, kind, outcome, action, resident in rows:
            who = user or client
            if (
                not who
                or kind != "access"
                or outcome != "allowed"
                or action not in _READS
                or not resident
            ):
                continue
            day = int((_aware(recorded) - start).total_seconds() // 86400)
            reads[who][day] += 1
            if self._clear_sensitive(fields):
                sensitive[who][day] += 1
        usual = {}
        for who, days in reads.items():
            # Days with reads but none sensitive count as zero-sensitive days.
            usual[who] = Usual(
                _p95(days.values()), _p95(sensitive.get(who, {}).get(d, 0) for d in days)
            )
        return usual

    # -- jurisdictions ------------------------------------------------------------------------

    def _jurisdictions(
        self, session: Session, actors: dict[str, _Tally], at: datetime
    ) -> dict[str, int]:
        """Active residents each actor may legitimately cover, from the vault's tables: a
        person's grids and buildings (their community's when they name neither), else the
        organisation's communities and buildings. Computed once per actor and hour."""
        hour = _aware(at).replace(minute=0, second=0, microsecond=0)
        missing = [a for a in actors if (a, hour) not in self._sizes]
        if missing:
            per_building = dict(
                session.execute(
                    select(Room.building_id, func.count(Resident.id))
                    .join(Household, Household.room_id == Room.id)
                    .join(Resident, Resident.household_id == Household.id)
                    .where(Resident.status == "active", Resident.is_decoy.is_(False))
                    .group_by(Room.building_id)
                ).all()
            )
            users = {
                u.username: u
                for u in session.scalars(
                    select(User).where(
                        User.username.in_([a for a in missing if actors[a].actor_kind == "user"])
                    )
                )
            }
            for actor in missing:
                buildings = self._buildings(session, users.get(actor), actors[actor].organisation)
                self._sizes[actor, hour] = sum(per_building.get(b, 0) for b in buildings)
            for old in [k for k in self._sizes if k[1] < hour]:
                del self._sizes[old]
        return {a: self._sizes[a, hour] for a in actors}

    @staticmethod
    def _buildings(session: Session, user: User | None, organisation: str | None) -> set[str]:
        area = (user.jurisdiction or {}) if user is not None else {}
        grids = list(area.get("grids") or ())
        named = list(area.get("buildings") or ())
        if grids or named:
            query = select(Building.id).where(
                or_(Building.grid_id.in_(grids), Building.id.in_(named))
            )
        elif area.get("community"):
            query = select(Building.id).where(Building.community_id == area["community"])
        elif organisation:
            communities = select(OrganisationCommunity.community_id).where(
                OrganisationCommunity.organisation_id == organisation
            )
            served = select(OrganisationBuilding.building_id).where(
                OrganisationBuilding.organisation_id == organisation
            )
            query = select(Building.id).where(
                or_(Building.community_id.in_(communities), Building.id.in_(served))
            )
        else:
            return set()
        return set(session.scalars(query))

    # -- scanning ------------------------------------------------------------------------------

    def scan(self, session: Session, now: datetime | None = None) -> list[RaisedAlert]:
        """One scan ending `now`, in the caller's transaction."""
        rules = self.rules
        end = _aware(now or utcnow())
        start = end - rules.window
        raised: list[RaisedAlert] = []
        for finding in [
            *self._volume_findings(session, end),
            *self._window_findings(session, start, end),
        ]:
            if self._already(session, finding.kind, finding.actor, finding.since):
                continue
            raised.append(self._raise(session, finding))
        return raised

    def _volume_findings(self, session: Session, end: datetime) -> list[_Finding]:
        rules = self.rules
        totals, first = self._volume(session, end)
        # Only actors past a floor can alert: their jurisdiction and history are looked up.
        least = min(rules.volume_floor, rules.sensitive_residents)
        busy = {a: t for a, t in totals.items() if t.reads >= least}
        if not busy:
            return []
        sizes = self._jurisdictions(session, busy, end)
        # The usual day is taken from the days before the one the window starts in: a
        # window reaching back past midnight must not count its own reads as usual.
        usual = self._usual(session, list(busy), first)
        hours = round((end - first).total_seconds() / 3600, 1)
        found = []
        for actor, tally in sorted(busy.items()):
            size, usual_of = sizes.get(actor, 0), usual.get(actor, Usual())
            for kind, observed, floor, baseline in (
                ("volume", tally.reads, rules.volume_floor, usual_of.residents),
                ("sensitive-bulk", tally.sensitive, rules.sensitive_residents, usual_of.sensitive),
            ):
                threshold, limb = volume_threshold(
                    floor, rules.jurisdiction_passes, size, rules.volume_factor, baseline
                )
                if observed < threshold:
                    continue
                values = {
                    "observed": observed,
                    "hours": hours,
                    "threshold": threshold,
                    "usual": baseline,
                    "baseline_days": rules.baseline_days,
                    "factor": rules.volume_factor,
                    "jurisdiction": size,
                    "passes": rules.jurisdiction_passes,
                    "floor": floor,
                }
                details = {**values, "window_hours": hours, "set_by": limb}
                found.append(
                    _Finding(kind, actor, (first, end), observed, threshold, details, tally, first)
                )
        return found

    def _window_findings(self, session: Session, start: datetime, end: datetime) -> list[_Finding]:
        rules = self.rules
        hours = round(rules.window.total_seconds() / 3600, 1)
        found = []
        for actor, seen in sorted(self._window(session, start, end).items()):
            who = _Tally(seen.organisation, seen.actor_kind)
            for kind, observed, threshold, extra in (
                ("repeated-denials", seen.denials, rules.denials, {}),
                ("off-hours", len(seen.night), rules.off_hours_residents, {}),
                (
                    "decoy-probe",
                    len(seen.decoys_probed),
                    rules.decoy_probes,
                    {"decoys": sorted(seen.decoys_probed)[:20]},
                ),
            ):
                if observed < threshold:
                    continue
                details = {"observed": observed, "hours": hours, "threshold": threshold, **extra}
                found.append(
                    _Finding(kind, actor, (start, end), observed, threshold, details, who, start)
                )
        return found

    def _already(self, session: Session, kind: str, actor: str, since: datetime) -> bool:
        return (
            session.scalars(
                select(AuditAlert.id).where(
                    AuditAlert.kind == kind,
                    AuditAlert.actor == actor,
                    AuditAlert.window_end > since,
                )
            ).first()
            is not None
        )

    def _raise(self, session: Session, found: _Finding) -> RaisedAlert:
        kind, actor, who = found.kind, found.actor, found.who
        message = _message(kind, found.details)
        now = utcnow()
        alert = AuditAlert(
            id=new_id("al"),
            kind=kind,
            actor=actor,
            actor_kind=who.actor_kind,
            organisation=who.organisation,
            window_start=found.window[0],
            window_end=found.window[1],
            observed=found.observed,
            threshold=found.threshold,
            details={
                **found.details,
                "message": {"id": message.id, "values": dict(message.values)},
            },
            created_at=now,
            status="open",
        )
        session.add(alert)
        suspend = kind in self.rules.suspend_on and not is_suspended(
            session,
            actor if who.actor_kind == "user" else None,
            actor if who.actor_kind == "client" else None,
        )
        drafts = [self._event("alert.raised", alert)]
        if suspend:
            session.add(
                Suspension(
                    id=new_id("su"),
                    actor=actor,
                    actor_kind=who.actor_kind,
                    alert_id=alert.id,
                    reason=f"alert:{kind}",
                    created_at=now,
                )
            )
            drafts.append(self._event("actor.suspended", alert))
        self.audit.record(session, drafts)
        log.warning(
            "alert.raised",
            alert=alert.id,
            kind=kind,
            actor=actor,
            organisation=who.organisation,
            observed=found.observed,
            threshold=found.threshold,
            jurisdiction=found.details.get("jurisdiction"),
            usual=found.details.get("usual"),
            suspended=suspend,
        )
        return RaisedAlert(
            alert.id,
            kind,
            actor,
            who.actor_kind,
            who.organisation,
            found.observed,
            found.threshold,
            suspend,
            message,
        )

    @staticmethod
    def _event(action: str, alert: AuditAlert) -> EntryDraft:
        who = {"user": alert.actor} if alert.actor_kind == "user" else {"client": alert.actor}
        return EntryDraft(
            action=action,
            outcome="allowed",
            channel="api",
            kind="event",
            organisation=alert.organisation,
            reason=alert.kind,
            details={"alert": alert.id, **alert.details, **who},
        )

    # -- review -----------------------------------------------------------------------------

    def review(
        self,
        session: Session,
        alert_id: str,
        reviewer: str,
        outcome: str,
        lift: bool,
        *,
        reason: str | None = None,
    ) -> AuditAlert | None:
        """Confirm or dismiss an alert; lifting ends the actor's suspension (with `reason`,
        or the review's outcome when none is given)."""
        alert = session.get(AuditAlert, alert_id)
        if alert is None:
            return None
        alert.status = outcome
        alert.reviewed_by = reviewer
        alert.reviewed_at = utcnow()
        lifted = False
        if lift and is_suspended(session, alert.actor, alert.actor):
            lift_suspension(
                session,
                self.audit,
                alert.actor,
                lifted_by=reviewer,
                reason=reason or f"alert {alert.id} reviewed: {outcome}",
                alert_id=alert.id,
            )
            lifted = True
        self.audit.record(
            session,
            [
                EntryDraft(
                    action="alert.reviewed",
                    outcome="allowed",
                    channel="api",
                    kind="event",
                    subject_type="auditor",
                    user=reviewer,
                    reason=outcome,
                    details={"alert": alert.id, "lifted": lifted, "actor": alert.actor},
                )
            ],
        )
        return alert


@dataclass(frozen=True)
class _Finding:
    kind: str
    actor: str
    window: tuple[datetime, datetime]
    observed: int
    threshold: int
    details: dict[str, Any]
    who: _Tally
    since: datetime  # an alert of this kind ending after it is the same alert


_RELATIVE = ("observed", "hours", "threshold", "usual", "baseline_days", "factor")
_MESSAGE_VALUES: dict[str, tuple[str, ...]] = {
    "volume": (*_RELATIVE, "jurisdiction", "passes", "floor"),
    "sensitive-bulk": (*_RELATIVE, "jurisdiction", "passes", "floor"),
    "repeated-denials": ("observed", "hours", "threshold"),
    "off-hours": ("observed", "hours", "threshold"),
    "decoy-probe": ("observed", "hours"),
}


def _message(kind: str, details: dict[str, Any]) -> Message:
    """What the alert saw, in the catalogue's words (`alert.<kind>`)."""
    return Message(f"alert.{kind}", {name: details[name] for name in _MESSAGE_VALUES[kind]})
