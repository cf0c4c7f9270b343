"""Rebuild `vault/decision/policy.wasm`, the compiled policy the embedded engine runs.

    python -m policies.build_wasm            # with $OPA_BIN, or `opa` on PATH
    python -m policies.build_wasm --check    # exit 1 if the shipped file is stale

OPA compiles the Rego modules (tests excluded, data excluded: the engine loads the data
document at run time, so a data change needs no rebuild) to WebAssembly with the single
entrypoint `vault/decision/decision`. Beside the module, `policy.wasm.sha256` records the
SHA-256 of the Rego sources it was built from and of the module itself; the embedded
engine refuses a module whose sources no longer match, and a test does the same in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from policies.bundle import (
    DATA_ROOT,
    ENTRYPOINT,
    OPA_VERSION,
    find_opa,
    modules_digest,
    run_opa,
)
from policies.errors import PolicyError

__all__ = ["RECORD_PATH", "WASM_PATH", "WasmRecord", "compile_wasm", "main", "source_modules"]

WASM_PATH = "vault/decision/policy.wasm"
RECORD_PATH = "vault/decision/policy.wasm.sha256"
_HEADER = "# policy.wasm provenance; written by `python -m policies.build_wasm`, do not edit"


@dataclass(frozen=True)
class WasmRecord:
    sources_sha256: str
    wasm_sha256: str
    opa_version: str

    def format(self) -> str:
        return (
            f"{_HEADER}\n"
            f"sources {self.sources_sha256}\n"
            f"wasm {self.wasm_sha256}\n"
            f"opa {self.opa_version}\n"
        )

    @classmethod
    def parse(cls, text: str) -> WasmRecord:
        values: dict[str, str] = {}
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition(" ")
                values[key] = value.strip()
        try:
            return cls(values["sources"], values["wasm"], values["opa"])
        except KeyError as exc:
            raise PolicyError(f"{RECORD_PATH} lacks {exc.args[0]!r}") from exc

    @classmethod
    def of(cls, modules: Mapping[str, str], wasm: bytes) -> WasmRecord:
        return cls(modules_digest(modules), hashlib.sha256(wasm).hexdigest(), OPA_VERSION)


def source_modules(package_dir: Path | None = None) -> dict[str, str]:
    """The non-test Rego modules under the package's `vault/` folder, by relative path."""
    base = package_dir or Path(__file__).resolve().parent
    return {
        path.relative_to(base).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted((base / DATA_ROOT).rglob("*.rego"))
        if not path.name.endswith("_test.rego")
    }


def _opa_version(opa: str) -> str:
    for line in run_opa(opa, "version").stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def compile_wasm(opa: str, modules: Mapping[str, str]) -> bytes:
    """`opa build -t wasm` the modules alone and return the bytes of `policy.wasm`."""
    version = _opa_version(opa)
    if version != OPA_VERSION:
        raise PolicyError(f"{opa} is OPA {version}; the policy is compiled with {OPA_VERSION}")
    with tempfile.TemporaryDirectory(prefix="rv-wasm-") as tmp:
        root = Path(tmp) / "src"
        for path, source in modules.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(source, encoding="utf-8")
        out = Path(tmp) / "bundle.tar.gz"
        run_opa(opa, "build", "-t", "wasm", "-e", ENTRYPOINT, ".", "-o", str(out), cwd=root)
        with tarfile.open(out, "r:gz") as archive:
            for member in archive.getmembers():
                if member.name.lstrip("/") == "policy.wasm":
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        with extracted:
                            return extracted.read()
    raise PolicyError("opa build produced no policy.wasm")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policies.build_wasm", description=__doc__)
    parser.add_argument("--opa", help="path to the opa binary (default: $OPA_BIN, or PATH)")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the shipped file is stale"
    )
    args = parser.parse_args(argv)
    opa = args.opa or find_opa()
    if not opa:
        parser.error("no opa binary: pass --opa, set OPA_BIN, or run .ci/install-opa")
    package_dir = Path(__file__).resolve().parent
    modules = source_modules(package_dir)
    wasm = compile_wasm(opa, modules)
    record = WasmRecord.of(modules, wasm)
    wasm_file, record_file = package_dir / WASM_PATH, package_dir / RECORD_PATH
    if args.check:
        current = wasm_file.exists() and wasm_file.read_bytes() == wasm
        recorded = (
            record_file.exists() and record_file.read_text(encoding="utf-8") == record.format()
        )
        if current and recorded:
            print(f"{WASM_PATH} is current (sources {record.sources_sha256[:12]})")
            return 0
        print(f"{WASM_PATH} is stale: run python -m policies.build_wasm", file=sys.stderr)
        return 1
    wasm_file.write_bytes(wasm)
    record_file.write_text(record.format(), encoding="utf-8")
    print(f"wrote {WASM_PATH} ({len(wasm)} bytes, sources {record.sources_sha256[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
