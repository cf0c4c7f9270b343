"""Fingerprints of bulk exports: imperceptible, deterministic choices keyed per export.

A leaked file, or a few dozen of its rows, should name the export it came from
(docs/traceable-exports.md). Each export gets a secret, `HMAC(K, export id)`, where `K` is
derived from a key the keyring holds (never stored, never in the repository), and the
secret decides, through a keyed BLAKE2b PRF:

* **row order** — rows are sorted by `PRF(secret, vault id)`, not by id, so any subset of
  the file keeps an order that only this export explains;
* **formatting** — in CSV, whether each cell that needs no quotes is quoted anyway; in
  NDJSON, the spacing after each `:` and `,` and the order of a record's three keys. Every
  choice is keyed by the cell's own text, so it survives dropped rows, dropped columns
  (cut by line tools) and a shuffled file; any CSV or JSON reader reads the same values;
* **decoys** — fictional residents (`access.exports.decoys`) chosen per export by the same secret.

Everything here is pure (no database), so the channels can be property-tested.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

from vault.interfaces import Keyring

__all__ = [
    "FINGERPRINT_VERSION",
    "TOP_KEYS",
    "ExportKey",
    "Fingerprint",
    "cell_text",
    "column_order",
    "csv_cells",
    "csv_line",
    "fingerprint_master",
    "mark_key",
    "ndjson_line",
    "ndjson_observations",
]

FINGERPRINT_VERSION = 1
# A recipient name no organisation can have (ids are ASCII words): the fingerprint key is
# derived from the keyring's never-rotated pseudonym master key, in a domain of its own.
_KEY_DOMAIN = "\x00resident-vault/export-fingerprint/v1"
TOP_KEYS = ("resident_id", "fields", "treatments")
_ORDERS = tuple(permutations(TOP_KEYS))
_MUST_QUOTE = frozenset(',"\r\n')
_PLAIN = re.compile(r"[A-Za-z0-9_]+")  # names JSON writes as they are


def fingerprint_master(keyring: Keyring) -> bytes:
    """The 32-byte key every export secret derives from; it never leaves memory."""
    return keyring.pseudonym_key(_KEY_DOMAIN)[:32]


def mark_key(master: bytes) -> bytes:
    """Key of decoy marks: keyed digests of a decoy row's cells, the same in every export,
    so a decoy row is recognised by its content even without its id column."""
    return hmac.new(master, b"decoy-marks/v1", hashlib.sha256).digest()


def _prf(key: bytes, channel: bytes, text: str) -> bytes:
    return hashlib.blake2b(channel + b"\x00" + text.encode(), key=key, digest_size=8).digest()


# Memoised choices per export, at most (about 1 MB).
MEMO_ENTRIES = 8_192


@dataclass(frozen=True)
class ExportKey:
    """One export's secret and the choices it makes; the secret is never stored. Choices
    are memoised per export: cells and pairs repeat a lot (treatments, enumerations)."""

    secret: bytes
    _memo: dict[tuple[str, str], int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def derive(cls, master: bytes, export_id: str) -> ExportKey:
        return cls(hmac.new(master, b"export/" + export_id.encode(), hashlib.sha256).digest())

    def order_key(self, vault_id: str) -> bytes:
        """Rows are sorted by this, so every subset keeps a per-export order."""
        return _prf(self.secret, b"order", vault_id)

    def _byte(self, channel: str, text: str) -> int:
        found = self._memo.get((channel, text))
        if found is None:
            found = _prf(self.secret, channel.encode(), text)[0]
            # The values that repeat (treatments, enumerations) come early and stay; a
            # name or a phone number seldom repeats, and keeping every one grew an export
            # of 10^5 rows by tens of megabytes, personal values held until its end.
            if len(self._memo) < MEMO_ENTRIES:
                self._memo[(channel, text)] = found
        return found

    def bit(self, channel: str, text: str) -> int:
        return self._byte(channel, text) & 1

    def pair_bits(self, text: str) -> tuple[int, int]:
        """Two choices from one PRF: spacing after the `:` and after the `,`."""
        found = self._byte("json-pair", text)
        return found & 1, (found >> 1) & 1

    def choice(self, channel: str, text: str, n: int) -> int:
        return int.from_bytes(_prf(self.secret, channel.encode(), text), "big") % n

    def decoy_rank(self, decoy_id: str) -> bytes:
        return _prf(self.secret, b"decoy", decoy_id)


@dataclass
class Fingerprint:
    """What the gate needs to fingerprint one export, and what it reports back."""

    export_id: str
    key: ExportKey
    decoy_rate: float = 0.02
    min_decoys: int = 1
    max_decoys: int = 200
    decoys: list[str] = field(default_factory=list)  # vault ids of the decoys included
    decoy_views: list[Any] = field(default_factory=list)  # their rows, as the caller sees them

    def decoys_for(self, rows: int) -> int:
        return max(self.min_decoys, min(self.max_decoys, round(rows * self.decoy_rate)))


def column_order(key: ExportKey | None, names: Sequence[str]) -> list[str]:
    """The export's order of its columns (CSV) and of the keys in `fields` and `treatments`
    (NDJSON): sorted by a keyed hash of each name, so any subset keeps it. It survives
    re-serialisation by spreadsheets and JSON libraries alike."""
    if key is None:
        return list(names)
    return sorted(names, key=lambda n: _prf(key.secret, b"column", n))


# -- cells ---------------------------------------------------------------------------------


def cell_text(value: Any) -> str:
    """A value as one CSV cell (lists and objects as JSON); also what decoy marks hash."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def mark(key: bytes, text: str) -> str:
    return _prf(key, b"mark", text).hex()


