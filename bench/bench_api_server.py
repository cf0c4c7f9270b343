"""The service plus a bypass route, for bench/bench_api.py (never part of the product).

`/bench/raw/{id}` checks the token like the real route and reads the resident's row and
sealed documents, but asks no policy, decrypts nothing and writes no audit entry: the baseline
the full read path is compared with.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, Request

from api.http.app import create_app
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes
from api.settings import Settings
from vault.models import Resident, ResidentRecord

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
        row = session.get(ResidentRecord, resident_id)
        sizes = {
            name: len(document)
            for name in ("doc_l1", "doc_l2", "doc_l3", "doc_l4")
            if row is not None and (document := getattr(row, name)) is not None
        }
    return {"resident_id": resident.id if resident else None, "fields": sizes}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
