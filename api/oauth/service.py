"""Managing clients and accounts: registration, listing, revocation, people, demo accounts.

Every change is recorded in the audit log as an event (never with a secret), in the
caller's transaction, so the change and its record commit together.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from access.runtime import Runtime
from api.http.tls import canonical_dn
from api.oauth.keys import rotate_signing_key
from api.oauth.models import (
    AuthorizationCode,
    OAuthClient,
    RefreshToken,
    RevokedAccessToken,
    TokenFamily,
)
from api.oauth.passwords import hash_client_secret, new_client_secret
from api.oauth.scopes import (
    ORGANISATION_SCOPES,
    PEOPLE_SCOPES,
    Scope,
    parse_scopes,
)
from audit import AuditLog, EntryDraft
from consent import ConsentService
from consent.demo import create_demo_consents
from vault.accounts import MIN_PASSWORD_LENGTH, ROLES, USERNAME, User
from vault.i18n import Message
from vault.interfaces import Keyring
from vault.models import (
    Building,
    Grid,
    Guardianship,
    Household,
    Organisation,
    OrganisationCommunity,
    Resident,
    Room,
    new_id,
    utcnow,
)
from vault.passwords import hash_password
from vault.purposes import LivePurposes

log = structlog.get_logger(__name__)

KINDS: Final = ("confidential", "public")
PURPOSE_CODE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
DEMO_CREDENTIALS_FILE = "demo-credentials.json"


class RegistrationError(ValueError):
    """A client or account that cannot be registered as asked; `message` says why, shown
    in the caller's language (`exc.message.text(lang)`)."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.text("en"))  # logs and tracebacks read English
        self.message = message


class UnknownClient(LookupError):
    def __init__(self, client_id: str) -> None:
        super().__init__(client_id)
        self.client_id = client_id


@dataclass(frozen=True)
class ClientInfo:
    """A client as listed: everything but its secret's hash."""

    client_id: str
    name: str | None
    kind: str
    organisation_id: str | None
    first_party: bool
    grant_types: list[str]
    scopes: list[str]
    purposes: list[str]
    redirect_uris: list[str]
    created_at: datetime
    revoked_at: datetime | None
    # RFC 7591/8705 client metadata: how it authenticates and what its tokens are bound to.
    token_endpoint_auth_method: str = "client_secret_basic"  # noqa: S105 - a method name
    mutual_tls: dict[str, Any] = field(default_factory=dict)


def _event(action: str, actor: str | None, **fields: Any) -> EntryDraft:
    return EntryDraft(
        action=action,
        outcome="allowed",
        channel="cli",
        kind="event",
        subject_type="operator",
        user=actor,
        **fields,
    )


# -- clients --------------------------------------------------------------------------------


def _check_redirect_uri(uri: str) -> None:
    parts = urlsplit(uri)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    secure = parts.scheme == "https" or (parts.scheme == "http" and loopback)
    if secure and parts.netloc and not parts.fragment:
        return
    raise RegistrationError(Message("error.oauth.redirect-uri", {"uri": uri}))


def _check_purposes(purposes: Iterable[str]) -> list[str]:
    result = list(dict.fromkeys(purposes))
    for code in result:
        if not PURPOSE_CODE.match(code):
            raise RegistrationError(Message("error.oauth.purpose-code", {"code": code}))
    return result


@dataclass(frozen=True)
class MutualTls:
    """How a confidential client uses its certificate (RFC 8705); all empty for a secret.

    * `subject_dn` or `san` ("dns:", "uri:", "ip:" or "email:" and the value): PKI
      authentication (`tls_client_auth`) with a certificate the client CA issued;
    * `self_signed` thumbprints (x5t#S256): `self_signed_tls_client_auth`;
    * `certificate_bound`: its access tokens carry `cnf` and need that certificate.
    """

    subject_dn: str | None = None
    san: str | None = None
    self_signed: tuple[str, ...] = ()
    certificate_bound: bool = False

    @property
    def auth_method(self) -> str | None:
        if self.subject_dn is not None or self.san is not None:
            return "tls_client_auth"
        if self.self_signed:
            return "self_signed_tls_client_auth"
        return None


_SAN_KINDS = ("dns", "uri", "ip", "email")
_THUMBPRINT = re.compile(r"^[A-Za-z0-9_-]{43}$")


