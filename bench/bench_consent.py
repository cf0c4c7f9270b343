"""Consent benchmark: revocation latency under concurrent reads, and the cost of checks.

Prints:
(a) time from a revocation's commit to the first refused read while reader threads keep
    reading the resident over HTTP (median and p95 over --trials trials). The revocation
    is committed in-process through the consent service, so its commit instant is known
    exactly; it also counts reads that *started* after the commit and still got data
    (must be 0).
(b) read throughput (single-resident GETs over HTTP, sequential) for the consent-based
    purpose `property-notice` (property company, consent look-up on every read) against
    the contract purpose `owners-vote` (owners' committee, 3 fields vs 2, no consent
    check) over the same buildings; and, in-process through the gate (no HTTP), list
    throughput of `property-notice` with the real consent look-up against a stub that
    says everyone consented (checks off), which isolates the look-up's cost.

The demo service runs in a thread of this process (tests/demo_server.py), on SQLite by
default or on --database-url. Small by design:

    python bench/bench_consent.py --residents 300 --trials 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from access.gate import Gate
from access.subjects import Access, Subject
from consent import Actor, ConsentCover, ConsentService, Grant
from tests.demo_server import DemoServer, run_demo_server
from vault.models import (
    Building,
    Household,
    OrganisationBuilding,
    Resident,
    Room,
)

COMPANY = "org_anju_property"
OWNERS = "org_oc_xingfu"
PURPOSE = "property-notice"


class EveryoneConsents:
    """Consent checks off: every resident covered for every field."""

    def consenting(
        self,
        session: Session,
        recipient: str,
        purpose: str,
        resident_ids: Sequence[str],
        fields: Sequence[str],
    ) -> dict[str, ConsentCover]:
        return {r: ConsentCover(("cn_stub",), frozenset(fields)) for r in resident_ids}


def xingfu_residents(server: DemoServer) -> list[str]:
    with server.runtime.vault.sessions() as session:
        return list(
            session.scalars(
                select(Resident.id)
                .join(Household, Household.id == Resident.household_id)
                .join(Room, Room.id == Household.room_id)
                .join(Building, Building.id == Room.building_id)
                .where(
                    Building.community_id == "cm_xingfu",
                    Resident.status == "active",
                    Resident.is_decoy.is_(False),
                )
                .order_by(Resident.id)
            )
        )


def grant_all(server: DemoServer, service: ConsentService, residents: list[str]) -> dict[str, str]:
    ids = {}
    with server.runtime.transaction() as session:
        for resident in residents:
            consent = service.grant(
                session,
                Grant(
                    resident_id=resident,
                    recipient=COMPANY,
                    purpose=PURPOSE,
                    channel="self",
                    recorded_by="bench",
                    separate=True,
                ),
            )
            ids[resident] = consent.id
    return ids


def revocation_latency(
    server: DemoServer, service: ConsentService, consents: dict[str, str], trials: int, readers: int
) -> tuple[list[float], int]:
    token = server.client_token(COMPANY)
    headers = {"Authorization": f"Bearer {token}", "Purpose": PURPOSE}
    latencies: list[float] = []
    violations = 0
    for resident, consent_id in list(consents.items())[:trials]:
        results: list[tuple[float, float, int]] = []
        stop = threading.Event()

        def reader(
            resident: str = resident, results: list[Any] = results, stop: threading.Event = stop
        ) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    status = client.get(f"/v1/residents/{resident}", headers=headers).status_code
                    results.append((started, time.monotonic(), status))

        threads = [threading.Thread(target=reader) for _ in range(readers)]
        for thread in threads:
            thread.start()
        time.sleep(0.15)
        with server.runtime.transaction() as session:
            service.revoke(session, consent_id, [resident], Actor("bench", "resident"))
        committed = time.monotonic()
        time.sleep(0.15)
        stop.set()
        for thread in threads:
            thread.join()
        refused = [done for started, done, status in results if status == 403]
        violations += sum(1 for s, _, status in results if s >= committed and status == 200)
        if refused:
            latencies.append(max(0.0, min(refused) - committed))
    return latencies, violations


def http_reads(server: DemoServer, token: str, purpose: str, residents: list[str]) -> float:
    headers = {"Authorization": f"Bearer {token}", "Purpose": purpose}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for resident in residents[:10]:  # warm up
            client.get(f"/v1/residents/{resident}", headers=headers)
        started = time.perf_counter()
        for resident in residents:
            response = client.get(f"/v1/residents/{resident}", headers=headers)
            if response.status_code != 200:
                raise RuntimeError(response.text)
        return len(residents) / (time.perf_counter() - started)


def gate_lists(server: DemoServer, gate: Gate, rounds: int) -> float:
    with server.runtime.vault.sessions() as session:
        buildings = tuple(
            session.scalars(
                select(OrganisationBuilding.building_id).where(
                    OrganisationBuilding.organisation_id == COMPANY
                )
            )
        )
    subject = Subject(
        type="property_company", organisation=COMPANY, buildings=buildings, client="bench"
    )
    rows = 0
    started = time.perf_counter()
    for _ in range(rounds):
        access = Access(subject=subject, purpose=PURPOSE, request_id="req_bench")
        rows += len(gate.list_residents(access, limit=200).items)
    return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--residents", type=int, default=300)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/vault.db"
        with run_demo_server(Path(tmp) / "home", url, args.residents) as server:
            service = ConsentService(server.runtime.vault.store, server.runtime.audit)
            residents = xingfu_residents(server)
            with server.runtime.vault.sessions() as session:
                already = set(service.consenting(session, COMPANY, PURPOSE, residents, ["phone"]))
            consents = grant_all(server, service, [r for r in residents if r not in already])
            print(f"residents in the company's buildings: {len(residents)}")

            # (b) first, while everyone consents
            company = server.client_token(COMPANY)
            owners = server.client_token(OWNERS)
            subset = residents[:150]
            consent_rps = http_reads(server, company, PURPOSE, subset)
            statutory_rps = http_reads(server, owners, "owners-vote", subset)
            print(
                f"(b) HTTP reads/s: property-notice (consent checked) {consent_rps:.0f}, "
                f"owners-vote (contract, no check) {statutory_rps:.0f}, "
                f"ratio {consent_rps / statutory_rps:.2f}"
            )
            engine = server.app.state.gate.engine
            on = gate_lists(server, Gate(server.runtime, engine, service), 20)
            off = gate_lists(server, Gate(server.runtime, engine, EveryoneConsents()), 20)
            print(
                f"(b) gate list rows/s, property-notice: checks on {on:.0f}, "
                f"off {off:.0f}, ratio on/off {on / off:.2f}"
            )

            # (a)
            latencies, violations = revocation_latency(
                server, service, consents, args.trials, args.readers
            )
            ms = sorted(x * 1000 for x in latencies)
            p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
            print(
                f"(a) revocation commit -> first refused read, {len(ms)} trials, "
                f"{args.readers} readers: median {statistics.median(ms):.1f} ms, "
                f"p95 {p95:.1f} ms, max {ms[-1]:.1f} ms; reads started after the commit "
                f"that still got data: {violations}"
            )


if __name__ == "__main__":
    main()
