"""`resident-vault clients ...` (OAuth clients) and `resident-vault keys tokens ...` (token keys).

Messages are Simplified Chinese unless `--lang en` (on the main command) or VAULT_LANG=en.
A client's secret is printed once, on stdout, when it is registered; it is never logged
and never shown again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from access.runtime import Runtime, open_runtime, operator_name
from api.cli.common import Actor, AsJson, err, group, option, out, print_listing, table
from api.cli.lang import current, help_text, say
from api.http.tls import pem_thumbprint
from api.oauth.config import OAuthSettings
from api.oauth.keys import published_keys
from api.oauth.service import (
    ClientInfo,
    MutualTls,
    RegistrationError,
    UnknownClient,
    list_clients,
    register_client,
    revoke_client,
    rotate_token_key,
)
from api.settings import Settings
from vault.errors import VaultError

clients_app = group("cli.help.clients")
token_keys_app = group("cli.help.keys.tokens")


def _open_runtime() -> Runtime:
    return open_runtime(Settings())


# Replaceable (tests, or a caller with its own settings).
runtime_factory: Callable[[], Runtime] = _open_runtime


def _fail(message: str) -> typer.Exit:
    err.print(message)
    return typer.Exit(code=1)


@contextmanager
def _runtime() -> Iterator[Runtime]:
    try:
        runtime = runtime_factory()
    except VaultError as exc:
        raise _fail(say("cli.clients.cannot-open", exc=exc)) from None
    try:
        yield runtime
    finally:
        runtime.close()


@clients_app.command("add", help=help_text("cli.help.clients.add"))
def add(
    *,
    scopes: Annotated[list[str], option("cli.help.clients.add.scopes", "--scopes")],
    organisation: Annotated[str | None, option("cli.help.clients.add.organisation")] = None,
    purposes: Annotated[list[str] | None, option("cli.help.clients.add.purposes")] = None,
    public: Annotated[bool, option("cli.help.clients.add.public", "--public")] = False,
    redirect_uri: Annotated[list[str] | None, option("cli.help.clients.add.redirect-uri")] = None,
    first_party: Annotated[
        bool, option("cli.help.clients.add.first-party", "--first-party")
    ] = False,
    name: Annotated[str | None, option("cli.help.clients.add.name")] = None,
    actor: Actor = None,
    tls_client_auth: Annotated[
        str | None, option("cli.help.clients.add.tls-client-auth", metavar="SUBJECT_DN")
    ] = None,
    tls_client_auth_san: Annotated[
        str | None, option("cli.help.clients.add.tls-client-auth-san", metavar="KIND:VALUE")
    ] = None,
    self_signed_cert: Annotated[
        list[Path] | None,
        option("cli.help.clients.add.self-signed-cert", exists=True, dir_okay=False, readable=True),
    ] = None,
    cert_bound: Annotated[bool, option("cli.help.clients.add.cert-bound", "--cert-bound")] = False,
) -> None:
    """Register a client (a confidential client's secret is shown once)."""
    codes = [p for value in purposes or [] for p in value.replace(",", " ").split()]
    try:
        thumbprints = tuple(pem_thumbprint(path) for path in self_signed_cert or [])
    except ValueError:
        raise _fail(say("cli.clients.add.not-pem")) from None
    mutual_tls = MutualTls(tls_client_auth, tls_client_auth_san, thumbprints, cert_bound)
    with _runtime() as runtime:
        try:
            with runtime.transaction() as session:
                client_id, secret = register_client(
                    session,
                    runtime.audit,
                    organisation,
                    "public" if public else "confidential",
                    scopes,
                    codes,
                    redirect_uri or [],
                    first_party=first_party,
                    name=name,
                    actor=operator_name(actor),
                    mutual_tls=mutual_tls,
                )
        except RegistrationError as exc:
            raise _fail(exc.message.text(current())) from None
    out.print(f"client_id: {client_id}")
    if mutual_tls.auth_method is not None:
        out.print(f"token_endpoint_auth_method: {mutual_tls.auth_method}")
    if cert_bound:
        out.print("tls_client_certificate_bound_access_tokens: true")
    if secret is not None:
        out.print(f"client_secret: {secret}")
        err.print(say("cli.clients.add.store-secret"))


@clients_app.command("list", help=help_text("cli.help.clients.list"))
def list_command(
    as_json: AsJson = False,
    active: Annotated[bool, option("cli.help.clients.list.active", "--active")] = False,
) -> None:
    """List clients (never their secrets)."""
    with _runtime() as runtime, runtime.vault.sessions() as session:
        clients = list_clients(session, include_revoked=not active)
    print_listing(
        clients,
        columns=[
            ("cli.clients.list.column.client", lambda c: c.client_id),
            ("cli.clients.list.column.kind", _kind),
            ("cli.clients.list.column.organisation", lambda c: c.organisation_id or "-"),
            ("cli.clients.list.column.scopes", lambda c: " ".join(c.scopes)),
            ("cli.clients.list.column.purposes", lambda c: " ".join(c.purposes) or "-"),
            ("cli.clients.list.column.status", _status),
        ],
        record=_record,
        as_json=as_json,
    )


def _record(c: ClientInfo) -> dict[str, Any]:
    return {
        "client_id": c.client_id,
        "name": c.name,
        "kind": c.kind,
        "organisation": c.organisation_id,
        "scopes": c.scopes,
        "purposes": c.purposes,
        "redirect_uris": c.redirect_uris,
        "created_at": c.created_at.isoformat(),
        "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        # RFC 8705 metadata, for certificate clients only: a secret client's listing
        # stays as it was.
        **c.mutual_tls,
    }


def _kind(c: ClientInfo) -> str:
    return say("cli.clients.list.public" if c.kind == "public" else "cli.clients.list.confidential")


def _status(c: ClientInfo) -> str:
    if c.revoked_at:
        return say("cli.clients.list.revoked", revoked_at=c.revoked_at)
    return say("cli.clients.list.active")


@clients_app.command("revoke", help=help_text("cli.help.clients.revoke"))
def revoke(
    client_id: Annotated[str, typer.Argument()],
    reason: Annotated[str | None, option("cli.help.clients.revoke.reason")] = None,
    actor: Actor = None,
) -> None:
    """Revoke a client: its tokens fail on next use."""
    with _runtime() as runtime:
        try:
            with runtime.transaction() as session:
                changed = revoke_client(
                    session, runtime.audit, client_id, reason=reason, actor=operator_name(actor)
                )
        except UnknownClient:
            raise _fail(say("cli.clients.revoke.no-such", client_id=client_id)) from None
    if changed:
        out.print(say("cli.clients.revoke.revoked", client_id=client_id))
    else:
        out.print(say("cli.clients.revoke.already", client_id=client_id))


@token_keys_app.command("rotate", help=help_text("cli.help.keys.tokens.rotate"))
def rotate(actor: Actor = None) -> None:
    """Activate a new token signing key; the old one stays published until its tokens expire."""
    settings = OAuthSettings()
    # A token signed just before the rotation is accepted until its expiry plus the leeway.
    lifetime = settings.access_token_seconds + settings.clock_leeway_seconds
    with _runtime() as runtime, runtime.transaction() as session:
        kid = rotate_token_key(
            session,
            runtime.audit,
            runtime.vault.keyring,
            max_token_lifetime_seconds=lifetime,
            actor=operator_name(actor),
        )
    out.print(say("cli.keys.tokens.rotate.new-key", kid=kid))
    if runtime.settings.keyring == "local":
        err.print(say("cli.keys.tokens.rotate.restart-hint"))


@token_keys_app.command("list", help=help_text("cli.help.keys.tokens.list"))
def list_keys() -> None:
    """List the published token signing keys."""
    with _runtime() as runtime, runtime.vault.sessions() as session:
        keys = published_keys(session)
    listing = table(
        "cli.keys.tokens.list.column.kid",
        "cli.keys.tokens.list.column.created",
        "cli.keys.tokens.list.column.retired",
    )
    for key in keys:
        retired = key.retired_at.isoformat(timespec="seconds") if key.retired_at else "-"
        listing.add_row(key.kid, key.created_at.isoformat(timespec="seconds"), retired)
    out.print(listing)