def _checked_mutual_tls(mtls: MutualTls, kind: str) -> MutualTls:
    """RFC 8705 2.1.2: exactly one of subject DN and SAN; one method per client."""
    if mtls == MutualTls():
        return mtls
    if kind != "confidential":
        raise RegistrationError(Message("error.oauth.certificate-not-confidential"))
    chosen = [x for x in (mtls.subject_dn, mtls.san, mtls.self_signed or None) if x]
    if len(chosen) > 1:
        raise RegistrationError(Message("error.oauth.certificate-one-method"))
    subject_dn = mtls.subject_dn
    if subject_dn is not None:
        try:
            subject_dn = canonical_dn(subject_dn)
        except ValueError:
            raise RegistrationError(
                Message("error.oauth.subject-dn", {"subject_dn": subject_dn})
            ) from None
    if mtls.san is not None:
        san_kind, _, value = mtls.san.partition(":")
        if san_kind not in _SAN_KINDS or not value:
            raise RegistrationError(Message("error.oauth.san", {"san": mtls.san}))
    for thumbprint in mtls.self_signed:
        if not _THUMBPRINT.match(thumbprint):
            raise RegistrationError(Message("error.oauth.thumbprint", {"thumbprint": thumbprint}))
    return MutualTls(
        subject_dn, mtls.san, tuple(dict.fromkeys(mtls.self_signed)), mtls.certificate_bound
    )


def mutual_tls_metadata(row: OAuthClient) -> dict[str, Any]:
    """The RFC 8705 client metadata of a registered client (empty for a secret client)."""
    metadata: dict[str, Any] = {}
    if row.token_endpoint_auth_method:
        metadata["token_endpoint_auth_method"] = row.token_endpoint_auth_method
    if row.tls_client_auth_subject_dn:
        metadata["tls_client_auth_subject_dn"] = row.tls_client_auth_subject_dn
    if row.tls_client_auth_san:
        kind, _, value = row.tls_client_auth_san.partition(":")
        metadata[f"tls_client_auth_san_{kind}"] = value
    if row.tls_client_certificates:
        metadata["tls_client_certificates_x5t_s256"] = list(row.tls_client_certificates)
    if row.tls_client_certificate_bound_access_tokens:
        metadata["tls_client_certificate_bound_access_tokens"] = True
    return metadata


def _scopes(values: Iterable[str]) -> list[Scope]:
    try:
        scopes = parse_scopes(values)
    except ValueError as exc:
        raise RegistrationError(Message("error.oauth.unknown-scope", {"error": str(exc)})) from None
    if not scopes:
        raise RegistrationError(Message("error.oauth.no-scope"))
    return scopes


