"""`resident-vault keys ...`: the key-encryption keys (rotate, list, migrate into the HSM)
and, from `api.cli.clients`, the access-token signing keys (`keys tokens ...`).

    resident-vault keys rotate [--data-keys] [--destroy-retired]   # resumable
    resident-vault keys list                                       # ids and dates only
    resident-vault keys migrate --to pkcs11 [--destroy-local]

Key material is never printed; every change is recorded in the audit log.
"""

from __future__ import annotations

from typing import Annotated

import typer

from access.runtime import operator_name
from api.cli.clients import token_keys_app
from api.cli.common import Actor, CliError, group, option, out, progress, runtime, settings
from api.cli.lang import help_text, say
from audit import operator_event
from vault.rotation import destroy_retired_keks, rotate_data_keys, rotate_kek

keys_app = group("cli.help.keys")
keys_app.add_typer(token_keys_app, name="tokens")


@keys_app.command("rotate", help=help_text("cli.help.keys.rotate"))
def keys_rotate(
    data_keys: Annotated[bool, option("cli.help.keys.rotate.data-keys", "--data-keys")] = False,
    destroy_retired: Annotated[
        bool, option("cli.help.keys.rotate.destroy-retired", "--destroy-retired")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 500,
    actor: Actor = None,
) -> None:
    """Rotate keys online; an interrupted run resumes."""
    who = operator_name(actor)
    with runtime() as rt, progress() as bar:
        vault = rt.vault
        task = bar.add_task(say("cli.keys.rotate.progress-rewrap"), total=None)
        report = rotate_kek(
            vault.sessions,
            vault.store,
            batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        details = {
            "kek": report.target,
            "rewrapped": report.processed,
            "retokened": report.retokened,
            "resumed": report.resumed,
        }
        events = [operator_event("keys.kek_rotated", who, details)]
        out.print(
            say("cli.keys.rotate.kek-done", target=report.target, processed=report.processed)
            + (say("cli.keys.rotate.resumed") if report.resumed else "")
        )
        if data_keys:
            task = bar.add_task(say("cli.keys.rotate.progress-reseal"), total=None)
            dk = rotate_data_keys(
                vault.sessions,
                vault.store,
                batch_size=max(1, batch_size // 2),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            resealed = {"residents": dk.processed}
            events.append(operator_event("keys.data_keys_rotated", who, resealed))
            out.print(say("cli.keys.rotate.data-keys-done", processed=dk.processed))
        if destroy_retired:
            destroyed = destroy_retired_keks(vault.sessions, vault.store)
            events.append(operator_event("keys.kek_destroyed", who, {"keks": destroyed}))
            out.print(say("cli.keys.rotate.keks-destroyed", destroyed=len(destroyed)))
        with rt.transaction() as session:
            rt.audit.record(session, events)


@keys_app.command("list", help=help_text("cli.help.keys.list"))
def keys_list() -> None:
    """List key-encryption keys (ids and dates, never key material)."""
    with runtime() as rt:
        for info in rt.vault.keyring.keks():
            mark = say("cli.keys.list.active") if info.active else ""
            out.print(f"{info.kek_id}  {info.suite.value}  {info.created_at.isoformat()}{mark}")


@keys_app.command("migrate", help=help_text("cli.help.keys.migrate"))
def keys_migrate(
    to: Annotated[str, option("cli.help.keys.migrate.to", "--to")],
    destroy_local: Annotated[
        bool, option("cli.help.keys.migrate.destroy-local", "--destroy-local")
    ] = False,
    actor: Actor = None,
) -> None:
    """Move the local keys into the HSM, check, switch."""
    from vault import keyring_migration as migration  # noqa: PLC0415 - loads PKCS#11
    from vault.keyring import LocalKeyring  # noqa: PLC0415

    if to != "pkcs11":
        raise CliError(say("cli.keys.migrate.bad-target", to=to))
    local = settings().model_copy(update={"keyring": "local"})
    if local.keyring_path.exists():
        with runtime(local) as rt:
            keyring = rt.vault.keyring
            assert isinstance(keyring, LocalKeyring)  # noqa: S101 - keyring=local
            report = migration.migrate_to_pkcs11(local, keyring, rt.vault.sessions)
            details = {**report.details(), "local": "destroyed" if destroy_local else "renamed"}
            with rt.transaction() as session:
                rt.audit.record(
                    session, [operator_event("keys.migrated", operator_name(actor), details)]
                )
    elif not migration.token_holds_migrated_keyring(local):
        raise CliError(say("cli.keys.migrate.no-keyring", path=local.keyring_path))
    kept = migration.retire_local_keyring(local, destroy=destroy_local)
    out.print(say("cli.keys.migrate.done"))
    gone = say("cli.keys.migrate.destroyed")
    out.print(say("cli.keys.migrate.local-file", kept=kept or gone))
    out.print(say("cli.keys.migrate.settings-heading"))
    for line in (
        "VAULT_KEYRING=pkcs11",
        f"VAULT_PKCS11_TOKEN_LABEL={local.pkcs11_token_label}",
        f"VAULT_PKCS11_KEY_PREFIX={local.pkcs11_key_prefix}",
        f"VAULT_PKCS11_MODULE={local.pkcs11_module}",
        "VAULT_PKCS11_PIN (or VAULT_PKCS11_PIN_FILE)",
    ):
        out.print(f"  {line}", markup=False)
