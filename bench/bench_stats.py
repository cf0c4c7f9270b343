"""Statistics query time with and without differential privacy, beside a plain SQL COUNT.

Builds a demo street of N generated residents (default 10,000) in a temporary SQLite
vault, then times, through `access.stats.service.StatsService` (policy decision, decryption of the
measure's field in batches, disclosure control, audit entry):
- a suppressed query (`disability` by building: decrypts one field per resident),
- the same with Laplace noise, and with Gaussian noise (OpenDP),
- `residents` by building (no decryption),
against the baseline: the same residents counted by building with one SQL GROUP BY.

    python bench/bench_stats.py [--residents 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from access.gate import Gate
from access.runtime import init_runtime
from access.settings import StatsSettings
from access.stats.service import StatsService
from access.stats.tables import residents_query
from access.subjects import Access, organisation_subject
from api.http.app import policy_engine
from api.settings import Settings
from policies.district import follow_district
from vault.demo import populate
from vault.models import Building


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--residents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home / "home", database_url=f"sqlite:///{home / 'v.db'}")
        runtime = init_runtime(settings)
        started = time.perf_counter()
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, args.residents)
        print(f"{args.residents} residents generated in {time.perf_counter() - started:.1f} s")
        # As the service wires it: decisions read the district's mandates from the database.
        gate = Gate(runtime, follow_district(policy_engine(settings), runtime.vault.sessions))
        service = StatsService(gate, StatsSettings(epsilon_per_month=1e9, max_epsilon=1.0))
        with runtime.vault.sessions() as session:
            subject = organisation_subject(session, "org_civil_affairs")

        def access() -> Access:
            return Access(subject, "community-statistics", f"req_{uuid.uuid4().hex}")

        def baseline() -> None:
            with runtime.vault.sessions() as session:
                inner = residents_query().subquery()
                session.execute(
                    select(inner.columns[2], func.count()).group_by(inner.columns[2])
                ).all()

        cases: list[tuple[str, Callable[[], object]]] = [
            ("baseline: SQL COUNT ... GROUP BY building", baseline),
            (
                "residents by building, suppressed",
                lambda: service.query(access(), "residents", "building"),
            ),
            (
                "disability by building, suppressed",
                lambda: service.query(access(), "disability", "building"),
            ),
            (
                "disability by building, Laplace (OpenDP)",
                lambda: service.query(
                    access(), "disability", "building", noise="laplace", epsilon=0.5
                ),
            ),
            (
                "disability by building, Gaussian (OpenDP)",
                lambda: service.query(
                    access(), "disability", "building", noise="gaussian", epsilon=0.5
                ),
            ),
            (
                "age-bands by building, suppressed",
                lambda: service.query(access(), "age-bands", "building"),
            ),
        ]
        base = None
        print(f"{'query':48} {'median ms':>10} {'x baseline':>11}")
        for name, fn in cases:
            seconds = timed(fn, args.repeat)
            base = base or seconds
            print(f"{name:48} {seconds * 1000:10.1f} {seconds / base:11.1f}")
        with runtime.vault.sessions() as session:
            buildings = session.scalar(select(func.count()).select_from(Building))
        print(f"({buildings} buildings; median of {args.repeat} runs)")
        runtime.close()


if __name__ == "__main__":
    main()
