"""One normal working day for every demo role, then an insider: what detection says of each.

Why: an alert that suspends normal work is switched off within a week, and then it
catches nobody. This plays a day through the real gate (in process, SQLite, the embedded
policy engine, no network) on the demo street with several workers per grid:

* every grid worker lists their grid twice and reads a third of it one by one;
* the community worker lists the community;
* each department exports once, with a justification (civil affairs, health), or lists
  its mandate (public security);
* the owners' committee lists the owners for a vote, each property company lists its
  buildings for a notice;

after 14 days of history like it (written straight into the log: the log only ever
writes the present). The day is then scanned with the default rules, and a plain
baseline beside them: the fixed floor the old default applied (50 residents in one hour
suspends). Then one grid worker scrapes five times their usual day, and the scan runs again.

    python bench/normal_day.py                      # 240 residents, 3 workers per grid
    python bench/normal_day.py --residents 600 --workers-per-grid 4
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    import audit  # only to find out whether the package is importable
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
from sqlalchemy import insert, select

import audit.log
from access.gate import Gate
from access.runtime import init_runtime
from access.subjects import Access, subject_for
from access.views import EVERYWHERE
from api.http.app import create_app
from api.oauth.service import WORKER_PURPOSES, create_demo_accounts, create_user
from api.settings import Settings
from audit.detection import CHINA, Detector, RaisedAlert
from audit.encoding import ENTRY_COLUMN_NAMES
from audit.models import AuditEntry, Suspension
from vault.demo import populate
from vault.models import Building, Grid, Household, OrganisationCommunity, Resident, Room

HISTORY_DAYS = 14
OLD_FLOOR = 50  # the old default: this many residents read in one hour raised a volume alert


@dataclass(frozen=True)
class Caller:
    """Who calls, as a verified token would say (access.subjects.Caller)."""

    client_id: str
    username: str | None
    organisation: str | None


@dataclass
class Actor:
    name: str  # username, else client id
    role: str
    caller: Caller
    purpose: str
    residents: list[str]  # the residents their jurisdiction or mandate covers
    export: bool = False
    justification: str | None = None


def _residents_by(session: Any, column: Any) -> dict[str, list[str]]:
    rows = session.execute(
        select(column, Resident.id)
        .join(Room, Room.building_id == Building.id)
        .join(Household, Household.room_id == Room.id)
        .join(Resident, Resident.household_id == Household.id)
        .where(Resident.status == "active", Resident.is_decoy.is_(False))
        .order_by(Resident.id)
    ).all()
    grouped: dict[str, list[str]] = defaultdict(list)
    for key, resident in rows:
        grouped[key].append(resident)
    return grouped


def cast(runtime: Any, credentials: dict[str, Any], workers_per_grid: int) -> list[Actor]:
    """Every demo role, with more grid workers than the demo's one per grid."""
    actors: list[Actor] = []
    with runtime.transaction() as session:
        by_grid = _residents_by(session, Building.grid_id)
        by_community = _residents_by(session, Building.community_id)
        by_building = _residents_by(session, Building.id)
        committee = dict(
            session.execute(
                select(
                    OrganisationCommunity.community_id, OrganisationCommunity.organisation_id
                ).where(OrganisationCommunity.organisation_id.like("org_rc_%"))
            ).all()
        )
        for grid in session.scalars(select(Grid).order_by(Grid.id)):
            buildings = list(
                session.scalars(select(Building.id).where(Building.grid_id == grid.id))
            )
            for k in range(1, workers_per_grid + 1):
                username = f"bench.{grid.id}.{k}"
                create_user(
                    session,
                    runtime.audit,
                    username=username,
                    password=secrets.token_urlsafe(12),
                    role="grid_worker",
                    organisation_id=committee[grid.community_id],
                    jurisdiction={
                        "community": grid.community_id,
                        "grids": [grid.id],
                        "buildings": buildings,
                    },
                    purposes=list(WORKER_PURPOSES),
                    actor="bench",
                )
                actors.append(
                    Actor(
                        username,
                        "grid_worker",
                        Caller("cl_pages", username, committee[grid.community_id]),
                        "grid-service",
                        by_grid[grid.id],
                    )
                )
        community = next(u for u in credentials["users"] if u["role"] == "community_worker")
        actors.append(
            Actor(
                community["username"],
                "community_worker",
                Caller("cl_pages", community["username"], community.get("organisation")),
                "counter-service",
                by_community[community["jurisdiction"]["community"]],
            )
        )
        everyone = sorted(r for rs in by_community.values() for r in rs)
        plans = {
            "org_civil_affairs": ("subsidy-review", True),
            "org_health": ("public-health-followup", True),
            "org_public_security": ("household-registration-check", False),
            "org_oc_xingfu": ("owners-vote", False),
            "org_anju_property": ("property-notice", False),
            "org_yijia_property": ("property-notice", False),
        }
        for client in credentials["clients"]:
            plan = plans.get(client["organisation"])
            if plan is None:
                continue
            subject = subject_for(
                session, Caller(client["client_id"], None, client["organisation"])
            )
            covered = (
                sorted(r for b in subject.buildings for r in by_building.get(b, []))
                if subject.buildings
                else everyone
            )
            actors.append(
                Actor(
                    client["client_id"],
                    client["organisation_type"],
                    Caller(client["client_id"], None, client["organisation"]),
                    plan[0],
                    covered,
                    export=plan[1],
                    justification="quarterly review of the whole caseload" if plan[1] else None,
                )
            )
    return actors


