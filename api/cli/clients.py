"""`resident-vault clients ...` (OAuth clients) and `resident-vault keys tokens ...` (token keys).

Messages are Simplified Chinese unless `--lang en` (on the main command) or VAULT_LANG=en.
A client's secret is printed once, on stdout, when it is registered; it is never logged
and never shown again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from access.runtime import Runtime, open_runtime, operator_name
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


def _lang(ctx: typer.Context) -> str:
    root = ctx.find_root()
    value = root.params.get("lang") if root.params else None
    return str(value or os.environ.get("VAULT_LANG", "zh"))


def _t(ctx: typer.Context, zh: str, en: str) -> str:
    return en if _lang(ctx).startswith("en") else zh


def _fail(message: str) -> typer.Exit:
    err.print(message)
    return typer.Exit(code=1)


@contextmanager
def _runtime(ctx: typer.Context) -> Iterator[Runtime]:
    try:
        runtime = runtime_factory()
    except VaultError as exc:
        raise _fail(_t(ctx, f"无法打开保险库：{exc}", f"cannot open the vault: {exc}")) from None
    try:
        yield runtime
    finally:
        runtime.close()


@clients_app.command("add")
def add(
    ctx: typer.Context,
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
        raise _fail(_t(ctx, "证书文件不是 PEM 格式", "a certificate file is not PEM")) from None
    mutual_tls = MutualTls(tls_client_auth, tls_client_auth_san, thumbprints, cert_bound)
    with _runtime(ctx) as runtime:
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
            raise _fail(exc.message(_lang(ctx))) from None
    out.print(f"client_id: {client_id}")
    if mutual_tls.auth_method is not None:
        out.print(f"token_endpoint_auth_method: {mutual_tls.auth_method}")
    if cert_bound:
        out.print("tls_client_certificate_bound_access_tokens: true")
    if secret is not None:
        out.print(f"client_secret: {secret}")
        err.print(
            _t(
                ctx,
                "请立即妥善保存密钥：它不会再次显示，保险库只存其哈希值。",
                "Store the secret now: it is not shown again; the vault keeps only its hash.",
            )
        )


@clients_app.command("list")
def list_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
    active: Annotated[bool, typer.Option("--active", help="leave out revoked clients")] = False,
) -> None:
    """列出客户端（不含密钥）/ List clients (never their secrets)."""
    with _runtime(ctx) as runtime, runtime.vault.sessions() as session:
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
        _t(ctx, "客户端", "client"),
        _t(ctx, "类型", "kind"),
        _t(ctx, "机构", "organisation"),
        _t(ctx, "权限范围", "scopes"),
        _t(ctx, "用途", "purposes"),
        _t(ctx, "状态", "status"),
    )
    for c in clients:
        status = (
            _t(ctx, f"已吊销 {c.revoked_at:%Y-%m-%d}", f"revoked {c.revoked_at:%Y-%m-%d}")
            if c.revoked_at
            else _t(ctx, "有效", "active")
        )
        kind = _t(ctx, "公开", "public") if c.kind == "public" else _t(ctx, "机密", "confidential")
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
    ctx: typer.Context,
    client_id: Annotated[str, typer.Argument()],
    reason: Annotated[str | None, typer.Option(help="kept in the audit log")] = None,
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """吊销客户端：其令牌在下一次请求时失效 / Revoke a client: its tokens fail on next use."""
    with _runtime(ctx) as runtime:
        try:
            with runtime.transaction() as session:
                changed = revoke_client(
                    session, runtime.audit, client_id, reason=reason, actor=operator_name(actor)
                )
        except UnknownClient:
            raise _fail(
                _t(ctx, f"没有这个客户端：{client_id}", f"no such client: {client_id}")
            ) from None
    if changed:
        out.print(_t(ctx, f"已吊销 {client_id}", f"revoked {client_id}"))
    else:
        out.print(_t(ctx, f"{client_id} 此前已吊销", f"{client_id} was already revoked"))


@token_keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """启用新的令牌签名密钥；旧密钥在其令牌过期前仍公布 / Activate a new token signing key."""
    settings = OAuthSettings()
    # A token signed just before the rotation is accepted until its expiry plus the leeway.
    lifetime = settings.access_token_seconds + settings.clock_leeway_seconds
    with _runtime(ctx) as runtime, runtime.transaction() as session:
        kid = rotate_token_key(
            session,
            runtime.audit,
            runtime.vault.keyring,
            max_token_lifetime_seconds=lifetime,
            actor=operator_name(actor),
        )
    out.print(_t(ctx, f"新的签名密钥：{kid}", f"new signing key: {kid}"))
    if runtime.settings.keyring == "local":
        err.print(
            _t(
                ctx,
                "使用本地密钥文件时，请重启正在运行的服务，使其载入新密钥。",
                "With the local keyring, restart a running service so it loads the new key.",
            )
        )


@token_keys_app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """列出公布中的令牌签名密钥 / List the published token signing keys."""
    with _runtime(ctx) as runtime, runtime.vault.sessions() as session:
        keys = published_keys(session)
    table = Table("kid", _t(ctx, "创建", "created"), _t(ctx, "停用", "retired"))
    for key in keys:
        retired = key.retired_at.isoformat(timespec="seconds") if key.retired_at else "-"
        table.add_row(key.kid, key.created_at.isoformat(timespec="seconds"), retired)
    out.print(table)
