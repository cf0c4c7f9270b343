"""The embedded engine: the policy compiled to WebAssembly by OPA, run in-process.

`policy.wasm` ships as package data and is rebuilt by `python -m policies.build_wasm`;
the data document is loaded at run time, so a data change (a new mandate) needs no
rebuild, only `set_data`. opa-py-wasm keeps a bounded, thread-safe pool of instances.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Mapping
from importlib import resources
from typing import Any

from opapywasm import (
    UNDEFINED,
    OpaPolicyClosedError,
    OpaPoolTimeoutError,
    OpaWasmError,
    OpaWasmPolicy,
    PolicyConfig,
)

from policies.build_wasm import RECORD_PATH, WASM_PATH, WasmRecord
from policies.bundle import ENTRYPOINT, PolicyBundle, load_bundle
from policies.errors import PolicyEngineFault, PolicyError, PolicyUnavailable, StalePolicyError
from policies.inputs import field_names
from policies.interfaces import Decision

__all__ = ["EmbeddedEngine", "shipped_wasm"]


def shipped_wasm(bundle: PolicyBundle) -> bytes:
    """The shipped `policy.wasm`, checked against its record and the bundle's sources."""
    root = resources.files("policies")
    try:
        wasm = root.joinpath(WASM_PATH).read_bytes()
        record = WasmRecord.parse(root.joinpath(RECORD_PATH).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(
            f"{exc.filename or 'a policy file'} is missing from the policies package "
            f"(package data needs {WASM_PATH} and {RECORD_PATH})"
        ) from exc
    if hashlib.sha256(wasm).hexdigest() != record.wasm_sha256:
        raise StalePolicyError(f"{WASM_PATH} does not match {RECORD_PATH}")
    if record.sources_sha256 != bundle.sources_digest:
        raise StalePolicyError(
            f"{WASM_PATH} was built from other Rego sources: run python -m policies.build_wasm"
        )
    return wasm


class EmbeddedEngine:
    """`PolicyEngine` over opa-py-wasm. Thread-safe; `close()` when done."""

    def __init__(
        self,
        bundle: PolicyBundle | None = None,
        *,
        wasm: bytes | None = None,
        pool_size: int = 4,
        timeout_seconds: float = 5.0,
    ) -> None:
        """`bundle` defaults to the shipped policy and data; `wasm` to the shipped module
        (pass one only for a module compiled from `bundle.modules`)."""
        self._bundle = bundle or load_bundle()
        module = wasm if wasm is not None else shipped_wasm(self._bundle)
        config = PolicyConfig(
            pool_size=pool_size,
            default_entrypoint=ENTRYPOINT,
            borrow_timeout_seconds=timeout_seconds,
            eval_timeout_seconds=timeout_seconds,
            strict_result_shape=True,
        )
        try:
            self._policy = OpaWasmPolicy.from_wasm_bytes(module, config)
        except OpaWasmError as exc:
            raise PolicyEngineFault(f"cannot load the compiled policy: {exc}") from exc
        if ENTRYPOINT not in self._policy.entrypoints:
            self._policy.close()
            raise PolicyEngineFault(f"the compiled policy has no entrypoint {ENTRYPOINT}")
        if self._policy.builtins:
            # Host builtins (sprintf, ...) are best-effort reimplementations in Python that
            # may differ from OPA; the policy must not need any.
            names = ", ".join(sorted(self._policy.builtins))
            self._policy.close()
            raise PolicyEngineFault(f"the compiled policy needs host builtins: {names}")
        # A sequence lock: odd while data is being swapped. An evaluation that overlaps a
        # swap is repeated, so a decision never names a revision other than its data's.
        self._generation = 0
        self._swap = threading.Lock()
        self._load(self._bundle)

    @property
    def revision(self) -> str:
        return self._bundle.decision_revision

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    def set_data(self, data: Mapping[str, Any]) -> str:
        """Load another data document (e.g. exported from the database); the new revision."""
        self._load(self._bundle.with_data(data))
        return self._bundle.decision_revision

    def load_district(self, district: Mapping[str, Any]) -> str:
        """Load the district's data (`policies.district`); the new revision."""
        self._load(self._bundle.with_district(district))
        return self._bundle.decision_revision

    def _load(self, bundle: PolicyBundle) -> None:
        with self._swap:
            self._generation += 1
            try:
                self._policy.set_data(bundle.data_document())
                self._bundle = bundle
            except OpaWasmError as exc:
                raise PolicyEngineFault(f"cannot load the policy data: {exc}") from exc
            finally:
                self._generation += 1

    def evaluate(self, input: Mapping[str, Any]) -> Decision:
        names = field_names(input)
        while True:
            generation = self._generation
            if generation % 2:
                time.sleep(0)
                continue
            bundle = self._bundle
            result = self._run(input)
            if self._generation == generation:
                break
        return Decision.from_result(
            result,
            revision=bundle.decision_revision,
            evaluation_id=str(uuid.uuid4()),
            field_names=names,
        )

    def _run(self, input: Mapping[str, Any]) -> object:
        try:
            result = self._policy.evaluate(dict(input))
        except (OpaPoolTimeoutError, OpaPolicyClosedError) as exc:
            raise PolicyUnavailable(f"embedded policy engine unavailable: {exc}") from exc
        except OpaWasmError as exc:
            raise PolicyEngineFault(f"policy evaluation failed: {exc}") from exc
        if result is UNDEFINED:
            raise PolicyEngineFault("the policy decision is undefined")
        return result

    def close(self) -> None:
        self._policy.close()

    def __enter__(self) -> EmbeddedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
