"""Scale test on PostgreSQL: a million generated residents, and what they cost.

Five phases, each runnable alone (`--phase`), each printing its figures beside a baseline
measured in the same run, as a ratio:

1. import  residents/s through the CLI's real bulk path (CSV -> `vault.importer.import_csv`:
           validation, duplicate check on the blind index, envelope encryption, wrapped
           data keys, blind indexes, one audit entry per resident as `resident-vault import`
           writes them), one community (~10k residents) per committed batch; baseline: the
           same records as plain JSON rows in a plain table. Then the audit integrator.
2. read    GET /v1/residents/{id} through the whole service (uvicorn subprocess, one
           worker, OAuth client credentials, Purpose header, random residents), p50/p95/p99
           and reads/s at a fixed concurrency; baselines: the FastAPI floor route and the
           bypass route (token + row, no policy/crypto/audit).
3. export  rows/s of one community through GET /v1/exports/residents (fingerprinted,
           audited per row); baseline: a plain SELECT of the same residents' rows.
4. audit   bytes the audit tables grow per 10^6 access entries shaped like the gate's real
           read entries (sampled from phase 2), recorded with `AuditLog.record` in
           batches and integrated by the real integrator (checkpoint).
5. sizes   rows and bytes per table and index, bytes per resident.

It resumes: what is in the database is counted, and the rest is generated from the seed
(community k's people come from their own `Random(f"{seed}:{k}")`). Run outside CI:

    nice -n 10 python bench/bench_scale.py --residents 1000000 --phase import
    python bench/bench_scale.py --phase read      # and export, audit, sizes; or all

Two shards (`--shard 0/2`, then `--shard 1/2` once the first has printed its table header,
so that only one creates the keyring and the hierarchy) keep two cores busy. Run it from a
copy of the source (e.g. `git archive HEAD | tar -x -C /var/tmp/rv-scale/src`, then
`PYTHONPATH=.` there), so that edits in the checkout do not change a benchmark running for
an hour. docs/sizing.md has the figures of the last run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import json
import math
import os
import pstats
import random
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from access.runtime import Runtime, init_runtime, open_runtime
from api.oauth.service import register_client
from api.settings import Settings
from audit import EntryDraft
from audit.models import AuditEntry, AuditQueue
from vault.blind_index import digest, normalise_for_index
from vault.importer import import_csv
from vault.mandates import Mandate, grant_mandate
from vault.models import (
    BlindIndexEntry,
    Building,
    Community,
    Grid,
    Household,
    Organisation,
    OrganisationCommunity,
    Resident,
    ResidentRecord,
    Room,
    Street,
)
from vault.pseudonyms import Pseudonyms, is_pseudonym
from vault.purposes import RegisteredPurpose
from vault.services import Provenance
from vault.synthetic import make_household

HERE = Path(__file__).resolve().parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:55440/rv_scale_1m"
SEED = 20261202

# A district of streets of communities of about 10,000 people, each one import batch.
COMMUNITY_RESIDENTS = 10_000
COMMUNITIES_PER_STREET = 10
GRIDS_PER_COMMUNITY, BUILDINGS_PER_GRID = 10, 5
UNITS, FLOORS, ROOMS_PER_FLOOR = 2, 18, 2  # 72 rooms a building, 3,600 a community
DISTRICT = "示范区"

ORGANISATION = "org_civil_affairs"  # a department with jurisdiction over every community
PURPOSE = "subsidy-review"
CLIENT_SCOPES = ("residents:read",)
IMPORT_PURPOSE = "registration"
MANDATED = (PURPOSE, "community-statistics")
IMPORT_ACTOR = "cli:bench-scale"

PLAIN = MetaData()
# The baseline: each resident's same values as one unencrypted JSON row, no index but the key.
plain_residents = Table(
    "bench_plain_residents",
    PLAIN,
    Column("id", String(32), primary_key=True),
    Column("building_id", String(32)),
    Column("record", Text),
)
AUDIT_TABLES = ("audit_entries", "audit_leaves", "audit_tree_nodes", "audit_queue")


def stream_export(base: str, headers: dict[str, str], params: dict[str, str]) -> int:
    """Stream GET /v1/exports/residents to the end; the records it held."""
    exported = 0
    with httpx.stream(
        "GET", f"{base}/v1/exports/residents", headers=headers, params=params, timeout=3600
    ) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"export refused: {response.status_code} {response.text[:300]}")
        for line in response.iter_lines():
            exported += bool(line)
    return exported


def community_id(k: int) -> str:
    return f"cm_{k:04d}"


def building_ids(k: int) -> list[tuple[str, str]]:
    """(grid id, building id) of community k."""
    return [
        (f"gd_{k:04d}_{g:02d}", f"bd_{k:04d}_{g:02d}{b}")
        for g in range(GRIDS_PER_COMMUNITY)
        for b in range(BUILDINGS_PER_GRID)
    ]


# -- setting up -----------------------------------------------------------------------------


def ensure_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{parsed.database}"')


def settings_for(url: str, home: Path) -> Settings:
    return Settings(home=home, database_url=url)


def open_or_init(url: str, home: Path) -> Runtime:
    ensure_database(url)
    settings = settings_for(url, home)
    if settings.keyring_path.exists():
        return open_runtime(settings)
    runtime = init_runtime(settings)
    with runtime.vault.sessions() as session:
        if session.scalar(select(func.count()).select_from(Resident)):
            runtime.close()
            raise SystemExit(f"{url} has residents but {home} has no keyring: wrong --home?")
    return runtime


def ensure_hierarchy(runtime: Runtime, communities: int) -> None:
    """Streets, communities, grids and buildings for `communities` communities, and the
    organisation (with jurisdiction over all of them) the read and export phases act as."""
    with runtime.transaction() as session:
        have = set(session.scalars(select(Community.id)))
        streets = set(session.scalars(select(Street.id)))
        if session.get(Organisation, ORGANISATION) is None:
            session.add(
                Organisation(
                    id=ORGANISATION,
                    type="department",
                    name_zh="示范区民政局",
                    name_en="District Civil Affairs Bureau",
                    office_phone="0571-80000001",
                )
            )
        for k in range(communities):
            cid = community_id(k)
            if cid in have:
                continue
            street = f"st_{k // COMMUNITIES_PER_STREET:03d}"
            if street not in streets:
                n = k // COMMUNITIES_PER_STREET + 1
                session.add(Street(id=street, name=f"第{n}街道", district=DISTRICT))
                streets.add(street)
                session.flush()
            session.add(Community(id=cid, street_id=street, name=f"第{k + 1}社区"))
            session.flush()
            grids = {g for g, _ in building_ids(k)}
            session.add_all(
                Grid(id=g, community_id=cid, name=f"第{int(g[-2:]) + 1}网格") for g in sorted(grids)
            )
            session.flush()
            session.add_all(
                Building(id=b, community_id=cid, grid_id=g, name=f"{int(b[-3:]) + 1}号楼")
                for g, b in building_ids(k)
            )
            session.add(OrganisationCommunity(organisation_id=ORGANISATION, community_id=cid))
            session.flush()
        ensure_mandates(session)


def ensure_mandates(session: Session) -> None:
    """The organisation's mandates (policy grants nothing without one): every action of the
    read and statistics purposes, every field, as the demo's departments have them."""
    session.flush()
    for purpose in MANDATED:
        registered = session.get(RegisteredPurpose, purpose)
        in_force = session.scalar(
            select(Mandate.id).where(
                Mandate.organisation_id == ORGANISATION,
                Mandate.purpose == purpose,
                Mandate.revoked_at.is_(None),
            )
        )
        if registered is None or in_force is not None:
            continue
        grant_mandate(
            session,
            ORGANISATION,
            purpose,
            registered.definition["actions"],
            field_categories={},
            actor=IMPORT_ACTOR,
        )


