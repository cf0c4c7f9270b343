"""Pseudonym cost: issuing and resolving per-recipient pseudonyms, beside a keyed hash.

Why: every resident an organisation sees (each row of a list or export) gets its
pseudonym, and every id an organisation sends is resolved; the gate must not slow down
for it. The baseline is what the vault already pays per identifier for a blind index:
one HMAC-SHA256 over the same id. Also printed: a whole export's worth of ids
(`--bulk`), and what resolving a forged pseudonym costs (it must fail fast, not scan).

    python bench/bench_pseudonyms.py              # 20,000 ids, 100,000 in the bulk run
    python bench/bench_pseudonyms.py --n 100000 --bulk 1000000
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

try:
    import vault  # noqa: F401 - only to find out whether the package is importable
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vault.keyring import LocalKeyring
from vault.models import new_id
from vault.pseudonyms import Pseudonyms


def _per_op(run: Callable[[], None], n: int, repeats: int = 5) -> float:
    """Median seconds per operation over `repeats` runs of `n` operations."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) / n)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--bulk", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        keyring = LocalKeyring.create(Path(home) / "keyring.json")
        pseudonyms = Pseudonyms(keyring)
        ids = [new_id("r") for _ in range(args.n)]
        issued = [pseudonyms.of("org_civil_affairs", r) for r in ids]
        # Well-formed forgeries (valid base32 of the right length): the SIV tag rejects them.
        forged = ["ps_" + base64.b32encode(os.urandom(25)).decode().lower() for _ in range(args.n)]
        key = os.urandom(32)

        def baseline() -> None:
            for r in ids:
                hmac.new(key, r.encode(), hashlib.sha256).digest()

        def issue() -> None:
            for r in ids:
                pseudonyms.of("org_civil_affairs", r)

        def resolve() -> None:
            for p in issued:
                pseudonyms.resolve("org_civil_affairs", p)

        def refuse() -> None:
            for p in forged:
                pseudonyms.resolve("org_civil_affairs", p)

        base = _per_op(baseline, args.n)
        rows = [("HMAC-SHA256 (blind-index baseline)", base)]
        rows += [
            ("issue pseudonym (AES-SIV)", _per_op(issue, args.n)),
            ("resolve own pseudonym", _per_op(resolve, args.n)),
            ("resolve forged pseudonym", _per_op(refuse, args.n)),
        ]
        print(f"{args.n:,} ids, median of 5 runs")
        print(f"{'operation':<38} {'µs/op':>8} {'ops/s':>10} {'× baseline':>11}")
        for name, seconds in rows:
            print(f"{name:<38} {seconds * 1e6:8.2f} {1 / seconds:10,.0f} {seconds / base:11.1f}")
        bulk = [new_id("r") for _ in range(args.bulk)]
        started = time.perf_counter()
        for r in bulk:
            pseudonyms.of("org_anju_property", r)
        spent = time.perf_counter() - started
        rate = args.bulk / spent
        print(f"pseudonyms for a {args.bulk:,}-row export: {spent:.2f} s ({rate:,.0f} rows/s)")
        print(f"pseudonym length: {len(issued[0])} characters (e.g. {issued[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
