"""A small HTTP/1.1 keep-alive load generator on asyncio streams.

`wrk` is not installed here, and httpx spends far more CPU per request than a plain route
does to answer it: on two shared cores the client, not the floor route, would set the
floor's rate. This client sends prebuilt request bytes and parses only the status line,
Content-Length and chunked bodies, so it stays well under the servers' cost per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Load:
    """What one step of load measured."""

    count: int
    seconds: float
    latencies: list[float] = field(repr=False)
    errors: int
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def quantile_ms(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _run(
    host: str, port: int, requests: Sequence[bytes], connections: int, seconds: float
) -> Load:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    opened = [await asyncio.open_connection(host, port) for _ in range(connections)]
    start = time.perf_counter()
    stop = start + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        reader, writer = opened[offset]
        n = offset
        while time.perf_counter() < stop:
            begin = time.perf_counter()
            writer.write(requests[n % len(requests)])
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                opened[offset] = (reader, writer)
                continue
            latencies.append(time.perf_counter() - begin)
            statuses[status] = statuses.get(status, 0) + 1
            errors += status != 200
            n += connections

    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = time.perf_counter() - start
    for _, writer in opened:
        writer.close()
    return Load(len(latencies), elapsed, latencies, errors, statuses)


def request_bytes(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def run_load(
    base: str,
    paths: Sequence[str],
    headers: dict[str, str],
    connections: int,
    seconds: float,
) -> Load:
    """GET the paths in rotation over `connections` keep-alive connections for `seconds`."""
    host, _, port = base.removeprefix("http://").partition(":")
    requests = [request_bytes(host, int(port), p, headers) for p in paths]
    return asyncio.run(_run(host, int(port), requests, connections, seconds))
