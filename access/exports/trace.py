"""Tracing a leaked export file back to the export it came from.

The tracer reads the leaked rows (NDJSON or CSV, whole or any subset, re-sorted, columns
cut), then scores every recorded export by how well it explains them, as a log-likelihood
ratio against "not this export" from five kinds of evidence:

* **recipient** — ids in the rows must be the export's kind of id: its recipient's
  pseudonyms (which only resolve under that recipient's key), or vault ids;
* **formatting** — each keyed choice the rows show (a CSV cell quoted or not, the spacing
  after a `:` or `,`, the key order) matches the export's own with probability ~1, another
  export's with 1/2 (1/6 for key order). A file re-serialised by some tool shows no choice
  of ours, so the model is a mixture: "formatting kept" or "formatting lost";
* **row order** — rows of the export are sorted by its keyed hash of the id, so in a
  subset in file order every neighbouring pair ascends under the right export, half of
  them under another; a re-sorted file is again a mixture ("order kept" or "lost");
* **column order** — columns (CSV) and the keys of `fields` and `treatments` (NDJSON) are
  in the export's keyed order, which survives spreadsheets and JSON libraries;
* **decoys** — a row recognised by its content as one of the fictional decoys can only
  come from an export that included that decoy.

With a uniform prior over the recorded exports, the posterior of each is a softmax of
the scores; `trace` reports the best, its posterior and its ratio to the runner-up.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from access.exports.fingerprints import (
    ExportKey,
    cell_text,
    choices,
    column_order,
    csv_cells,
    csv_observations,
    expected,
    mark,
    ndjson_observations,
)
from access.exports.records import ExportRecord
from vault.i18n import Message
from vault.pseudonyms import Pseudonyms, is_pseudonym
from vault.spreadsheet import recover_cell

__all__ = ["Leak", "LeakUnreadable", "Scored", "read_leak", "score_exports"]

_ID = re.compile(r"^(ps_[a-z2-7]{20,100}|r_[0-9a-f]{16})$")
_EPS_ID = 1e-3  # a row's id not of the export's recipient: a typo at most
_EPS_FORMAT = 1e-2  # a keyed choice that disagrees though formatting was kept
_EPS_ORDER = 1e-2  # a descent though order was kept (a row moved by hand)
_EPS_DECOY = 1e-6  # a decoy the export never included
_KEPT = 0.5  # prior that formatting (or order) survived the leak


class LeakUnreadable(Exception):
    """The file is not an export we could have written: one line for the user."""

    def __init__(self, message_id: str, **values: object) -> None:
        self.message = Message(message_id, values)
        super().__init__(self.message.text("en"))


@dataclass
class LeakedRow:
    resident_id: str | None
    observations: dict[tuple[str, str], int]
    texts: list[str]  # non-empty cell texts (what decoy marks hash)


@dataclass
class Leak:
    format: str
    rows: list[LeakedRow]
    # Orders of column names seen (a CSV header; NDJSON `fields`/`treatments` keys).
    columns: set[tuple[str, ...]] = field(default_factory=set)


@dataclass
class Scored:
    record: ExportRecord
    score: float  # log-likelihood ratio (natural log) against "not this export"
    posterior: float = 0.0
    evidence: dict[str, float] = field(default_factory=dict)


def read_leak(data: bytes) -> Leak:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LeakUnreadable("trace.leak.not-utf8") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise LeakUnreadable("trace.leak.empty")
    if lines[0].lstrip().startswith("{"):
        leak = Leak("ndjson", [])
        for n, line in enumerate(lines, 1):
            leak.rows.append(_ndjson_row(n, line, leak.columns))
        return leak
    rows = []
    columns: set[tuple[str, ...]] = set()
    for line in lines:
        cells = csv_cells(line)
        if cells and cells[0][0] == "resident_id":
            columns.add(tuple(t for t, _ in cells[1:]))
            continue  # the header
        ids = [t for t, _ in cells if _ID.match(t)]
        # Formatting bits are keyed on the cells as written; decoy marks on the values, so
        # the `'` a formula-like cell was written with (or lost in a spreadsheet) is undone.
        texts = [v for v in (recover_cell(t) for t, _ in cells) if v]
        rows.append(
            LeakedRow(
                ids[0] if ids else None,
                {("csv", t): q for t, q in csv_observations(cells).items()},
                texts,
            )
        )
    if not rows or all(len(r.texts) < 2 for r in rows):
        raise LeakUnreadable("trace.leak.not-export")
    return Leak("csv", rows, columns)


def _ndjson_row(number: int, line: str, columns: set[tuple[str, ...]]) -> LeakedRow:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise LeakUnreadable("trace.leak.not-json", line=number) from exc
    if not isinstance(record, dict):
        raise LeakUnreadable("trace.leak.not-object", line=number)
    rid = record.get("resident_id")
    resident_id = rid if isinstance(rid, str) and _ID.match(rid) else None
    fields = record.get("fields")
    values = list(fields.values()) if isinstance(fields, dict) else []
    for top in ("fields", "treatments"):
        if isinstance(record.get(top), dict) and len(record[top]) > 1:
            columns.add(tuple(record[top]))
    texts = [t for t in [resident_id or "", *(cell_text(v) for v in values)] if t]
    return LeakedRow(resident_id, ndjson_observations(line, record), texts)


def _mixture(kept: float, lost: float) -> float:
    """log of (π·e^kept + (1-π)·e^lost) − lost: the evidence of a channel that may be lost."""
    a, b = math.log(_KEPT) + kept, math.log(1 - _KEPT) + lost
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top)) - lost


def _decoys_seen(leak: Leak, records: Sequence[ExportRecord], mark_key: bytes) -> list[str]:
    """Decoys recognised by content. Only cells that are one decoy's alone count (a name,
    a phone, an id; not "none" or "汉族", which many share), and a row is a decoy's when at
    least three of its cells are that decoy's alone and most of its such cells are."""
    owners: dict[str, set[str]] = {}
    for record in records:
        for decoy, marks in (record.decoy_marks or {}).items():
            for m in marks:
                owners.setdefault(m, set()).add(decoy)
    seen = []
    for row in leak.rows:
        counts: Counter[str] = Counter()
        for text in set(row.texts):
            found = owners.get(mark(mark_key, text), set())
            if len(found) == 1:
                counts[next(iter(found))] += 1
        if counts:
            decoy, hits = counts.most_common(1)[0]
            if hits >= 3 and hits >= 0.8 * sum(counts.values()):
                seen.append(decoy)
    return seen


