"""Audit log benchmark on a real database.

Prints, in one run:
1. appends/s: one entry per transaction, and batches of 1,000 (the bulk path);
2. integration rate (entries/s given leaf indexes and tree nodes);
3. tree head, inclusion proof and consistency proof times read from the stored nodes at
   each size in --sizes, beside recomputing them from all leaf hashes (the baseline);
4. full-log verification, entries/s.

Large sizes (10^6, 10^7) are for a workstation, not CI. The database is kept in
--workdir and grown, not rebuilt, so an interrupted run resumes:

    python bench/bench_audit.py --sizes 10000,1000000 --workdir /var/tmp/rv-audit
    python bench/bench_audit.py --postgres postgresql+psycopg://postgres@127.0.0.1:55433/postgres
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from access.runtime import Runtime, init_runtime, open_runtime
from api.settings import Settings
from audit import EntryDraft
from audit.log import DbNodeReader
from audit.merkle import (
    MemoryTree,
    inclusion_proof,
    is_kept_level,
    read_consistency_proof,
    read_inclusion_proof,
    read_root,
    root_hash,
)
from audit.models import AuditLeaf, AuditTreeNode
from audit.verify import verify_log


def _draft(n: int) -> EntryDraft:
    return EntryDraft(
        action="read",
        outcome="allowed",
        channel="api",
        subject_type="department",
        organisation="org_civil_affairs",
        user=f"worker-{n % 50}",
        purpose="subsidy-review",
        resident_id=f"r_{n:012x}",
        fields={"name": "masked", "low_income_status": "clear"},
        decision_id=f"dec-{n}",
        policy_revision="rev-bench",
        request_id=f"req-{n}",
    )


def _open(workdir: Path, database_url: str) -> Runtime:
    settings = Settings(home=workdir / "home", database_url=database_url)
    if settings.keyring_path.exists():
        return open_runtime(settings)
    return init_runtime(settings)


def bench_appends(rt: Runtime, label: str, single: int, batches: int) -> None:
    start = time.perf_counter()
    for n in range(single):
        with rt.transaction() as session:
            rt.audit.record(session, [_draft(n)])
    single_rate = single / (time.perf_counter() - start)
    start = time.perf_counter()
    for b in range(batches):
        with rt.transaction() as session:
            rt.audit.record(session, [_draft(b * 1000 + i) for i in range(1000)])
    batch_rate = batches * 1000 / (time.perf_counter() - start)
    start = time.perf_counter()
    integrated = rt.audit.integrate(rt.vault.sessions)
    integrate_rate = integrated / (time.perf_counter() - start)
    print(
        f"{label:10} appends/s single {single_rate:9,.0f}   batched {batch_rate:9,.0f} "
        f"(x{batch_rate / single_rate:.0f})   integrate {integrate_rate:9,.0f}/s"
    )


def grow(rt: Runtime, target: int) -> None:
    with rt.vault.sessions() as session:
        size = rt.audit.tree_size(session)
    while size < target:
        step = min(20_000, target - size)
        with rt.transaction() as session:
            rt.audit.record(session, [_draft(size + i) for i in range(step)])
        rt.audit.integrate(rt.vault.sessions, batch_size=20_000)
        size += step
        print(f"  grown to {size:,}", end="\r", flush=True)
    rt.audit.checkpoint(rt.vault.sessions)


def _median_ms(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_proofs(rt: Runtime, size: int, repeats: int) -> None:
    rng = random.Random(size)
    with rt.vault.sessions() as session:
        reader = DbNodeReader(session)
        head = _median_ms(lambda: read_root(reader, size), repeats)
        incl = _median_ms(lambda: read_inclusion_proof(reader, rng.randrange(size), size), repeats)
        cons = _median_ms(
            lambda: read_consistency_proof(reader, rng.randrange(1, size), size), repeats
        )
        baseline = ""
        if size <= 100_000:
            leaves = [
                h
                for (h,) in session.execute(
                    text("SELECT leaf_hash FROM audit_leaves ORDER BY leaf_index LIMIT :n"),
                    {"n": size},
                )
            ]
            start = time.perf_counter()
            root_hash(leaves)
            inclusion_proof(leaves, rng.randrange(size), size)
            naive = (time.perf_counter() - start) * 1000 / 2
            baseline = f"   from all leaves {naive:8.2f} ms (x{naive / max(incl, 1e-6):.0f})"
    print(
        f"{size:>12,}  head {head:7.3f} ms  inclusion {incl:7.3f} ms  "
        f"consistency {cons:7.3f} ms{baseline}"
    )


def load_synthetic_nodes(rt: Runtime, size: int) -> None:
    """Store the tree of `size` random leaves directly: leaf hashes in `audit_leaves`
    (level 0, with made-up entry ids and no entries), the levels above in
    `audit_tree_nodes`.

    Proofs read only those two tables; building 10^7 real entries takes over an hour on
    a 2-core machine, this takes minutes, and the proof queries see the same table shape.
    """
    tree = MemoryTree()
    rng = random.Random(size)
    leaves: list[dict[str, object]] = []
    nodes: list[dict[str, object]] = []
    with rt.transaction() as session:
        for n in range(size):
            for (level, index), digest in tree.append(rng.randbytes(32)):
                if level == 0:
                    leaves.append(
                        {"leaf_index": index, "entry_id": f"synthetic_{n}", "leaf_hash": digest}
                    )
                elif is_kept_level(level):
                    nodes.append({"level": level, "index": index, "hash": digest})
            if len(leaves) >= 50_000:
                session.execute(insert(AuditLeaf), leaves)
                session.execute(insert(AuditTreeNode), nodes)
                leaves, nodes = [], []
        if leaves:
            session.execute(insert(AuditLeaf), leaves)
        if nodes:
            session.execute(insert(AuditTreeNode), nodes)
    print(f"  loaded the nodes of a {size:,}-leaf tree")


def bench_verify(rt: Runtime) -> None:
    start = time.perf_counter()
    with rt.vault.sessions() as session:
        report = verify_log(session, rt.audit.verifier_key)
    elapsed = time.perf_counter() - start
    print(
        f"verify: {report.entries:,} entries, {report.checkpoints} checkpoints in "
        f"{elapsed:.1f} s = {report.entries / elapsed:,.0f} entries/s"
    )


def _database(workdir: Path, postgres: str | None, name: str) -> str:
    if not postgres:
        return f"sqlite:///{workdir / (name + '.db')}"
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if exists.scalar() is None:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(postgres).set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000")
    parser.add_argument("--workdir", type=Path, default=Path("rv-bench-audit"))
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--single", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--skip-appends", action="store_true", help="only grow and prove")
    parser.add_argument("--skip-verify", action="store_true", help="verification reads all")
    parser.add_argument(
        "--synthetic-nodes",
        type=int,
        default=0,
        help="also time proofs on a directly loaded node table of N leaves",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    label = "postgresql" if args.postgres else "sqlite"

    if args.synthetic_nodes:
        synthetic(args, label)
        return
    if not args.skip_appends:
        print("== appends ==")
        appends = _open(
            args.workdir / f"appends-{label}",
            _database(args.workdir, args.postgres, f"rv_audit_appends_{time.time_ns()}"),
        )
        try:
            bench_appends(appends, label, args.single, args.batches)
        finally:
            appends.close()

    print("\n== proofs from stored nodes (median) ==")
    rt = _open(
        args.workdir / f"tree-{label}", _database(args.workdir, args.postgres, "rv_audit_tree")
    )
    try:
        for size in sorted(int(s) for s in args.sizes.split(",")):
            grow(rt, size)
            bench_proofs(rt, size, args.repeats)
        if not args.skip_verify:
            with rt.vault.sessions() as session:
                leaves = session.query(AuditLeaf).count()
            print(f"\n== full verification ({leaves:,} entries) ==")
            bench_verify(rt)
    finally:
        rt.close()


def synthetic(args: argparse.Namespace, label: str) -> None:
    print(f"\n== proofs on a directly loaded node table ({args.synthetic_nodes:,} leaves) ==")
    rt = _open(
        args.workdir / f"nodes-{label}",
        _database(args.workdir, args.postgres, f"rv_audit_nodes_{args.synthetic_nodes}"),
    )
    try:
        with rt.vault.sessions() as session:
            loaded = session.scalar(select(func.count()).select_from(AuditTreeNode))
        if not loaded:
            load_synthetic_nodes(rt, args.synthetic_nodes)
        bench_proofs(rt, args.synthetic_nodes, args.repeats)
    finally:
        rt.close()


if __name__ == "__main__":
    main()
