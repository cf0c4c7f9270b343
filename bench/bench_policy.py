"""Policy decision cost: embedded Wasm engine, the decision cache, and an OPA server.

Why: every read asks the policy once per (subject, purpose, action, revision). This prints
the median (and 95th percentile) time of one decision, each over the same varied inputs
(the demo cast x purposes x actions x targets, full field catalogue):

1. embedded, uncached: opa-py-wasm running `policy.wasm` in-process;
2. cached: `CachedEngine` hits, the cost most requests pay;
3. OPA server: `OpaServerEngine` against `opa run --server` on loopback with the bundle
   (one HTTP request per decision, no decision logs), if an opa binary is available;
4. OPA server batch: `evaluate_many`, per decision, for dry runs and explanations.

    python bench/bench_policy.py                  # opa from $OPA_BIN or PATH
    python bench/bench_policy.py --n 2000 --opa /var/cache/resident-vault/opa-v1.22.3/opa
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import policies  # noqa: F401 - only to find out whether the package is importable
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.bundle import build_bundle, find_opa, load_bundle
from policies.cache import CachedEngine
from policies.demo import demo_subjects
from policies.embedded import EmbeddedEngine
from policies.inputs import ACTIONS, TARGETS, catalogue_fields, decision_input
from policies.opa_server import OpaServerEngine, local_opa_server


def _cases() -> list[dict[str, Any]]:
    purposes = [*sorted(load_bundle().data["purposes"]), None]
    fields = catalogue_fields()
    return [
        decision_input(subject, purpose=purpose, action=action, target=target, fields=fields)
        for subject in demo_subjects().values()
        for purpose in purposes
        for action in ACTIONS
        for target in TARGETS
    ]


def _timings(
    evaluate: Callable[[dict[str, Any]], object], cases: Sequence[dict[str, Any]], n: int
) -> list[float]:
    """Microseconds per call, one sample per call, cycling through the cases."""
    for case in cases[:20]:  # warm up pools, connections, caches
        evaluate(case)
    samples: list[float] = []
    for i in range(n):
        case = cases[(i * 7) % len(cases)]
        start = time.perf_counter_ns()
        evaluate(case)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def _row(label: str, samples: list[float], baseline: float | None) -> None:
    median = statistics.median(samples)
    p95 = statistics.quantiles(samples, n=20)[-1]
    ratio = f"{median / baseline:8.1f}x" if baseline else f"{'':>9}"
    print(f"{label:34} {median:10.1f} {p95:10.1f} {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="evaluations per engine")
    parser.add_argument("--opa", help="opa binary (default: $OPA_BIN, then PATH)")
    args = parser.parse_args()
    cases = _cases()
    print(f"== one policy decision: {args.n} evaluations over {len(cases)} distinct inputs ==")
    print(f"{'engine':34} {'median µs':>10} {'p95 µs':>10} {'vs cached':>9}")
    with EmbeddedEngine() as embedded:
        uncached = _timings(embedded.evaluate, cases, args.n)
        cached_engine = CachedEngine(embedded, max_entries=len(cases))
        for case in cases:
            cached_engine.evaluate(case)
        cached = _timings(cached_engine.evaluate, cases, args.n)
        stats = cached_engine.stats()
        assert stats.entries == len(cases), stats  # noqa: S101 - every timed call was a hit
    baseline = statistics.median(cached)
    _row("embedded (wasm), uncached", uncached, baseline)
    _row("embedded (wasm), cached hit", cached, baseline)
    opa = args.opa or find_opa()
    if not opa:
        print("OPA server: skipped (no opa binary; run .ci/install-opa and set OPA_BIN)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(opa, load_bundle(), Path(tmp) / "bundle.tar.gz")
        with local_opa_server(opa, bundle=bundle) as url, OpaServerEngine(url) as server:
            served = _timings(server.evaluate, cases, args.n)
            _row("OPA server, one request each", served, baseline)
            start = time.perf_counter()
            server.evaluate_many(cases)
            per_decision = (time.perf_counter() - start) * 1e6 / len(cases)
            print(f"{'OPA server, batch (per decision)':34} {per_decision:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
