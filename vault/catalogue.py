"""The field catalogue: loads `catalogue.yaml`, the one file that names resident fields.

Everything else (validation, encryption, masking, policy input, API, pages) asks the
catalogue instead of spelling field names itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from vault.errors import CatalogueError

FieldType = Literal["string", "date", "enum", "boolean", "number", "list", "object"]
Grade = Literal["L1", "L2", "L3", "L4"]
FIELD_TYPES: frozenset[str] = frozenset(
    {"string", "date", "enum", "boolean", "number", "list", "object"}
)
GRADES: frozenset[str] = frozenset({"L1", "L2", "L3", "L4"})
# Fields whose values form a closed set, so their statistics tokens can be mapped back to
# labels (vault.stat_tokens.closed_labels): by type, or a validator's categories.
CLOSED_TYPES: frozenset[str] = frozenset({"enum", "boolean"})
CLOSED_VALIDATORS: frozenset[str] = frozenset({"disability"})


@dataclass(frozen=True)
class Label:
    zh: str
    en: str

    def text(self, lang: str = "zh") -> str:
        return self.en if lang.startswith("en") else self.zh


@dataclass(frozen=True)
class Rule:
    """A mask or generalisation rule: its name and parameters from the catalogue."""

    rule: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: Label
    category: str
    sensitive: bool
    grade: Grade
    type: FieldType
    validator: str | None
    mask: Rule
    # Generalisation levels by name, from most to least revealing (may be empty).
    generalisations: Mapping[str, Rule]
    searchable: bool
    values: Mapping[str, Label] = field(default_factory=dict)
    max_length: int | None = None
    # For cross-field checks: role name -> field name (e.g. the ID number's birth date).
    matches: Mapping[str, str] = field(default_factory=dict)
    # A cross-system identifier: shown in clear under a pseudonym only if policy declares it.
    linkable: bool = False
    # Statistics count it from keyed tokens of its category (vault.stat_tokens), never by
    # decrypting; only a field with a closed set of values can be marked.
    stat_token: bool = False

    @property
    def generalise(self) -> Rule | None:
        """The least revealing generalisation, used when no level is asked for."""
        rules = list(self.generalisations.values())
        return rules[-1] if rules else None

    def generalisation(self, level: str | None = None) -> Rule | None:
        """The rule of a named level; the least revealing one for None or an unknown name."""
        if level is not None and level in self.generalisations:
            return self.generalisations[level]
        return self.generalise

    def public_metadata(self) -> dict[str, Any]:
        """What `GET /v1/fields` and the policy input see: metadata, never values."""
        meta: dict[str, Any] = {
            "name": self.name,
            "label": {"zh": self.label.zh, "en": self.label.en},
            "category": self.category,
            "sensitive": self.sensitive,
            "grade": self.grade,
            "type": self.type,
            "searchable": self.searchable,
            "linkable": self.linkable,
            "mask": self.mask.rule,
            "generalise": list(self.generalisations) or None,
        }
        if self.values:
            meta["values"] = {k: {"zh": v.zh, "en": v.en} for k, v in self.values.items()}
        return meta


@dataclass(frozen=True)
class Catalogue:
    version: int
    categories: Mapping[str, Label]
    fields: Mapping[str, FieldSpec]

    def __iter__(self) -> Iterator[FieldSpec]:
        return iter(self.fields.values())

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def __getitem__(self, name: str) -> FieldSpec:
        return self.fields[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.fields)

    @property
    def searchable(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self if f.searchable)

    def by_category(self, category: str) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self if f.category == category)


def _label(raw: Any, where: str) -> Label:
    if not isinstance(raw, Mapping) or not {"zh", "en"} <= set(raw):
        raise CatalogueError(f"{where}: a label needs both 'zh' and 'en'")
    return Label(zh=str(raw["zh"]), en=str(raw["en"]))


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, Mapping) or "rule" not in raw:
        raise CatalogueError(f"{where}: expected a mapping with a 'rule'")
    params = {k: v for k, v in raw.items() if k != "rule"}
    return Rule(rule=str(raw["rule"]), params=params)


def _generalisations(raw: Any, where: str) -> dict[str, Rule]:
    """One rule (its level named after it) or a list of `{level, rule, ...}` entries."""
    if not raw:
        return {}
    entries = raw if isinstance(raw, list) else [{"level": raw.get("rule"), **raw}]
    levels: dict[str, Rule] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("level"), str):
            raise CatalogueError(f"{where}: each level needs a 'level' name and a 'rule'")
        if entry["level"] in levels:
            raise CatalogueError(f"{where}: level {entry['level']!r} appears twice")
        rule = _rule({k: v for k, v in entry.items() if k != "level"}, where)
        levels[entry["level"]] = rule
    return levels


def _field(name: str, raw: Mapping[str, Any], categories: Mapping[str, Label]) -> FieldSpec:
    where = f"field {name!r}"
    missing = {"label", "category", "sensitive", "grade", "type", "mask", "searchable"} - set(raw)
    if missing:
        raise CatalogueError(f"{where}: missing {', '.join(sorted(missing))}")
    if raw["category"] not in categories:
        raise CatalogueError(f"{where}: unknown category {raw['category']!r}")
    if raw["grade"] not in GRADES:
        raise CatalogueError(f"{where}: grade must be one of L1-L4")
    if raw["type"] not in FIELD_TYPES:
        raise CatalogueError(f"{where}: unknown type {raw['type']!r}")
    values = {str(k): _label(v, f"{where} value {k}") for k, v in (raw.get("values") or {}).items()}
    if raw["type"] == "enum" and not values:
        raise CatalogueError(f"{where}: an enum needs values")
    stat_token = bool(raw.get("stat_token", False))
    closed = raw["type"] in CLOSED_TYPES or raw.get("validator") in CLOSED_VALIDATORS
    if stat_token and not closed:
        raise CatalogueError(f"{where}: only a field with a closed set of values has stat tokens")
    return FieldSpec(
        name=name,
        label=_label(raw["label"], where),
        category=str(raw["category"]),
        sensitive=bool(raw["sensitive"]),
        grade=raw["grade"],
        type=raw["type"],
        validator=raw.get("validator"),
        mask=_rule(raw["mask"], f"{where} mask"),
        generalisations=_generalisations(raw.get("generalise"), f"{where} generalise"),
        searchable=bool(raw["searchable"]),
        linkable=bool(raw.get("linkable", False)),
        stat_token=stat_token,
        values=values,
        max_length=raw.get("max_length"),
        matches=dict(raw.get("matches") or {}),
    )


def parse_catalogue(text: str) -> Catalogue:
    raw = yaml.safe_load(text)
    if not isinstance(raw, Mapping) or "fields" not in raw or "categories" not in raw:
        raise CatalogueError("the catalogue needs 'categories' and 'fields'")
    categories = {str(k): _label(v, f"category {k}") for k, v in raw["categories"].items()}
    fields = {str(k): _field(str(k), v, categories) for k, v in raw["fields"].items()}
    for spec in fields.values():
        for target in spec.matches.values():
            if target not in fields:
                raise CatalogueError(f"field {spec.name!r}: matches unknown field {target!r}")
    return Catalogue(version=int(raw.get("version", 1)), categories=categories, fields=fields)


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load a catalogue file; without a path, the one shipped with the package."""
    if path is None:
        return default_catalogue()
    return parse_catalogue(path.read_text(encoding="utf-8"))


@cache
def default_catalogue() -> Catalogue:
    text = resources.files("vault").joinpath("catalogue.yaml").read_text(encoding="utf-8")
    return parse_catalogue(text)
