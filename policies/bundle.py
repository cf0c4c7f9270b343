"""The policy as shipped: Rego modules, the data document, and the policy revision.

The Rego files and `vault/data.json` are package data (`importlib.resources`), laid out as
an OPA bundle expects: `policies/vault/data.json` is the document at `data.vault`, and each
package sits in the folder its path names. The revision is a hash over both, so any change
to policy or data makes a new revision, and cached decisions of the old one are dropped.

The district's own data (its purpose registry and its organisations' mandates) is not
shipped: it comes from the database at a data revision (`policies.district`) and sits at
`data.district` (`PolicyBundle.with_district`), beside the bundle's root, so an OPA server
that runs the shipped bundle takes it through its data API. A decision's revision names
both: the bundle's `rev-…` and, after `.d`, the data revision (`rev-46f5f871f874487f.d42`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from policies.errors import PolicyError

__all__ = [
    "BUNDLE_ROOTS",
    "DATA_PATH",
    "DATA_ROOT",
    "DISTRICT_ROOT",
    "ENTRYPOINT",
    "OPA_VERSION",
    "PolicyBundle",
    "build_bundle",
    "canonical_json",
    "code_revision",
    "combined_revision",
    "find_opa",
    "load_bundle",
    "modules_digest",
    "policy_revision",
    "run_opa",
    "shipped_data",
    "shipped_modules",
]

OPA_VERSION = "1.22.3"
"""The OPA release the policies are written, tested and compiled for."""
ENTRYPOINT = "vault/decision/decision"
"""The decision document, as an OPA path (`data.vault.decision.decision`)."""
DATA_ROOT = "vault"
"""The data document lives at `data.vault`."""
DISTRICT_ROOT = "district"
"""The district's data (purpose registry, mandates) lives at `data.district`."""
DATA_PATH = "vault/data.json"
"""Where the shipped data document sits, relative to the `policies` package."""
_TEST_SUFFIX = "_test.rego"


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text: the same bytes for the same document."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    )


def modules_digest(modules: Mapping[str, str]) -> str:
    """SHA-256 (hex) over the Rego modules, sorted by path; names `policy.wasm`'s sources."""
    digest = hashlib.sha256()
    for path in sorted(modules):
        digest.update(path.encode("utf-8") + b"\0")
        digest.update(modules[path].encode("utf-8") + b"\0")
    return digest.hexdigest()


def policy_revision(modules: Mapping[str, str], data: Mapping[str, Any]) -> str:
    """`rev-` + the first 16 hex digits of SHA-256 over the modules and the canonical data."""
    return _revision(modules_digest(modules), canonical_json(data))


def _revision(sources_digest: str, data_json: str) -> str:
    digest = hashlib.sha256()
    digest.update(sources_digest.encode("ascii") + b"\0")
    digest.update(data_json.encode("utf-8"))
    return "rev-" + digest.hexdigest()[:16]


def combined_revision(revision: str, data_revision: str | None) -> str:
    """`rev-…` alone, or `rev-….d<data revision>` when district data is loaded."""
    return revision if data_revision is None else f"{revision}.d{data_revision}"


def code_revision(revision: str) -> str:
    """The policy's own revision (the bundle's) of a decision's `rev-….d<data>`."""
    return revision.split(".d", 1)[0]


