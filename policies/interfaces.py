"""The decision contract and the engine interface the gate depends on.

One decision per (subject, purpose, action, policy revision), never per record. The
engine's input is the subject, purpose, action, target and the field catalogue's public
metadata; its output (`data.vault.decision.decision`) is mirrored by `Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

from policies.errors import PolicyEngineFault

__all__ = [
    "TREATMENT_RANK",
    "Decision",
    "Identifier",
    "Obligations",
    "PolicyEngine",
    "RateClass",
    "Reason",
    "RowConstraints",
    "RowScope",
    "Treatment",
]


class Treatment(StrEnum):
    """How a field's value is shown. A `str`, so it serialises as its value."""

    CLEAR = "clear"
    MASKED = "masked"
    GENERALISED = "generalised"
    DENIED = "denied"


TREATMENT_RANK: Mapping[Treatment, int] = MappingProxyType(
    {Treatment.DENIED: 0, Treatment.MASKED: 1, Treatment.GENERALISED: 2, Treatment.CLEAR: 3}
)
"""From least to most revealing, as the policy ranks them (`vault.treatment.ranks`):
a field that cannot be generalised falls back to masked, so masked ranks lower."""


Identifier = Literal["vault-id", "pseudonym"]


class RowScope(StrEnum):
    ALL = "all"
    JURISDICTION = "jurisdiction"
    SELF = "self"
    CHILDREN = "children"
    NONE = "none"


class RateClass(StrEnum):
    STANDARD = "standard"
    BULK = "bulk"
    SENSITIVE = "sensitive"


@dataclass(frozen=True)
class Reason:
    """Why: a stable code (`mandate`, `self`, `no-mandate`, ...) and text in both languages."""

    code: str
    zh: str
    en: str

    def text(self, lang: str = "zh") -> str:
        return self.en if lang.startswith("en") else self.zh


@dataclass(frozen=True)
class RowConstraints:
    """Which residents' rows the decision covers, as data for our own SQL builder.

    With scope `jurisdiction`, exactly one of the id tuples is non-empty: the level the
    caller's mandate confines rows to. `legal_basis` is None only when nothing is allowed.
    """

    scope: RowScope
    communities: tuple[str, ...]
    grids: tuple[str, ...]
    buildings: tuple[str, ...]
    consent_required: bool
    legal_basis: str | None


@dataclass(frozen=True)
class Obligations:
    justification_required: bool
    rate_class: RateClass
    # An emergency beyond normal policy: the gate requires an active break-glass grant
    # for the one resident, flags the access, notifies the resident and queues a review.
    break_glass: bool = False


