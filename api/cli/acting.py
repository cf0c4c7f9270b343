"""Who a data command acts as: the CLI's way through the gate, like every other way in.

`--as USERNAME` (an account: a worker, a resident, an auditor) or `--as-org ORG` (an
organisation's system, as its client-credentials token would be), and `--purpose`,
checked against the purpose registry (`access.purposes`). The command then calls the
gate's own functions (`Gate.search`, `Gate.read`, `access.exports.records.open_export`),
so policy decides what is shown, and the gate writes the audit entries, refusals
included, exactly as it does for the HTTP routes. No data command reads the vault
directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated

from access.gate import Gate
from access.purposes import require_registered
from access.runtime import Runtime
from access.subjects import Access, Subject, organisation_subject, subject_for
from api.cli.common import fail, option, runtime
from api.cli.lang import say
from policies.district import follow_district
from vault.accounts import AccountConflict, get_account
from vault.i18n import Message
from vault.models import Organisation
from vault.places import PlaceError

AsUser = Annotated[str | None, option("cli.help.acting.as", "--as")]
AsOrg = Annotated[str | None, option("cli.help.acting.as-org", "--as-org")]
Justification = Annotated[str | None, option("cli.help.acting.justification", "--justification")]
Purpose = Annotated[str | None, option("cli.help.main.lookup.purpose", "--purpose")]


class _Account:
    """An account as the gate's subject builder takes a caller (`access.subjects.Caller`)."""

    client_id = "cli"
    organisation = None

    def __init__(self, username: str) -> None:
        self.username = username


def _subject(rt: Runtime, as_user: str | None, as_org: str | None) -> Subject:
    if (as_user is None) == (as_org is None):
        raise fail(say("cli.acting.one-of"))
    with rt.vault.sessions() as session:
        if as_user is not None:
            account = get_account(session, as_user)
            if account.disabled:
                raise AccountConflict(Message("error.account.disabled", {"username": as_user}))
            # No OAuth client stands behind a command: the entries name no client.
            return replace(subject_for(session, _Account(as_user)), client=None)
        assert as_org is not None  # noqa: S101 - one of the two, checked above
        organisation = session.get(Organisation, as_org)
        if organisation is None:
            raise PlaceError(Message("error.org.unknown", {"id": as_org}))
        if organisation.retired_at is not None:
            raise PlaceError(Message("error.org.retired", {"id": as_org}))
        return organisation_subject(session, as_org)


def policy_gate(rt: Runtime) -> Gate:
    """The gate with the service's policy engine (embedded, or the OPA sidecar configured)."""
    from api.http.app import policy_engine  # noqa: PLC0415 - the web app only when acting
    from api.settings import settings_of  # noqa: PLC0415

    # With the district's data from the database, as the service decides (policies.district).
    engine = follow_district(
        policy_engine(settings_of(rt)), rt.vault.sessions, rt.vault.stamps.current
    )
    return Gate(rt, engine)


@contextmanager
def acting(
    as_user: str | None,
    as_org: str | None,
    purpose: str | None,
    action: str,
    justification: str | None = None,
) -> Iterator[tuple[Gate, Access]]:
    """The gate and this command's access (who, for what purpose), for `action`. A purpose
    not in the registry is refused before anything is read, and the refusal recorded."""
    with runtime() as rt:
        gate = policy_gate(rt)
        access = Access(
            subject=_subject(rt, as_user, as_org),
            purpose=purpose,
            request_id=f"cli_{uuid.uuid4().hex}",
            channel="cli",
            justification=(justification or "").strip() or None,  # the entry keeps 500
        )
        if purpose is not None:
            with gate.denials_recorded(access, action), rt.vault.sessions() as session:
                require_registered(session, purpose)
        yield gate, access