@dataclass(frozen=True, eq=False)
class PolicyBundle:
    """The Rego modules (path -> source, tests excluded) and the data document at data.vault.

    The data is kept as canonical JSON text, so nothing can change it behind the revision.
    """

    modules: Mapping[str, str]
    data_json: str
    district_json: str | None = None

    @cached_property
    def sources_digest(self) -> str:
        return modules_digest(self.modules)

    @cached_property
    def revision(self) -> str:
        return _revision(self.sources_digest, self.data_json)

    @cached_property
    def data_revision(self) -> str | None:
        """The district data's revision (its `revision`), None without district data."""
        district = self.district
        return None if district is None else str(district.get("revision", "0"))

    @cached_property
    def decision_revision(self) -> str:
        """What decisions under this bundle name: the revision, and the data revision."""
        return combined_revision(self.revision, self.data_revision)

    @property
    def district(self) -> dict[str, Any] | None:
        """A fresh copy of the district's data (the content of data.district), if any."""
        if self.district_json is None:
            return None
        district: dict[str, Any] = json.loads(self.district_json)
        return district

    def with_district(self, district: Mapping[str, Any] | None) -> PolicyBundle:
        """The same policy with the district's data from the database (None: without)."""
        return PolicyBundle(
            modules=self.modules,
            data_json=self.data_json,
            district_json=None if district is None else _data_json(district),
        )

    def district_data(self) -> dict[str, Any]:
        """The district's data, else the shipped purposes and no organisation mandates
        (what the policy itself falls back to), for readers other than the policy."""
        return self.district or {"purposes": self.data.get("purposes", {}), "mandates": {}}

    @property
    def data(self) -> dict[str, Any]:
        """A fresh copy of the data document (the content of data.vault)."""
        data: dict[str, Any] = json.loads(self.data_json)
        return data

    def with_data(self, data: Mapping[str, Any]) -> PolicyBundle:
        """The same policy with another data document (e.g. exported from the database)."""
        return PolicyBundle(
            modules=self.modules, data_json=_data_json(data), district_json=self.district_json
        )

    def data_document(self) -> dict[str, Any]:
        """The whole `data` an engine loads: the document under its root, and the
        district's beside it."""
        district = self.district
        return {DATA_ROOT: self.data} | ({} if district is None else {DISTRICT_ROOT: district})

    def write(self, directory: Path) -> Path:
        """Write the modules and data as an OPA bundle directory; returns `directory`."""
        for path, source in self.modules.items():
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source, encoding="utf-8")
        data_file = directory / DATA_PATH
        data_file.parent.mkdir(parents=True, exist_ok=True)
        data_file.write_text(self.data_json, encoding="utf-8")
        return directory


def _data_json(data: Mapping[str, Any]) -> str:
    if not isinstance(data, Mapping):
        raise PolicyError("the policy data document must be an object")
    try:
        return canonical_json(data)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"the policy data document is not JSON: {exc}") from exc


def _walk(node: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        path = f"{prefix}/{child.name}" if prefix else child.name
        if child.is_dir():
            yield from _walk(child, path)
        else:
            yield path, child


def shipped_modules() -> dict[str, str]:
    """The Rego modules shipped with the package (test modules excluded)."""
    root = resources.files("policies")
    return {
        path: node.read_text(encoding="utf-8")
        for path, node in _walk(root.joinpath(DATA_ROOT), DATA_ROOT)
        if path.endswith(".rego") and not path.endswith(_TEST_SUFFIX)
    }


def shipped_data() -> dict[str, Any]:
    text = resources.files("policies").joinpath(DATA_PATH).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise PolicyError(f"{DATA_PATH} must hold an object")
    return data


def load_bundle(data: Mapping[str, Any] | None = None) -> PolicyBundle:
    """The shipped policy, with the shipped data document or the one given."""
    modules = MappingProxyType(shipped_modules())
    if not modules:
        raise PolicyError("no Rego modules found in the policies package")
    return PolicyBundle(
        modules=modules, data_json=_data_json(shipped_data() if data is None else data)
    )


def find_opa() -> str | None:
    """The `opa` binary: $OPA_BIN, else `opa` on PATH, else None."""
    configured = os.environ.get("OPA_BIN")
    if configured:
        return configured
    return shutil.which("opa")


def run_opa(opa: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the opa binary; PolicyError with its output if it fails."""
    try:
        done = subprocess.run(  # noqa: S603 - a fixed binary with our own arguments
            [opa, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PolicyError(f"cannot run {opa}: {exc}") from exc
    if done.returncode != 0:
        raise PolicyError(f"opa {args[0]} failed ({done.returncode}): {done.stderr or done.stdout}")
    return done


BUNDLE_ROOTS = (DATA_ROOT,)
"""The paths the bundle owns. Not the whole tree (OPA's default), so an OPA sidecar can load
other policies beside it, such as the decision-log mask at `system.log`
(deploy/opa/mask.rego); the revision does not depend on this."""


def build_bundle(opa: str, bundle: PolicyBundle, out: Path) -> Path:
    """`opa build -b` the modules and data, with the bundle's revision and roots in its
    manifest."""
    with tempfile.TemporaryDirectory(prefix="rv-bundle-") as staging:
        root = bundle.write(Path(staging) / "bundle")
        (root / ".manifest").write_text(json.dumps({"roots": list(BUNDLE_ROOTS)}), "utf-8")
        # Run inside the directory: `-b DIR` keeps DIR in the module paths of the bundle.
        target = str(out.resolve())
        run_opa(opa, "build", "-b", ".", "--revision", bundle.revision, "-o", target, cwd=root)
    return out
