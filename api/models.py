"""Every package's tables, imported so the one SQLAlchemy metadata knows them all: what
the Alembic environment compares with the database (`alembic check`), what a backup
copies, and what the schema tests read. The top of the stack below `migrations/`, so it may
import every package; nothing below `api/` imports it.
"""

from __future__ import annotations

import access.exports.records
import access.models
import api.oauth.models
import audit.models
import consent.models
import vault.accounts
import vault.db
import vault.mandates
import vault.policy_data
import vault.purposes
import vault.stamps
import vault.stat_tokens
from vault.models import Base

MODEL_MODULES = (
    audit.models,
    consent.models,
    vault.accounts,
    api.oauth.models,
    access.models,
    access.exports.records,
    vault.db,
    vault.purposes,
    vault.mandates,
    vault.policy_data,
    vault.stamps,
    vault.stat_tokens,
)
metadata = Base.metadata