def credentials(runtime: Runtime) -> dict[str, str]:
    """The benchmark organisation's client (made once; its secret kept in --home, 0600)."""
    path = runtime.settings.home / "scale-client.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    with runtime.transaction() as session:
        client_id, secret = register_client(
            session,
            runtime.audit,
            ORGANISATION,
            "confidential",
            CLIENT_SCOPES,
            (PURPOSE,),
            actor=IMPORT_ACTOR,
        )
    path.write_text(json.dumps({"client_id": client_id, "client_secret": secret or ""}))
    path.chmod(0o600)
    return {"client_id": client_id, "client_secret": secret or ""}


# -- phase 1: import ------------------------------------------------------------------------


def existing_residents(runtime: Runtime) -> tuple[int, set[str]]:
    """Real (not decoy) residents stored, and the communities that have them: a community
    is one transaction, so a community with any resident is complete."""
    with runtime.vault.sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Resident).where(Resident.is_decoy.is_(False))
        )
        done = set(
            session.scalars(
                select(Building.community_id)
                .join(Room, Room.building_id == Building.id)
                .join(Household, Household.room_id == Room.id)
                .join(Resident, Resident.household_id == Household.id)
                .where(Resident.is_decoy.is_(False))
                .distinct()
            )
        )
    return int(count or 0), done