def _recipient(
    record: ExportRecord,
    ids: Sequence[str],
    pseudonyms: Pseudonyms,
    resolved: dict[tuple[str, str], bool],
) -> float:
    """Every id must be of the export's kind: its recipient's pseudonyms, or vault ids."""
    misfits = 0
    for rid in ids:
        if record.pseudonymous:
            cache = (record.recipient, rid)
            if cache not in resolved:
                resolved[cache] = is_pseudonym(rid) and (
                    pseudonyms.resolve(record.recipient, rid) is not None
                )
            misfits += not resolved[cache]
        else:
            misfits += is_pseudonym(rid)
    fits = len(ids) - misfits
    found = misfits * math.log(_EPS_ID) + fits * math.log(1 - _EPS_ID)
    if len(ids) > record.rows > 0:  # more distinct rows than the export had
        found += (len(ids) - record.rows) * math.log(_EPS_ID)
    return found


def _format(
    key: ExportKey, observations: dict[tuple[str, str], set[int]], *, keys_order: bool
) -> float:
    """Spacing and quoting (lost to any re-serialisation) and, apart, the order of a
    record's keys (which survives one by most JSON libraries): each a mixture."""
    kept = lost = 0.0
    for (channel, text), values in observations.items():
        if (channel == "json-order") != keys_order:
            continue
        want = expected(key, channel, text)
        n = choices(channel)
        for value in values:
            kept += math.log(1 - _EPS_FORMAT) if value == want else math.log(_EPS_FORMAT / n)
            lost += math.log(1 / n)
    return _mixture(kept, lost) if lost else 0.0