def row_marks(key: bytes, resident_id: str, fields: dict[str, Any]) -> set[str]:
    """Keyed digests of a row's non-empty cells (its id among them)."""
    texts = [resident_id, *(cell_text(v) for v in fields.values())]
    return {mark(key, t) for t in texts if t}


# -- CSV -----------------------------------------------------------------------------------


def _needs_quotes(text: str) -> bool:
    return any(ch in _MUST_QUOTE for ch in text) or text != text.strip()


def csv_line(cells: Sequence[str], key: ExportKey | None) -> str:
    """One CSV record (RFC 4180, CRLF). Cells that need no quotes are quoted when the
    export's keyed bit for their text says so; empty cells stay empty. Cells come as
    written: exports neutralise them first (`vault.spreadsheet.csv_row`)."""
    if list(cells) == [""]:
        return '""\r\n'  # a lone empty cell, quoted so the record is not a blank line
    out = []
    for text in cells:
        if _needs_quotes(text) or (text and key is not None and key.bit("csv", text)):
            out.append('"' + text.replace('"', '""') + '"')
        else:
            out.append(text)
    return ",".join(out) + "\r\n"


def csv_header(names: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(names)
    return buffer.getvalue()


def csv_cells(line: str) -> list[tuple[str, bool]]:
    """Cells of one CSV record as written, with whether each was quoted."""
    cells: list[tuple[str, bool]] = []
    line = line.rstrip("\r\n")
    i, n = 0, len(line)
    while True:
        if i < n and line[i] == '"':
            i += 1
            chunk = []
            while i < n:
                if line[i] == '"':
                    if i + 1 < n and line[i + 1] == '"':
                        chunk.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                chunk.append(line[i])
                i += 1
            cells.append(("".join(chunk), True))
            while i < n and line[i] != ",":
                i += 1  # stray characters after a closing quote: not ours
        else:
            end = line.find(",", i)
            end = n if end < 0 else end
            cells.append((line[i:end], False))
            i = end
        if i >= n:
            return cells
        i += 1  # the comma
        if i == n:
            cells.append(("", False))
            return cells


def csv_observations(cells: Iterable[tuple[str, bool]]) -> dict[str, int]:
    """The keyed choices a record shows: cell text -> quoted (1) or not (0)."""
    return {t: int(q) for t, q in cells if t and not _needs_quotes(t)}


# -- NDJSON --------------------------------------------------------------------------------


def _pair_seps(key: ExportKey | None, name: str, rendered: str) -> tuple[str, str]:
    if key is None:
        return ": ", ", "
    colon, comma = key.pair_bits(f"{name}\x00{rendered}")
    return (": " if colon else ":"), (", " if comma else ",")


def _object(mapping: dict[str, Any], key: ExportKey | None) -> str:
    parts = []
    items = list(mapping.items())
    for index, (name, value) in enumerate(items):
        rendered = json.dumps(value, ensure_ascii=False)
        colon, comma = _pair_seps(key, name, rendered)
        parts.append(
            '"' + name + '"' if _PLAIN.match(name) else json.dumps(name, ensure_ascii=False)
        )
        parts.append(colon + rendered)
        if index < len(items) - 1:
            parts.append(comma)
    return "{" + "".join(parts) + "}"


def ndjson_line(record: dict[str, Any], key: ExportKey | None) -> str:
    """One NDJSON record; with a key, the order of its three keys and the spacing after each
    `:` and `,` inside `fields` and `treatments` are the export's keyed choices."""
    if key is None:
        return json.dumps(record, ensure_ascii=False) + "\n"
    order = _ORDERS[key.choice("json-order", str(record.get("resident_id")), len(_ORDERS))]
    parts = []
    for name in order:
        value = record[name]
        rendered = (
            _object(value, key)
            if isinstance(value, dict)
            else json.dumps(value, ensure_ascii=False)
        )
        parts.append(json.dumps(name) + ": " + rendered)
    return "{" + ", ".join(parts) + "}\n"


def ndjson_observations(line: str, record: dict[str, Any]) -> dict[tuple[str, str], int]:
    """The keyed choices a record shows, found in its raw text: (channel, text) -> bit or
    choice. A pair whose text was re-serialised some other way shows nothing."""
    found: dict[tuple[str, str], int] = {}
    keys = [k for k in record if k in TOP_KEYS]
    if len(keys) == len(TOP_KEYS) and "resident_id" in record:
        found[("json-order", str(record["resident_id"]))] = _ORDERS.index(tuple(keys))
    for top in ("fields", "treatments"):
        mapping = record.get(top)
        if not isinstance(mapping, dict):
            continue
        for name, value in mapping.items():
            rendered = json.dumps(value, ensure_ascii=False)
            quoted = json.dumps(name, ensure_ascii=False)
            text = f"{name}\x00{rendered}"
            for colon in (": ", ":"):
                at = line.find(quoted + colon + rendered)
                if at < 0:
                    continue
                found[("json-colon", text)] = int(colon == ": ")
                after = at + len(quoted) + len(colon) + len(rendered)
                if line.startswith(", ", after):
                    found[("json-comma", text)] = 1
                elif line.startswith(",", after):
                    found[("json-comma", text)] = 0
                break
    return found


def expected(key: ExportKey, channel: str, text: str) -> int:
    """What this export chose for an observation (the tracer compares)."""
    if channel == "json-order":
        return key.choice(channel, text, len(_ORDERS))
    if channel in ("json-colon", "json-comma"):
        return key.pair_bits(text)[channel == "json-comma"]
    return key.bit(channel, text)


def choices(channel: str) -> int:
    """How many values a channel's choice takes (2 for bits)."""
    return len(_ORDERS) if channel == "json-order" else 2