def community_people(k: int, limit: int, seed: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Community k's households, room by room: (building, unit, room, person) rows."""
    rng = random.Random(f"{seed}:{k}")
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    for _, building in building_ids(k):
        for unit in range(1, UNITS + 1):
            for floor in range(1, FLOORS + 1):
                for door in range(1, ROOMS_PER_FLOOR + 1):
                    if len(rows) >= limit:
                        return rows
                    number = f"{floor}{door:02d}"
                    address = (
                        f"{DISTRICT}第{k // COMMUNITIES_PER_STREET + 1}街道第{k + 1}社区"
                        f"{int(building[-3:]) + 1}号楼{unit}单元{number}室"
                    )
                    for person in make_household(rng, address=address)[: limit - len(rows)]:
                        rows.append((building, str(unit), number, person))
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def drop_duplicates(
    runtime: Runtime, people: list[tuple[str, str, str, dict[str, Any]]]
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The generator repeats an ID number about once in 15,000 people; the importer refuses
    a file with a repeat or a stored one, so drop those people first (as populate does)."""
    store = runtime.vault.store
    spec = next(s for s in store.catalogue.searchable if s.validator == "gb11643")
    macs: dict[bytes, int] = {}
    keep: list[int] = []
    for i, (_, _, _, person) in enumerate(people):
        value = person.get(spec.name)
        if value is None:
            keep.append(i)
            continue
        mac = digest(store.keyring, spec, normalise_for_index(spec, str(value)))
        if mac not in macs:
            macs[mac] = i
            keep.append(i)
    stored: set[bytes] = set()
    with runtime.vault.sessions() as session:
        listed = list(macs)
        for start in range(0, len(listed), 1000):
            stored |= set(
                session.scalars(
                    select(BlindIndexEntry.digest).where(
                        BlindIndexEntry.field == spec.name,
                        BlindIndexEntry.digest.in_(listed[start : start + 1000]),
                    )
                )
            )
    dropped = {macs[m] for m in stored}
    return [people[i] for i in keep if i not in dropped]


def write_csv(runtime: Runtime, path: Path, people: Sequence[tuple[str, str, str, Any]]) -> None:
    names = list(runtime.vault.store.catalogue.names)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "building_id", "unit", "room"])
        for building, unit, room, person in people:
            writer.writerow(
                [_cell(person[n]) if n in person else "" for n in names] + [building, unit, room]
            )


def import_drafts(created: Sequence[tuple[str, list[str]]], source: str) -> list[EntryDraft]:
    """The entries `resident-vault import` writes (api.cli.main import_command)."""
    return [
        EntryDraft(
            action="create",
            outcome="allowed",
            channel="cli",
            kind="access",
            user=IMPORT_ACTOR,
            subject_type="operator",
            resident_id=rid,
            purpose=IMPORT_PURPOSE,
            fields=dict.fromkeys(names, "written"),
            details={"source": source},
        )
        for rid, names in created
    ]


class StoredMeanwhile(RuntimeError):
    """The importer refused only ID numbers already stored: with shards in parallel, another
    shard committed a person with one of them after `drop_duplicates` looked."""


def import_batch(runtime: Runtime, path: Path) -> int:
    provenance = Provenance(actor=IMPORT_ACTOR, channel="import")
    with runtime.transaction() as session:
        report = import_csv(session, runtime.vault.store, path, provenance)
        if not report.ok:
            first = report.errors[0]
            message = f"import refused: line {first.line}: {first.message('en')}"
            if all(e.column == "id_number" and "already" in e.message("en") for e in report.errors):
                raise StoredMeanwhile(message)
            raise RuntimeError(message)
        runtime.audit.record(session, import_drafts(report.created, path.name))
    return report.imported


def plain_batch(runtime: Runtime, people: Sequence[tuple[str, str, str, dict[str, Any]]]) -> None:
    rows = [
        {
            "id": f"p_{secrets.token_hex(8)}",
            "building_id": building,
            "record": json.dumps(person, ensure_ascii=False),
        }
        for building, _, _, person in people
    ]
    with runtime.vault.engine.begin() as connection:
        connection.execute(insert(plain_residents), rows)


def import_community(
    runtime: Runtime,
    k: int,
    path: Path,
    generated: list[tuple[str, str, str, dict[str, Any]]],
    limit: int,
    *,
    profiler: cProfile.Profile | None,
) -> tuple[int, list[tuple[str, str, str, dict[str, Any]]], float]:
    """Import community k's first `limit` people not yet stored: (imported, those people,
    when the import proper started)."""
    for attempt in range(1, 4):
        people = drop_duplicates(runtime, generated)[:limit]
        started = time.perf_counter()
        write_csv(runtime, path, people)
        if profiler is not None:
            profiler.enable()
        try:
            return import_batch(runtime, path), people, started
        except StoredMeanwhile as refused:
            if attempt == 3:
                raise
            # Nothing of the batch was stored; drop the now-stored people and try again.
            print(f"{community_id(k):>7} {refused}: again without them", flush=True)
        finally:
            if profiler is not None:
                profiler.disable()
    raise AssertionError("unreachable")


def phase_import(
    runtime: Runtime, residents: int, seed: int, profile: bool, shards: tuple[int, int]
) -> None:
    communities = math.ceil(residents / COMMUNITY_RESIDENTS)
    ensure_hierarchy(runtime, communities)
    credentials(runtime)
    PLAIN.create_all(runtime.vault.engine)
    count, done = existing_residents(runtime)
    print(
        f"\n== import: {count:,} residents stored, {len(done)} communities done,"
        f" target {residents:,} =="
    )
    print(
        f"{'batch':>7} {'residents':>9} {'gen s':>6} {'vault s':>8} {'vault/s':>8}"
        f" {'plain/s':>8} {'ratio':>6} {'stored':>10} {'ETA':>8}"
    )
    path = runtime.settings.home / f"import-batch-{shards[0]}-of-{shards[1]}.csv"
    totals = {"n": 0, "vault": 0.0, "plain": 0.0}
    started = time.monotonic()
    for k in range(communities):
        if community_id(k) in done or k % shards[1] != shards[0]:
            continue
        # Community k holds residents [k * C, (k + 1) * C) of the target: the same people
        # whatever was stored before, and shards of the import never overlap.
        limit = min(COMMUNITY_RESIDENTS, residents - k * COMMUNITY_RESIDENTS)
        t0 = time.perf_counter()
        generated = community_people(k, limit + limit // 50 + 10, seed)
        profiler = cProfile.Profile() if profile else None
        imported, people, t1 = import_community(
            runtime, k, path, generated, limit, profiler=profiler
        )
        t2 = time.perf_counter()
        plain_batch(runtime, people)
        t3 = time.perf_counter()
        count += imported
        totals["n"] += imported
        totals["vault"] += t2 - t1
        totals["plain"] += t3 - t2
        rate = totals["n"] / (time.monotonic() - started)
        eta = (residents - count) / rate / shards[1] if rate else 0
        print(
            f"{community_id(k):>7} {imported:9,} {t1 - t0:6.1f} {t2 - t1:8.1f}"
            f" {imported / (t2 - t1):8,.0f} {imported / (t3 - t2):8,.0f}"
            f" {(t3 - t2) / (t2 - t1):6.3f} {count:10,} {eta / 60:7.1f}m",
            flush=True,
        )
        if profiler is not None:
            print("\n-- cProfile of that batch (cumulative, top 30) --")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            print("-- (tottime, top 25) --")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            profile = False
    if totals["n"]:
        vault_rate = totals["n"] / totals["vault"]
        plain_rate = totals["n"] / totals["plain"]
        print(
            f"import: {totals['n']:,} residents, vault {vault_rate:,.0f}/s,"
            f" plain table {plain_rate:,.0f}/s, vault/plain = {vault_rate / plain_rate:.3f}"
        )
    integrate(runtime)


def integrate(runtime: Runtime) -> None:
    with runtime.vault.sessions() as session:
        pending = int(session.scalar(select(func.count()).select_from(AuditQueue)) or 0)
    if not pending:
        return
    print(f"\n== audit integration: {pending:,} entries queued ==", flush=True)
    start = time.perf_counter()
    runtime.audit.checkpoint(runtime.vault.sessions)
    elapsed = time.perf_counter() - start
    print(f"integrated {pending:,} in {elapsed:.1f} s = {pending / elapsed:,.0f} entries/s")


# -- the service in a subprocess ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The benchmark is one client reading fast and exporting in bulk: no rate limit, and no
# alert suspends it (the detector's first scan runs at start-up, then not for a day).
# Settings, not code: the same variables an operator would set (docs/configuration.md).
BENCH_ENV = {
    "VAULT_RATE_LIMIT_STANDARD": "100000000",
    "VAULT_RATE_LIMIT_SENSITIVE": "100000000",  # a read of all fields touches sensitive ones
    "VAULT_RATE_LIMIT_BULK": "100000",
    "VAULT_ALERT_SUSPEND_ON": "",
    "VAULT_ALERT_SCAN_SECONDS": "86400",
}


@contextmanager
def served(
    url: str,
    home: Path,
    *,
    script: str = "bench_scale_server.py",
    log_name: str = "server.log",
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One of our server scripts (uvicorn, one worker) in a process of its own, until the
    block ends: its base URL and its process."""
    port = _free_port()
    env = {
        **os.environ,
        "VAULT_HOME": str(home),
        "VAULT_DATABASE_URL": url,
        "VAULT_OAUTH_ISSUER": f"http://127.0.0.1:{port}",
        **BENCH_ENV,
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    log = (home / log_name).open("ab")
    process = subprocess.Popen(  # noqa: S603 - our own server script
        [sys.executable, str(HERE / script), str(port)],
        env=env,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"server did not start (see {home / log_name})")
            time.sleep(0.3)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextmanager
def service(url: str, home: Path) -> Iterator[str]:
    with served(url, home) as (base, _):
        yield base


def token(base: str, home: Path) -> str:
    client = json.loads((home / "scale-client.json").read_text())
    response = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "client_credentials", "scope": " ".join(CLIENT_SCOPES)},
        auth=(client["client_id"], client["client_secret"]),
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def random_residents(runtime: Runtime, n: int, seed: int) -> list[str]:
    with runtime.vault.sessions() as session:
        session.execute(text("SELECT setseed(:s)"), {"s": (seed % 1000) / 1000})
        return list(
            session.scalars(
                select(Resident.id)
                .where(Resident.is_decoy.is_(False), Resident.status == "active")
                .order_by(func.random())
                .limit(n)
            )
        )


def as_seen_by_caller(
    runtime: Runtime, base: str, headers: dict[str, str], ids: list[str]
) -> list[str]:
    """The ids the organisation knows residents by: its own pseudonyms when the policy
    makes it a pseudonymous recipient (a listing shows which), else vault ids."""
    listing = httpx.get(
        f"{base}/v1/residents", params={"limit": 1, "fields": "name"}, headers=headers, timeout=60
    )
    listing.raise_for_status()
    items = listing.json()["items"]
    if not items or not is_pseudonym(items[0]["resident_id"]):
        return ids
    pseudonyms = Pseudonyms(runtime.vault.keyring)
    return [pseudonyms.of(ORGANISATION, rid) for rid in ids]


# -- phase 2: reads -------------------------------------------------------------------------


@dataclass
class Load:
    count: int
    seconds: float
    latencies: list[float]
    errors: int

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000


async def _load(
    url: str, headers: dict[str, str], ids: list[str], concurrency: int, seconds: float
) -> Load:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        stop = start + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            n = offset
            while time.perf_counter() < stop:
                begin = time.perf_counter()
                response = await client.get(url.format(ids[n % len(ids)]))
                latencies.append(time.perf_counter() - begin)
                errors += response.status_code != 200
                n += concurrency

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    return Load(len(latencies), elapsed, latencies, errors)


def phase_read(runtime: Runtime, url: str, seconds: float, concurrency: int, seed: int) -> None:
    integrate(runtime)  # else the service's integrator would run during the measurement
    ids = random_residents(runtime, 50_000, seed)
    with runtime.vault.sessions() as session:
        total = session.scalar(
            select(func.count()).select_from(Resident).where(Resident.is_decoy.is_(False))
        )
    print(
        f"\n== single reads: {len(ids):,} random residents of {total:,},"
        f" {concurrency} connections, {seconds:.0f} s a route =="
    )
    with service(url, runtime.settings.home) as base:
        access = token(base, runtime.settings.home)
        headers = {"Authorization": f"Bearer {access}", "Purpose": PURPOSE}
        presented = as_seen_by_caller(runtime, base, headers, ids)
        routes = (
            ("floor", "/bench/floor/{}", ids),
            ("bypass", "/bench/raw/{}", ids),
            ("full", "/v1/residents/{}", presented),
            ("floor", "/bench/floor/{}", ids),  # again: how much the busy machine drifted
        )
        for _, path, keys in routes[:3]:  # warm up: connections, prepared statements, caches
            asyncio.run(_load(base + path, headers, keys[-500:], concurrency, 2))
        print(
            f"{'route':>7} {'reads/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
            f" {'errors':>6} {'floor/x':>8}"
        )
        floor_rate = 0.0
        for label, path, keys in routes:
            load = asyncio.run(_load(base + path, headers, keys, concurrency, seconds))
            rate = load.count / load.seconds
            floor_rate = floor_rate or rate
            print(
                f"{label:>7} {rate:8,.0f} {load.quantile(0.50):8.2f} {load.quantile(0.95):8.2f}"
                f" {load.quantile(0.99):8.2f} {load.errors:>6} {floor_rate / rate:8.1f}",
                flush=True,
            )
            if label == "full" and load.errors:
                probe = httpx.get(base + path.format(keys[0]), headers=headers)
                print(f"  e.g. {probe.status_code} {probe.text[:200]}")


# -- phase 3: export ------------------------------------------------------------------------


def phase_export(runtime: Runtime, url: str, community: str) -> None:
    integrate(runtime)
    with runtime.vault.engine.connect() as connection:
        start = time.perf_counter()
        rows = connection.execute(
            select(
                Resident.id,
                ResidentRecord.doc_l1,
                ResidentRecord.doc_l2,
                ResidentRecord.doc_l3,
                ResidentRecord.doc_l4,
            )
            .join(Household, Household.id == Resident.household_id)
            .join(Room, Room.id == Household.room_id)
            .join(Building, Building.id == Room.building_id)
            .join(ResidentRecord, ResidentRecord.resident_id == Resident.id)
            .where(Building.community_id == community, Resident.is_decoy.is_(False))
        ).all()
        plain_seconds = time.perf_counter() - start
    plain_residents_n = len({r[0] for r in rows})
    print(f"\n== bulk export of {community} ({plain_residents_n:,} residents) ==")
    with service(url, runtime.settings.home) as base:
        access = token(base, runtime.settings.home)
        headers = {
            "Authorization": f"Bearer {access}",
            "Purpose": PURPOSE,
            "Justification": "bench-scale",
        }
        start = time.perf_counter()
        exported = stream_export(base, headers, {"format": "ndjson", "community": community})
        export_seconds = time.perf_counter() - start
    export_rate = exported / export_seconds
    plain_rate = plain_residents_n / plain_seconds
    print(
        f"export API   {exported:9,} rows in {export_seconds:7.1f} s = {export_rate:9,.0f} rows/s"
        " (decrypted, fingerprinted, one audit entry each, decoys included)"
    )
    print(
        f"plain SELECT {plain_residents_n:9,} residents ({len(rows):,} field rows) in"
        f" {plain_seconds:7.2f} s = {plain_rate:9,.0f} residents/s"
    )
    print(f"plain/export = {plain_rate / export_rate:.1f}")


# -- phase 4: audit growth ------------------------------------------------------------------


def audit_bytes(runtime: Runtime) -> dict[str, dict[str, int]]:
    """Heap, index and TOAST bytes of each audit table, partitions summed."""
    return audit_bytes_of(runtime.vault.engine)


def audit_bytes_of(engine: Engine) -> dict[str, dict[str, int]]:
    """audit_bytes of the database an engine connects to (PostgreSQL)."""
    sizes: dict[str, dict[str, int]] = {}
    with engine.connect() as connection:
        for table in AUDIT_TABLES:
            # pg_partition_tree lists a partitioned table's partitions, and nothing for a
            # plain table: then the table is its own only relation.
            row = connection.execute(
                text(
                    "WITH rels AS (SELECT relid FROM pg_partition_tree(CAST(:t AS regclass))"
                    " UNION SELECT CAST(:t AS regclass)) SELECT"
                    " coalesce(sum(pg_relation_size(relid)), 0),"
                    " coalesce(sum(pg_indexes_size(relid)), 0),"
                    " coalesce(sum(pg_total_relation_size(relid)), 0),"
                    " count(*) FILTER (WHERE pg_relation_size(relid) > 0) FROM rels"
                ),
                {"t": table},
            ).one()
            heap, indexes, total, relations = (int(v) for v in row)
            sizes[table] = {
                "heap": heap,
                "indexes": indexes,
                "toast": total - heap - indexes,
                "total": total,
                "relations": relations,
            }
    return sizes


def audit_count(runtime: Runtime) -> int:
    with runtime.vault.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def sampled_read_entries(runtime: Runtime) -> list[AuditEntry]:
    with runtime.vault.sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(
                    AuditEntry.action == "read",
                    AuditEntry.channel == "api",
                    AuditEntry.outcome == "allowed",
                    AuditEntry.kind == "access",
                )
                .order_by(AuditEntry.recorded_at.desc())
                .limit(200)
            )
        )


