"""Policy change review: the whole subject x purpose x action x field table, under two
revisions, and what each organisation gains or loses between them.

    old = load_policy(Path("policies-before"))     # a directory laid out like policies/,
    new = load_policy(Path("bundle.tar.gz"))       # or an `opa build` bundle
    changes = diff_tables(policy_table(old), policy_table(new))

A revision whose Rego sources match the shipped `policy.wasm` runs on it directly (a data
change needs no compiler); other Rego is compiled with the `opa` binary first. The subjects
come from the policies' own data: every organisation with a mandate of its own, and one
subject of each organisation and worker type, each with a jurisdiction at every level, so
the table asks about everyone either revision can name.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from policies.bundle import DATA_PATH, DATA_ROOT, PolicyBundle, canonical_json, find_opa
from policies.errors import PolicyError
from policies.inputs import catalogue_fields, decision_input
from policies.interfaces import TREATMENT_RANK, Decision, Treatment

__all__ = [
    "Change",
    "TableRow",
    "diff_tables",
    "load_policy",
    "policy_engine_for",
    "policy_table",
    "review_subjects",
]

_TEST_SUFFIX = "_test.rego"
_EVERYWHERE = {"communities": ["cm_any"], "grids": ["gd_any"], "buildings": ["bd_any"]}


def load_policy(path: Path) -> PolicyBundle:
    """A policy revision from a directory laid out like `policies/` (Rego under `vault/`,
    data in `vault/data.json`) or from an `opa build` bundle (.tar.gz)."""
    if path.is_dir():
        modules = {
            p.relative_to(path).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted((path / DATA_ROOT).rglob("*.rego"))
            if not p.name.endswith(_TEST_SUFFIX)
        }
        data_file = path / DATA_PATH
        if not data_file.exists():
            raise PolicyError(f"{path}: no {DATA_PATH}")
        data = json.loads(data_file.read_text(encoding="utf-8"))
    elif path.is_file():
        modules, data = _read_bundle(path)
    else:
        raise PolicyError(f"{path}: no such policy directory or bundle")
    if not modules:
        raise PolicyError(f"{path}: no Rego modules under {DATA_ROOT}/")
    if not isinstance(data, Mapping):
        raise PolicyError(f"{path}: the data document must be an object")
    return PolicyBundle(modules=MappingProxyType(modules), data_json=canonical_json(data))


def _read_bundle(path: Path) -> tuple[dict[str, str], Any]:
    modules: dict[str, str] = {}
    data: Any = None
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive.getmembers():
                name = member.name.lstrip("/")
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                with handle:
                    text = io.TextIOWrapper(handle, encoding="utf-8").read()
                if name.endswith(".rego") and not name.endswith(_TEST_SUFFIX):
                    modules[name] = text
                elif name == "data.json":
                    data = json.loads(text).get(DATA_ROOT)
                elif name == DATA_PATH:
                    data = json.loads(text)
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise PolicyError(f"{path}: not a readable policy bundle ({exc})") from exc
    if data is None:
        raise PolicyError(f"{path}: the bundle holds no data document at data.{DATA_ROOT}")
    return modules, data


@contextmanager
def policy_engine_for(bundle: PolicyBundle) -> Iterator[Any]:
    """An embedded engine for this revision (compiling its Rego with `opa` if it differs
    from the shipped module)."""
    from policies.build_wasm import compile_wasm  # noqa: PLC0415 - only for Rego changes
    from policies.embedded import EmbeddedEngine, shipped_wasm  # noqa: PLC0415 - wasmtime

    try:
        wasm = shipped_wasm(bundle)
    except PolicyError:
        opa = find_opa()
        if not opa:
            raise PolicyError(
                "this revision changes the Rego itself: comparing it needs the opa binary "
                "(set OPA_BIN or run .ci/install-opa)"
            ) from None
        wasm = compile_wasm(opa, bundle.modules)
    engine = EmbeddedEngine(bundle, wasm=wasm)
    try:
        yield engine
    finally:
        engine.close()


def review_subjects(*datas: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Subjects by label: `org:<id>` for each organisation with a mandate of its own and
    `type:<subject type>` for each organisation or worker type, across every data given."""
    subjects: dict[str, dict[str, Any]] = {}
    for data in datas:
        kinds = data.get("subject_types", {})
        for kind, spec in sorted(kinds.items()):
            if spec.get("kind") in {"organisation", "worker"}:
                roles = [kind] if spec.get("kind") == "worker" else []
                subjects[f"type:{kind}"] = {
                    "type": kind,
                    "roles": roles,
                    "jurisdiction": _EVERYWHERE,
                }
        organisations = data.get("mandates", {}).get("organisations", {})
        for org, mandate in sorted(organisations.items()):
            kind = str(mandate.get("type", ""))
            roles = [kind] if kinds.get(kind, {}).get("kind") == "worker" else []
            subjects[f"org:{org}"] = {
                "type": kind,
                "organisation": org,
                "roles": roles,
                "jurisdiction": _EVERYWHERE,
            }
    return dict(sorted(subjects.items()))


