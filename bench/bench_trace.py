"""Tracing accuracy on leaked subsets of exports, and what fingerprinting costs an export.

Why: a leaked file, or a few dozen of its rows, should name the export it came from
(docs/traceable-exports.md). This makes `--exports` exports through the gate (two
organisations, overlapping populations, most by one organisation with the same filters:
the hard case), leaks random subsets of 10, 50 and 200 rows, and traces each with
`access.exports.trace.score_exports` as `resident-vault trace` does:

* *subset*: rows kept in file order (e.g. `grep`, `head`, `sed -n`);
* *shuffled*: the same rows in random order (`shuf`; the order channel is lost);
* *rewritten JSON / CSV*: shuffled, then parsed and written again by Python's `json` or
  `csv` module: spacing, quoting and order are lost; left are the recipient, the decoys
  and the column order (from the CSV header, or the JSON keys, which `json` keeps);
  *rewritten CSV-h* drops the header too, so only the recipient and the decoys are left.

Baselines: chance (1 / exports), and the organisation's pseudonyms alone (which tell the
organisation, so a guess among that organisation's exports: the mean of 1 / their number).
Throughput: the same full-street export of a larger street (`--throughput-residents`)
with fingerprinting and without (id order, plain JSON, no decoys, no record), as a ratio.

    python bench/bench_trace.py                       # 300 residents, 100 exports, 30 trials
    python bench/bench_trace.py --residents 1000 --trials 50
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    import vault  # noqa: F401 - only to find out whether the package is importable
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from access.exports.fingerprints import fingerprint_master, mark_key
from access.exports.records import all_exports, open_export
from access.exports.trace import read_leak, score_exports
from access.gate import Gate
from access.runtime import init_runtime
from access.subjects import Access, Subject, organisation_subject
from access.views import Place
from api.http.app import policy_engine
from api.settings import Settings
from vault.demo import populate
from vault.pseudonyms import Pseudonyms

CIVIL, HEALTH = "org_civil_affairs", "org_health"
PURPOSES = {CIVIL: "subsidy-review", HEALTH: "public-health-followup"}
# Shares of the exports: (organisation, format, filters).
MIX: list[tuple[float, str, str, dict[str, str]]] = [
    (0.40, CIVIL, "ndjson", {}),
    (0.10, CIVIL, "csv", {}),
    (0.10, CIVIL, "ndjson", {"community": "cm_xingfu"}),
    (0.25, HEALTH, "ndjson", {}),
    (0.10, HEALTH, "csv", {}),
    (0.05, HEALTH, "ndjson", {"community": "cm_hexie"}),
]
SIZES = (10, 50, 200)
MODES = ("subset", "shuffled", "rewritten JSON", "rewritten CSV", "rewritten CSV-h")


@dataclasses.dataclass
class Made:
    export_id: str
    organisation: str
    format: str
    lines: list[str]  # rows only (no CSV header)
    header: str


def _access(subject: Subject, organisation: str, n: int) -> Access:
    return Access(
        subject=subject,
        purpose=PURPOSES[organisation],
        request_id=f"req-bench-{n}",
        justification="bench",
    )


def _export(gate: Gate, access: Access, fmt: str, filters: dict[str, str], fp: bool) -> list[str]:
    opened = open_export(gate, access, format=fmt, fingerprinted=fp, place=Place(**filters))
    return list(opened.lines)


def _reserialise(made: Made, lines: list[str], header: bool = True) -> str:
    if made.format == "ndjson":
        return "".join(json.dumps(json.loads(line), ensure_ascii=False) + "\n" for line in lines)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in csv.reader(io.StringIO((made.header if header else "") + "".join(lines))):
        writer.writerow(row)
    return buffer.getvalue()


def main() -> int:  # noqa: PLR0915 - one linear script: setup, exports, trials, report
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=300)
    parser.add_argument("--exports", type=int, default=100)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--throughput-residents", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(
            home=Path(home),
            database_url=f"sqlite:///{home}/vault.db",
            rate_limit_bulk=10**6,
            alert_suspend_on="none",
        )
        runtime = init_runtime(settings)
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, args.residents)
        gate = Gate(runtime, policy_engine(settings))
        with runtime.vault.sessions() as session:
            subjects = {
                org: dataclasses.replace(organisation_subject(session, org), client=f"cl_{org}")
                for org in PURPOSES
            }
        made: list[Made] = []
        started = time.perf_counter()
        for share, org, fmt, filters in MIX:
            for _ in range(round(share * args.exports)):
                lines = _export(gate, _access(subjects[org], org, len(made)), fmt, filters, True)
                header = lines.pop(0) if fmt == "csv" else ""
                made.append(Made("", org, fmt, lines, header))
        with runtime.vault.sessions() as session:
            records = all_exports(session)
        for record, m in zip(records, made, strict=True):
            m.export_id = record.id
        print(
            f"{len(made)} exports of {args.residents} residents made in "
            f"{time.perf_counter() - started:.0f} s; decoys per export: "
            f"{statistics.mean(len(r.decoys) for r in records):.1f}"
        )
        master = fingerprint_master(runtime.vault.keyring)
        marks = mark_key(master)
        pseudonyms = Pseudonyms(runtime.vault.keyring)
        by_org = {org: sum(m.organisation == org for m in made) for org in PURPOSES}

        print(
            f"\ntracing accuracy over {args.trials} leaks each (chance = "
            f"{1 / len(made):.3f}; pseudonyms alone = a guess among the organisation's "
            f"exports)"
        )
        print(
            f"{'rows':>5} {'leak':<16} {'accuracy':>9} {'pseudonyms':>11} {'chance':>7} "
            f"{'median posterior':>17} {'s/trace':>8}"
        )
        results: dict[tuple[int, str], float] = {}
        for size in SIZES:
            for mode in MODES:
                pool = [m for m in made if len(m.lines) >= size]
                if mode.startswith("rewritten"):
                    wanted = "ndjson" if mode.endswith("JSON") else "csv"
                    pool = [m for m in pool if m.format == wanted]
                hits, baseline, posteriors, spent = 0, 0.0, [], 0.0
                for _ in range(args.trials):
                    target = rng.choice(pool)
                    chosen = sorted(rng.sample(range(len(target.lines)), size))
                    lines = [target.lines[i] for i in chosen]
                    if mode != "subset":
                        rng.shuffle(lines)
                    if mode.startswith("rewritten"):
                        body = _reserialise(target, lines, header=not mode.endswith("-h"))
                    else:
                        body = "".join(lines)
                    t0 = time.perf_counter()
                    scored = score_exports(
                        read_leak(body.encode()), records, master, marks, pseudonyms
                    )
                    spent += time.perf_counter() - t0
                    hits += scored[0].record.id == target.export_id
                    posteriors.append(
                        next(s.posterior for s in scored if s.record.id == target.export_id)
                    )
                    baseline += 1 / by_org[target.organisation]
                accuracy = hits / args.trials
                results[(size, mode)] = accuracy
                print(
                    f"{size:>5} {mode:<16} {accuracy:>9.2f} {baseline / args.trials:>11.3f} "
                    f"{1 / len(made):>7.3f} {statistics.median(posteriors):>17.4f} "
                    f"{spent / args.trials:>8.2f}"
                )

        close = getattr(gate.engine, "close", None)
        if close is not None:
            close()
        runtime.close()
    _throughput(args.throughput_residents, args.repeats)
    return 0


def _throughput(residents: int, repeats: int) -> None:
    """The same full-street NDJSON export, alternately with and without fingerprinting."""
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(
            home=Path(home),
            database_url=f"sqlite:///{home}/vault.db",
            rate_limit_bulk=10**6,
            alert_suspend_on="none",
        )
        runtime = init_runtime(settings)
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, residents)
        gate = Gate(runtime, policy_engine(settings))
        with runtime.vault.sessions() as session:
            subject = dataclasses.replace(organisation_subject(session, CIVIL), client="cl_b")
        _export(gate, _access(subject, CIVIL, 0), "ndjson", {}, True)  # grows the decoy pool
        samples: dict[bool, list[float]] = {False: [], True: []}
        for n in range(2 * repeats):
            fp = n % 2 == 1
            t0 = time.perf_counter()
            lines = _export(gate, _access(subject, CIVIL, n), "ndjson", {}, fp)
            samples[fp].append(len(lines) / (time.perf_counter() - t0))
        plain, marked = statistics.median(samples[False]), statistics.median(samples[True])
        print(
            f"\nexport throughput, {residents} residents, NDJSON, through the gate "
            f"(rows/s, median of {repeats}; every row audited before it goes out)"
        )
        print(f"  without fingerprinting {plain:8.0f} rows/s")
        print(f"  with fingerprinting    {marked:8.0f} rows/s   ratio {marked / plain:.2f}")
        close = getattr(gate.engine, "close", None)
        if close is not None:
            close()
        runtime.close()


if __name__ == "__main__":
    raise SystemExit(main())