def _like(given: str | None, prefix: str, hex_chars: int) -> str | None:
    if given is None:
        return None
    return f"{prefix}{secrets.token_hex(hex_chars // 2)}"


def draft_like(sample: AuditEntry, resident_id: str) -> EntryDraft:
    """A new read entry of the sample's shape: same caller, purpose, fields and decision
    it reused; a new resident, request and decision id (as each request has its own)."""
    return EntryDraft(
        action=sample.action,
        outcome=sample.outcome,
        channel=sample.channel,
        kind=sample.kind,
        subject_type=sample.subject_type,
        organisation=sample.organisation,
        client=sample.client,
        user=sample.user,
        on_behalf_of=sample.on_behalf_of,
        purpose=sample.purpose,
        legal_basis=sample.legal_basis,
        consent_id=sample.consent_id,
        resident_id=resident_id,
        resident_pseudonym=sample.resident_pseudonym,
        fields=dict(sample.fields),
        decision_id=f"dec_{uuid.uuid4().hex}",
        evaluation_id=sample.evaluation_id,
        policy_revision=sample.policy_revision,
        request_id=_like(sample.request_id, "req_", 32),
        reason=sample.reason,
        details=dict(sample.details),
    )


def phase_audit(runtime: Runtime, entries: int, batch: int, seed: int) -> None:
    integrate(runtime)
    samples = sampled_read_entries(runtime)
    if not samples:
        raise SystemExit("no read entries to sample: run --phase read first")
    state_path = runtime.settings.home / "audit-phase.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        print(f"\n== audit growth: resuming (started at {state['entries']:,} entries) ==")
    else:
        state = {"entries": audit_count(runtime), "sizes": audit_bytes(runtime), "target": entries}
        state_path.write_text(json.dumps(state))
        print(f"\n== audit growth: {entries:,} read entries from {len(samples)} real ones ==")
    entries = state["target"]
    ids = random_residents(runtime, 100_000, seed + 1)
    rng = random.Random(seed)
    done = audit_count(runtime) - state["entries"]
    record_seconds = 0.0
    written = 0
    while done < entries:
        n = min(batch, entries - done)
        drafts = [draft_like(rng.choice(samples), rng.choice(ids)) for _ in range(n)]
        start = time.perf_counter()
        with runtime.transaction() as session:
            runtime.audit.record(session, drafts)
        record_seconds += time.perf_counter() - start
        done += n
        written += n
        if done % (batch * 10) == 0 or done >= entries:
            print(f"  {done:10,} recorded ({written / record_seconds:,.0f}/s this run)", flush=True)
    start = time.perf_counter()
    runtime.audit.checkpoint(runtime.vault.sessions)
    integrate_seconds = time.perf_counter() - start
    if written:
        print(
            f"record {written / record_seconds:,.0f} entries/s;"
            f" integrate {entries / integrate_seconds:,.0f} entries/s (this run's queue)"
        )
    after = audit_bytes(runtime)
    per_million = 1_000_000 / entries
    print(
        f"{'table':>17} {'part.':>5} {'heap MB':>9} {'index MB':>9} {'toast MB':>9} {'B/entry':>8}"
    )
    total = 0
    for table in AUDIT_TABLES:
        grown = {
            k: after[table][k] - state["sizes"][table][k]
            for k in ("heap", "indexes", "toast", "total")
        }
        total += grown["total"]
        print(
            f"{table:>17} {after[table]['relations']:5} {grown['heap'] * per_million / 2**20:9.1f}"
            f" {grown['indexes'] * per_million / 2**20:9.1f}"
            f" {grown['toast'] * per_million / 2**20:9.1f} {grown['total'] / entries:8.0f}"
        )
    print(
        f"per 10^6 accesses: {total * per_million / 2**20:,.0f} MiB"
        f" ({total / entries:,.0f} B an entry, all four tables, indexes included)"
    )
    state_path.rename(state_path.with_suffix(f".done-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"))