@dataclass(frozen=True)
class TableRow:
    """One subject x purpose x action: what policy lets out."""

    allow: bool
    fields: Mapping[str, str]
    levels: Mapping[str, str]
    consent_required: bool
    identifier: str
    rows: str
    reason: str

    @classmethod
    def of(cls, decision: Decision) -> TableRow:
        level = next(
            (
                name
                for name in ("communities", "grids", "buildings")
                if getattr(decision.rows, name)
            ),
            str(decision.rows.scope),
        )
        return cls(
            allow=decision.allow,
            fields={n: str(t) for n, t in sorted(decision.fields.items())},
            levels=dict(decision.levels),
            consent_required=decision.rows.consent_required,
            identifier=decision.identifier,
            rows=level if decision.allow else "none",
            reason=decision.reason.code,
        )


Key = tuple[str, str, str]  # subject label, purpose, action


def policy_table(
    engine: Any,
    data: Mapping[str, Any],
    subjects: Mapping[str, Mapping[str, Any]],
    *,
    purposes: Sequence[str] | None = None,
    actions: Sequence[str] | None = None,
    fields: Sequence[Mapping[str, Any]] | None = None,
) -> dict[Key, TableRow]:
    """The full table under one engine: every subject x purpose x action."""
    purposes = purposes or sorted(data.get("purposes", {}))
    actions = actions or list(data.get("actions", ()))
    fields = fields or catalogue_fields()
    return {
        (label, purpose, action): TableRow.of(
            engine.evaluate(decision_input(subject, purpose=purpose, action=action, fields=fields))
        )
        for label, subject in subjects.items()
        for purpose in purposes
        for action in actions
    }


@dataclass(frozen=True)
class Change:
    """What one subject gains or loses for one purpose and action."""

    subject: str
    purpose: str
    action: str
    what: str  # access | field | level | consent | identifier | rows
    name: str | None
    before: Any
    after: Any
    direction: str  # gains | loses | changes

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "purpose": self.purpose,
            "action": self.action,
            "what": self.what,
            "name": self.name,
            "before": self.before,
            "after": self.after,
            "direction": self.direction,
        }


def _rank(treatment: str) -> int:
    try:
        return TREATMENT_RANK[Treatment(treatment)]
    except ValueError:
        return 0


def _field_changes(key: Key, old: TableRow, new: TableRow) -> Iterator[Change]:
    subject, purpose, action = key
    for name in sorted(set(old.fields) | set(new.fields)):
        before = old.fields.get(name, "denied") if old.allow else "denied"
        after = new.fields.get(name, "denied") if new.allow else "denied"
        if before != after:
            direction = "gains" if _rank(after) > _rank(before) else "loses"
            yield Change(subject, purpose, action, "field", name, before, after, direction)
        elif after == "generalised" and old.levels.get(name) != new.levels.get(name):
            yield Change(
                subject,
                purpose,
                action,
                "level",
                name,
                old.levels.get(name),
                new.levels.get(name),
                "changes",
            )


def diff_tables(old: Mapping[Key, TableRow], new: Mapping[Key, TableRow]) -> list[Change]:
    """Every difference, as gains and losses per subject, purpose and action."""
    changes: list[Change] = []
    denied = TableRow(False, {}, {}, False, "pseudonym", "none", "absent")
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, denied), new.get(key, denied)
        subject, purpose, action = key
        if before.allow != after.allow:
            changes.append(
                Change(
                    subject,
                    purpose,
                    action,
                    "access",
                    None,
                    before.reason,
                    after.reason,
                    "gains" if after.allow else "loses",
                )
            )
        changes.extend(_field_changes(key, before, after))
        if before.allow and after.allow:
            for what, was, now in (
                ("consent", before.consent_required, after.consent_required),
                ("identifier", before.identifier, after.identifier),
                ("rows", before.rows, after.rows),
            ):
                if was != now:
                    changes.append(
                        Change(subject, purpose, action, what, None, was, now, "changes")
                    )
    return changes
