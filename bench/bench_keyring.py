"""Keyring cost per operation: the PKCS#11 keyring (SoftHSM2) against the local keyring.

Why: every new resident wraps a data key, every read that misses the data-key cache
unwraps one, every identifier lookup or write computes a blind index, every audit
checkpoint, access token and consent receipt is signed, and every recipient's pseudonym
cipher is derived once. The baseline is the local keyring doing the same in the same run;
the table prints microseconds per operation and the ratio pkcs11 / local.

Makes its own SoftHSM2 token in a temporary directory (SOFTHSM2_CONF is set before the
module loads), so it runs anywhere softhsm2 is installed:

    python bench/bench_keyring.py            # 2,000 operations of each kind
    python bench/bench_keyring.py --n 10000 --threads 4
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import vault  # noqa: F401 - only to find out whether the package is importable
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import SecretStr

from api.settings import Settings
from vault.interfaces import Keyring
from vault.keyring import LocalKeyring
from vault.pkcs11_keyring import Pkcs11Keyring

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


def _per_op(run: Callable[[int], object], n: int, repeats: int = 3) -> float:
    """Median seconds per operation over `repeats` runs of `n` operations."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(n):
            run(i)
        samples.append((time.perf_counter() - started) / n)
    return statistics.median(samples)


def _operations(keyring: Keyring, n: int) -> dict[str, Callable[[int], object]]:
    contexts = [b"rv-dek-v1" + i.to_bytes(4, "big") for i in range(n)]
    wrapped = [keyring.wrap(os.urandom(32), contexts[i]) for i in range(n)]
    messages = [b"phone\x00138%08d" % i for i in range(n)]
    keyring.signing_public_key("bench")  # made before timing
    return {
        "wrap (data key)": lambda i: keyring.wrap(b"k" * 32, contexts[i]),
        "unwrap (data key)": lambda i: keyring.unwrap(*wrapped[i], contexts[i]),
        "blind index (HMAC)": lambda i: keyring.blind_index(messages[i]),
        "sign (Ed25519)": lambda i: keyring.sign("bench", messages[i]),
        "pseudonym key (HKDF)": lambda i: keyring.pseudonym_key(f"org-{i}"),
    }


def _softhsm(directory: Path) -> tuple[str, str]:
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n",
        encoding="utf-8",
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label, pin = "rv-bench", secrets.token_hex(8)
    subprocess.run(  # noqa: S603 - our own fixed arguments
        [  # noqa: S607 - softhsm2-util from PATH
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            secrets.token_hex(8),
            "--pin",
            pin,
        ],
        check=True,
        capture_output=True,
    )
    return label, pin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=4, help="for the thread-pool row")
    args = parser.parse_args()
    if not MODULE.is_file():
        print(f"SoftHSM2 is not installed ({MODULE})", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        label, pin = _softhsm(Path(tmp))
        local = LocalKeyring.create(Path(tmp) / "keyring.json")
        token = Pkcs11Keyring.create(
            Settings(
                keyring="pkcs11",
                pkcs11_module=MODULE,
                pkcs11_token_label=label,
                pkcs11_pin=SecretStr(pin),
                pkcs11_key_prefix="bench",
            )
        )
        local_ops, token_ops = _operations(local, args.n), _operations(token, args.n)
        print(f"{args.n} operations each, median of 3 runs; SoftHSM2 vs the local keyring file")
        print(f"{'operation':<24}{'local µs':>10}{'pkcs11 µs':>11}{'ratio':>8}")
        for name, run in local_ops.items():
            base = _per_op(run, args.n)
            hsm = _per_op(token_ops[name], args.n)
            print(f"{name:<24}{base * 1e6:>10.1f}{hsm * 1e6:>11.1f}{hsm / base:>8.1f}")

        def parallel(keyring: Keyring) -> float:
            ops = _operations(keyring, args.n)["unwrap (data key)"]
            started = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(ops, range(args.n)))
            return (time.perf_counter() - started) / args.n

        base, hsm = parallel(local), parallel(token)
        row = f"unwrap, {args.threads} threads"
        print(f"{row:<24}{base * 1e6:>10.1f}{hsm * 1e6:>11.1f}{hsm / base:>8.1f}")
        print(
            "A bulk export of 100,000 residents whose data keys are not cached spends "
            f"{100_000 * _per_op(token_ops['unwrap (data key)'], args.n):.1f} s unwrapping "
            "on this token (the short data-key LRU absorbs repeats)."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
