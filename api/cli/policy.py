"""`resident-vault policy ...`: explain a decision, and review a policy change.

    resident-vault policy explain --as org_anju_property --purpose subsidy-review
    resident-vault policy diff OLD NEW        # directories like policies/, or opa bundles
    resident-vault policy bundle -o resident-vault.tar.gz   # the OPA sidecar's bundle

Both read only policy and its data, never a resident's values, so they need no vault:
`--as` names an organisation with a mandate of its own or a subject type, as the policy
data names them (`type:<subject type>` works too). Errors are one line; exit 2 means the
input could not be read, exit 1 (for `diff --fail-on-change`) that the revisions differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from access.subjects import organisation_subject
from api.cli.common import argument, err, fail, group, option, out, runtime, settings
from api.cli.lang import current as current_lang
from api.cli.lang import help_text, say
from policies import PolicyBundle, PolicyError, build_bundle, load_bundle
from policies.bundle import find_opa
from policies.district import district_data
from policies.explain import Explainer
from policies.inputs import catalogue_fields, decision_input
from policies.review import (
    Change,
    diff_tables,
    load_policy,
    policy_engine_for,
    policy_table,
    review_subjects,
)
from vault.catalogue import default_catalogue
from vault.models import Organisation

policy_app = group("cli.help.policy")

EXIT_UNREADABLE = 2  # the input could not be read (1 is `diff --fail-on-change`'s)


def _fail(message: str) -> typer.Exit:
    return fail(message, EXIT_UNREADABLE)


def _subject(label: str, data: dict[str, Any]) -> dict[str, Any]:
    """A subject named by the policy data, else an organisation of the configured vault."""
    subjects = review_subjects(data)
    for key in (label, f"org:{label}", f"type:{label}"):
        if key in subjects:
            return subjects[key]
    found = _vault_organisation(label)
    if found is not None:
        return found
    known = ", ".join(k.split(":", 1)[1] for k in subjects)
    raise _fail(say("cli.policy.unknown-subject", subject=repr(label), known=known))


def _vault_organisation(organisation: str) -> dict[str, Any] | None:
    """The organisation as the vault records it (type, communities, buildings), if there is
    a vault here and it knows the organisation."""
    configured = settings()
    if not configured.keyring_path.exists():
        return None
    with runtime(configured) as rt, rt.vault.sessions() as session:
        if session.get(Organisation, organisation) is None:
            return None
        return organisation_subject(session, organisation).policy_input()


def _district_bundle() -> PolicyBundle:
    """The shipped policy with this vault's district data (its purposes and mandates), or
    without any when there is no vault here."""
    configured = settings()
    if not configured.keyring_path.exists():
        return load_bundle()
    with runtime(configured) as rt, rt.vault.sessions() as session:
        return load_bundle().with_district(district_data(session).document)


@policy_app.command("explain", help=help_text("cli.help.policy.explain"))
def explain_command(
    as_: Annotated[str, option("cli.help.policy.explain.as", "--as")],
    purpose: Annotated[str | None, option("cli.help.policy.explain.purpose")] = None,
    action: Annotated[str, option("cli.help.policy.explain.action")] = "read",
    field: Annotated[list[str] | None, option("cli.help.policy.explain.field")] = None,
    as_json: Annotated[bool, option("cli.help.policy.explain.json", "--json")] = False,
) -> None:
    """Explain why an access is allowed or refused."""
    lang = current_lang()
    bundle = _district_bundle()
    data = {**bundle.data, "purposes": bundle.district_data()["purposes"]}
    subject = _subject(as_, data)
    catalogue = default_catalogue()
    unknown = [f for f in field or () if f not in catalogue]
    if unknown:
        raise _fail(say("cli.policy.explain.unknown-fields", fields=", ".join(unknown)))
    from policies import EmbeddedEngine  # noqa: PLC0415 - loads wasmtime

    with EmbeddedEngine(bundle) as engine:
        decision = engine.evaluate(decision_input(subject, purpose=purpose, action=action))
    explainer = Explainer(
        data,
        catalogue_fields(catalogue),
        {k: {"zh": v.zh, "en": v.en} for k, v in catalogue.categories.items()},
    )
    explained = explainer.explain(
        decision, purpose=purpose, action=action, lang=lang, fields=field or None
    )
    if as_json:
        out.print(json.dumps(explained, ensure_ascii=False, indent=2), markup=False)
        return
    out.print(explained["summary"], markup=False)
    out.print(
        say("cli.policy.explain.rules", rules=", ".join(explained["deciding_rules"])),
        markup=False,
    )
    for line in explained["fields"]:
        if field or line["treatment"] != "denied" or line["adjustments"]:
            word = explainer.treatment(line["treatment"], lang)
            because = say("cli.policy.explain.separator").join(line["because"])
            shown = say("cli.policy.explain.field", label=line["label"], treatment=word)
            out.print(f"  {shown}{because}", markup=False)
    for change in explained["changes"]:
        out.print("  → " + change["text"], markup=False)


def _change_text(change: Change) -> str:
    where = f"{change.purpose} · {change.action}"
    if change.what == "access":
        if change.direction == "gains":
            return f"+ {where}: " + say("cli.policy.diff.allowed")
        return f"- {where}: " + say("cli.policy.diff.refused", after=change.after)
    sign = {"gains": "+", "loses": "-"}.get(change.direction, "~")
    what = change.name or change.what
    return f"{sign} {where}: {what} {change.before} → {change.after}"


@policy_app.command("diff", help=help_text("cli.help.policy.diff"))
def diff_command(
    old: Annotated[Path, argument("cli.help.policy.diff.old")],
    new: Annotated[Path, argument("cli.help.policy.diff.new")],
    as_json: Annotated[bool, option("cli.help.policy.diff.json", "--json")] = False,
    fail_on_change: Annotated[bool, option("cli.help.policy.diff.fail-on-change")] = False,
) -> None:
    """What each organisation gains or loses between two revisions of the policy."""
    try:
        before, after = load_policy(old), load_policy(new)
        subjects = review_subjects(before.data, after.data)
        purposes = sorted(
            set(before.data.get("purposes", {})) | set(after.data.get("purposes", {}))
        )
        actions = sorted(set(before.data.get("actions", ())) | set(after.data.get("actions", ())))
        with policy_engine_for(before) as engine:
            old_table = policy_table(
                engine, before.data, subjects, purposes=purposes, actions=actions
            )
        with policy_engine_for(after) as engine:
            new_table = policy_table(
                engine, after.data, subjects, purposes=purposes, actions=actions
            )
    except (PolicyError, OSError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    changes = diff_tables(old_table, new_table)
    if as_json:
        for change in changes:
            out.print(json.dumps(change.as_dict(), ensure_ascii=False), markup=False)
    else:
        header = say(
            "cli.policy.diff.header",
            before=before.revision,
            after=after.revision,
            cases=len(old_table),
            changes=len(changes),
        )
        out.print(header, markup=False)
        current = None
        for change in changes:
            if change.subject != current:
                current = change.subject
                out.print(current, markup=False)
            out.print("  " + _change_text(change), markup=False)
    if fail_on_change and changes:
        raise typer.Exit(1)


@policy_app.command("bundle", help=help_text("cli.help.policy.bundle"))
def bundle_command(
    output: Annotated[Path, option("cli.help.policy.bundle.output", "-o", "--output")],
) -> None:
    """Build the OPA bundle of the shipped policy and print its revision."""
    opa = find_opa()
    if opa is None:
        raise _fail(say("cli.policy.bundle.no-opa"))
    bundle = load_bundle()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        build_bundle(opa, bundle, output)
    except (PolicyError, OSError) as exc:
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    out.print(bundle.revision, markup=False)
    err.print(
        say("cli.policy.bundle.written", output=output, revision=bundle.revision),
        markup=False,
    )
