"""The service plus two baseline routes, for bench/bench_scale.py (never part of the product).

`bench_api_server` gives the service and `/bench/raw/{id}` (token checked, row and
ciphertexts read; no policy, no decryption, no audit). This adds `/bench/floor/{id}`: the
FastAPI floor of NOTES.md ("FastAPI on this machine"), the `async def` route of
floor_server.py that serves one row by key as JSON with no token, crypto, policy or audit,
from the same database the service reads.
"""

from __future__ import annotations

import sys

import uvicorn
from bench_api_server import app
from floor_server import router

app.include_router(router)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", workers=1)
