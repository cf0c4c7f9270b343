"""The people who log in: residents, grid and community workers, auditors, operators.

An account names a role, the organisation a worker serves and their jurisdiction; policy
reads them through `access.subjects`. Passwords are stored only as Argon2 hashes. The table
keeps its first name (`oauth_users`): the OAuth server was its first reader.

The district's staff accounts are made here, by an operator, never by editing code
(`add_account`, `list_accounts`, `disable_account`, `reset_password`; issue 19). Each call
works in the caller's transaction and returns an `AccountChange`, which says what the
caller records in the audit log in that same transaction (`api.cli.accounts`; an admin API
calls the very same functions). A refusal is an `AccountError` carrying its `Message`;
nothing is written. Nothing is deleted: a disabled account keeps its username for the
audit entries that name it, cannot log in, and its live tokens stop on their next use
(`api.oauth.tokens` checks `disabled_at` on every request). After a reset (and with a
disable) the caller also ends the account's logins, in the same transaction
(`api.oauth.service.end_logins`): the OAuth tables are not this floor's, and a reset that
leaves them would leave whoever held the old password signed in.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from vault.errors import VaultError
from vault.i18n import Message
from vault.models import (
    Base,
    Building,
    Community,
    Grid,
    Organisation,
    OrganisationCommunity,
    TZDateTime,
    new_id,
    utcnow,
)
from vault.passwords import hash_password

# Every role a person may have; `api.oauth.scopes.ROLE_SCOPES` says what each may hold.
# An operator administers the district (accounts, places, organisations): policy gives
# them no resident data.
ROLES: Final = ("resident", "grid_worker", "community_worker", "auditor", "operator")
# The roles `add_account` makes: a resident's account is linked to their record instead.
STAFF_ROLES: Final = ("grid_worker", "community_worker", "auditor", "operator")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024  # Argon2 hashes any length; this bounds the work


class User(Base):
    """A person who logs in: a resident, a grid or community worker, an auditor, or an
    operator."""

    __tablename__ = "oauth_users"
    __table_args__ = (
        CheckConstraint(
            "role IN ('resident', 'grid_worker', 'community_worker', 'auditor', 'operator')",
            name="role",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    organisation_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    resident_id: Mapped[str | None] = mapped_column(ForeignKey("residents.id"), index=True)
    badge_number: Mapped[str | None] = mapped_column(String(32))
    # {"community": id, "grids": [ids], "buildings": [ids]} for workers.
    jurisdiction: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    purposes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(TZDateTime())


# -- refusals --------------------------------------------------------------------------------


class AccountError(VaultError):
    """An account that cannot be made or changed as asked; nothing was written."""

    slug: ClassVar[str] = "validation-error"

    def __init__(self, message: Message) -> None:
        super().__init__(message.text("en"))  # logs and tracebacks read English
        self.message = message


class AccountConflict(AccountError):
    slug = "conflict"  # a username in use, an account already disabled


class AccountNotFound(AccountError):
    slug = "not-found"


# -- what callers get ------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """An account as listed: everything but its password's hash."""

    username: str
    role: str
    organisation: str | None
    community: str | None
    grids: tuple[str, ...]
    buildings: tuple[str, ...]
    created_at: datetime
    disabled_at: datetime | None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def record(self) -> dict[str, Any]:
        """The account as JSON (`--json`, an admin API's answer)."""
        return {
            "username": self.username,
            "role": self.role,
            "organisation": self.organisation,
            "jurisdiction": {
                "community": self.community,
                "grids": list(self.grids),
                "buildings": list(self.buildings),
            },
            "created_at": self.created_at.isoformat(),
            "disabled": self.disabled,
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
        }


@dataclass(frozen=True)
class AccountChange:
    """What a change did, for the caller to show and to record.

    `password` is the one-time password the vault made, when it made one: show it once
    and keep it nowhere (it is in no log, no audit entry, no record). `action` and
    `details()` are the audit entry's, by `actor`; never a password."""

    action: str
    actor: str
    account: Account
    password: str | None = None

    def details(self) -> dict[str, Any]:
        return {
            "username": self.account.username,
            "role": self.account.role,
            "jurisdiction": self.account.record()["jurisdiction"],
        }


# -- the operations --------------------------------------------------------------------------