def _access(gate: Gate, actor: Actor) -> Access:
    with gate.runtime.vault.sessions() as session:
        subject = subject_for(session, actor.caller)
    return Access(
        subject,
        actor.purpose,
        request_id=f"req_{uuid.uuid4().hex[:16]}",
        justification=actor.justification,
    )


def list_all(gate: Gate, actor: Actor) -> int:
    """One list of everything in scope, page after page (each page its own request)."""
    shown, cursor = 0, None
    while True:
        listing = gate.list_residents(_access(gate, actor), limit=100, cursor=cursor)
        shown += len(listing.items)
        cursor = listing.next_cursor
        if cursor is None:
            return shown


def export_all(gate: Gate, actor: Actor) -> int:
    _, batches, summary = gate.export(_access(gate, actor), place=EVERYWHERE)
    for _ in batches:
        pass
    return summary["rows"]


def read_some(gate: Gate, actor: Actor, residents: list[str]) -> int:
    for resident in residents:
        gate.read(_access(gate, actor), resident)
    return len(residents)


def play_day(gate: Gate, actors: list[Actor], rng: random.Random) -> None:
    for actor in actors:
        if actor.role == "grid_worker":
            list_all(gate, actor)
            read_some(gate, actor, rng.sample(actor.residents, len(actor.residents) // 3))
            list_all(gate, actor)
        elif actor.export:
            export_all(gate, actor)
        else:
            list_all(gate, actor)


def _row(n: int, at: datetime, actor: Actor, action: str, resident: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "entry_id": f"e_hist_{n:09d}",
        "recorded_at": at,
        "kind": "access",
        "action": action,
        "outcome": "allowed",
        "channel": "api",
        "subject_type": actor.role,
        "organisation": actor.caller.organisation,
        "user": actor.caller.username,
        "client": actor.caller.client_id,
        "purpose": actor.purpose,
        "resident_id": resident,
        "fields": {"name": "clear"},
        "details": {},
    }
    for column in ENTRY_COLUMN_NAMES:
        row.setdefault(column, None)
    return row


def history(runtime: Any, actors: list[Actor], day: datetime, rng: random.Random) -> None:
    """The 14 working days before `day`, like it: workers list their grid once or twice and
    read some of it; departments export about once a fortnight; the others list weekly."""
    rows: list[dict[str, Any]] = []
    for back in range(1, HISTORY_DAYS + 1):
        at = day - timedelta(days=back) + timedelta(hours=10)
        weekday = at.astimezone(CHINA).weekday() < 5
        for actor in actors:
            if actor.role in ("grid_worker", "community_worker") and weekday:
                passes = rng.choice((1, 2)) if actor.role == "grid_worker" else 1
                reads = actor.residents * passes + rng.sample(
                    actor.residents, int(len(actor.residents) * rng.uniform(0.1, 0.5))
                )
                rows += [_row(len(rows) + i, at, actor, "list", r) for i, r in enumerate(reads)]
            elif back == 7 and not actor.export:
                reads = list(actor.residents)
                rows += [_row(len(rows) + i, at, actor, "list", r) for i, r in enumerate(reads)]
    with runtime.transaction() as session:
        for start in range(0, len(rows), 5000):
            session.execute(insert(AuditEntry), rows[start : start + 5000])


class Clock:
    """The log's clock during the played day: a working day, whatever the hour this runs
    at (the log stamps each entry itself, and never lets an entry's time change)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def at(self, moment: datetime) -> None:
        self.offset = moment - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def old_floor(runtime: Any, start: datetime, end: datetime) -> dict[str, int]:
    """The plain baseline: the most distinct residents each actor read in one clock hour."""
    hours: dict[str, dict[datetime, set[str]]] = defaultdict(lambda: defaultdict(set))
    with runtime.vault.sessions() as session:
        for user, client, resident, recorded in session.execute(
            select(
                AuditEntry.user, AuditEntry.client, AuditEntry.resident_id, AuditEntry.recorded_at
            ).where(
                AuditEntry.recorded_at >= start,
                AuditEntry.recorded_at < end,
                AuditEntry.kind == "access",
                AuditEntry.outcome == "allowed",
                AuditEntry.resident_id.is_not(None),
            )
        ):
            hour = recorded.replace(minute=0, second=0, microsecond=0)
            hours[user or client][hour].add(resident)
    return {a: max(len(s) for s in h.values()) for a, h in hours.items()}


def day_reads(runtime: Any, start: datetime, end: datetime) -> Counter[str]:
    with runtime.vault.sessions() as session:
        return Counter(
            user or client
            for user, client in session.execute(
                select(AuditEntry.user, AuditEntry.client).where(
                    AuditEntry.recorded_at >= start,
                    AuditEntry.recorded_at < end,
                    AuditEntry.kind == "access",
                    AuditEntry.outcome == "allowed",
                    AuditEntry.resident_id.is_not(None),
                )
            )
        )


def scan(runtime: Any, detector: Detector, at: datetime) -> list[RaisedAlert]:
    with runtime.transaction() as session:
        return detector.scan(session, at)


def table(
    actors: list[Actor],
    reads: Counter[str],
    alerts: list[RaisedAlert],
    floor: dict[str, int],
    suspended: set[str],
) -> None:
    by_actor: dict[str, list[RaisedAlert]] = defaultdict(list)
    for alert in alerts:
        by_actor[alert.actor].append(alert)
    head = (
        f"{'actor':<26} {'role':<18} {'covers':>6} {'reads':>6} {'alerts':<24} "
        f"{'suspended':<9} | {'fixed floor (old)':<17}"
    )
    print(head)
    print("-" * len(head))
    for actor in actors:
        kinds = ",".join(sorted(a.kind for a in by_actor[actor.name])) or "-"
        old = floor.get(actor.name, 0)
        shown = actor.caller.organisation if actor.caller.username is None else actor.name
        print(
            f"{(shown or actor.name)[:26]:<26} {actor.role:<18} {len(actor.residents):>6} "
            f"{reads[actor.name]:>6} {kinds:<24} {'yes' if actor.name in suspended else 'no':<9} | "
            f"{'suspended' if old >= OLD_FLOOR else 'no':<9} ({old}/h)"
        )


def suspended_now(runtime: Any) -> set[str]:
    with runtime.vault.sessions() as session:
        return set(session.scalars(select(Suspension.actor).where(Suspension.lifted_at.is_(None))))


def insider_day(
    runtime: Any, gate: Gate, detector: Detector, insider: Actor, *, day: datetime, clock: Clock
) -> tuple[int, list[RaisedAlert], bool]:
    """One grid worker reads five times their usual day, one by one, after the evening's
    scan (the log's hours are counted once they are past, as in service)."""
    evening = (day + timedelta(hours=18)).astimezone(UTC)
    start = evening - timedelta(hours=24)
    with runtime.vault.sessions() as session:
        usual = detector._usual(session, [insider.name], evening)[insider.name].residents
    target = 5 * usual - day_reads(runtime, start, evening)[insider.name]
    reads = (insider.residents * (target // len(insider.residents) + 1))[:target]
    clock.at(evening + timedelta(minutes=10))
    read_some(gate, insider, reads)
    later = evening + timedelta(hours=1)
    caught = [a for a in scan(runtime, detector, later) if a.actor == insider.name]
    print(f"\nthe insider ({insider.name}, usual day {usual} resident-reads)")
    print(f"{'':<26} {'reads':>6} {'alerts':<24} {'suspended':<9} | {'fixed floor (old)':<17}")
    old = old_floor(runtime, start, later).get(insider.name, 0)
    suspended = insider.name in suspended_now(runtime)
    kinds = ",".join(a.kind for a in caught) or "-"
    print(
        f"{'scraper, 5x the usual day':<26} {day_reads(runtime, start, later)[insider.name]:>6} "
        f"{kinds:<24} {'yes' if suspended else 'no':<9} | "
        f"{'suspended' if old >= OLD_FLOOR else 'no'} ({old}/h)"
    )
    for alert in caught:
        print(f"  {alert.kind}: {alert.message.text('en')}")
        print(f"  {alert.kind}: {alert.message.text('zh')}")
    return usual, caught, suspended


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=240)
    parser.add_argument("--workers-per-grid", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # stdout: figures
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), database_url=f"sqlite:///{home}/v.db")
        runtime = init_runtime(settings)
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, args.residents)
        with runtime.transaction() as session:
            credentials = create_demo_accounts(session, runtime)
        runtime.close()
        app = create_app(settings, background=False)
        structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # stdout: figures
        gate: Gate = app.state.gate
        runtime = app.state.runtime
        detector: Detector = app.state.detector  # the service's own, on the default rules
        actors = cast(runtime, credentials, args.workers_per_grid)
        # Yesterday, China time: the day starts at 09:00 and is scanned at 18:00.
        midnight = datetime.now(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
        day = midnight - timedelta(days=1)
        history(runtime, actors, day.astimezone(UTC), rng)
        clock = Clock()
        audit.log.utcnow = clock  # type: ignore[assignment]
        clock.at((day + timedelta(hours=9)).astimezone(UTC))
        play_day(gate, actors, rng)
        evening = (day + timedelta(hours=18)).astimezone(UTC)
        start = evening - timedelta(hours=24)
        alerts = scan(runtime, detector, evening)
        normal = suspended_now(runtime)
        rules = detector.rules
        print(
            f"{args.residents} residents, {len(actors)} actors, {HISTORY_DAYS} days of history; "
            f"default rules: floor {rules.volume_floor}, {rules.jurisdiction_passes} passes over "
            f"the jurisdiction, {rules.volume_factor} x the usual day, over "
            f"{rules.volume_window.total_seconds() / 3600:.0f} h"
        )
        print("\nthe normal day")
        reads = day_reads(runtime, start, evening)
        table(actors, reads, alerts, old_floor(runtime, start, evening), normal)
        insider = next(a for a in actors if a.role == "grid_worker")
        _, _, caught = insider_day(runtime, gate, detector, insider, day=day, clock=clock)
        print(
            f"\nnormal day: {len(normal)} suspensions, {len(alerts)} alerts; "
            f"scraper: {'suspended' if caught else 'NOT suspended'}"
        )
        runtime.close()
    return 0 if not normal and caught else 1


if __name__ == "__main__":
    sys.exit(main())
