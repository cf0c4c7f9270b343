"""The one registry of OAuth scopes, and who may hold which (docs/api.md, "Scopes by who
holds them").

Scopes only open the door: policy decides what lies behind it. They are coarse on purpose,
one per kind of resource and action, so the policy, not the token, carries the detail.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from vault.i18n import Message


class Scope(StrEnum):
    RESIDENTS_READ = "residents:read"
    RESIDENTS_WRITE = "residents:write"
    CONSENTS_READ = "consents:read"
    CONSENTS_WRITE = "consents:write"
    CONSENTS_REQUEST = "consents:request"
    AUDIT_READ = "audit:read"
    STATS_READ = "stats:read"
    ME = "me"
    # Administering the district (accounts, places, organisations): an operator's, never
    # an organisation's system's. Opens no resident data: policy gives operators none.
    ADMIN_WRITE = "admin:write"
    # Not an API permission: lets a resource server ask /oauth/introspect about any of our
    # tokens (RFC 7662 section 4). Checked against the client's registration, not a token.
    INTROSPECT = "introspect"

    @property
    def label(self) -> Message:
        """What the scope lets a client do, from the catalogue (`scope.*`)."""
        return _DESCRIPTIONS[self]

    @property
    def zh(self) -> str:
        return self.label.text("zh")

    @property
    def en(self) -> str:
        return self.label.text("en")

    def description(self, lang: str = "zh") -> str:
        return self.label.text(lang)


# Ids are the scope's value with "." for ":", so they stay plain dotted names.
_DESCRIPTIONS: Final[dict[Scope, Message]] = {
    Scope.RESIDENTS_READ: Message("scope.residents.read"),
    Scope.RESIDENTS_WRITE: Message("scope.residents.write"),
    Scope.CONSENTS_READ: Message("scope.consents.read"),
    Scope.CONSENTS_WRITE: Message("scope.consents.write"),
    Scope.CONSENTS_REQUEST: Message("scope.consents.request"),
    Scope.AUDIT_READ: Message("scope.audit.read"),
    Scope.STATS_READ: Message("scope.stats.read"),
    Scope.ME: Message("scope.me"),
    Scope.ADMIN_WRITE: Message("scope.admin.write"),
    Scope.INTROSPECT: Message("scope.introspect"),
}


# -- people --------------------------------------------------------------------------------

# The roles are the accounts' (`vault.accounts.ROLES`, which the table's CHECK names).

# The most a person of each role can hold; a token carries what was asked for within it.
# Workers also read consents: recording assisted consent starts from what is on record.
ROLE_SCOPES: Final[dict[str, frozenset[Scope]]] = {
    "resident": frozenset({Scope.ME}),
    "grid_worker": frozenset(
        {Scope.RESIDENTS_READ, Scope.RESIDENTS_WRITE, Scope.CONSENTS_READ, Scope.CONSENTS_WRITE}
    ),
    "community_worker": frozenset(
        {Scope.RESIDENTS_READ, Scope.RESIDENTS_WRITE, Scope.CONSENTS_READ, Scope.CONSENTS_WRITE}
    ),
    "auditor": frozenset({Scope.AUDIT_READ}),
    "operator": frozenset({Scope.ADMIN_WRITE}),
}

PEOPLE_SCOPES: Final = frozenset().union(*ROLE_SCOPES.values())

# -- organisations' systems (client credentials) -------------------------------------------

# The ceiling for a confidential client of each organisation type; a client is registered
# with a subset. Residents' committees run the counter and grid systems of a community.
# Only public bodies may run a resource server that introspects others' tokens: an answer
# names the person a token stands for. No system administers the district (admin:write).
ORGANISATION_SCOPES: Final[dict[str, frozenset[Scope]]] = {
    "department": frozenset(
        {
            Scope.RESIDENTS_READ,
            Scope.RESIDENTS_WRITE,
            Scope.STATS_READ,
            Scope.CONSENTS_REQUEST,
            Scope.INTROSPECT,
        }
    ),
    "residents_committee": frozenset(
        {
            Scope.RESIDENTS_READ,
            Scope.RESIDENTS_WRITE,
            Scope.STATS_READ,
            Scope.CONSENTS_READ,
            Scope.CONSENTS_WRITE,
            Scope.CONSENTS_REQUEST,
            Scope.INTROSPECT,
        }
    ),
    "property_company": frozenset({Scope.RESIDENTS_READ, Scope.CONSENTS_REQUEST}),
    "owners_committee": frozenset({Scope.RESIDENTS_READ, Scope.CONSENTS_REQUEST}),
    # A street office is a public body over its communities, as a department is.
    "street_office": frozenset(
        {Scope.RESIDENTS_READ, Scope.RESIDENTS_WRITE, Scope.STATS_READ, Scope.CONSENTS_REQUEST}
    ),
    # A social organisation (社会组织) serves residents who consent, or as contracted.
    "social_organisation": frozenset({Scope.RESIDENTS_READ, Scope.CONSENTS_REQUEST}),
}


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Scopes from strings that may each hold several, separated by spaces or commas.

    Raises ValueError naming the first unknown scope. Order is kept, duplicates dropped.
    """
    seen: dict[Scope, None] = {}
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                seen[Scope(part)] = None
            except ValueError:
                raise ValueError(f"unknown scope {part!r}") from None
    return list(seen)


def scope_string(scopes: Iterable[str]) -> str:
    """The space-separated form of RFC 6749 section 3.3, in registry order."""
    wanted = {str(s) for s in scopes}
    return " ".join(s.value for s in Scope if s.value in wanted)
