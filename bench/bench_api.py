"""Resident API benchmark: the full read path against the same path with policy and
decryption bypassed, bulk export throughput, and policy decision times.

Prints, in one run:
1. single-resident reads/s and p50/p99 latency at 1, 10 and 50 concurrent clients, for
   GET /v1/residents/{id} (token, cached decision, decryption, masking, audit entry),
   beside the floor (a plain async route reading the row: bench/floor_server.py, the
   baseline; here mounted in the service's process, `python -m bench all` serves it
   alone) and a bypass route that only checks the token and fetches the row;
2. bulk export records/s (NDJSON) over every resident in the vault;
3. policy decision time: embedded uncached, embedded cached, OPA server (with OPA_BIN).

The server runs in its own process (uvicorn, one worker); load comes from this process.
The vault is built once in --workdir and reused, so a second run skips the data set-up:

    python bench/bench_api.py --residents 100000 --workdir /var/tmp/rv-bench-api
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_scale import BENCH_ENV

from access.runtime import init_runtime
from api.oauth.service import init_demo_credentials
from api.settings import Settings
from policies import CachedEngine, EmbeddedEngine, OpaServerEngine, build_bundle, load_bundle
from policies.demo import demo_subjects
from policies.inputs import decision_input
from policies.opa_server import local_opa_server
from vault.demo import populate

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(workdir: Path, residents: int) -> dict[str, Any]:
    """Create (or reuse) a vault with `residents` demo residents and demo accounts."""

    settings = Settings(home=workdir / "home", database_url=f"sqlite:///{workdir}/v.db")
    credentials = settings.home / "demo-credentials.json"
    if credentials.exists():
        return dict(json.loads(credentials.read_text()))
    runtime = init_runtime(settings)
    try:
        with runtime.vault.sessions() as session:
            session.begin()

            def commit() -> None:
                session.commit()
                session.begin()

            populate(
                session,
                runtime.vault.store,
                residents,
                batch_size=2000,
                commit=commit,
                progress=lambda n: print(f"  +{n}", end="\r", flush=True),
            )
            session.commit()
        init_demo_credentials(runtime)
    finally:
        runtime.close()
    return dict(json.loads(credentials.read_text()))


def serve(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "VAULT_HOME": str(workdir / "home"),
        "VAULT_DATABASE_URL": f"sqlite:///{workdir}/v.db",
        "VAULT_OAUTH_ISSUER": f"http://127.0.0.1:{port}",
        **BENCH_ENV,  # else the default rate limits and the detector stop the bench's client
    }
    process = subprocess.Popen(  # noqa: S603 - our own server script
        [sys.executable, str(HERE / "bench_scale_server.py"), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


async def _load(
    url: str, headers: dict[str, str], ids: list[str], concurrency: int, seconds: float
) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def worker(offset: int) -> None:
            nonlocal errors
            n = offset
            while time.perf_counter() < stop:
                start = time.perf_counter()
                response = await client.get(url.format(ids[n % len(ids)]))
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200
                n += concurrency

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return len(latencies), latencies, errors


def bench_reads(base: str, token: str, ids: list[str], seconds: float) -> None:
    headers = {"Authorization": f"Bearer {token}", "Purpose": "subsidy-review"}
    print(f"\n== single-resident reads, {seconds:.0f} s each ==")
    print(
        f"{'clients':>7} {'path':>8} {'reads/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        f" {'full/floor':>10}"
    )
    for concurrency in (1, 10, 50):
        rates = {}
        routes = (
            ("floor", "/bench/floor/{}"),
            ("bypass", "/bench/raw/{}"),
            ("full", "/v1/residents/{}"),
        )
        for label, path in routes:
            count, latencies, errors = asyncio.run(
                _load(base + path, headers, ids, concurrency, seconds)
            )
            rates[label] = count / seconds
            latencies.sort()
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
            ratio = f"{rates['full'] / rates['floor']:.3f}" if label == "full" else ""
            print(
                f"{concurrency:>7} {label:>8} {rates[label]:9,.0f} {p50:8.2f} {p99:8.2f}"
                f" {errors:>6} {ratio:>10}"
            )


def bench_export(base: str, token: str) -> None:
    headers = {
        "Authorization": f"Bearer {token}",
        "Purpose": "subsidy-review",
        "Justification": "bench",
    }
    start = time.perf_counter()
    rows = 0
    with httpx.stream(
        "GET",
        f"{base}/v1/exports/residents",
        headers=headers,
        params={"format": "ndjson"},
        timeout=600,
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            rows += bool(line)
    elapsed = time.perf_counter() - start
    print(
        f"\n== bulk export ==\n{rows:,} records in {elapsed:.1f} s = {rows / elapsed:,.0f}"
        " records/s (each with its audit entry)"
    )


def bench_decisions(n: int) -> None:

    print(f"\n== policy decisions (median of {n}) ==")
    subjects = list(demo_subjects().values())
    inputs = [decision_input(s, purpose="subsidy-review", action="read") for s in subjects]
    embedded = EmbeddedEngine()
    try:

        def timed(engine: Any, cases: list[Any]) -> float:
            samples = []
            for i in range(n):
                start = time.perf_counter()
                engine.evaluate(cases[i % len(cases)])
                samples.append(time.perf_counter() - start)
            return statistics.median(samples) * 1000

        uncached = timed(embedded, inputs)
        cached_engine = CachedEngine(embedded)
        cached = timed(cached_engine, inputs)
        print(f"embedded uncached {uncached:7.3f} ms")
        print(f"embedded cached   {cached:7.3f} ms  ({uncached / cached:.0f}x faster)")
        opa = os.environ.get("OPA_BIN")
        if opa:
            with tempfile.TemporaryDirectory() as tmp:
                archive = build_bundle(opa, load_bundle(), Path(tmp) / "b.tar.gz")
                with local_opa_server(opa, bundle=archive) as url:
                    server_ms = timed(OpaServerEngine(url), inputs)
            print(f"OPA server        {server_ms:7.3f} ms  ({server_ms / uncached:.1f}x embedded)")
    finally:
        embedded.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("rv-bench-api"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--decisions", type=int, default=1000)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    credentials = prepare(args.workdir, args.residents)
    port = _free_port()
    server = serve(args.workdir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        client = next(c for c in credentials["clients"] if c["organisation"] == "org_civil_affairs")
        token = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials", "scope": "residents:read"},
            auth=(client["client_id"], client["client_secret"]),
        ).json()
        access = token["access_token"]
        listing = httpx.get(
            f"{base}/v1/residents",
            params={"limit": 500, "fields": "name"},
            headers={"Authorization": f"Bearer {access}", "Purpose": "subsidy-review"},
        ).json()
        ids = [item["resident_id"] for item in listing["items"]]
        bench_reads(base, access, ids, args.seconds)
        bench_export(base, access)
    finally:
        server.terminate()
        server.wait(timeout=30)
    bench_decisions(args.decisions)


if __name__ == "__main__":
    main()
