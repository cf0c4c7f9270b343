"""The floor: a plain FastAPI `async def` route serving one resident row by key as JSON,
from the vault's own database, with no token, crypto, policy or audit (never part of the
product). `python -m bench all` serves it alone, like the service (uvicorn, one worker, a
process of its own); bench_scale_server.py mounts the same router beside the service.

On PostgreSQL it reads through async psycopg connections so that no step blocks the
event loop or hops to the threadpool; on SQLite a key lookup in a local file takes a few
microseconds, so it is read inline (an executor hop would cost more than the read).

    VAULT_DATABASE_URL=... python bench/floor_server.py PORT
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import sys
from typing import Any

import psycopg
import uvicorn
from fastapi import APIRouter, FastAPI
from sqlalchemy.engine import URL, make_url

from vault.config import VaultSettings

FLOOR_CONNECTIONS = 10
QUERY = "SELECT id, household_id, status FROM residents WHERE id = {}"

router = APIRouter()
_idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
_opening = asyncio.Lock()
_opened = {"n": 0}
_sqlite: dict[str, sqlite3.Connection] = {}


@functools.cache
def _url() -> URL:
    # Read once: building the settings object on every request would cost more than the read.
    return make_url(VaultSettings().resolved_database_url)


async def _connection() -> psycopg.AsyncConnection[Any]:
    async with _opening:
        if _idle.empty() and _opened["n"] < FLOOR_CONNECTIONS:
            url = _url().set(drivername="postgresql")
            _opened["n"] += 1
            return await psycopg.AsyncConnection.connect(
                url.render_as_string(hide_password=False), autocommit=True
            )
    return await _idle.get()


async def _row(resident_id: str) -> tuple[Any, ...] | None:
    url = _url()
    if url.get_backend_name() == "sqlite":
        if "db" not in _sqlite:
            _sqlite["db"] = sqlite3.connect(url.database or "", check_same_thread=False)
        return _sqlite["db"].execute(QUERY.format("?"), (resident_id,)).fetchone()  # type: ignore[no-any-return]
    connection = await _connection()
    try:
        cursor = await connection.execute(QUERY.format("%s"), (resident_id,))
        return await cursor.fetchone()
    finally:
        _idle.put_nowait(connection)


@router.get("/bench/floor/{resident_id}")
async def floor(resident_id: str) -> dict[str, Any]:
    row = await _row(resident_id)
    if row is None:
        return {"resident_id": None}
    return {"resident_id": row[0], "household_id": row[1], "status": row[2]}


app = FastAPI()
app.include_router(router)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", workers=1)
