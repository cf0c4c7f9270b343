"""Display masks and generalisations of resident field values.

Two ways of showing less than the value, both chosen per field in catalogue.yaml:

* a *mask* (`mask_value`) hides characters but keeps the value's shape, so a grid worker
  can confirm "the phone ending 5678" without seeing the number. A mask never shows the
  whole value, whatever the input: short values are starred out completely.
* a *generalisation* (`generalise_value`) replaces the value with a coarser fact that is
  still useful for statistics and service planning: an age band instead of a birth date,
  a subsidy band instead of an amount, "has a record" instead of a diagnosis.

Both take the value in its normal form (see `vault.validators`) and never raise on one;
they raise CatalogueError only for a rule name the catalogue should not contain.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from vault.catalogue import Catalogue, FieldSpec, Rule
from vault.errors import CatalogueError
from vault.validators import DISABILITY_CATEGORIES, china_today

__all__ = [
    "COMPOUND_SURNAMES",
    "REDACTED",
    "check_catalogue",
    "generalise_value",
    "mask_value",
]

REDACTED: Final = "***"
"""What a fully hidden value looks like; says nothing about its length or content."""

COMPOUND_SURNAMES: Final = frozenset(
    {
        "欧阳",
        "司马",
        "诸葛",
        "上官",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "长孙",
        "宇文",
        "司徒",
        "令狐",
        "夏侯",
        "端木",
        "独孤",
        "南宫",
        "西门",
        "百里",
        "呼延",
        "轩辕",
        "万俟",
        "闻人",
        "澹台",
        "公冶",
        "太叔",
        "申屠",
        "淳于",
        "单于",
        "钟离",
        "赫连",
        "濮阳",
        "司空",
        "第五",
        "拓跋",
        "左丘",
        "东郭",
        "公羊",
        "谷梁",
        "段干",
        "巫马",
        "漆雕",
        "乐正",
        "壤驷",
        "公良",
        "宗政",
        "仲孙",
        "叔孙",
        "颛孙",
        "鲜于",
    }
)
"""Two-character surnames, so 欧阳修 masks to 欧阳* rather than 欧*."""


def _is_cjk(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff" or char >= "\U00020000"


def _as_text(value: Any) -> str | None:
    """The text a character mask works on; None for values it cannot sensibly cut."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)
    return None


def _int_param(rule: Rule, name: str, default: int) -> int:
    value = rule.params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CatalogueError(f"rule {rule.rule!r}: {name!r} must be a whole number >= 0")
    return value


# --------------------------------------------------------------------------- masks


def _keep(text: str, first: int, last: int) -> str:
    """Keep `first` and `last` characters, one star per hidden character.

    When that would leave nothing hidden the whole value is starred: the length is kept
    (it is the shape the reader expects) but no character is shown.
    """
    if not text:
        return REDACTED
    if len(text) <= first + last:
        return "*" * len(text)
    return text[:first] + "*" * (len(text) - first - last) + text[len(text) - last :]


def _surname(text: str) -> str:
    """Surname and one star, whatever the given name's length (which would be a hint)."""
    name = text.strip()
    if not name:
        return REDACTED
    # A Latin name shows its first letter only, as on a redacted form.
    compound = _is_cjk(name[0]) and len(name) >= 3 and name[:2] in COMPOUND_SURNAMES
    keep = 2 if compound else 1
    if len(name) <= keep:
        return "*"
    return name[:keep] + "*"


_ISO_DATE: Final = re.compile(r"([0-9]{4})-[0-9]{2}-[0-9]{2}")


def _date_year(text: str) -> str:
    match = _ISO_DATE.fullmatch(text.strip())
    return f"{match.group(1)}-**-**" if match else REDACTED