# -- phase 5: sizes -------------------------------------------------------------------------


def phase_sizes(runtime: Runtime) -> None:
    with runtime.vault.engine.connect() as connection:
        residents = int(
            connection.scalar(text("SELECT count(*) FROM residents WHERE NOT is_decoy")) or 0
        )
        tables = connection.execute(
            text(
                "SELECT c.oid, c.relname, pg_relation_size(c.oid),"
                " pg_indexes_size(c.oid), pg_total_relation_size(c.oid)"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 5 DESC"
            )
        ).all()
        indexes = connection.execute(
            text(
                "SELECT t.relname, i.relname, pg_relation_size(i.oid) FROM pg_index x"
                " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
                " JOIN pg_namespace n ON n.oid = t.relnamespace"
                " WHERE n.nspname = 'public' AND t.relkind = 'r' ORDER BY 3 DESC"
            )
        ).all()
        counts = {
            name: int(connection.scalar(text(f'SELECT count(*) FROM "{name}"')) or 0)  # noqa: S608
            for _, name, *_ in tables
        }
        database = int(connection.scalar(text("SELECT pg_database_size(current_database())")) or 0)
    print(f"\n== sizes at {residents:,} residents ==")
    print(
        f"{'table':>34} {'rows':>12} {'heap MB':>9} {'index MB':>9} {'toast MB':>8}"
        f" {'total MB':>9} {'B/resident':>10}"
    )
    vault_total = 0
    for _, name, heap, index, total in tables:
        if name != plain_residents.name:
            vault_total += total
        if total < 1 << 20 and counts[name] < 1000:
            continue
        print(
            f"{name:>34} {counts[name]:12,} {heap / 2**20:9.1f} {index / 2**20:9.1f}"
            f" {(total - heap - index) / 2**20:8.1f} {total / 2**20:9.1f}"
            f" {total / max(residents, 1):10,.0f}"
        )
    print("\nindexes over 1 MiB:")
    for table, name, size in indexes:
        if size >= 1 << 20:
            print(
                f"  {table:>32}.{name:<48} {size / 2**20:9.1f} MB"
                f" {size / max(residents, 1):7.0f} B/resident"
            )
    plain = next((t for t in tables if t[1] == plain_residents.name), None)
    print(
        f"\nvault tables: {vault_total / 2**30:.2f} GiB = {vault_total / max(residents, 1):,.0f}"
        f" B/resident; database {database / 2**30:.2f} GiB"
    )
    if plain is not None and counts[plain_residents.name]:
        per_plain = plain[4] / counts[plain_residents.name]
        print(
            f"plain JSON table: {per_plain:,.0f} B/resident;"
            f" vault/plain = {vault_total / max(residents, 1) / per_plain:.1f}"
        )


