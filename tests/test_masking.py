"""Masks never show a whole value; generalisations are coarse but true."""

from __future__ import annotations

import dataclasses
import random
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.catalogue import Rule, default_catalogue
from vault.errors import CatalogueError
from vault.masking import REDACTED, check_catalogue, generalise_value, mask_value
from vault.synthetic import make_household, make_person

CATALOGUE = default_catalogue()
SPEC = CATALOGUE.fields
TODAY = date(2026, 11, 25)


def with_mask(field: str, rule: str, **params: Any) -> Any:
    return dataclasses.replace(SPEC[field], mask=Rule(rule, params))


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("field", "value", "masked"),
    [
        ("id_number", "110101199003071234", "110***********1234"),
        ("phone", "13812345678", "138****5678"),
        ("name", "张三丰", "张*"),
        ("name", "张三", "张*"),
        ("name", "欧阳修", "欧阳*"),
        ("name", "诸葛孔明", "诸葛*"),
        ("name", "欧阳", "欧*"),  # two characters: surname 欧, given name 阳
        ("name", "阿依古丽·买买提", "阿*"),
        ("name", "John Smith", "J*"),
        ("name", "张", "*"),
        ("birth_date", "1950-03-07", "1950-**-**"),
        ("vehicle_plate", "京A12345", "京A***45"),
        ("vehicle_plate", "粤BD12345", "粤B****45"),
        ("address", "浙江省杭州市示范区桂语路18号", "浙江省杭州市***"),
        ("address", "桂语路", "桂***"),
        ("gender", "male", REDACTED),
        ("disability", {"category": "visual", "grade": 2}, REDACTED),
        ("health_conditions", ["高血压"], REDACTED),
        ("subsidy_amount", "1200.00", REDACTED),
        ("elderly_living_alone", True, REDACTED),
    ],
)
def test_catalogue_masks(field: str, value: Any, masked: str) -> None:
    assert mask_value(SPEC[field], value) == masked


def test_short_values_are_fully_starred() -> None:
    spec = SPEC["phone"]  # keep 3 + 4
    assert mask_value(spec, "1381234") == "*******"
    assert mask_value(spec, "12345678") == "123*5678"
    assert mask_value(spec, "") == REDACTED


def test_values_of_an_unexpected_shape_are_redacted() -> None:
    for value in (None, {"a": 1}, ["x"], b"bytes"):
        assert mask_value(SPEC["phone"], value) == REDACTED
    assert mask_value(SPEC["birth_date"], "not a date") == REDACTED


def test_unknown_mask_rule() -> None:
    with pytest.raises(CatalogueError, match="mask rule"):
        mask_value(with_mask("phone", "rot13"), "13812345678")


# Stars are what masks are made of, so a value made of stars proves nothing either way.
texts = st.text(st.characters(exclude_characters="*", exclude_categories=["Cs"]), min_size=1)
MASKS = [
    ("keep", {"first": 3, "last": 4}),
    ("keep", {"first": 0, "last": 0}),
    ("keep", {"first": 6, "last": 6}),
    ("surname", {}),
    ("date_year", {}),
    ("plate", {}),
    ("truncate", {"first": 6}),
    ("redact", {}),
]


@given(texts, st.sampled_from(MASKS))
def test_no_mask_reveals_the_whole_value(value: str, mask: tuple[str, dict[str, int]]) -> None:
    rule, params = mask
    masked = mask_value(with_mask("address", rule, **params), value)
    assert masked != value
    assert value not in masked
    assert "*" in masked


@given(texts, st.integers(0, 8), st.integers(0, 8))
def test_keep_preserves_length_and_ends(value: str, first: int, last: int) -> None:
    masked = mask_value(with_mask("id_number", "keep", first=first, last=last), value)
    assert len(masked) == len(value)
    if len(value) > first + last:
        assert masked[:first] == value[:first]
        assert masked[len(masked) - last :] == value[len(value) - last :]
        assert masked[first : len(masked) - last] == "*" * (len(value) - first - last)
    else:
        assert masked == "*" * len(value)


