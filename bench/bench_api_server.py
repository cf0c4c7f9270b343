"""The service plus a bypass route, for bench/bench_api.py (never part of the product).

`/bench/raw/{id}` checks the token like the real route and reads the resident's row and
ciphertexts, but asks no policy, decrypts nothing and writes no audit entry: the baseline
the full read path is compared with.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, Request
from sqlalchemy import select

from api.http.app import create_app
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes
from api.settings import Settings
from vault.models import Resident, ResidentField

app = create_app(Settings())


@app.get("/bench/raw/{resident_id}")
def raw(
    request: Request,
    resident_id: str,
    _: Annotated[Principal, Depends(require_scopes(Scope.RESIDENTS_READ))],
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    with runtime.vault.sessions() as session:
        resident = session.get(Resident, resident_id)
        sizes = {
            f: len(c)
            for f, c in session.execute(
                select(ResidentField.field, ResidentField.ciphertext).where(
                    ResidentField.resident_id == resident_id
                )
            )
        }
    return {"resident_id": resident.id if resident else None, "fields": sizes}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