def add_account(
    session: Session,
    actor: str,
    *,
    username: str,
    role: str,
    organisation_id: str,
    grid_id: str | None = None,
    community_id: str | None = None,
    password: str | None = None,
) -> AccountChange:
    """Make a staff account serving `organisation_id` (an organisation in use).

    A grid worker works one grid (`grid_id`, in a community the organisation serves):
    their jurisdiction is that grid's community and buildings. A community worker works
    one community the organisation serves (`community_id`; the organisation's only one by
    default). Auditors and operators have no jurisdiction. Without `password` the vault
    makes a one-time password, returned once in the change."""
    if role not in ROLES:
        raise AccountError(Message("error.account.role", {"role": role, "roles": _roles()}))
    if role not in STAFF_ROLES:
        raise AccountError(Message("error.account.resident"))
    if not USERNAME.match(username):
        raise AccountError(Message("error.account.username", {"username": username}))
    chosen = _checked_password(password, username)
    organisation = session.get(Organisation, organisation_id)
    if organisation is None:
        raise AccountError(Message("error.org.unknown", {"id": organisation_id}))
    if organisation.retired_at is not None:
        raise AccountError(Message("error.org.retired", {"id": organisation_id}))
    jurisdiction = _jurisdiction(session, role, organisation_id, grid_id, community_id)
    if session.scalars(select(User.id).where(User.username == username)).first() is not None:
        raise AccountConflict(Message("error.account.taken", {"username": username}))
    user = User(
        id=new_id("u"),
        username=username,
        password_hash=hash_password(chosen),
        role=role,
        organisation_id=organisation_id,
        jurisdiction=jurisdiction,
        purposes=[],  # policy decides purposes by role; the column is kept for old rows
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    return AccountChange(
        "account.added", actor, _account(user), chosen if password is None else None
    )


def list_accounts(session: Session, *, disabled: bool = False) -> list[Account]:
    """Accounts by username; disabled ones only when asked for."""
    query = select(User).order_by(User.username)
    if not disabled:
        query = query.where(User.disabled_at.is_(None))
    return [_account(user) for user in session.scalars(query)]


def get_account(session: Session, username: str) -> Account:
    """One account by username (AccountNotFound if there is none)."""
    return _account(_user(session, username))


def disable_account(session: Session, actor: str, username: str) -> AccountChange:
    """Disable an account: it cannot log in, and its tokens stop on their next use."""
    user = _user(session, username)
    if user.disabled_at is not None:
        raise AccountConflict(Message("error.account.disabled", {"username": username}))
    user.disabled_at = utcnow()
    session.flush()
    return AccountChange("account.disabled", actor, _account(user))


def reset_password(
    session: Session, actor: str, username: str, password: str | None = None
) -> AccountChange:
    """Give an account in use a new password (a one-time one the vault makes, returned once
    in the change, unless `password` is given); the old one stops working at once."""
    user = _user(session, username)
    if user.disabled_at is not None:
        raise AccountConflict(Message("error.account.disabled", {"username": username}))
    chosen = _checked_password(password, username)
    user.password_hash = hash_password(chosen)
    session.flush()
    return AccountChange(
        "account.password_reset", actor, _account(user), chosen if password is None else None
    )


def one_time_password() -> str:
    """A password the vault makes: 128 random bits, in 22 URL-safe characters."""
    return secrets.token_urlsafe(16)


# -- checks ----------------------------------------------------------------------------------


def _roles() -> str:
    return ", ".join(STAFF_ROLES)


def _checked_password(password: str | None, username: str) -> str:
    """The password to set: the one given, if strong enough, else a one-time one."""
    if password is None:
        return one_time_password()
    weak = (
        len(password) < MIN_PASSWORD_LENGTH
        or len(password) > MAX_PASSWORD_LENGTH
        or len(set(password)) < 4  # e.g. "aaaaaaaaaaaa", "abababababab"
        or (len(username) >= 4 and username in password.lower())
        or password != password.strip()  # a pasted newline or space would never match
    )
    if weak:
        raise AccountError(
            Message(
                "error.account.password-weak",
                {"least": MIN_PASSWORD_LENGTH, "most": MAX_PASSWORD_LENGTH},
            )
        )
    return password


def _jurisdiction(
    session: Session,
    role: str,
    organisation_id: str,
    grid_id: str | None,
    community_id: str | None,
) -> dict[str, Any] | None:
    served = set(
        session.scalars(
            select(OrganisationCommunity.community_id).where(
                OrganisationCommunity.organisation_id == organisation_id
            )
        )
    )
    if role != "grid_worker" and grid_id is not None:
        raise AccountError(Message("error.account.grid-only"))
    if role != "community_worker" and community_id is not None:
        raise AccountError(Message("error.account.community-only"))
    if role == "grid_worker":
        if grid_id is None:
            raise AccountError(Message("error.account.needs-grid"))
        grid = session.get(Grid, grid_id)
        if grid is None:
            raise AccountError(Message("error.place.unknown", {"kind": "grid", "id": grid_id}))
        if grid.retired_at is not None:
            raise AccountError(Message("error.place.retired", {"kind": "grid", "id": grid_id}))
        if grid.community_id not in served:
            raise AccountError(
                Message("error.account.outside", {"place": grid_id, "id": organisation_id})
            )
        buildings = session.scalars(
            select(Building.id)
            .where(Building.grid_id == grid_id, Building.retired_at.is_(None))
            .order_by(Building.id)
        )
        return {"community": grid.community_id, "grids": [grid_id], "buildings": list(buildings)}
    if role == "community_worker":
        return _community_area(session, organisation_id, community_id, served)
    return None


def _community_area(
    session: Session, organisation_id: str, community_id: str | None, served: set[str]
) -> dict[str, Any]:
    if community_id is None:
        if len(served) != 1:
            raise AccountError(Message("error.account.needs-community", {"id": organisation_id}))
        (community_id,) = served
    community = session.get(Community, community_id)
    if community is None:
        raise AccountError(
            Message("error.place.unknown", {"kind": "community", "id": community_id})
        )
    if community.retired_at is not None:
        raise AccountError(
            Message("error.place.retired", {"kind": "community", "id": community_id})
        )
    if community_id not in served:
        raise AccountError(
            Message("error.account.outside", {"place": community_id, "id": organisation_id})
        )
    grids = session.scalars(
        select(Grid.id)
        .where(Grid.community_id == community_id, Grid.retired_at.is_(None))
        .order_by(Grid.id)
    )
    buildings = session.scalars(
        select(Building.id)
        .where(Building.community_id == community_id, Building.retired_at.is_(None))
        .order_by(Building.id)
    )
    return {"community": community_id, "grids": list(grids), "buildings": list(buildings)}


def _user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise AccountNotFound(Message("error.account.unknown", {"username": username}))
    return user


def _account(user: User) -> Account:
    area: Mapping[str, Any] = user.jurisdiction or {}
    return Account(
        username=user.username,
        role=user.role,
        organisation=user.organisation_id,
        community=area.get("community"),
        grids=tuple(area.get("grids") or ()),
        buildings=tuple(area.get("buildings") or ()),
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )
