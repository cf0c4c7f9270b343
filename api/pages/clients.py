"""The pages' own OAuth client: which one they sign people in with, and making it follow
the origins the service is reached at.

The pages' client is a first-party public client with one of the pages' callback
addresses among its redirect URIs. There should be one; where an operator has registered
a corrected one beside an older one, the newest active one is used (so it takes over at
once), and the next `serve` revokes the older ones and gives the newest the callback
addresses of `VAULT_PUBLIC_URL` (and, with `--demo`, of the address it listens on).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from access.runtime import Runtime
from api.oauth.models import OAuthClient
from api.oauth.scopes import PEOPLE_SCOPES, Scope
from api.oauth.service import (
    WEB_REDIRECT_PATHS,
    register_client,
    revoke_client,
    update_redirect_uris,
    web_redirect_uris,
)
from api.pages.settings import is_loopback

log = structlog.get_logger(__name__)

# What each area asks for at login; the pages' client must hold them all.
AREA_SCOPES: dict[str, str] = {
    "portal": "me",
    "desk": "residents:read residents:write consents:read consents:write",
    "console": "audit:read",
    "operator": "admin:write",
}
PAGES_CLIENT_NAME = "居民数据保险库网页 / Resident vault pages"
START_ACTOR = "service-start"
NEEDED_SCOPES = frozenset(scope for scopes in AREA_SCOPES.values() for scope in scopes.split())


def _is_pages_client(client: OAuthClient) -> bool:
    return any(uri.endswith(WEB_REDIRECT_PATHS) for uri in client.redirect_uris or [])


def pages_clients(session: Session) -> list[OAuthClient]:
    """The active pages' clients, newest first: the first is the one in use."""
    rows = session.scalars(
        select(OAuthClient)
        .where(
            OAuthClient.kind == "public",
            OAuthClient.first_party.is_(True),
            OAuthClient.revoked_at.is_(None),
        )
        .order_by(OAuthClient.created_at.desc(), OAuthClient.client_id.desc())
    ).all()
    return [row for row in rows if _is_pages_client(row)]


def listen_origins(scheme: str, host: str, port: int) -> list[str]:
    """The origins a browser on this machine reaches `host:port` at. A wildcard address
    stands for this machine's loopback; plain http elsewhere is left out (the pages'
    cookies are Secure, so a browser would not keep them there)."""
    # A browser names this machine either way; the wildcard address is reached as it.
    wildcard_or_local = ("0.0.0.0", "::", "", "127.0.0.1", "localhost")  # noqa: S104
    names = ["127.0.0.1", "localhost"] if host in wildcard_or_local else [host]
    origins = []
    for name in names:
        if scheme == "http" and not is_loopback(name):
            continue
        netloc = f"[{name}]" if ":" in name else name
        origins.append(f"{scheme}://{netloc}:{port}")
    return origins


@dataclass
class Followed:
    """What `follow_origins` did, for `serve` to say."""

    client_id: str
    redirect_uris: list[str]
    registered: bool = False
    updated: bool = False
    revoked: list[str] = field(default_factory=list)
    missing_scopes: list[str] = field(default_factory=list)


def follow_origins(
    session: Session, runtime: Runtime, origins: Sequence[str], *, actor: str = START_ACTOR
) -> Followed:
    """Make the pages' client have exactly the callback addresses of `origins`: the newest
    active one is updated, older ones are revoked, and one is registered (with every
    scope people hold) if there is none. Each change is an audit event of its own."""
    wanted = web_redirect_uris(origins)
    clients = pages_clients(session)
    if not clients:
        client_id, _ = register_client(
            session,
            runtime.audit,
            None,
            "public",
            [s.value for s in Scope if s in PEOPLE_SCOPES],
            (),
            wanted,
            first_party=True,
            name=PAGES_CLIENT_NAME,
            actor=actor,
        )
        result = Followed(client_id, wanted, registered=True)
    else:
        current, *older = clients
        result = Followed(
            current.client_id,
            wanted,
            updated=update_redirect_uris(
                session,
                runtime.audit,
                current.client_id,
                wanted,
                reason="VAULT_PUBLIC_URL" if actor == START_ACTOR else None,
                actor=actor,
            ),
            missing_scopes=sorted(NEEDED_SCOPES - set(current.scopes or [])),
        )
        for old in older:
            revoke_client(
                session,
                runtime.audit,
                old.client_id,
                reason=f"superseded by {current.client_id} as the pages' client",
                actor=actor,
            )
            result.revoked.append(old.client_id)
    if result.missing_scopes:
        # A sign-in asking for them would end in invalid_scope: say so at start.
        log.warning(
            "pages.client_scopes_missing", client=result.client_id, scopes=result.missing_scopes
        )
    log.info(
        "pages.client_followed",
        client=result.client_id,
        origins=list(dict.fromkeys(origins)),
        registered=result.registered,
        updated=result.updated,
        revoked=result.revoked,
    )
    return result


def choose_callback(
    clients: Iterable[OAuthClient], candidates: Sequence[str]
) -> tuple[str, str] | None:
    """(client id, redirect URI): the newest client with one of the candidate addresses,
    the first candidate it has."""
    for client in clients:
        registered = set(client.redirect_uris or [])
        for uri in candidates:
            if uri in registered:
                return client.client_id, uri
    return None
