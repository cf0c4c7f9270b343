"""The purpose registry, as an access consults it: which purposes may be named at all.

Today the registry is the policy bundle's `purposes` (the document `GET /v1/purposes`
serves); this module is the one place a way in asks, so the registry can move (to the
database) without its callers changing. Whether a purpose lets a given caller do a given
thing is policy's word, not this module's.
"""

from __future__ import annotations

from access.errors import UnknownPurpose
from policies import load_bundle
from vault.i18n import Message


def registered_purposes() -> list[str]:
    """The purpose codes in the registry, sorted."""
    return sorted(load_bundle().data.get("purposes", {}))


def require_registered(purpose: str) -> None:
    """UnknownPurpose, naming the registered purposes, unless `purpose` is one of them."""
    known = registered_purposes()
    if purpose not in known:
        raise UnknownPurpose(
            Message(
                "error.purpose.unregistered", {"purpose": purpose, "purposes": ", ".join(known)}
            )
        )
