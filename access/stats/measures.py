"""The registry of statistical measures: what `GET /v1/stats/{measure}` can count or sum.

Each measure reads at most one catalogue field, so policy decides it field by field: a
measure whose field the purpose denies is refused. A measure says how one resident's
decrypted value falls into its categories (or is not counted at all), what it counts
(residents or households) and, for sums, the most one resident can contribute (the bound
differential privacy clips to). Nothing here reads the database or knows HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

from vault.catalogue import FieldSpec
from vault.masking import generalise_value

TOTAL: Final = "total"
AGE_LEVEL: Final = "age_band"


class Unit(StrEnum):
    RESIDENTS = "residents"
    HOUSEHOLDS = "households"
    YUAN = "yuan"


# How one resident's value counts: the category it falls in (None: not counted) and, for
# sums, the amount it adds. `spec` is the field's catalogue entry, `today` the reference date.
Classifier = Callable[[FieldSpec | None, Any, date], tuple[str, int] | None]


@dataclass(frozen=True)
class Measure:
    name: str
    zh: str
    en: str
    field: str | None  # the catalogue field read; None: only the (clear) structure
    unit: Unit
    classify: Classifier
    categories: tuple[str, ...] = (TOTAL,)
    # A yes/no attribute of people (disability, dibao): a cell where (almost) everyone
    # has it discloses it of everyone, so it is suppressed like a small cell.
    attribute: bool = False
    # Sums: the most one resident adds (yuan); differential privacy clips to it.
    bound: int = 1

    @property
    def is_sum(self) -> bool:
        return self.unit is Unit.YUAN

    def label(self, lang: str = "zh") -> str:
        return self.en if lang.startswith("en") else self.zh


def _everyone(_spec: FieldSpec | None, _value: Any, _today: date) -> tuple[str, int] | None:
    return TOTAL, 1


def _true(_spec: FieldSpec | None, value: Any, _today: date) -> tuple[str, int] | None:
    return (TOTAL, 1) if value is True else None


def _disabled(_spec: FieldSpec | None, value: Any, _today: date) -> tuple[str, int] | None:
    if isinstance(value, dict) and value.get("category") not in (None, "none"):
        return TOTAL, 1
    return None


DIBAO: Final = "dibao"  # 最低生活保障: the 低保 of "低保 households" (not near-dibao, not 特困)


def _dibao(_spec: FieldSpec | None, value: Any, _today: date) -> tuple[str, int] | None:
    return (TOTAL, 1) if value == DIBAO else None


def yuan(value: Any) -> int:
    """A stored amount ("1234.50") in whole yuan, rounded half up; unreadable counts as 0."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return 0
    if not amount.is_finite() or amount <= 0:
        return 0
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _subsidy(_spec: FieldSpec | None, value: Any, _today: date) -> tuple[str, int] | None:
    amount = yuan(value)
    return (TOTAL, amount) if amount > 0 else None


AGE_BANDS: Final = (
    "0-9",
    "10-19",
    "20-29",
    "30-39",
    "40-49",
    "50-59",
    "60-69",
    "70-79",
    "80-89",
    "90+",
)
UNKNOWN_BAND: Final = "unknown"


def _age_band(spec: FieldSpec | None, value: Any, today: date) -> tuple[str, int] | None:
    """The catalogue's own age band of a birth date (the rule `generalised` shows)."""
    if spec is None:
        return None
    band = generalise_value(spec, value, level=AGE_LEVEL, today=today, lang="en")
    return (band if band in AGE_BANDS else UNKNOWN_BAND), 1


MEASURES: Final[dict[str, Measure]] = {
    m.name: m
    for m in (
        Measure("residents", "常住居民人数", "Residents", None, Unit.RESIDENTS, _everyone),
        Measure(
            "elderly-living-alone",
            "独居老人人数",
            "Elderly people living alone",
            "elderly_living_alone",
            Unit.RESIDENTS,
            _true,
            attribute=True,
        ),
        Measure(
            "low-income-households",
            "低保户数",
            "Households receiving dibao",
            "low_income_status",
            Unit.HOUSEHOLDS,
            _dibao,
            attribute=True,
        ),
        Measure(
            "disability",
            "残疾人数",
            "Residents with a disability",
            "disability",
            Unit.RESIDENTS,
            _disabled,
            attribute=True,
        ),
        Measure(
            "subsidy-amount",
            "每月补贴总额（元）",
            "Monthly subsidies, total (CNY)",
            "subsidy_amount",
            Unit.YUAN,
            _subsidy,
            bound=3000,
        ),
        Measure(
            "age-bands",
            "各年龄段人数",
            "Residents by age band",
            "birth_date",
            Unit.RESIDENTS,
            _age_band,
            categories=(*AGE_BANDS, UNKNOWN_BAND, TOTAL),
        ),
    )
}


def measure(name: str) -> Measure | None:
    return MEASURES.get(name)