@given(st.sampled_from("3456789"), st.text("0123456789", min_size=9, max_size=9))
def test_phone_mask_keeps_first_three_and_last_four(second: str, rest: str) -> None:
    phone = "1" + second + rest
    assert mask_value(SPEC["phone"], phone) == phone[:3] + "****" + phone[-4:]


PLACE = {"building": "3幢", "community": "幸福社区"}


def test_synthetic_values_never_show_in_full() -> None:
    """Every field of many generated people masks without error and without the value."""
    rng = random.Random(7)
    people = [make_person(rng) for _ in range(100)]
    people += make_household(rng, address="浙江省杭州市示范区桂语路18号3幢", size_hint=6)
    for person in people:
        for field, value in person.items():
            masked = mask_value(SPEC[field], value)
            assert masked != str(value)
            if isinstance(value, str):
                assert value not in masked
            for level in SPEC[field].generalisations:
                label = generalise_value(
                    SPEC[field], value, level=level, today=TODAY, context=PLACE
                )
                assert label != str(value)
                assert label not in {"未知", ""}


# --------------------------------------------------------------------------- generalisation


@pytest.mark.parametrize(
    ("born", "band"),
    [
        ("1946-11-25", "80-89"),
        ("1936-11-26", "80-89"),
        ("1936-11-25", "90+"),
        ("1900-01-01", "90+"),
        ("2026-11-25", "0-9"),
        ("2016-11-26", "0-9"),
        ("2016-11-25", "10-19"),
    ],
)
def test_age_band(born: str, band: str) -> None:
    assert generalise_value(SPEC["birth_date"], born, level="age_band", today=TODAY) == band


@pytest.mark.parametrize(
    ("born", "zh", "en"),
    [
        ("1946-11-25", "80岁以上", "80 or older"),
        ("1946-11-26", "70岁以上", "70 or older"),
        ("1966-11-25", "60岁以上", "60 or older"),
        ("1966-11-26", "未满60岁", "under 60"),
        ("2020-01-01", "未满60岁", "under 60"),
    ],
)
def test_age_over_says_only_the_threshold_reached(born: str, zh: str, en: str) -> None:
    """An elderly-care visit learns "over 80", never the birth date or even the decade."""
    spec = SPEC["birth_date"]
    assert generalise_value(spec, born, today=TODAY) == zh  # the least revealing level
    assert generalise_value(spec, born, level="age_over", today=TODAY, lang="en") == en


def test_levels_run_from_most_to_least_revealing() -> None:
    spec = SPEC["birth_date"]
    assert list(spec.generalisations) == ["year", "age_band", "age_over"]
    assert generalise_value(spec, "1946-03-07", level="year", today=TODAY) == "1946"
    assert generalise_value(spec, "1946-03-07", level="no-such", today=TODAY) == "80岁以上"
    address = SPEC["address"]
    assert generalise_value(address, "桂语路18号3幢501室", level="building", context=PLACE) == "3幢"
    assert generalise_value(address, "桂语路18号3幢501室", context=PLACE) == "幸福社区"
    assert generalise_value(address, "桂语路18号3幢501室") == "未知"  # never from the address


def test_age_band_of_an_unreadable_value() -> None:
    for level in SPEC["birth_date"].generalisations:
        spec = SPEC["birth_date"]
        assert generalise_value(spec, "1950", level=level, today=TODAY) == "未知"
        assert generalise_value(spec, None, level=level, today=TODAY, lang="en") == "unknown"
        assert generalise_value(spec, "2030-01-01", level=level, today=TODAY) == "未知"


def age_on(born: date, today: date) -> int:
    years = today.year - born.year
    return years - 1 if (today.month, today.day) < (born.month, born.day) else years


@given(
    st.dates(date(1900, 1, 1), date(2026, 12, 31)),
    st.dates(date(2026, 12, 31), date(2040, 1, 1)),
    st.sampled_from([1, 5, 10, 20]),
)
def test_age_bands_contain_the_true_age(born: date, today: date, width: int) -> None:
    band_rule = {"age_band": Rule("age_band", {"width": width})}
    spec = dataclasses.replace(SPEC["birth_date"], generalisations=band_rule)
    band = generalise_value(spec, born.isoformat(), today=today)
    age = age_on(born, today)
    if band.endswith("+"):
        assert age >= int(band[:-1]) == 90
    else:
        low, high = (int(part) for part in band.split("-"))
        assert low <= age <= high < 90
        assert high - low < width


