"""Statistics query time from tokens, beside a plain SQL GROUP BY and the decrypting path.

Builds a demo street of N generated residents (default 10,000) in a temporary vault
(SQLite, or an empty database at `--database-url`), then times whole queries through
`access.stats.service.StatsService` (policy decision, counting, disclosure control, audit
entry):
- `disability` by community and by building, suppressed: counted from the field's
  statistics tokens with one GROUP BY, nothing decrypted (vault/stat_tokens.py),
- the same with Laplace noise, and with Gaussian noise (OpenDP),
- `low-income-households` by community (distinct households per token),
- `residents` by building (structure only),
- `disability` by building with its tokens marked incomplete: the decrypting path a vault
  takes until `resident-vault stats backfill` has run (what every query cost before),
against the baseline: the same residents counted by building with one plain SQL GROUP BY.
`ratio` is a query's median over the baseline's.

    python bench/bench_stats.py [--residents 10000] [--repeat 5] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select, update

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
from vault.stat_tokens import StatTokenField


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: the policy engine's first decision, the token keys' derivation
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
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        url = args.database_url or f"sqlite:///{home / 'v.db'}"
        settings = Settings(home=home / "home", database_url=url)
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
                inner = residents_query(lambda residents: residents.active).subquery()
                session.execute(
                    select(inner.columns[2], func.count()).group_by(inner.columns[2])
                ).all()

        def decrypting() -> None:
            with runtime.transaction() as session:
                session.execute(update(StatTokenField).values(complete=False))
            try:
                service.query(access(), "disability", "building")
            finally:
                with runtime.transaction() as session:
                    session.execute(update(StatTokenField).values(complete=True))

        cases: list[tuple[str, Callable[[], object]]] = [
            ("baseline: SQL COUNT ... GROUP BY building", baseline),
            (
                "disability by community, tokens",
                lambda: service.query(access(), "disability", "community"),
            ),
            (
                "disability by building, tokens",
                lambda: service.query(access(), "disability", "building"),
            ),
            (
                "disability by building, tokens, Laplace",
                lambda: service.query(
                    access(), "disability", "building", noise="laplace", epsilon=0.5
                ),
            ),
            (
                "disability by building, tokens, Gaussian",
                lambda: service.query(
                    access(), "disability", "building", noise="gaussian", epsilon=0.5
                ),
            ),
            (
                "low-income households by community, tokens",
                lambda: service.query(access(), "low-income-households", "community"),
            ),
            (
                "residents by building (structure only)",
                lambda: service.query(access(), "residents", "building"),
            ),
            ("disability by building, decrypting (no tokens)", decrypting),
        ]
        base = None
        print(f"{'query':50} {'median ms':>10} {'ratio':>7}")
        for name, fn in cases:
            seconds = timed(fn, args.repeat)
            base = base or seconds
            print(f"{name:50} {seconds * 1000:10.1f} {seconds / base:7.1f}")
        with runtime.vault.sessions() as session:
            buildings = session.scalar(select(func.count()).select_from(Building))
        print(f"({buildings} buildings; median of {args.repeat} runs after one warm-up)")
        runtime.close()


if __name__ == "__main__":
    main()
