"""Insider-abuse detection: patterns in the access log that look like a leak in progress.

A scan looks at one window of the log (the last hour by default) per actor (a person by
username, else a system by client id) and raises an alert when the actor

* reads far more distinct residents than their usual pattern (`volume`: above both a
  floor and a multiple of their own 95th-percentile window over the previous weeks),
* is refused again and again (`repeated-denials`: reading outside their jurisdiction or
  mandate, or probing pseudonyms),
* reads sensitive fields in clear for many residents (`sensitive-bulk`),
* works at unusual hours (`off-hours`: distinct residents read between 22:00 and 06:00
  China time),
* asks for a decoy (`decoy-probe`): decoys exist only as rows of fingerprinted exports,
  so a read or search naming one means someone is working from an exported file. That
  can be the recipient following up on its own export, so it alerts but, by default,
  does not suspend.

Alerts go to a table the auditor console reads, to the verifiable log as `alert.raised`
events, and to the structured log. Kinds named in `suspend_on` also suspend the actor
pending review: the gate then refuses them (`suspended`) until an auditor lifts it.
Everything here is HTTP-free; `api` runs scans in the background and on demand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from audit.log import AuditLog, EntryDraft
from audit.models import AuditAlert, AuditEntry, Suspension
from vault.models import new_id, utcnow

__all__ = ["ALERT_KINDS", "DetectionRules", "Detector", "RaisedAlert", "Usual", "is_suspended"]

log = structlog.get_logger(__name__)

CHINA = timezone(timedelta(hours=8))
ALERT_KINDS = ("volume", "repeated-denials", "sensitive-bulk", "off-hours", "decoy-probe")
_READS = ("read", "list", "search", "export")


@dataclass(frozen=True)
class DetectionRules:
    """Thresholds; every count is of distinct residents (or of refusals) per window."""

    window: timedelta = timedelta(hours=1)
    baseline_days: int = 14
    volume_floor: int = 50  # never alert below this many residents in a window
    volume_factor: float = 4.0  # ... nor below this multiple of the actor's usual p95
    denials: int = 15
    sensitive_residents: int = 50
    off_hours_residents: int = 25
    night_start: int = 22  # China time
    night_end: int = 6
    decoy_probes: int = 1  # decoys are fictional: one request naming one is a signal
    suspend_on: frozenset[str] = field(default_factory=lambda: frozenset({"volume"}))


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


@dataclass(frozen=True)
class Usual:
    """An actor's usual busy window: distinct residents, and those read with sensitive
    fields in clear (95th percentiles over their active windows)."""

    residents: int = 0
    sensitive: int = 0


def _p95(windows: dict[int, set[str]]) -> int:
    counts = sorted(len(s) for s in windows.values())
    return counts[min(len(counts) - 1, int(0.95 * len(counts)))] if counts else 0


@dataclass(frozen=True)
class _Finding:
    kind: str
    actor: str
    window: tuple[datetime, datetime]
    observed: int
    threshold: int
    extra: dict[str, Any]


@dataclass
class _Activity:
    organisation: str | None = None
    actor_kind: str = "client"
    residents: set[str] = field(default_factory=set)
    sensitive: set[str] = field(default_factory=set)
    night: set[str] = field(default_factory=set)
    denials: int = 0
    decoys_probed: set[str] = field(default_factory=set)


def _actor(entry: AuditEntry) -> tuple[str, str] | None:
    if entry.user:
        return entry.user, "user"
    if entry.client:
        return entry.client, "client"
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_suspended(session: Session, user: str | None, client: str | None) -> bool:
    """Whether either identity of the caller is suspended pending review (one query)."""
    actors = [a for a in (user, client) if a]
    if not actors:
        return False
    found = session.scalars(
        select(Suspension.id).where(Suspension.actor.in_(actors), Suspension.lifted_at.is_(None))
    ).first()
    return found is not None


class Detector:
    def __init__(
        self, audit: AuditLog, rules: DetectionRules, sensitive_fields: Iterable[str]
    ) -> None:
        self.audit = audit
        self.rules = rules
        self.sensitive = frozenset(sensitive_fields)
        self._baselines: dict[tuple[str, datetime], Usual] = {}

    # -- reading the log ---------------------------------------------------------------------

    def _window(self, session: Session, start: datetime, end: datetime) -> dict[str, _Activity]:
        activity: dict[str, _Activity] = defaultdict(_Activity)
        rows = session.scalars(
            select(AuditEntry).where(
                AuditEntry.recorded_at >= start,
                AuditEntry.recorded_at < end,
                AuditEntry.kind.in_(["access", "decoy"]),
                AuditEntry.subject_type.not_in(["resident", "operator", "auditor"]),
            )
        )
        for entry in rows:
            who = _actor(entry)
            if who is None:
                continue
            if entry.kind == "decoy" or (entry.details or {}).get("decoy"):
                # Decoy rows of an export are expected; a refused request naming one is not.
                if entry.outcome == "denied" and entry.resident_id:
                    probed = activity[who[0]]
                    probed.actor_kind, probed.organisation = who[1], entry.organisation
                    probed.decoys_probed.add(entry.resident_id)
                continue
            seen = activity[who[0]]
            seen.actor_kind, seen.organisation = who[1], entry.organisation
            if entry.outcome == "denied":
                seen.denials += 1
                continue
            if entry.action not in _READS or not entry.resident_id:
                continue
            seen.residents.add(entry.resident_id)
            if any(entry.fields.get(n) == "clear" for n in self.sensitive):
                seen.sensitive.add(entry.resident_id)
            hour = _aware(entry.recorded_at).astimezone(CHINA).hour
            if hour >= self.rules.night_start or hour < self.rules.night_end:
                seen.night.add(entry.resident_id)
        return activity

    def _usual(self, session: Session, actors: Sequence[str], before: datetime) -> dict[str, Usual]:
        """Each actor's usual busy window: the 95th percentile, over the windows in which
        they read anything during the `baseline_days` before the day of `before`, of the
        distinct residents (and of those with sensitive fields in clear) they read. Only
        active windows count, so a morning batch job is judged against its mornings.
        Computed once per actor and day: a scan every minute re-reads only its window."""
        day = _aware(before).astimezone(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
        missing = [a for a in actors if (a, day) not in self._baselines]
        if missing:
            for actor, value in self._compute_usual(session, missing, day).items():
                self._baselines[actor, day] = value
        return {a: self._baselines[a, day] for a in actors}

    def _compute_usual(
        self, session: Session, actors: Sequence[str], before: datetime
    ) -> dict[str, Usual]:
        rules = self.rules
        start = before - timedelta(days=rules.baseline_days)
        residents: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        sensitive: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        rows = session.execute(
            select(
                AuditEntry.user,
                AuditEntry.client,
                AuditEntry.resident_id,
                AuditEntry.recorded_at,
                AuditEntry.fields,
            ).where(
                AuditEntry.recorded_at >= start,
                AuditEntry.recorded_at < before,
                AuditEntry.kind == "access",
                AuditEntry.outcome == "allowed",
                AuditEntry.action.in_(_READS),
            )
        )
        wanted = set(actors)
        seconds = rules.window.total_seconds()
        for user, client, resident, recorded, fields in rows:
            who = user or client
            if who in wanted and resident:
                slot = int((_aware(recorded) - start).total_seconds() // seconds)
                residents[who][slot].add(resident)
                if any((fields or {}).get(n) == "clear" for n in self.sensitive):
                    sensitive[who][slot].add(resident)
        return {
            who: Usual(_p95(residents.get(who, {})), _p95(sensitive.get(who, {}))) for who in actors
        }

    # -- scanning ------------------------------------------------------------------------------

    def scan(self, session: Session, now: datetime | None = None) -> list[RaisedAlert]:
        """One scan of the window ending `now`, in the caller's transaction."""
        rules = self.rules
        end = now or utcnow()
        start = end - rules.window
        activity = self._window(session, start, end)
        usual = self._usual(session, [a for a, s in activity.items() if s.residents], start)
        raised: list[RaisedAlert] = []
        for actor, seen in sorted(activity.items()):
            usual_of = usual.get(actor, Usual())
            volume_line = max(rules.volume_floor, int(rules.volume_factor * usual_of.residents))
            sensitive_line = max(
                rules.sensitive_residents, int(rules.volume_factor * usual_of.sensitive)
            )
            checks: tuple[tuple[str, int, int, dict[str, Any]], ...] = (
                ("volume", len(seen.residents), volume_line, {"usual_p95": usual_of.residents}),
                ("repeated-denials", seen.denials, rules.denials, {}),
                (
                    "sensitive-bulk",
                    len(seen.sensitive),
                    sensitive_line,
                    {"usual_p95": usual_of.sensitive},
                ),
                ("off-hours", len(seen.night), rules.off_hours_residents, {}),
                (
                    "decoy-probe",
                    len(seen.decoys_probed),
                    rules.decoy_probes,
                    {"decoys": sorted(seen.decoys_probed)[:20]},
                ),
            )
            for kind, observed, threshold, extra in checks:
                if observed < threshold or self._already(session, kind, actor, start):
                    continue
                found = _Finding(kind, actor, (start, end), observed, threshold, extra)
                raised.append(self._raise(session, found, seen))
        return raised

    def _already(self, session: Session, kind: str, actor: str, start: datetime) -> bool:
        return (
            session.scalars(
                select(AuditAlert.id).where(
                    AuditAlert.kind == kind,
                    AuditAlert.actor == actor,
                    AuditAlert.window_end > start,
                )
            ).first()
            is not None
        )

    def _raise(self, session: Session, found: _Finding, seen: _Activity) -> RaisedAlert:
        kind, actor, window = found.kind, found.actor, found.window
        observed, threshold, extra = found.observed, found.threshold, found.extra
        now = utcnow()
        alert = AuditAlert(
            id=new_id("al"),
            kind=kind,
            actor=actor,
            actor_kind=seen.actor_kind,
            organisation=seen.organisation,
            window_start=window[0],
            window_end=window[1],
            observed=observed,
            threshold=threshold,
            details=extra,
            created_at=now,
            status="open",
        )
        session.add(alert)
        suspend = kind in self.rules.suspend_on and not is_suspended(
            session,
            actor if seen.actor_kind == "user" else None,
            actor if seen.actor_kind == "client" else None,
        )
        drafts = [self._event("alert.raised", alert)]
        if suspend:
            session.add(
                Suspension(
                    id=new_id("su"),
                    actor=actor,
                    actor_kind=seen.actor_kind,
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
            organisation=seen.organisation,
            observed=observed,
            threshold=threshold,
            suspended=suspend,
        )
        return RaisedAlert(
            alert.id,
            kind,
            actor,
            seen.actor_kind,
            seen.organisation,
            observed,
            threshold,
            suspend,
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
            details={
                "alert": alert.id,
                "observed": alert.observed,
                "threshold": alert.threshold,
                **who,
            },
        )

    # -- review -----------------------------------------------------------------------------

    def review(
        self, session: Session, alert_id: str, reviewer: str, outcome: str, lift: bool
    ) -> AuditAlert | None:
        """Confirm or dismiss an alert; lifting ends the actor's suspension."""
        alert = session.get(AuditAlert, alert_id)
        if alert is None:
            return None
        alert.status = outcome
        alert.reviewed_by = reviewer
        alert.reviewed_at = utcnow()
        if lift:
            for suspension in session.scalars(
                select(Suspension).where(
                    Suspension.actor == alert.actor, Suspension.lifted_at.is_(None)
                )
            ):
                suspension.lifted_at = alert.reviewed_at
                suspension.lifted_by = reviewer
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
                    details={"alert": alert.id, "lifted": lift, "actor": alert.actor},
                )
            ],
        )
        return alert
