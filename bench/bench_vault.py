"""Vault core benchmark: envelope cost against bare AES-GCM, and import throughput.

Prints, in one run:
1. seal+open per field for our envelope (canonical JSON, AAD binding, versioned header)
   against bare `AESGCM` on the same plaintext bytes: ops/s and the ratio;
2. CSV import throughput (residents/s) through the real import path, on SQLite and, when
   a URL is given, PostgreSQL.

    python bench/bench_vault.py --residents 100000 \
        --postgres postgresql+psycopg://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.settings import Settings
from vault.catalogue import default_catalogue
from vault.context import init_vault
from vault.crypto import DataKey, Suite, new_key, open_field, seal_field
from vault.demo import create_hierarchy
from vault.importer import import_csv
from vault.services import Provenance, decode_value, encode_value
from vault.synthetic import make_household


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_envelope(rounds: int) -> None:
    rng = random.Random(1)
    people = [p for _ in range(20) for p in make_household(rng, address="示范区示范街道1号楼101室")]
    catalogue = default_catalogue()
    print(f"\n== seal+open per field, {rounds} rounds each ==")
    print(f"{'field':22} {'envelope/s':>12} {'SM4 env/s':>12} {'bare AESGCM/s':>14} {'ratio':>7}")
    total_env = total_bare = 0.0
    for spec in catalogue:
        values = [p[spec.name] for p in people if spec.name in p] or [""]
        plaintexts = [encode_value(v) for v in values]
        key = DataKey("r_bench", 1, Suite.AES_256_GCM, new_key(Suite.AES_256_GCM))
        sm4 = DataKey("r_bench", 1, Suite.SM4_GCM, new_key(Suite.SM4_GCM))
        start = time.perf_counter()
        for i in range(rounds):
            value = values[i % len(values)]
            decode_value(
                open_field(key, spec.name, seal_field(key, spec.name, encode_value(value)))
            )
        envelope = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(rounds):
            value = values[i % len(values)]
            decode_value(
                open_field(sm4, spec.name, seal_field(sm4, spec.name, encode_value(value)))
            )
        sm4_time = time.perf_counter() - start
        aead = AESGCM(key.key)
        start = time.perf_counter()
        for i in range(rounds):
            nonce = os.urandom(12)
            aead.decrypt(nonce, aead.encrypt(nonce, plaintexts[i % len(plaintexts)], None), None)
        bare = time.perf_counter() - start
        total_env += envelope
        total_bare += bare
        print(
            f"{spec.name:22} {_rate(rounds, envelope):12,.0f} {_rate(rounds, sm4_time):12,.0f} "
            f"{_rate(rounds, bare):14,.0f} {envelope / bare:7.2f}"
        )
    print(
        f"{'all fields':22} {_rate(rounds * len(catalogue.fields), total_env):12,.0f} "
        f"{'':12} {_rate(rounds * len(catalogue.fields), total_bare):14,.0f} "
        f"{total_env / total_bare:7.2f}"
    )


def write_csv(path: Path, residents: int, buildings: list[str]) -> None:
    rng = random.Random(7)
    catalogue = default_catalogue()
    columns = ["building_id", "unit", "room", "household", *catalogue.names]
    written = household = 0
    seen: set[str] = set()  # the generator repeats an ID number about once in 15,000
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        while written < residents:
            building = buildings[household % len(buildings)]
            room = f"{household // len(buildings) + 101}"
            for member in make_household(rng, address=f"示范区{building}{room}室"):
                if written >= residents:
                    break
                if member["id_number"] in seen:
                    continue
                seen.add(member["id_number"])
                row: dict[str, Any] = {
                    "building_id": building,
                    "unit": "1",
                    "room": room,
                    "household": f"h{household}",
                }
                for name, value in member.items():
                    row[name] = (
                        json.dumps(value, ensure_ascii=False)
                        if isinstance(value, list | dict)
                        else str(value).lower()
                        if isinstance(value, bool)
                        else value
                    )
                writer.writerow(row)
                written += 1
            household += 1


def bench_import(residents: int, label: str, database_url: str, workdir: Path) -> float:
    settings = Settings(home=workdir / f"home-{label}", database_url=database_url)
    vault = init_vault(settings)
    try:
        with vault.sessions() as session, session.begin():
            buildings = [b.id for b, _ in create_hierarchy(session)]
        path = workdir / "residents.csv"
        if not path.exists():
            write_csv(path, residents, buildings)
        start = time.perf_counter()
        with vault.sessions() as session, session.begin():
            report = import_csv(session, vault.store, path, Provenance("bench", "import"))
        elapsed = time.perf_counter() - start
        if not report.ok:
            print(f"import failed: {report.errors[:3]}", file=sys.stderr)
            sys.exit(1)
        rate = _rate(report.imported, elapsed)
        print(f"{label:12} {report.imported:>10,} residents {elapsed:9.1f} s {rate:10,.0f} /s")
        return rate
    finally:
        vault.close()


def _fresh_pg_database(url: str) -> tuple[str, str]:
    name = f"rv_bench_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("VAULT_BENCH_DATABASE_URL"))
    parser.add_argument("--skip-import", action="store_true")
    args = parser.parse_args()
    bench_envelope(args.rounds)
    if args.skip_import:
        return
    print(f"\n== CSV import of {args.residents:,} synthetic residents (validate, seal, index) ==")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sqlite_rate = bench_import(args.residents, "sqlite", f"sqlite:///{workdir}/v.db", workdir)
        if args.postgres:
            url, name = _fresh_pg_database(args.postgres)
            try:
                pg_rate = bench_import(args.residents, "postgresql", url, workdir)
                print(f"postgresql/sqlite ratio: {pg_rate / sqlite_rate:.2f}")
            finally:
                admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


if __name__ == "__main__":
    main()
