"""The purpose registry, as an access consults it: which purposes may be named at all.

The registry is the database's (`vault.purposes`: the shipped national purposes and the
district's own); this module is the one place a way in asks. Whether a purpose lets a
given caller do a given thing is policy's word, not this module's.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from access.errors import UnknownPurpose
from vault.i18n import Message
from vault.purposes import find_purpose
from vault.purposes import registered_purposes as registry


def registered_purposes(session: Session) -> list[str]:
    """The purpose codes in force, sorted."""
    return sorted(registry(session))


def require_registered(session: Session, purpose: str) -> None:
    """UnknownPurpose, naming the registered purposes, unless `purpose` is one in force."""
    if find_purpose(session, purpose) is None:
        known = registered_purposes(session)
        raise UnknownPurpose(
            Message(
                "error.purpose.unregistered", {"purpose": purpose, "purposes": ", ".join(known)}
            )
        )
