"""The one registry of OAuth scopes, and who may hold which (docs/api.md, "Scopes by who
holds them").

Scopes only open the door: policy decides what lies behind it. They are coarse on purpose,
one per kind of resource and action, so the policy, not the token, carries the detail.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final


class Scope(StrEnum):
    RESIDENTS_READ = "residents:read"
    RESIDENTS_WRITE = "residents:write"
    CONSENTS_READ = "consents:read"
    CONSENTS_WRITE = "consents:write"
    CONSENTS_REQUEST = "consents:request"
    AUDIT_READ = "audit:read"
    STATS_READ = "stats:read"
    ME = "me"
    # Not an API permission: lets a resource server ask /oauth/introspect about any of our
    # tokens (RFC 7662 section 4). Checked against the client's registration, not a token.
    INTROSPECT = "introspect"

    @property
    def zh(self) -> str:
        return _DESCRIPTIONS[self][0]

    @property
    def en(self) -> str:
        return _DESCRIPTIONS[self][1]

    def description(self, lang: str = "zh") -> str:
        return self.en if lang.startswith("en") else self.zh


_DESCRIPTIONS: Final[dict[Scope, tuple[str, str]]] = {
    Scope.RESIDENTS_READ: (
        "查阅居民信息（按用途和策略）",
        "Read residents' records (by purpose and policy)",
    ),
    Scope.RESIDENTS_WRITE: ("登记和更新居民信息", "Register and update residents' records"),
    Scope.CONSENTS_READ: ("查阅居民的授权同意记录", "Read residents' consent records"),
    Scope.CONSENTS_WRITE: (
        "代居民登记授权同意（协助办理）",
        "Record consent on a resident's behalf (assisted)",
    ),
    Scope.CONSENTS_REQUEST: ("向居民发起授权同意请求", "Ask residents for consent"),
    Scope.AUDIT_READ: ("查阅审计日志", "Read the audit log"),
    Scope.STATS_READ: ("查阅统计数据（经披露控制）", "Read statistics (with disclosure control)"),
    Scope.ME: ("查看和管理本人的信息与授权", "See and manage my own record and consents"),
    Scope.INTROSPECT: (
        "查询任意访问令牌的状态（资源服务器）",
        "Look up any access token's status (resource servers)",
    ),
}


# -- people --------------------------------------------------------------------------------

ROLES: Final = ("resident", "grid_worker", "community_worker", "auditor")

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
}

PEOPLE_SCOPES: Final = frozenset().union(*ROLE_SCOPES.values())

# -- organisations' systems (client credentials) -------------------------------------------

# The ceiling for a confidential client of each organisation type; a client is registered
# with a subset. Residents' committees run the counter and grid systems of a community.
# Only public bodies may run a resource server that introspects others' tokens: an answer
# names the person a token stands for.
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
