"""Insider-abuse detection on a synthetic month: false alerts, a caught scraper, scan cost.

Why: an alert nobody believes is worse than none. This generates a month of normal access
(grid and community workers reading residents in working hours with day-to-day variation,
some overtime and evening calls, departments' morning batch jobs, the odd refusal), scans
it hour by hour with the default rules, and prints:

1. false alerts per actor-day over the last 16 days (the first 14 are the baseline);
2. whether a scraper planted on day 25 (one worker reading 5x their usual day, in an
   afternoon) is caught;
3. the median time of one scan beside a baseline: one COUNT over the same window.

    python bench/bench_detection.py                 # 30 workers, 8 systems, 30 days
    python bench/bench_detection.py --workers 100 --seed 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    import audit  # noqa: F401 - only to find out whether the package is importable
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
from sqlalchemy import func, insert, select

from access.runtime import init_runtime
from api.settings import Settings
from audit.detection import CHINA, DetectionRules, Detector
from audit.encoding import ENTRY_COLUMN_NAMES
from audit.models import AuditEntry

SENSITIVE = ["health_conditions", "low_income_status", "id_number"]


def _row(
    n: int, at: datetime, actor: dict[str, Any], resident: str, outcome: str
) -> dict[str, Any]:
    person = actor["kind"] == "user"
    row: dict[str, Any] = {
        "entry_id": f"e_{n:09d}",
        "recorded_at": at,
        "kind": "access",
        "action": "read" if person else "list",
        "outcome": outcome,
        "channel": "api",
        "subject_type": actor["type"],
        "organisation": actor["org"],
        "user": actor["name"] if person else None,
        "client": "cl_pages" if person else actor["name"],
        "purpose": actor["purpose"],
        "resident_id": resident if outcome == "allowed" else None,
        "fields": actor["fields"] if outcome == "allowed" else {},
        "details": {},
        "reason": None if outcome == "allowed" else "not-found",
    }
    for column in ENTRY_COLUMN_NAMES:
        row.setdefault(column, None)
    return row


def _actors(rng: random.Random, workers: int, systems: int) -> list[dict[str, Any]]:
    actors = []
    for i in range(workers):
        counter = i % 3 == 0  # community workers at the counter see welfare in clear
        actors.append(
            {
                "kind": "user",
                "name": f"worker-{i:03d}",
                "org": f"org_rc_{i % 4}",
                "type": "community_worker" if counter else "grid_worker",
                "purpose": "counter-service" if counter else "grid-service",
                "fields": {"name": "clear", "low_income_status": "clear" if counter else "masked"},
                "rate": rng.uniform(4, 35),  # distinct residents per working hour, on average
                "residents": [f"r_{i:04d}{j:012d}" for j in range(600)],
            }
        )
    for i in range(systems):
        actors.append(
            {
                "kind": "client",
                "name": f"cl_dept_{i}",
                "org": f"org_dept_{i}",
                "type": "department",
                "purpose": "subsidy-review",
                "fields": {"name": "clear", "low_income_status": "clear"},
                "rate": rng.uniform(80, 140),  # a morning batch job
                "residents": [f"r_d{i:03d}{j:012d}" for j in range(3000)],
            }
        )
    return actors


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is fine for the small means here; a normal approximation above 30.
    if mean > 30:
        return max(0, round(rng.gauss(mean, mean**0.5)))
    limit, k, p = 2.718281828459045 ** (-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def generate(
    runtime: Any,
    actors: list[dict[str, Any]],
    *,
    days: int,
    start: datetime,
    rng: random.Random,
    scraper_day: int,
) -> datetime:
    """Insert the month; return the hour the scraper started."""
    n = 0
    scraper = actors[0]
    scraped_at = start + timedelta(days=scraper_day, hours=13)
    for day in range(days):
        rows: list[dict[str, Any]] = []
        base = start + timedelta(days=day)
        weekend = base.astimezone(CHINA).weekday() >= 5
        for actor in actors:
            person = actor["kind"] == "user"
            busy = rng.uniform(0.6, 1.4)  # some days are busier than others
            if person:
                hours = list(range(8, 18)) if not weekend or rng.random() < 0.15 else []
                if rng.random() < 0.1:
                    hours += [18, 19]  # overtime
                if rng.random() < 0.05:
                    hours += [21, 22]  # an evening call-out
            else:
                hours = [9] if not weekend else []
            for hour in hours:
                at_hour = base + timedelta(hours=hour)
                count = _poisson(rng, actor["rate"] * busy * (0.4 if hour >= 18 else 1))
                for resident in rng.sample(actor["residents"], min(count, 600)):
                    at = at_hour + timedelta(seconds=rng.uniform(0, 3599))
                    rows.append(_row(n, at, actor, resident, "allowed"))
                    n += 1
                for _ in range(_poisson(rng, 0.15)):  # a mistyped id now and then
                    rows.append(_row(n, at_hour + timedelta(minutes=5), actor, "", "denied"))
                    n += 1
        if day == scraper_day:  # the planted attack: four usual days more, in five hours
            for resident in rng.choices(scraper["residents"], k=int(scraper["rate"] * 40)):
                at = scraped_at + timedelta(seconds=rng.uniform(0, 5 * 3600 - 1))
                rows.append(_row(n, at, scraper, resident, "allowed"))
                n += 1
        with runtime.transaction() as session:
            session.execute(insert(AuditEntry), rows)
    return scraped_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=30)
    parser.add_argument("--systems", type=int, default=8)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # alerts: counted
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), database_url=f"sqlite:///{home}/v.db")
        runtime = init_runtime(settings)
        # Midnight China time, days ago, so every scan window lies in the past.
        start = (
            datetime.now(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
            - timedelta(days=args.days)
        ).astimezone(UTC)
        actors = _actors(rng, args.workers, args.systems)
        began = time.perf_counter()
        scraped_at = generate(
            runtime, actors, days=args.days, start=start, rng=rng, scraper_day=args.days - 5
        )
        with runtime.vault.sessions() as session:
            total = session.scalar(select(func.count()).select_from(AuditEntry))
        print(
            f"generated {total:,} entries for {len(actors)} actors over {args.days} days "
            f"in {time.perf_counter() - began:.1f} s"
        )
        rules = DetectionRules(suspend_on=frozenset())
        detector = Detector(runtime.audit, rules, SENSITIVE)
        first = start + timedelta(days=rules.baseline_days)
        scans, baseline_times, alerts = [], [], []
        moment = first + timedelta(hours=1)
        while moment <= start + timedelta(days=args.days):
            with runtime.transaction() as session:
                t = time.perf_counter()
                alerts += [(moment, a) for a in detector.scan(session, moment)]
                scans.append(time.perf_counter() - t)
                t = time.perf_counter()
                session.scalar(
                    select(func.count())
                    .select_from(AuditEntry)
                    .where(
                        AuditEntry.recorded_at >= moment - rules.window,
                        AuditEntry.recorded_at < moment,
                    )
                )
                baseline_times.append(time.perf_counter() - t)
            moment += timedelta(hours=1)
        runtime.close()
    window_end = scraped_at + timedelta(hours=5)
    caught = [
        a
        for m, a in alerts
        if a.actor == actors[0]["name"] and scraped_at < m <= window_end + rules.volume_window
    ]
    false = [a for m, a in alerts if a not in caught]
    actor_days = len(actors) * (args.days - rules.baseline_days)
    print(f"scans: {len(scans)} (hourly, days {rules.baseline_days + 1}-{args.days})")
    print(
        f"false alerts: {len(false)} over {actor_days} actor-days = "
        f"{len(false) / actor_days:.4f} per actor-day; by kind: "
        f"{dict(Counter(a.kind for a in false)) or '{}'}"
    )
    verdict = "caught: " + ", ".join(a.kind for a in caught) if caught else "MISSED"
    scale = actors[0]["rate"] * 50
    print(f"planted scraper ({actors[0]['name']}, ~{scale:.0f} resident-reads in a day): {verdict}")
    scan_ms = statistics.median(scans) * 1000
    base_ms = statistics.median(baseline_times) * 1000
    print(f"{'one scan (median)':<28} {scan_ms:8.2f} ms")
    print(f"{'COUNT over the window':<28} {base_ms:8.2f} ms   ratio {scan_ms / base_ms:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