def _truncate(text: str, first: int) -> str:
    """The first `first` characters and "***", but never more than half of a short value."""
    shown = min(first, len(text) // 2)
    return text[:shown] + REDACTED


def mask_value(spec: FieldSpec, value: Any) -> str:
    """The field's value under its catalogue mask, for display to someone who may not see it.

    Rules: keep (`first`/`last` characters), surname, date_year, plate, truncate (`first`),
    redact. Never the whole value, and never an exception for a normal form; a value of a
    shape the rule cannot cut (an object, a list, None) is redacted entirely.
    """
    rule = spec.mask
    if rule.rule == "redact":
        return REDACTED
    if rule.rule not in _MASKS:
        raise CatalogueError(f"field {spec.name!r}: unknown mask rule {rule.rule!r}")
    text = _as_text(value)
    if text is None:
        return REDACTED
    return _MASKS[rule.rule](rule, text)


def _mask_keep(rule: Rule, text: str) -> str:
    return _keep(text, _int_param(rule, "first", 0), _int_param(rule, "last", 0))


def _mask_plate(rule: Rule, text: str) -> str:
    """Province and office letter, then the last two: "京A12345" -> "京A***45"."""
    return _keep(text, _int_param(rule, "first", 2), _int_param(rule, "last", 2))


_MASKS: Final[Mapping[str, Callable[[Rule, str], str]]] = {
    "keep": _mask_keep,
    "surname": lambda rule, text: _surname(text),
    "date_year": lambda rule, text: _date_year(text),
    "plate": _mask_plate,
    "truncate": lambda rule, text: _truncate(text, _int_param(rule, "first", 0)),
    "redact": lambda rule, text: REDACTED,
}


# --------------------------------------------------------------------------- generalisations

_UNKNOWN: Final = ("未知", "unknown")
_AGE_TOP: Final = 90  # ages from here up share one band: very old residents are few, so findable


def _pick(labels: tuple[str, str], lang: str) -> str:
    return labels[1] if lang.startswith("en") else labels[0]


def _age(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _band_width(spec: FieldSpec, rule: Rule) -> int:
    width = _int_param(rule, "width", 10)
    if width < 1:
        raise CatalogueError(f"field {spec.name!r}: an age band is at least 1 year wide")
    return width


def _born(value: Any, today: date) -> date | None:
    try:
        born = date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return None if born is None or born > today else born


def _age_band(spec: FieldSpec, rule: Rule, value: Any, today: date, lang: str) -> str:
    """ "80-89" style bands of the catalogue's width; everyone 90 or older is "90+"."""
    width = _band_width(spec, rule)
    born = _born(value, today)
    if born is None:
        return _pick(_UNKNOWN, lang)
    age = _age(born, today)
    if age >= _AGE_TOP:
        return f"{_AGE_TOP}+"
    low = age // width * width
    return f"{low}-{min(low + width, _AGE_TOP) - 1}"


def _age_thresholds(spec: FieldSpec, rule: Rule) -> list[int]:
    thresholds = rule.params.get("thresholds")
    if (
        not isinstance(thresholds, list)
        or not thresholds
        or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in thresholds)
        or thresholds != sorted(set(thresholds))
    ):
        raise CatalogueError(f"field {spec.name!r}: age_over needs ascending whole-number ages")
    return thresholds


def _age_over(spec: FieldSpec, rule: Rule, value: Any, today: date, lang: str) -> str:
    """Only the highest threshold reached: "80岁以上" for anyone 80 or older, else "未满60岁".

    What an elderly-care visit needs to know, and far less than a birth date or a band."""
    thresholds = _age_thresholds(spec, rule)
    born = _born(value, today)
    if born is None:
        return _pick(_UNKNOWN, lang)
    age = _age(born, today)
    reached = [t for t in thresholds if age >= t]
    if not reached:
        return _pick((f"未满{thresholds[0]}岁", f"under {thresholds[0]}"), lang)
    return _pick((f"{reached[-1]}岁以上", f"{reached[-1]} or older"), lang)


def _year(spec: FieldSpec, rule: Rule, value: Any, today: date, lang: str) -> str:
    born = _born(value, today)
    return str(born.year) if born else _pick(_UNKNOWN, lang)


def _band_edges(spec: FieldSpec, rule: Rule) -> list[int]:
    edges = rule.params.get("edges")
    if (
        not isinstance(edges, list)
        or not edges
        or not all(isinstance(e, int) and not isinstance(e, bool) for e in edges)
        or edges != sorted(set(edges))
    ):
        raise CatalogueError(f"field {spec.name!r}: band needs ascending whole-number edges")
    return edges


def _band(spec: FieldSpec, rule: Rule, value: Any, today: date, lang: str) -> str:
    """Half-open bands [edge, next edge), labelled in whole units: "0-499", "≥5000"."""
    edges = _band_edges(spec, rule)
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise InvalidOperation
        amount = Decimal(repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, ValueError):
        return _pick(_UNKNOWN, lang)
    if not amount.is_finite():
        return _pick(_UNKNOWN, lang)
    if amount < edges[0]:
        return f"<{edges[0]}"
    for low, high in itertools.pairwise(edges):
        if amount < high:
            return f"{low}-{high - 1}"
    return f"≥{edges[-1]}"


def _disability_label(value: Mapping[str, Any], lang: str) -> str:
    key = value.get("category")
    if key == "none":
        return _pick(("无残疾", "No disability"), lang)
    if isinstance(key, str) and key in DISABILITY_CATEGORIES:
        zh, en = DISABILITY_CATEGORIES[key]
        return _pick((f"{zh}残疾", f"{en} disability"), lang)
    return _pick(_UNKNOWN, lang)


def _integrity_label(entries: list[Any], lang: str) -> str:
    if not entries:
        return _pick(("无记录", "No records"), lang)
    kinds = [e.get("kind") if isinstance(e, Mapping) else None for e in entries]
    good, bad = kinds.count("positive"), kinds.count("negative")
    return _pick((f"正面记录{good}条，负面记录{bad}条", f"{good} positive, {bad} negative"), lang)


def _category(spec: FieldSpec, rule: Rule, value: Any, today: date, lang: str) -> str:
    """Only that there is something, or which kind: never the details themselves.

    Disability gives its category without the grade; integrity records their counts by
    kind; health conditions (any other list) only whether there are any; an enum its label.
    """
    label: tuple[str, str] = _UNKNOWN
    if spec.validator == "disability" and isinstance(value, Mapping):
        return _disability_label(value, lang)
    if spec.validator == "integrity_records" and isinstance(value, list):
        return _integrity_label(value, lang)
    if spec.type == "enum" and isinstance(value, str) and value in spec.values:
        return spec.values[value].text(lang)
    if isinstance(value, list):
        if not value:
            label = ("无", "None")
        elif spec.category == "health":
            label = ("有健康状况记录", "Health conditions on record")
        else:
            label = ("有记录", "Has entries")
    return _pick(label, lang)


def _building(value: Any, context: Mapping[str, Any] | None, lang: str) -> str:
    """The building's name from context, else the address up to its first digit.

    "杭州市和畅区桂语路18号3幢" -> "杭州市和畅区桂语路": the street, not the door. An address
    without digits keeps only its first half, so the generalisation is never the address.
    """
    building = (context or {}).get("building")
    if isinstance(building, str) and building.strip():
        return building.strip()
    if not isinstance(value, str) or not value.strip():
        return _pick(_UNKNOWN, lang)
    address = value.strip()
    cut = next((i for i, c in enumerate(address) if c.isdigit()), None)
    prefix = address[:cut] if cut is not None else address[: len(address) // 2]
    prefix = prefix.rstrip(" ,，、-")
    return prefix or _pick(_UNKNOWN, lang)


def _community(context: Mapping[str, Any] | None, lang: str) -> str:
    """The community's name from context; never derived from the address itself."""
    community = (context or {}).get("community")
    if isinstance(community, str) and community.strip():
        return community.strip()
    return _pick(_UNKNOWN, lang)


_GENERALISERS: Final[Mapping[str, Callable[[FieldSpec, Rule, Any, date, str], str]]] = {
    "age_band": _age_band,
    "age_over": _age_over,
    "year": _year,
    "band": _band,
    "category": _category,
}


def generalise_value(
    spec: FieldSpec,
    value: Any,
    *,
    level: str | None = None,
    today: date | None = None,
    context: Mapping[str, Any] | None = None,
    lang: str = "zh",
) -> str:
    """The field's value generalised at `level` (default: its least revealing level).

    age_band, age_over and year read a birth date (ages as of `today`, default today in
    China), band an amount, category a list or object, building an address (with the
    building's name in `context["building"]` when the caller knows it), community the
    community's name in `context["community"]`. A value that cannot be read gives
    "未知" / "unknown" rather than an error.
    """
    rule = spec.generalisation(level)
    if rule is None:
        raise CatalogueError(f"field {spec.name!r} has no generalise rule")
    if rule.rule == "building":
        return _building(value, context, lang)
    if rule.rule == "community":
        return _community(context, lang)
    try:
        generalise = _GENERALISERS[rule.rule]
    except KeyError:
        raise CatalogueError(
            f"field {spec.name!r}: unknown generalise rule {rule.rule!r}"
        ) from None
    return generalise(spec, rule, value, today or china_today(), lang)


def check_catalogue(catalogue: Catalogue) -> None:
    """Raise CatalogueError unless every mask and generalise rule and its params is usable."""
    for spec in catalogue:
        if spec.mask.rule not in _MASKS:
            raise CatalogueError(f"field {spec.name!r}: unknown mask rule {spec.mask.rule!r}")
        for param in ("first", "last"):
            _int_param(spec.mask, param, 0)
        for rule in spec.generalisations.values():
            if rule.rule not in {*_GENERALISERS, "building", "community"}:
                raise CatalogueError(f"field {spec.name!r}: unknown generalise rule {rule.rule!r}")
            if rule.rule == "band":
                _band_edges(spec, rule)
            if rule.rule == "age_band":
                _band_width(spec, rule)
            if rule.rule == "age_over":
                _age_thresholds(spec, rule)