def _columns(key: ExportKey, orders: set[tuple[str, ...]]) -> float:
    """Each distinct order of column names seen is the export's order, or (columns moved
    by hand) any order at all."""
    found = 0.0
    for order in orders:
        any_order = -math.lgamma(len(order) + 1)
        # Kept: this order, but for a slip spread over all the others.
        kept = (
            math.log(1 - _EPS_FORMAT)
            if list(order) == column_order(key, order)
            else (math.log(_EPS_FORMAT) + any_order)
        )
        found += _mixture(kept, any_order)
    return found


def _order(key: ExportKey, ids: Sequence[str]) -> float:
    if len(ids) < 2:
        return 0.0
    ranks = [key.order_key(rid) for rid in ids]
    descents = sum(a > b for a, b in itertools.pairwise(ranks))
    ascents = len(ids) - 1 - descents
    # Kept: each neighbouring pair ascends but for a row moved by hand; lost: a coin.
    kept = ascents * math.log(1 - _EPS_ORDER) + descents * math.log(_EPS_ORDER)
    return _mixture(kept, (len(ids) - 1) * math.log(0.5))


def score_exports(
    leak: Leak,
    records: Sequence[ExportRecord],
    master: bytes,
    mark_key: bytes,
    pseudonyms: Pseudonyms,
) -> list[Scored]:
    """Every record scored, best first, with posteriors under a uniform prior."""
    observations: dict[tuple[str, str], set[int]] = {}
    for row in leak.rows:
        for obs, value in row.observations.items():
            observations.setdefault(obs, set()).add(value)
    ids = list(dict.fromkeys(row.resident_id for row in leak.rows if row.resident_id))
    decoys = _decoys_seen(leak, records, mark_key)
    resolved: dict[tuple[str, str], bool] = {}
    scored = []
    for record in records:
        key = ExportKey.derive(master, record.id)
        included = set(record.decoys or [])
        evidence = {
            "recipient": _recipient(record, ids, pseudonyms, resolved),
            "format": _format(key, observations, keys_order=False),
            "key_order": _format(key, observations, keys_order=True),
            "order": _order(key, ids),
            "columns": _columns(key, leak.columns),
            "decoys": sum(
                math.log(1 - _EPS_DECOY) if d in included else math.log(_EPS_DECOY) for d in decoys
            ),
        }
        scored.append(Scored(record, sum(evidence.values()), evidence=evidence))
    if scored:
        top = max(s.score for s in scored)
        total = sum(math.exp(s.score - top) for s in scored)
        for s in scored:
            s.posterior = math.exp(s.score - top) / total
    scored.sort(key=lambda s: s.score, reverse=True)
    return scored


def summary(scored: Sequence[Scored], leak: Leak, decoys: int | None = None) -> dict[str, Any]:
    """The answer as data (for `--json`)."""
    best = scored[0]
    runner = scored[1] if len(scored) > 1 else None

    def about(s: Scored) -> dict[str, Any]:
        r = s.record
        return {
            "export_id": r.id,
            "request_id": r.request_id,
            "decision_id": r.decision_id,
            "organisation": r.organisation,
            "client": r.client,
            "user": r.user,
            "purpose": r.purpose,
            "created_at": r.created_at.isoformat(),
            "format": r.format,
            "filters": r.filters,
            "posterior": s.posterior,
            "evidence": {k: round(v, 2) for k, v in s.evidence.items()},
        }

    gap = best.score - runner.score if runner else math.inf
    return {
        "rows": len(leak.rows),
        "format": leak.format,
        "exports_scored": len(scored),
        "best": about(best),
        "log10_likelihood_ratio_to_runner_up": round(gap / math.log(10), 2) if runner else None,
        "runner_up": about(runner) if runner else None,
    }