def machine_load() -> str:
    """The machine's load average: the figures are only comparable with it beside them
    (other processes share the cores, and the baselines run on the same ones)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} cores"


# -- main -----------------------------------------------------------------------------------


def _shard(value: str) -> tuple[int, int]:
    index, _, count = value.partition("/")
    shard = (int(index), int(count or 1))
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError("I/N with 0 <= I < N")
    return shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--phase", choices=("import", "read", "export", "audit", "sizes", "all"), default="all"
    )
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--home", type=Path, help="keyring and client secret (default per db)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--seconds", type=float, default=20.0, help="per read route")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--community", default=community_id(0), help="community to export")
    parser.add_argument("--audit-entries", type=int, default=1_000_000)
    parser.add_argument("--audit-batch", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the first batch")
    parser.add_argument(
        "--shard", type=_shard, default=(0, 1), help="I/N: import communities k with k %% N == I"
    )
    args = parser.parse_args()
    database = make_url(args.database_url).database or "db"
    # A benchmark's working directory (keyring, client secret), kept between runs.
    home: Path = args.home or Path("/var/tmp/rv-scale") / database  # noqa: S108
    home.mkdir(parents=True, exist_ok=True)
    runtime = open_or_init(args.database_url, home)
    print(f"database {database}, home {home}, {datetime.now(UTC).isoformat(timespec='seconds')}")
    try:
        every = ("import", "read", "export", "audit", "sizes")
        phases = every if args.phase == "all" else (args.phase,)
        for phase in phases:
            print(f"\n[{phase} starts at {datetime.now(UTC):%H:%M:%S} UTC; {machine_load()}]")
            start = time.monotonic()
            if phase == "import":
                phase_import(runtime, args.residents, args.seed, args.profile, args.shard)
            elif phase == "read":
                phase_read(runtime, args.database_url, args.seconds, args.concurrency, args.seed)
            elif phase == "export":
                phase_export(runtime, args.database_url, args.community)
            elif phase == "audit":
                phase_audit(runtime, args.audit_entries, args.audit_batch, args.seed)
            else:
                phase_sizes(runtime)
            print(f"({phase}: {time.monotonic() - start:,.0f} s; {machine_load()})", flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