@dataclass(frozen=True)
class Decision:
    """One policy decision, plus where it came from.

    `evaluation_id` names the evaluation that produced it: a fresh UUID per evaluation, or
    the OPA server's `decision_id`, so the audit entry and the server's decision log
    correlate. A decision served from the cache keeps the id of the evaluation it reused
    and has `from_cache` set (which takes no part in equality).
    """

    allow: bool
    reason: Reason
    fields: Mapping[str, Treatment]
    rows: RowConstraints
    obligations: Obligations
    rules: tuple[str, ...]
    revision: str
    evaluation_id: str
    identifier: Identifier = field(default="pseudonym")
    levels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    explanation: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    from_cache: bool = field(default=False, compare=False)

    @property
    def pseudonymous(self) -> bool:
        """Whether the caller sees residents under its own pseudonym, not the vault id."""
        return self.identifier != "vault-id"

    def treatment(self, name: str) -> Treatment:
        """A field's treatment; denied for any field the decision does not name."""
        return self.fields.get(name, Treatment.DENIED)

    @property
    def visible_fields(self) -> tuple[str, ...]:
        """Fields that are read and decrypted at all (every treatment but denied)."""
        return tuple(n for n, t in self.fields.items() if t is not Treatment.DENIED)

    def to_result(self) -> dict[str, Any]:
        """The policy's output document, as `data.vault.decision.decision` returns it."""
        return {
            "allow": self.allow,
            "reason": {"code": self.reason.code, "zh": self.reason.zh, "en": self.reason.en},
            "fields": {name: str(t) for name, t in self.fields.items()},
            "rows": {
                "scope": str(self.rows.scope),
                "communities": list(self.rows.communities),
                "grids": list(self.rows.grids),
                "buildings": list(self.rows.buildings),
                "consent_required": self.rows.consent_required,
                "legal_basis": self.rows.legal_basis,
            },
            "obligations": {
                "justification_required": self.obligations.justification_required,
                "rate_class": str(self.obligations.rate_class),
                "break_glass": self.obligations.break_glass,
            },
            "rules": list(self.rules),
            "identifier": self.identifier,
            "levels": dict(self.levels),
            "explanation": _plain(self.explanation),
        }

    @classmethod
    def from_result(
        cls,
        result: object,
        *,
        revision: str,
        evaluation_id: str,
        field_names: frozenset[str] | None = None,
    ) -> Decision:
        """Check and convert the policy's output; PolicyEngineFault if it breaks the contract.

        With `field_names` (the names in the input), the output must name exactly those.
        A denial that shows any field or any rows is refused too: the gate trusts this.
        """
        try:
            decision = _parse(result, revision, evaluation_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyEngineFault(f"malformed policy decision: {exc!r}") from exc
        if field_names is not None and set(decision.fields) != field_names:
            raise PolicyEngineFault("the policy decision does not cover exactly the input fields")
        if not decision.allow and (
            decision.visible_fields or decision.rows.scope is not RowScope.NONE
        ):
            raise PolicyEngineFault("a denied policy decision shows fields or rows")
        return decision


@runtime_checkable
class PolicyEngine(Protocol):
    """Evaluates `data.vault.decision.decision`; embedded (Wasm) and OPA server alike."""

    @property
    def revision(self) -> str:
        """The policy revision new evaluations run under (`rev-` + 16 hex digits)."""
        ...

    def evaluate(self, input: Mapping[str, Any]) -> Decision:
        """One decision. Raises PolicyUnavailable, PolicyEngineFault or PolicyInputError."""
        ...


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} is not an object")
    return value


def _boolean(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} is not a boolean")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    return value


def _ids(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} is not a list of strings")
    return tuple(value)


def _parse(result: object, revision: str, evaluation_id: str) -> Decision:
    doc = _mapping(result, "decision")
    reason = _mapping(doc["reason"], "reason")
    rows = _mapping(doc["rows"], "rows")
    obligations = _mapping(doc["obligations"], "obligations")
    fields = _mapping(doc["fields"], "fields")
    legal_basis = rows["legal_basis"]
    return Decision(
        allow=_boolean(doc["allow"], "allow"),
        reason=Reason(
            code=_text(reason["code"], "reason.code"),
            zh=_text(reason["zh"], "reason.zh"),
            en=_text(reason["en"], "reason.en"),
        ),
        fields=MappingProxyType(
            {_text(k, "field name"): Treatment(_text(v, k)) for k, v in fields.items()}
        ),
        rows=RowConstraints(
            scope=RowScope(_text(rows["scope"], "rows.scope")),
            communities=_ids(rows["communities"], "rows.communities"),
            grids=_ids(rows["grids"], "rows.grids"),
            buildings=_ids(rows["buildings"], "rows.buildings"),
            consent_required=_boolean(rows["consent_required"], "rows.consent_required"),
            legal_basis=None if legal_basis is None else _text(legal_basis, "rows.legal_basis"),
        ),
        obligations=Obligations(
            justification_required=_boolean(
                obligations["justification_required"], "obligations.justification_required"
            ),
            rate_class=RateClass(_text(obligations["rate_class"], "obligations.rate_class")),
            break_glass=_boolean(obligations["break_glass"], "obligations.break_glass"),
        ),
        rules=_ids(doc["rules"], "rules"),
        revision=revision,
        evaluation_id=evaluation_id,
        identifier=_identifier(doc["identifier"]),
        levels=MappingProxyType(
            {
                _text(k, "level field"): _text(v, k)
                for k, v in _mapping(doc["levels"], "levels").items()
            }
        ),
        explanation=_frozen(_mapping(doc["explanation"], "explanation")),
    )


def _identifier(value: object) -> Identifier:
    if value == "vault-id":
        return "vault-id"
    if value == "pseudonym":
        return "pseudonym"
    raise ValueError(f"identifier {value!r} is neither vault-id nor pseudonym")


def _frozen(value: Any) -> Any:
    """A read-only copy of a JSON document, so a cached decision cannot be altered."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """Back to plain JSON types (dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
