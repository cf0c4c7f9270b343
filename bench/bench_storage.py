"""Storage layout benchmark: bytes per resident and read_many throughput (issue 20).

Uses only the public `ResidentStore` interface, so the same script measures any checkout:
run it from this tree, and from the tree before the one-row-per-resident layout with
`--save`, then here with `--compare` to print ours against before and the ratio.

    PYTHONPATH=/work/main python bench/bench_storage.py --residents 10000 --save before.json
    PYTHONPATH=. python bench/bench_storage.py --residents 10000 --compare before.json

Bytes per resident: the database's size (every table and index but the audit log's) over
the residents stored. PostgreSQL when `--postgres URL` names a server (a scratch database
is created there and dropped), else SQLite.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from api.settings import Settings
from vault.context import Vault, init_vault
from vault.services import NewResident, Provenance
from vault.synthetic import make_household

AUDIT_PREFIXES = ("audit_",)


@contextmanager
def scratch_url(postgres: str | None, home: Path) -> Iterator[str]:
    if postgres is None:
        yield f"sqlite:///{home / 'bench.db'}"
        return
    name = f"rv_bench_{secrets.token_hex(4)}"
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def people(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    found: list[dict[str, Any]] = []
    while len(found) < n:
        found += make_household(rng, address="示范区示范街道1号楼101室")
    return found[:n]


def database_bytes(engine: Engine) -> int:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            return int(
                connection.scalar(
                    text(
                        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
                        " AND c.relname NOT LIKE 'audit\\_%'"
                    )
                )
                or 0
            )
        rows = connection.execute(text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")).all()
        return sum(int(size) for name, size in rows if not str(name).startswith(AUDIT_PREFIXES))


def measure(vault: Vault, n: int, seed: int, rounds: int) -> dict[str, float]:
    records = people(n, seed)
    provenance = Provenance("bench", "import")
    start = time.perf_counter()
    ids: list[str] = []
    with vault.sessions() as session, session.begin():
        for i in range(0, n, 1000):
            ids += vault.store.create_many(
                session, [NewResident(r) for r in records[i : i + 1000]], provenance
            )
    created = time.perf_counter() - start
    size = database_bytes(vault.engine)
    best_all = best_two = float("inf")
    for _ in range(rounds):
        vault.store.data_keys.cache.clear()
        with vault.sessions() as session:
            start = time.perf_counter()
            everything = vault.store.read_many(session, ids)
            best_all = min(best_all, time.perf_counter() - start)
        if len(everything) != n:
            raise SystemExit(f"read {len(everything)} of {n} residents")
        vault.store.data_keys.cache.clear()
        with vault.sessions() as session:
            start = time.perf_counter()
            vault.store.read_many(session, ids, ["name", "phone"])
            best_two = min(best_two, time.perf_counter() - start)
    return {
        "residents": n,
        "bytes_per_resident": size / n,
        "create_per_s": n / created,
        "read_all_per_s": n / best_all,
        "read_two_fields_per_s": n / best_two,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (else SQLite)")
    parser.add_argument("--save", type=Path, help="write the figures here (JSON)")
    parser.add_argument("--compare", type=Path, help="figures of before, from --save")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_url(args.postgres, Path(tmp)) as url:
        vault = init_vault(Settings(home=Path(tmp) / "home", database_url=url))
        try:
            figures = measure(vault, args.residents, args.seed, args.rounds)
        finally:
            vault.close()
    database = "postgresql" if args.postgres else "sqlite"
    figures_out = {"database": database, **figures}
    if args.save:
        args.save.write_text(json.dumps(figures_out, indent=2), encoding="utf-8")
    before = json.loads(args.compare.read_text(encoding="utf-8")) if args.compare else None
    print(f"== storage, {args.residents:,} residents, {database} ==")
    print(f"{'':24} {'ours':>12}" + (f" {'before':>12} {'ratio':>8}" if before else ""))
    for name, value in figures.items():
        if name == "residents":
            continue
        line = f"{name:24} {value:12,.1f}"
        if before:
            line += f" {before[name]:12,.1f} {value / before[name]:8.2f}"
        print(line)


if __name__ == "__main__":
    main()
