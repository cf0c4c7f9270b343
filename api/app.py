"""The FastAPI application: public metadata and operations endpoints for now.

Resident data is served only through the access gate (issue 3), never from here directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.logging import configure_logging
from api.problems import install_problem_handlers, problem
from vault.catalogue import default_catalogue
from vault.config import VaultSettings
from vault.context import Vault, open_vault


def create_app(settings: VaultSettings | None = None) -> FastAPI:
    settings = settings or VaultSettings()
    configure_logging()
    vault: Vault = open_vault(settings)  # refuses to start without the keyring

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        vault.close()

    app = FastAPI(title="Resident data vault / 居民数据保险库", version="0.1.0", lifespan=lifespan)
    app.state.vault = vault
    install_problem_handlers(app)

    @app.get("/v1/fields", tags=["metadata"])
    async def list_fields() -> dict[str, Any]:
        """The field catalogue's metadata: names, labels, categories, grades. Never values."""
        catalogue = default_catalogue()
        return {
            "version": catalogue.version,
            "categories": {k: {"zh": v.zh, "en": v.en} for k, v in catalogue.categories.items()},
            "items": [spec.public_metadata() for spec in catalogue],
        }

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=None)
    def readyz(request: Request) -> dict[str, str] | JSONResponse:
        try:
            with vault.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            vault.keyring.active_kek_id()
        except Exception:  # readiness reports any failure as not ready
            return problem(request, "not-ready", status=503)
        return {"status": "ready"}

    return app
