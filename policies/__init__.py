"""Policy: the Rego decision, its data, and the engines that evaluate it.

    from policies import EmbeddedEngine, CachedEngine, decision_input

    engine = CachedEngine(EmbeddedEngine())
    decision = engine.evaluate(decision_input(subject, purpose="subsidy-review", action="read"))
    if decision.allow: ...  # decision.fields, decision.rows, decision.obligations

The engines are imported lazily: opapywasm and opa-python-client take a while to load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from policies.bundle import PolicyBundle, build_bundle, load_bundle
from policies.cache import CachedEngine, CacheStats
from policies.errors import (
    PolicyEngineFault,
    PolicyError,
    PolicyInputError,
    PolicyUnavailable,
    StalePolicyError,
)
from policies.inputs import catalogue_fields, decision_input
from policies.interfaces import (
    Decision,
    Obligations,
    PolicyEngine,
    RateClass,
    Reason,
    RowConstraints,
    RowScope,
    Treatment,
)

if TYPE_CHECKING:
    from policies.embedded import EmbeddedEngine
    from policies.opa_server import OpaServerEngine

__all__ = [
    "CacheStats",
    "CachedEngine",
    "Decision",
    "EmbeddedEngine",
    "Obligations",
    "OpaServerEngine",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyEngineFault",
    "PolicyError",
    "PolicyInputError",
    "PolicyUnavailable",
    "RateClass",
    "Reason",
    "RowConstraints",
    "RowScope",
    "StalePolicyError",
    "Treatment",
    "build_bundle",
    "catalogue_fields",
    "decision_input",
    "load_bundle",
]


def __getattr__(name: str) -> Any:
    if name == "EmbeddedEngine":
        from policies.embedded import EmbeddedEngine  # noqa: PLC0415 - lazy on purpose

        return EmbeddedEngine
    if name == "OpaServerEngine":
        from policies.opa_server import OpaServerEngine  # noqa: PLC0415 - lazy on purpose

        return OpaServerEngine
    raise AttributeError(f"module 'policies' has no attribute {name!r}")
