"""Names for display: organisations, purposes, fields and workers' badges.

Metadata only (the organisation register, the purpose registry, the field catalogue and
the people's role and badge number); never a resident's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from access.runtime import Runtime
from consent.notices import notice
from vault.accounts import User
from vault.models import Organisation
from vault.purposes import registered_purposes


@dataclass
class Names:
    lang: str
    organisations: dict[str, tuple[str, str, str]]  # id -> (type, zh, en)
    purposes: dict[str, dict[str, Any]]
    fields: dict[str, tuple[str, str]]
    workers: dict[str, tuple[str, str | None]]  # username -> (role, badge)
    runtime: Runtime

    def organisation(self, org_id: str | None) -> str:
        if not org_id:
            return ""
        found = self.organisations.get(org_id)
        if found is None:
            return org_id
        return found[2] if self.lang == "en" else found[1]

    def purpose(self, code: str | None) -> str:
        if not code:
            return ""
        spec = self.purposes.get(code) or {}
        name = spec.get("name") or {}
        return str(name.get(self.lang) or name.get("zh") or code)

    def field(self, name: str) -> str:
        labels = self.fields.get(name)
        if labels is None:
            return name
        return labels[1] if self.lang == "en" else labels[0]

    def worker(self, username: str | None) -> tuple[str, str | None] | None:
        if not username:
            return None
        return self.workers.get(username)

    def consent_purposes(self) -> list[str]:
        return sorted(c for c, s in self.purposes.items() if s.get("legal_basis") == "consent")

    def recipients_for(self, purpose: str) -> list[str]:
        kinds = set((self.purposes.get(purpose) or {}).get("recipient_types") or [])
        return sorted(o for o, (kind, _, _) in self.organisations.items() if kind in kinds)

    def notice(self, purpose: str) -> dict[str, Any]:
        spec = self.purposes.get(purpose) or {}
        return notice(purpose, spec, self.runtime.vault.store.catalogue)


def names_for(runtime: Runtime, lang: str) -> Names:
    catalogue = runtime.vault.store.catalogue
    with runtime.vault.sessions() as session:
        organisations = {
            o.id: (o.type, o.name_zh, o.name_en)
            for o in session.scalars(select(Organisation).order_by(Organisation.id))
        }
        workers = {
            u.username: (u.role, u.badge_number)
            for u in session.scalars(select(User).where(User.role != "resident"))
        }
        purposes = registered_purposes(session)
    return Names(
        lang=lang,
        organisations=organisations,
        purposes=purposes,
        fields={s.name: (s.label.zh, s.label.en) for s in catalogue},
        workers=workers,
        runtime=runtime,
    )
