"""`resident-vault clients ...` (OAuth clients) and `resident-vault keys tokens ...` (token keys).

Messages are Simplified Chinese unless `--lang en` (on the main command) or VAULT_LANG=en.
A client's secret is printed once, on stdout, when it is registered; it is never logged
and never shown again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from access.runtime import Runtime, open_runtime, operator_name
from api.cli.lang import current, say
from api.http.tls import pem_thumbprint
from api.oauth.config import OAuthSettings
from api.oauth.keys import published_keys
from api.oauth.service import (
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

clients_app = typer.Typer(help="OAuth 客户端 / OAuth clients", no_args_is_help=True)
token_keys_app = typer.Typer(
    help="访问令牌签名密钥 / Access-token signing keys", no_args_is_help=True
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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


@clients_app.command("add")
def add(
    *,
    scopes: Annotated[
        list[str], typer.Option("--scopes", help="e.g. 'residents:read stats:read' (repeatable)")
    ],
    organisation: Annotated[
        str | None, typer.Option("--organisation", help="organisation id (confidential)")
    ] = None,
    purposes: Annotated[
        list[str] | None, typer.Option("--purposes", help="purpose codes (repeatable)")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="a browser application: PKCE, no secret")
    ] = False,
    redirect_uri: Annotated[
        list[str] | None, typer.Option("--redirect-uri", help="exact callback URL (repeatable)")
    ] = None,
    first_party: Annotated[
        bool, typer.Option("--first-party", help="our own pages: no approval screen")
    ] = False,
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    actor: Annotated[str | None, typer.Option(help="who registers it (audit log)")] = None,
    tls_client_auth: Annotated[
        str | None,
        typer.Option(
            "--tls-client-auth",
            metavar="SUBJECT_DN",
            help="authenticate by certificate (RFC 8705 tls_client_auth) with this subject DN",
        ),
    ] = None,
    tls_client_auth_san: Annotated[
        str | None,
        typer.Option(
            "--tls-client-auth-san",
            metavar="KIND:VALUE",
            help="…or with this SAN instead: dns:, uri:, ip: or email: and the value",
        ),
    ] = None,
    self_signed_cert: Annotated[
        list[Path] | None,
        typer.Option(
            "--self-signed-cert",
            exists=True,
            dir_okay=False,
            readable=True,
            help="authenticate by this self-signed certificate, PEM (repeatable)",
        ),
    ] = None,
    cert_bound: Annotated[
        bool,
        typer.Option(
            "--cert-bound",
            help="bind its access tokens to its certificate (RFC 8705 section 3)",
        ),
    ] = False,
) -> None:
    """登记客户端（机密客户端的密钥只显示这一次）/ Register a client (a secret is shown once)."""
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
            raise _fail(exc.message(current())) from None
    out.print(f"client_id: {client_id}")
    if mutual_tls.auth_method is not None:
        out.print(f"token_endpoint_auth_method: {mutual_tls.auth_method}")
    if cert_bound:
        out.print("tls_client_certificate_bound_access_tokens: true")
    if secret is not None:
        out.print(f"client_secret: {secret}")
        err.print(say("cli.clients.add.store-secret"))


@clients_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
    active: Annotated[bool, typer.Option("--active", help="leave out revoked clients")] = False,
) -> None:
    """列出客户端（不含密钥）/ List clients (never their secrets)."""
    with _runtime() as runtime, runtime.vault.sessions() as session:
        clients = list_clients(session, include_revoked=not active)
    if as_json:
        for c in clients:
            out.print(
                json.dumps(
                    {
                        "client_id": c.client_id,
                        "name": c.name,
                        "kind": c.kind,
                        "organisation": c.organisation_id,
                        "scopes": c.scopes,
                        "purposes": c.purposes,
                        "redirect_uris": c.redirect_uris,
                        "created_at": c.created_at.isoformat(),
                        "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                        # RFC 8705 metadata, for certificate clients only: a secret
                        # client's listing stays as it was.
                        **c.mutual_tls,
                    },
                    ensure_ascii=False,
                )
            )
        return
    table = Table(
        say("cli.clients.list.column.client"),
        say("cli.clients.list.column.kind"),
        say("cli.clients.list.column.organisation"),
        say("cli.clients.list.column.scopes"),
        say("cli.clients.list.column.purposes"),
        say("cli.clients.list.column.status"),
    )
    for c in clients:
        status = (
            say("cli.clients.list.revoked", revoked_at=c.revoked_at)
            if c.revoked_at
            else say("cli.clients.list.active")
        )
        kind = (
            say("cli.clients.list.public")
            if c.kind == "public"
            else say("cli.clients.list.confidential")
        )
        table.add_row(
            c.client_id,
            kind,
            c.organisation_id or "-",
            " ".join(c.scopes),
            " ".join(c.purposes) or "-",
            status,
        )
    out.print(table)


@clients_app.command("revoke")
def revoke(
    client_id: Annotated[str, typer.Argument()],
    reason: Annotated[str | None, typer.Option(help="kept in the audit log")] = None,
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """吊销客户端：其令牌在下一次请求时失效 / Revoke a client: its tokens fail on next use."""
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


@token_keys_app.command("rotate")
def rotate(
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """启用新的令牌签名密钥；旧密钥在其令牌过期前仍公布 / Activate a new token signing key."""
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


@token_keys_app.command("list")
def list_keys() -> None:
    """列出公布中的令牌签名密钥 / List the published token signing keys."""
    with _runtime() as runtime, runtime.vault.sessions() as session:
        keys = published_keys(session)
    table = Table(
        "kid",
        say("cli.keys.tokens.list.column.created"),
        say("cli.keys.tokens.list.column.retired"),
    )
    for key in keys:
        retired = key.retired_at.isoformat(timespec="seconds") if key.retired_at else "-"
        table.add_row(key.kid, key.created_at.isoformat(timespec="seconds"), retired)
    out.print(table)