@settings(max_examples=200, deadline=None)
@given(born=st.dates(min_value=date(1900, 1, 1), max_value=date(2026, 11, 25)))
def test_age_over_never_says_more_than_the_band_it_reveals(born: date) -> None:
    """ "N岁以上" holds for the true age, and no one under the lowest threshold is told more."""
    label = generalise_value(SPEC["birth_date"], born.isoformat(), level="age_over", today=TODAY)
    age = age_on(born, TODAY)
    if label.startswith("未满"):
        assert age < 60
    else:
        threshold = int(label.removesuffix("岁以上"))
        assert threshold <= age
        assert threshold in (60, 70, 80) and (threshold == 80 or age < threshold + 10)


@pytest.mark.parametrize(
    ("amount", "band"),
    [
        ("0.00", "0-499"),
        ("499.99", "0-499"),
        ("500.00", "500-999"),
        ("1234.50", "1000-1999"),
        ("4999.99", "2000-4999"),
        ("5000.00", "≥5000"),
        ("9999999.99", "≥5000"),
        (1500, "1000-1999"),
        ("lots", "未知"),
    ],
)
def test_money_bands(amount: Any, band: str) -> None:
    assert generalise_value(SPEC["subsidy_amount"], amount) == band


def test_categories() -> None:
    disability = SPEC["disability"]
    assert generalise_value(disability, {"category": "visual", "grade": 2}) == "视力残疾"
    assert generalise_value(disability, {"category": "none"}) == "无残疾"
    assert generalise_value(disability, {"category": "mental", "grade": 1}, lang="en") == (
        "Mental disability"
    )
    health = SPEC["health_conditions"]
    assert generalise_value(health, ["高血压", "糖尿病"]) == "有健康状况记录"
    assert generalise_value(health, []) == "无"
    assert generalise_value(health, [], lang="en") == "None"
    integrity = SPEC["integrity_records"]
    entries = [
        {"date": "2024-01-01", "kind": "positive", "description": "志愿服务"},
        {"date": "2024-02-01", "kind": "negative", "description": "拖欠物业费"},
        {"date": "2024-03-01", "kind": "positive", "description": "调解纠纷"},
    ]
    assert generalise_value(integrity, entries) == "正面记录2条，负面记录1条"
    assert generalise_value(integrity, entries, lang="en") == "2 positive, 1 negative"
    assert generalise_value(integrity, []) == "无记录"
    for label in ("志愿服务", "拖欠物业费", "高血压", "2"):
        assert label not in generalise_value(health, ["高血压"])


def test_building() -> None:
    address = SPEC["address"]
    full = "浙江省杭州市示范区桂语路18号3幢2单元501室"
    building = {"level": "building"}
    assert generalise_value(address, full, **building) == "浙江省杭州市示范区桂语路"
    assert generalise_value(address, full, context={"building": "3幢"}, **building) == "3幢"
    assert generalise_value(address, "示范区桂语路八号", **building) == "示范区桂"  # no digit: half
    assert generalise_value(address, "18号", **building) == "未知"
    assert generalise_value(address, "18号", lang="en", **building) == "unknown"


def test_year_rule_and_missing_rule() -> None:
    spec = dataclasses.replace(SPEC["birth_date"], generalisations={"year": Rule("year")})
    assert generalise_value(spec, "1950-03-07") == "1950"
    with pytest.raises(CatalogueError, match="no generalise rule"):
        generalise_value(SPEC["phone"], "13812345678")
    unknown = dataclasses.replace(SPEC["birth_date"], generalisations={"d": Rule("decade")})
    with pytest.raises(CatalogueError, match="decade"):
        generalise_value(unknown, "1950-03-07")


def test_the_catalogue_rules_are_all_known() -> None:
    check_catalogue(CATALOGUE)
    broken = dataclasses.replace(
        CATALOGUE, fields={**CATALOGUE.fields, "phone": with_mask("phone", "scramble")}
    )
    with pytest.raises(CatalogueError, match="scramble"):
        check_catalogue(broken)
