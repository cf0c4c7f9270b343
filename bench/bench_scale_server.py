"""The service plus two baseline routes, for bench/bench_scale.py (never part of the product).

`bench_api_server` gives the service and `/bench/raw/{id}` (token checked, row and
ciphertexts read; no policy, no decryption, no audit). This adds `/bench/floor/{id}`: the
FastAPI floor of NOTES.md ("FastAPI on this machine"), an `async def` route that serves one
row by key as JSON with no token, crypto, policy or audit, here from the same PostgreSQL
database the service reads, through async psycopg connections so that no step blocks the
event loop or hops to the threadpool.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import psycopg
import uvicorn
from bench_api_server import app
from sqlalchemy.engine import make_url

from vault.config import VaultSettings

FLOOR_CONNECTIONS = 10
_idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
_opening = asyncio.Lock()
_opened = {"n": 0}


async def _connection() -> psycopg.AsyncConnection[Any]:
    async with _opening:
        if _idle.empty() and _opened["n"] < FLOOR_CONNECTIONS:
            url = make_url(VaultSettings().resolved_database_url).set(drivername="postgresql")
            _opened["n"] += 1
            return await psycopg.AsyncConnection.connect(
                url.render_as_string(hide_password=False), autocommit=True
            )
    return await _idle.get()


@app.get("/bench/floor/{resident_id}")
async def floor(resident_id: str) -> dict[str, Any]:
    connection = await _connection()
    try:
        cursor = await connection.execute(
            "SELECT id, household_id, status FROM residents WHERE id = %s", (resident_id,)
        )
        row = await cursor.fetchone()
    finally:
        _idle.put_nowait(connection)
    if row is None:
        return {"resident_id": None}
    return {"resident_id": row[0], "household_id": row[1], "status": row[2]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", workers=1)
