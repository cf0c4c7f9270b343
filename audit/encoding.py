"""An entry's canonical bytes: what its Merkle leaf hashes, computed from its columns.

The bytes are not stored (migration 0023 dropped them): the columns determine them, so a
column changed behind the log's back changes the bytes and no longer matches the leaf.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

ENCODING_VERSION = 1

# The columns an entry's bytes are made of, in the log's order (the JSON sorts its keys).
ENTRY_COLUMN_NAMES = (
    "entry_id",
    "recorded_at",
    "kind",
    "action",
    "outcome",
    "channel",
    "subject_type",
    "organisation",
    "client",
    "user",
    "on_behalf_of",
    "purpose",
    "legal_basis",
    "consent_id",
    "resident_id",
    "resident_pseudonym",
    "fields",
    "decision_id",
    "evaluation_id",
    "policy_revision",
    "request_id",
    "reason",
    "details",
)


def canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The entry as hashed into the tree: JSON, sorted keys, no spaces, UTF-8, `v` first."""
    document: dict[str, Any] = {"v": ENCODING_VERSION}
    for name in ENTRY_COLUMN_NAMES:
        value = row[name]
        document[name] = value.isoformat() if isinstance(value, datetime) else value
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def canonical_of(values: Sequence[Any]) -> bytes:
    """`canonical_bytes` of a row selected as `ENTRY_COLUMN_NAMES`, in that order."""
    return canonical_bytes(dict(zip(ENTRY_COLUMN_NAMES, values, strict=True)))
