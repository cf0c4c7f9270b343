"""Benchmark: tree heads and proofs from stored nodes versus recomputing the tree.

Why: the audit log answers every `GET /v1/audit/proofs/...` and signs a tree
head every few seconds. Computed from stored perfect-subtree nodes these cost
O(log n) node reads and hashes; recomputed from the leaves they cost O(n). This
prints both, and their ratio at the smallest size (the naive way is too slow to
run at the large ones, which is the point).

    python bench/bench_merkle.py                       # 10^4 and 10^5 leaves
    python bench/bench_merkle.py --sizes 10000,1000000 # a few seconds
    python bench/bench_merkle.py --sizes 10000,10000000 # ~0.7 GB of RAM, ~30 s
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

try:
    from audit import merkle
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from audit import merkle

CHUNK = 1 << 16
"""Leaves generated per batch, so 10^7 leaves never sit in memory twice."""


class CountingReader:
    """Wraps the tree to count node reads, which is what a database would pay for."""

    def __init__(self, tree: merkle.MemoryTree) -> None:
        self.tree = tree
        self.nodes = 0
        self.calls = 0

    def get_nodes(self, coords: Sequence[merkle.Coord]) -> Mapping[merkle.Coord, bytes]:
        self.calls += 1
        self.nodes += len(coords)
        return self.tree.get_nodes(coords)


@dataclass
class Timing:
    micros: float
    nodes_per_op: float


def _time_ops(ops: Sequence[Callable[[], object]], reader: CountingReader | None) -> Timing:
    """Median microseconds per operation (and node reads per op, if counted)."""
    samples: list[float] = []
    if reader is not None:
        reader.nodes = reader.calls = 0
    for op in ops:
        t0 = time.perf_counter()
        op()
        samples.append((time.perf_counter() - t0) * 1e6)
    nodes = reader.nodes / len(ops) if reader is not None else float("nan")
    return Timing(statistics.median(samples), nodes)


def build_tree(n: int, rng: random.Random) -> tuple[merkle.MemoryTree, float]:
    """A MemoryTree of n random leaf hashes, and the append rate in leaves per second."""
    tree = merkle.MemoryTree()
    elapsed = 0.0
    remaining = n
    while remaining:
        batch = min(CHUNK, remaining)
        buf = rng.randbytes(32 * batch)
        leaves = [buf[i : i + 32] for i in range(0, len(buf), 32)]
        t0 = time.perf_counter()
        for leaf in leaves:
            tree.append(leaf)
        elapsed += time.perf_counter() - t0
        remaining -= batch
    return tree, n / elapsed


@dataclass
class SizeResult:
    n: int
    rate: float
    head: Timing
    incl: Timing
    cons: Timing
    verify: Timing
    tree: merkle.MemoryTree | None


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark sanity check failed: {what}")


def bench_size(n: int, ops: int, rng: random.Random) -> SizeResult:
    tree, rate = build_tree(n, rng)
    reader = CountingReader(tree)
    sizes = [rng.randint(1, n) for _ in range(ops)]
    indexes = [rng.randrange(s) for s in sizes]
    olds = [rng.randint(1, s) for s in sizes]

    head = _time_ops([partial(merkle.read_root, reader, s) for s in sizes], reader)
    incl = _time_ops(
        [
            partial(merkle.read_inclusion_proof, reader, i, s)
            for i, s in zip(indexes, sizes, strict=True)
        ],
        reader,
    )
    cons = _time_ops(
        [
            partial(merkle.read_consistency_proof, reader, o, s)
            for o, s in zip(olds, sizes, strict=True)
        ],
        reader,
    )

    # Sanity, and the client's side of the cost: verifying what was produced.
    root = tree.root()
    index = n // 3
    leaf = tree.get_node((0, index)) or b""
    proof = tree.inclusion_proof(index)
    verify = _time_ops([partial(merkle.verify_inclusion, leaf, index, n, proof, root)] * ops, None)
    _check(merkle.verify_inclusion(leaf, index, n, proof, root), "inclusion proof")
    old = max(1, n // 2)
    consistency = tree.consistency_proof(old)
    _check(merkle.verify_consistency(old, n, tree.root(old), root, consistency), "consistency")
    return SizeResult(n, rate, head, incl, cons, verify, tree)


def bench_naive(tree: merkle.MemoryTree, reps: int, rng: random.Random) -> dict[str, Timing]:
    """The same three operations recomputed from the leaf list: the O(n) baseline."""
    leaves = tree.leaf_hashes()
    n = len(leaves)
    sizes = [rng.randint(max(1, n // 2), n) for _ in range(reps)]
    return {
        "tree head": _time_ops([partial(merkle.root_hash, leaves[:s]) for s in sizes], None),
        "inclusion": _time_ops(
            [partial(merkle.inclusion_proof, leaves, rng.randrange(s), s) for s in sizes], None
        ),
        "consistency": _time_ops(
            [partial(merkle.consistency_proof, leaves, rng.randint(1, s), s) for s in sizes],
            None,
        ),
    }


def _fmt_us(us: float) -> str:
    return f"{us / 1000:,.1f} ms" if us >= 10_000 else f"{us:,.1f} µs"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        default="10000,100000",
        help="comma-separated tree sizes (default 10000,100000; 10000000 works, slowly)",
    )
    parser.add_argument("--ops", type=int, default=500, help="operations timed per kind")
    parser.add_argument("--naive-reps", type=int, default=5, help="baseline repetitions")
    parser.add_argument("--seed", type=int, default=6962)
    args = parser.parse_args(argv)
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 2:
        parser.error("sizes must be integers >= 2")
    rng = random.Random(args.seed)

    print(f"Merkle tree (RFC 6962) from stored nodes; median of {args.ops} ops per cell")
    header = (
        f"{'leaves':>12} {'append/s':>11} {'tree head':>11} {'inclusion':>11} "
        f"{'consistency':>12} {'verify incl':>12}   nodes read (head/incl/cons)"
    )
    print(header)
    print("-" * len(header))
    results: list[SizeResult] = []
    for n in sizes:
        r = bench_size(n, args.ops, rng)
        results.append(r)
        print(
            f"{n:>12,} {r.rate:>11,.0f} {_fmt_us(r.head.micros):>11} "
            f"{_fmt_us(r.incl.micros):>11} {_fmt_us(r.cons.micros):>12} "
            f"{_fmt_us(r.verify.micros):>12}   "
            f"{r.head.nodes_per_op:.1f} / {r.incl.nodes_per_op:.1f} / {r.cons.nodes_per_op:.1f}",
            flush=True,
        )
        if n != sizes[0]:
            r.tree = None  # free the memory of the larger trees

    smallest = results[0]
    if smallest.tree is None:
        raise SystemExit("internal error: smallest tree was freed")
    naive = bench_naive(smallest.tree, args.naive_reps, rng)
    print()
    print(
        f"Baseline at {sizes[0]:,} leaves: recomputed from the leaf list "
        f"(median of {args.naive_reps}, sizes in [n/2, n])"
    )
    print(f"{'operation':>12} {'naive':>11} {'from nodes':>11} {'ratio':>9}")
    from_nodes = {
        "tree head": smallest.head,
        "inclusion": smallest.incl,
        "consistency": smallest.cons,
    }
    for label, fast in from_nodes.items():
        slow = naive[label]
        ratio = slow.micros / fast.micros
        print(f"{label:>12} {_fmt_us(slow.micros):>11} {_fmt_us(fast.micros):>11} {ratio:>8,.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
