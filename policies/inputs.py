"""Building and checking the decision input, the same way for every engine.

The policy reads `subject`, `purpose`, `action`, `target` and `fields` (the catalogue's
public metadata of every field the caller may be shown); nothing else in the input
affects a decision, which is what lets `CachedEngine` key on exactly those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.errors import PolicyInputError
from vault.catalogue import Catalogue, default_catalogue

__all__ = [
    "ACTIONS",
    "SUBJECT_TYPES",
    "TARGETS",
    "catalogue_fields",
    "decision_input",
    "field_names",
    "recorded_input",
]

ACTIONS = ("read", "list", "search", "export", "write", "stats")
SUBJECT_TYPES = (
    "department",
    "property_company",
    "owners_committee",
    "residents_committee",
    "street_office",
    "social_organisation",
    "grid_worker",
    "community_worker",
    "resident",
    "auditor",
)
TARGETS = ("self", "child", "other")


def catalogue_fields(catalogue: Catalogue | None = None) -> list[dict[str, Any]]:
    """The public metadata of every catalogue field, as the policy input's `fields`."""
    return [spec.public_metadata() for spec in (catalogue or default_catalogue())]


def decision_input(
    subject: Mapping[str, Any],
    *,
    action: str,
    purpose: str | None = None,
    target: str | None = None,
    fields: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The engine input for one decision; `fields` defaults to the whole catalogue."""
    doc: dict[str, Any] = {
        "subject": dict(subject),
        "purpose": purpose,
        "action": action,
        "fields": [dict(f) for f in fields] if fields is not None else catalogue_fields(),
    }
    if target is not None:
        doc["target"] = target
    return doc


def recorded_input(input: Mapping[str, Any], catalogue_version: int) -> dict[str, Any]:
    """A decision input as the audit log keeps it beside the policy's answer: everything
    but the fields' metadata, which `catalogue_version` names instead (it is the same for
    every evaluation under one catalogue, and long)."""
    doc = {key: value for key, value in input.items() if key != "fields"}
    doc["catalogue_version"] = catalogue_version
    return doc


def field_names(input: Mapping[str, Any]) -> frozenset[str]:
    """The field names of an input, checked: PolicyInputError on anything malformed.

    A field named twice is refused rather than decided: two entries with different
    metadata would give OPA a conflict and the Wasm engine an arbitrary winner.
    """
    if not isinstance(input, Mapping):
        raise PolicyInputError("the decision input must be an object")
    fields = input.get("fields", [])
    if not isinstance(fields, Sequence) or isinstance(fields, str | bytes):
        raise PolicyInputError("input.fields must be a list of field metadata objects")
    names: set[str] = set()
    for entry in fields:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise PolicyInputError("every entry of input.fields needs a string 'name'")
        if entry["name"] in names:
            raise PolicyInputError(f"field {entry['name']!r} appears twice in input.fields")
        names.add(entry["name"])
    subject = input.get("subject")
    if subject is not None and not isinstance(subject, Mapping):
        raise PolicyInputError("input.subject must be an object")
    return frozenset(names)