def register_client(  # noqa: PLR0917 - the positional form the CLI and callers use
    session: Session,
    audit: AuditLog,
    organisation_id: str | None,
    kind: str,
    scopes: Sequence[str],
    purposes: Sequence[str],
    redirect_uris: Sequence[str] = (),
    *,
    first_party: bool = False,
    name: str | None = None,
    actor: str | None = None,
    mutual_tls: MutualTls | None = None,
) -> tuple[str, str | None]:
    """Register a client; returns its id and, for a confidential client, its secret.

    The secret is shown only here: the database keeps its Argon2 hash. A client that
    authenticates with its certificate (`mutual_tls`, RFC 8705) has no secret at all.
    * confidential: an organisation's system, client credentials; its scopes within what
      its organisation type may hold (docs/api.md's table); no redirect URIs.
    * public: a browser application (the web pages), authorization code with PKCE and
      refresh tokens; scopes of people; one or more exact redirect URIs.
    """
    if kind not in KINDS:
        raise RegistrationError(Message("error.oauth.unknown-kind", {"kind": kind}))
    mtls = _checked_mutual_tls(mutual_tls or MutualTls(), kind)
    wanted = _scopes(scopes)
    purpose_codes = _check_purposes(purposes)
    organisation = session.get(Organisation, organisation_id) if organisation_id else None
    if organisation_id and organisation is None:
        raise RegistrationError(
            Message("error.oauth.no-organisation", {"organisation": organisation_id})
        )
    if kind == "confidential":
        if organisation is None:
            raise RegistrationError(Message("error.oauth.confidential-organisation"))
        if redirect_uris:
            raise RegistrationError(Message("error.oauth.confidential-redirect"))
        ceiling = ORGANISATION_SCOPES.get(organisation.type, frozenset())
        grant_types = ["client_credentials"]
    else:
        if not redirect_uris:
            raise RegistrationError(Message("error.oauth.public-redirect"))
        for uri in redirect_uris:
            _check_redirect_uri(uri)
        ceiling = PEOPLE_SCOPES
        grant_types = ["authorization_code", "refresh_token"]
    wanted = [s for s in Scope if s in wanted]  # registry order
    beyond = [s.value for s in wanted if s not in ceiling]
    if beyond:
        raise RegistrationError(Message("error.oauth.scopes-beyond", {"scopes": " ".join(beyond)}))
    client_id = new_id("cl")
    auth_method = mtls.auth_method
    secret = new_client_secret() if kind == "confidential" and auth_method is None else None
    session.add(
        OAuthClient(
            client_id=client_id,
            name=name or (organisation.name_zh if organisation else None),
            secret_hash=hash_client_secret(secret) if secret else None,
            organisation_id=organisation_id,
            kind=kind,
            first_party=first_party,
            grant_types=grant_types,
            scopes=[s.value for s in wanted],
            purposes=purpose_codes,
            redirect_uris=list(dict.fromkeys(redirect_uris)),
            created_at=utcnow(),
            token_endpoint_auth_method=auth_method,
            tls_client_auth_subject_dn=mtls.subject_dn,
            tls_client_auth_san=mtls.san,
            tls_client_certificates=list(mtls.self_signed) or None,
            tls_client_certificate_bound_access_tokens=mtls.certificate_bound,
        )
    )
    session.flush()
    row = session.get(OAuthClient, client_id)
    assert row is not None  # noqa: S101 - just added
    audit.record(
        session,
        [
            _event(
                "oauth.client_registered",
                actor,
                organisation=organisation_id,
                client=client_id,
                details={
                    "kind": kind,
                    "first_party": first_party,
                    "grant_types": grant_types,
                    "scopes": [s.value for s in wanted],
                    "purposes": purpose_codes,
                    "redirect_uris": list(redirect_uris),
                    "token_endpoint_auth_method": auth_method or "client_secret_basic",
                    **mutual_tls_metadata(row),
                },
            )
        ],
    )
    log.info("oauth.client_registered", client=client_id, organisation=organisation_id)
    return client_id, secret


def list_clients(session: Session, *, include_revoked: bool = True) -> list[ClientInfo]:
    query = select(OAuthClient).order_by(OAuthClient.created_at, OAuthClient.client_id)
    if not include_revoked:
        query = query.where(OAuthClient.revoked_at.is_(None))
    return [
        ClientInfo(
            client_id=c.client_id,
            name=c.name,
            kind=c.kind,
            organisation_id=c.organisation_id,
            first_party=c.first_party,
            grant_types=list(c.grant_types),
            scopes=list(c.scopes),
            purposes=list(c.purposes),
            redirect_uris=list(c.redirect_uris),
            created_at=c.created_at,
            revoked_at=c.revoked_at,
            token_endpoint_auth_method=c.token_endpoint_auth_method
            or ("none" if c.kind == "public" else "client_secret_basic"),
            mutual_tls=mutual_tls_metadata(c),
        )
        for c in session.scalars(query)
    ]


def revoke_client(
    session: Session,
    audit: AuditLog,
    client_id: str,
    *,
    reason: str | None = None,
    actor: str | None = None,
) -> bool:
    """Revoke a client: its tokens stop working on their next use. False if already revoked."""
    client = session.get(OAuthClient, client_id)
    if client is None:
        raise UnknownClient(client_id)
    if client.revoked_at is not None:
        return False
    client.revoked_at = utcnow()
    session.flush()
    audit.record(
        session,
        [
            _event(
                "oauth.client_revoked",
                actor,
                organisation=client.organisation_id,
                client=client_id,
                reason=reason,
            )
        ],
    )
    log.info("oauth.client_revoked", client=client_id)
    return True


def rotate_token_key(
    session: Session,
    audit: AuditLog,
    keyring: Keyring,
    *,
    max_token_lifetime_seconds: int,
    actor: str | None = None,
) -> str:
    """Rotate the access-token signing key (see `api.oauth.keys`); returns the new kid."""
    row = rotate_signing_key(
        session, keyring, max_token_lifetime=timedelta(seconds=max_token_lifetime_seconds)
    )
    audit.record(session, [_event("oauth.signing_key_rotated", actor, details={"kid": row.kid})])
    return row.kid


