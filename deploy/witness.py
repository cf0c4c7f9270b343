#!/usr/bin/env python3
"""A witness for a resident-vault audit log: run it where the vault's operator has no say.

Each run fetches the latest signed checkpoint, checks its signature against a verifier
key pinned at the first run (never re-fetched from the vault), and checks with a
consistency proof that it extends the last head this witness kept. Every head is kept in
the state directory, so a rewritten or shortened log is caught and the evidence stays
here, out of the operator's reach.

    python3 witness.py --url https://vault.example --key vault.vkey --state /var/lib/rv-witness

Exit 0: consistent (one JSON line on stdout). Exit 2: inconsistency found (the evidence
file is named on stderr). Exit 1: the check could not run (network, bad key file).
Needs the `resident-vault` package installed (for `audit.checkpoint` and `audit.merkle`);
a Go witness can use golang.org/x/mod/sumdb/note and transparency-dev/merkle instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from audit.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from audit.merkle import verify_consistency

TIMEOUT_SECONDS = 30


def _get(url: str, context: ssl.SSLContext | None) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as response:  # noqa: S310 - the operator gives the URL
        body: bytes = response.read()
    return body


def _evidence(state: Path, kind: str, old_text: str, new_text: str, detail: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = state / f"INCONSISTENT-{stamp}-{kind}.txt"
    path.write_text(
        f"{kind}: {detail}\nchecked at {datetime.now(UTC).isoformat()}\n\n"
        f"--- head kept by this witness ---\n{old_text}\n--- head served now ---\n{new_text}",
        encoding="utf-8",
    )
    return path


def run(url: str, key: str, state: Path, context: ssl.SSLContext | None) -> int:
    state.mkdir(parents=True, exist_ok=True)
    heads = state / "heads"
    heads.mkdir(exist_ok=True)
    latest_file = state / "latest.checkpoint"
    new_text = _get(f"{url}/v1/audit/checkpoint", context).decode("utf-8")
    try:
        new = verify_checkpoint(new_text, key)
    except CheckpointError as exc:
        path = _evidence(state, "bad-signature", "", new_text, str(exc))
        print(f"witness: checkpoint does not verify: {exc}; evidence {path}", file=sys.stderr)
        return 2
    old_text = latest_file.read_text(encoding="utf-8") if latest_file.exists() else None
    old: Checkpoint | None = None
    if old_text is not None:
        old = verify_checkpoint(old_text, key)
        problem = _compare(url, old, new, context)
        if problem is not None:
            path = _evidence(state, problem[0], old_text, new_text, problem[1])
            print(f"witness: {problem[1]}; evidence {path}", file=sys.stderr)
            return 2
    (heads / f"{new.size:012d}.checkpoint").write_text(new_text, encoding="utf-8")
    latest_file.write_text(new_text, encoding="utf-8")
    print(
        json.dumps(
            {
                "event": "witness.consistent",
                "origin": new.origin,
                "tree_size": new.size,
                "previous": None if old is None else old.size,
                "at": datetime.now(UTC).isoformat(),
            }
        )
    )
    return 0


def _compare(
    url: str, old: Checkpoint, new: Checkpoint, context: ssl.SSLContext | None
) -> tuple[str, str] | None:
    if new.size < old.size:
        return "shrunk", f"the log shrank from {old.size} to {new.size} entries"
    if new.size == old.size:
        if new.root != old.root:
            return "fork", f"two different roots signed for tree size {new.size}"
        return None
    reply = json.loads(
        _get(f"{url}/v1/audit/proofs/consistency?first={old.size}&second={new.size}", context)
    )
    proof = [base64.b64decode(h) for h in reply["hashes"]]
    if not verify_consistency(old.size, new.size, old.root, new.root, proof):
        return "not-an-extension", (
            f"the head of size {new.size} does not extend the kept head of size {old.size}"
        )
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the vault's base URL")
    parser.add_argument("--key", required=True, type=Path, help="file with the verifier key")
    parser.add_argument("--state", required=True, type=Path, help="directory for kept heads")
    parser.add_argument("--ca-file", type=Path, help="CA bundle for the vault's certificate")
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    try:
        key = args.key.read_text(encoding="utf-8").strip()
        code = run(args.url.rstrip("/"), key, args.state, context)
    except (OSError, ValueError, KeyError, CheckpointError) as exc:
        print(f"witness: could not check: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