def prune_expired(session: Session, *, grace: timedelta = timedelta(days=1)) -> dict[str, int]:
    """Delete what can no longer be used: expired codes, logins and revoked-token entries.

    Codes and logins are kept `grace` beyond their expiry, so a late reuse is still seen
    as reuse. Safe to run at any time, from any process (e.g. beside the checkpoint loop).
    """
    now = utcnow()
    ended = select(TokenFamily.id).where(TokenFamily.expires_at < now - grace)
    counts = {
        "refresh_tokens": session.execute(
            delete(RefreshToken).where(RefreshToken.family_id.in_(ended))
        ).rowcount,  # type: ignore[attr-defined]
        "logins": session.execute(
            delete(TokenFamily).where(TokenFamily.expires_at < now - grace)
        ).rowcount,  # type: ignore[attr-defined]
        "authorization_codes": session.execute(
            delete(AuthorizationCode).where(AuthorizationCode.expires_at < now - grace)
        ).rowcount,  # type: ignore[attr-defined]
        "revoked_access_tokens": session.execute(
            delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now)
        ).rowcount,  # type: ignore[attr-defined]
    }
    log.info("oauth.pruned", **counts)
    return counts


# -- people -----------------------------------------------------------------------------------


def _jurisdiction(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    community = value.get("community")
    if not isinstance(community, str) or not community:
        raise RegistrationError(Message("error.oauth.jurisdiction-community"))
    return {
        "community": community,
        "grids": [str(g) for g in value.get("grids") or ()],
        "buildings": [str(b) for b in value.get("buildings") or ()],
    }


def create_user(
    session: Session,
    audit: AuditLog,
    *,
    username: str,
    password: str,
    role: str,
    organisation_id: str | None = None,
    resident_id: str | None = None,
    badge_number: str | None = None,
    jurisdiction: Mapping[str, Any] | None = None,
    purposes: Sequence[str] = (),
    actor: str | None = None,
) -> str:
    """Create a person's account; returns its id. The password is kept as an Argon2 hash."""
    if not USERNAME.match(username):
        raise RegistrationError(Message("error.oauth.username"))
    if role not in ROLES:
        raise RegistrationError(Message("error.oauth.unknown-role", {"role": role}))
    if len(password) < MIN_PASSWORD_LENGTH:
        raise RegistrationError(
            Message("error.oauth.password-short", {"length": MIN_PASSWORD_LENGTH})
        )
    if session.scalars(select(User.id).where(User.username == username)).first():
        raise RegistrationError(Message("error.oauth.username-taken", {"username": username}))
    if role == "resident" and not resident_id:
        raise RegistrationError(Message("error.oauth.resident-account"))
    if resident_id and session.get(Resident, resident_id) is None:
        raise RegistrationError(Message("error.oauth.no-resident", {"resident": resident_id}))
    if organisation_id and session.get(Organisation, organisation_id) is None:
        raise RegistrationError(
            Message("error.oauth.no-organisation", {"organisation": organisation_id})
        )
    area = _jurisdiction(jurisdiction)
    if role in ("grid_worker", "community_worker") and (organisation_id is None or area is None):
        raise RegistrationError(Message("error.oauth.worker-area"))
    user_id = new_id("u")
    session.add(
        User(
            id=user_id,
            username=username,
            password_hash=hash_password(password),
            role=role,
            organisation_id=organisation_id,
            resident_id=resident_id,
            badge_number=badge_number,
            jurisdiction=area,
            purposes=_check_purposes(purposes),
            created_at=utcnow(),
        )
    )
    session.flush()
    audit.record(
        session,
        [
            _event(
                "oauth.user_created",
                actor,
                organisation=organisation_id,
                details={"username": username, "role": role, "jurisdiction": area},
            )
        ],
    )
    log.info("oauth.user_created", username=username, role=role)
    return user_id


def end_logins(session: Session, username: str, reason: str) -> int:
    """End every live login of a person (their refresh tokens, and the access tokens that
    name the login): after a password reset, or with a disable (whose `disabled_at` alone
    stops their tokens already). Returns how many logins were ended."""
    user_id = select(User.id).where(User.username == username).scalar_subquery()
    result = session.execute(
        update(TokenFamily)
        .where(TokenFamily.user_id == user_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason[:32])
        .execution_options(synchronize_session=False)
    )
    ended = int(result.rowcount)  # type: ignore[attr-defined]
    log.info("oauth.logins_ended", username=username, logins=ended, reason=reason)
    return ended


# -- demo accounts ------------------------------------------------------------------------------

DEMO_ACTOR = "demo-setup"
WEB_REDIRECT_PATHS = (
    "/portal/callback",
    "/desk/callback",
    "/console/callback",
    "/operator/callback",
)
# The demo's first registration only: `serve` then makes the pages' client follow the
# origin it listens on and VAULT_PUBLIC_URL (api.pages.clients.follow_origins).
WEB_ORIGINS = tuple(
    f"{scheme}://{host}:8000" for scheme in ("http", "https") for host in ("127.0.0.1", "localhost")
)


def web_redirect_uris(origins: Iterable[str]) -> list[str]:
    """The pages' callback addresses at each origin, origin by origin."""
    return [f"{origin}{path}" for origin in dict.fromkeys(origins) for path in WEB_REDIRECT_PATHS]


def update_redirect_uris(
    session: Session,
    audit: AuditLog,
    client_id: str,
    redirect_uris: Sequence[str],
    *,
    reason: str | None = None,
    actor: str | None = None,
) -> bool:
    """Replace an active public client's redirect URIs, recorded like its registration
    (`oauth.client_updated`, before and after). False if they were these already."""
    client = session.get(OAuthClient, client_id, with_for_update=True)  # nodes start at once
    if client is None or client.revoked_at is not None:
        raise UnknownClient(client_id)
    if client.kind != "public":
        raise RegistrationError(Message("error.oauth.confidential-redirect"))
    if not redirect_uris:
        raise RegistrationError(Message("error.oauth.public-redirect"))
    for uri in redirect_uris:
        _check_redirect_uri(uri)
    wanted = list(dict.fromkeys(redirect_uris))
    before = list(client.redirect_uris or [])
    if wanted == before:
        return False
    client.redirect_uris = wanted
    session.flush()
    audit.record(
        session,
        [
            _event(
                "oauth.client_updated",
                actor,
                organisation=client.organisation_id,
                client=client_id,
                reason=reason,
                details={"redirect_uris": wanted, "previous_redirect_uris": before},
            )
        ],
    )
    log.info("oauth.client_updated", client=client_id, redirect_uris=len(wanted))
    return True


_DEPARTMENT = (Scope.RESIDENTS_READ, Scope.STATS_READ, Scope.CONSENTS_REQUEST)
_COMPANY = (Scope.RESIDENTS_READ, Scope.CONSENTS_REQUEST)
# The scopes and purposes of each demo organisation's system (docs/api.md, "Scopes by who holds
# them"); an organisation not listed gets its type's row.
DEMO_CLIENTS: Final[dict[str, tuple[tuple[Scope, ...], tuple[str, ...]]]] = {
    "org_civil_affairs": (
        (*_DEPARTMENT, Scope.RESIDENTS_WRITE),
        ("subsidy-review", "elderly-care-visit"),
    ),
    "org_health": (_DEPARTMENT, ("public-health-followup",)),
    "org_public_security": (_DEPARTMENT, ("household-registration-check",)),
    "org_rc_xingfu": (_DEPARTMENT, ("grid-service", "counter-service", "elderly-care-visit")),
    "org_rc_hexie": (_DEPARTMENT, ("grid-service", "counter-service", "elderly-care-visit")),
    "org_anju_property": (_COMPANY, ("property-notice",)),
    "org_yijia_property": (_COMPANY, ("property-notice",)),
    "org_oc_xingfu": (_COMPANY, ("owners-vote",)),
}
DEMO_TYPE_DEFAULTS: Final[dict[str, tuple[tuple[Scope, ...], tuple[str, ...]]]] = {
    "department": (_DEPARTMENT, ()),
    "residents_committee": (_DEPARTMENT, ("grid-service", "counter-service")),
    "property_company": (_COMPANY, ("property-notice",)),
    "owners_committee": (_COMPANY, ("owners-vote",)),
}
DEMO_RESIDENTS = 2
WORKER_PURPOSES: Final = ("grid-service", "counter-service", "elderly-care-visit")
DEMO_OPERATOR_ORG: Final = "org_civil_affairs"


def _password() -> str:
    return secrets.token_urlsafe(12)


def _committee_of(session: Session, community_id: str) -> str | None:
    return session.scalars(
        select(Organisation.id)
        .join(OrganisationCommunity, OrganisationCommunity.organisation_id == Organisation.id)
        .where(
            OrganisationCommunity.community_id == community_id,
            Organisation.type == "residents_committee",
        )
        .order_by(Organisation.id)
    ).first()


def _grid_area(session: Session, grid_id: str) -> dict[str, Any] | None:
    grid = session.get(Grid, grid_id)
    if grid is None:
        return None
    buildings = session.scalars(
        select(Building.id).where(Building.grid_id == grid_id).order_by(Building.id)
    ).all()
    return {"community": grid.community_id, "grids": [grid_id], "buildings": list(buildings)}


def _community_area(session: Session, community_id: str) -> dict[str, Any]:
    grids = session.scalars(
        select(Grid.id).where(Grid.community_id == community_id).order_by(Grid.id)
    ).all()
    buildings = session.scalars(
        select(Building.id).where(Building.community_id == community_id).order_by(Building.id)
    ).all()
    return {"community": community_id, "grids": list(grids), "buildings": list(buildings)}


def _residents_by_community(session: Session) -> dict[str, list[str]]:
    """Active, real (not decoy) residents, grouped by community, in a stable order."""
    rows = session.execute(
        select(Resident.id, Building.community_id)
        .join(Household, Household.id == Resident.household_id)
        .join(Room, Room.id == Household.room_id)
        .join(Building, Building.id == Room.building_id)
        .where(Resident.status == "active", Resident.is_decoy.is_(False))
        .order_by(Building.community_id, Household.id, Resident.id)
    ).all()
    grouped: dict[str, list[str]] = {}
    for resident_id, community_id in rows:
        grouped.setdefault(community_id, []).append(resident_id)
    return grouped


def _guardian(session: Session) -> tuple[str, list[str]] | None:
    """A guardian of a minor, from the guardianship records, with their current wards."""
    now = utcnow()
    rows = session.execute(
        select(Guardianship.guardian_id, Guardianship.ward_id)
        .join(Resident, Resident.id == Guardianship.guardian_id)
        .where(
            Resident.status == "active",
            Resident.is_decoy.is_(False),
            (Guardianship.until.is_(None)) | (Guardianship.until > now),
        )
        .order_by(Guardianship.guardian_id, Guardianship.ward_id)
    ).all()
    if not rows:
        return None
    guardian = rows[0][0]
    return guardian, [ward for g, ward in rows if g == guardian]


def _demo_people(session: Session) -> list[dict[str, Any]]:
    """The cast of people: workers of two grids, a community worker, an auditor, an
    operator, residents."""
    people: list[dict[str, Any]] = []
    for username, grid_id, badge in (
        ("grid.xf1", "gd_xf_1", "WG-XF-001"),
        ("grid.hx1", "gd_hx_1", "WG-HX-001"),
    ):
        area = _grid_area(session, grid_id)
        organisation = _committee_of(session, area["community"]) if area else None
        if area and organisation:
            people.append(
                {
                    "username": username,
                    "role": "grid_worker",
                    "organisation": organisation,
                    "jurisdiction": area,
                    "purposes": list(WORKER_PURPOSES),
                    "badge": badge,
                }
            )
    organisation = _committee_of(session, "cm_xingfu")
    if organisation:
        people.append(
            {
                "username": "community.xf",
                "role": "community_worker",
                "organisation": organisation,
                "jurisdiction": _community_area(session, "cm_xingfu"),
                "purposes": list(WORKER_PURPOSES),
                "badge": "SQ-XF-001",
            }
        )
    people.append({"username": "auditor", "role": "auditor"})
    # An operator administers the district (the admin API, /operator/); no resident data.
    if session.get(Organisation, DEMO_OPERATOR_ORG) is not None:
        people.append(
            {"username": "ops.demo", "role": "operator", "organisation": DEMO_OPERATOR_ORG}
        )
    wards: set[str] = set()
    guardian = _guardian(session)
    if guardian is not None:
        guardian_id, children = guardian
        wards = set(children)
        people.append(
            {
                "username": "resident.guardian",
                "role": "resident",
                "resident_id": guardian_id,
                "children": children,
            }
        )
    # Two more residents, from different communities where there are residents in both.
    taken = {p.get("resident_id") for p in people} | wards
    groups = [[r for r in g if r not in taken] for g in _residents_by_community(session).values()]
    picks = [r for tier in zip_longest(*groups) for r in tier if r is not None][:DEMO_RESIDENTS]
    for number, resident_id in enumerate(picks, start=1):
        people.append(
            {"username": f"resident{number}", "role": "resident", "resident_id": resident_id}
        )
    return people


def create_demo_accounts(
    session: Session, runtime: Runtime, *, web_origins: Sequence[str] = WEB_ORIGINS
) -> dict[str, Any]:
    """Clients for every organisation, the pages' public client (for `web_origins`) and a
    cast of people.

    Returns their credentials in the demo-credentials.json format of docs/api.md; the
    passwords and secrets exist nowhere else. Refuses to run twice.
    """
    audit = runtime.audit
    if session.scalars(select(OAuthClient.client_id).limit(1)).first() is not None:
        raise RegistrationError(Message("error.oauth.demo-exists"))
    clients: list[dict[str, Any]] = []
    for organisation in session.scalars(select(Organisation).order_by(Organisation.id)):
        plan = DEMO_CLIENTS.get(organisation.id) or DEMO_TYPE_DEFAULTS.get(organisation.type)
        if plan is None:
            continue
        ceiling = ORGANISATION_SCOPES[organisation.type]
        scopes = [s.value for s in Scope if s in plan[0] and s in ceiling]
        client_id, secret = register_client(
            session, audit, organisation.id, "confidential", scopes, plan[1], actor=DEMO_ACTOR
        )
        clients.append(
            {
                "client_id": client_id,
                "client_secret": secret,
                "organisation": organisation.id,
                "organisation_type": organisation.type,
                "scopes": scopes,
                "purposes": list(plan[1]),
            }
        )
    redirect_uris = [f"{origin}{path}" for path in WEB_REDIRECT_PATHS for origin in web_origins]
    web_scopes = [s.value for s in Scope if s in PEOPLE_SCOPES]
    web_id, _ = register_client(
        session,
        audit,
        None,
        "public",
        web_scopes,
        (),
        redirect_uris,
        first_party=True,
        name="居民数据保险库网页 / Resident vault pages",
        actor=DEMO_ACTOR,
    )
    users: list[dict[str, Any]] = []
    for person in _demo_people(session):
        password = _password()
        create_user(
            session,
            audit,
            username=person["username"],
            password=password,
            role=person["role"],
            organisation_id=person.get("organisation"),
            resident_id=person.get("resident_id"),
            badge_number=person.get("badge"),
            jurisdiction=person.get("jurisdiction"),
            purposes=person.get("purposes", ()),
            actor=DEMO_ACTOR,
        )
        entry = {"username": person["username"], "password": password, "role": person["role"]}
        for key in ("organisation", "resident_id", "children", "jurisdiction", "purposes"):
            if person.get(key):
                entry[key] = person[key]
        users.append(entry)
    # docs/api.md: the demo includes a consent to a property company (by a demo resident where
    # one lives in a building a company serves); it has its receipt and audit event.
    create_demo_consents(
        session,
        ConsentService(runtime.vault.store, audit, purposes=LivePurposes(runtime.vault.sessions)),
        [str(u["resident_id"]) for u in users if u.get("resident_id")],
    )
    return {
        "clients": clients,
        "public_clients": [
            {"client_id": web_id, "redirect_uris": redirect_uris, "scopes": web_scopes}
        ],
        "users": users,
    }


def write_demo_credentials(path: Path, data: Mapping[str, Any]) -> None:
    """Write the demo credentials readable by the owner only (mode 0600), replacing any."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
        handle.write("\n")
    log.info("oauth.demo_credentials_written", path=str(path))


def init_demo_credentials(runtime: Runtime) -> Path:
    """Create the demo accounts and write them to `<home>/demo-credentials.json`."""
    with runtime.transaction() as session:
        data = create_demo_accounts(session, runtime)
    path = runtime.settings.home / DEMO_CREDENTIALS_FILE
    write_demo_credentials(path, data)
    return path


__all__ = [
    "DEMO_CREDENTIALS_FILE",
    "ClientInfo",
    "RegistrationError",
    "UnknownClient",
    "create_demo_accounts",
    "create_user",
    "end_logins",
    "init_demo_credentials",
    "list_clients",
    "prune_expired",
    "register_client",
    "revoke_client",
    "rotate_token_key",
    "update_redirect_uris",
    "web_redirect_uris",
    "write_demo_credentials",
]
