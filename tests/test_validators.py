"""Validators: ID numbers (GB 11643), phones, names, the other named validators, types, records.

Check characters are computed here from the standard's weights, independently of
`vault.validators`, so a wrong table in the code cannot also make its tests pass.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.catalogue import default_catalogue
from vault.errors import CatalogueError, InvalidValue
from vault.i18n import LANGS, Message, known
from vault.validators import (
    BAD_TEXT,
    ETHNIC_GROUPS,
    PROVINCE_CODES,
    VALIDATORS,
    _bad_text_char,
    check_catalogue,
    china_today,
    id_birth_date,
    id_check_char,
    id_gender,
    normalise_id_number,
    normalise_phone,
    validate_record,
    validate_value,
    validator_for,
)

CATALOGUE = default_catalogue()
SPEC = CATALOGUE.fields

# GB 11643-1999 / ISO 7064 MOD 11-2, written out again on purpose.
WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CHECK_FOR_REMAINDER = ["1", "0", "X", "9", "8", "7", "6", "5", "4", "3", "2"]


def check_char(body: str) -> str:
    return CHECK_FOR_REMAINDER[sum(int(d) * w for d, w in zip(body, WEIGHTS, strict=True)) % 11]


def with_check(body: str) -> str:
    return body + check_char(body)


def validate(field: str, raw: Any) -> Any:
    return validate_value(SPEC[field], raw)


def rejects(field: str, raw: Any) -> InvalidValue:
    with pytest.raises(InvalidValue) as caught:
        validate(field, raw)
    return caught.value


def assert_no_echo(err: InvalidValue, raw: str) -> None:
    """Messages go to logs and API responses: they must not contain the value."""
    for message in (err.message.text("zh"), err.message.text("en")):
        assert raw.strip() not in message
        assert not re.search(r"\d{6,}", message), message


# --------------------------------------------------------------------------- ID numbers


def test_the_standards_own_example_is_valid() -> None:
    # The sample number printed in GB 11643-1999; its check character is X.
    assert check_char("11010519491231002") == "X"
    assert validate("id_number", "11010519491231002X") == "11010519491231002X"


@pytest.mark.parametrize(
    "body",
    ["44030419900307123", "33010619850101002", "11010120000229004", "65010219500815001"],
)
def test_hand_computed_numbers_are_valid(body: str) -> None:
    number = with_check(body)
    assert id_check_char(body) == check_char(body)
    assert validate("id_number", number) == number


def test_a_worked_example_by_hand() -> None:
    # 4 4 0 3 0 4 1 9 9 0 0 3 0 7 1 2 3 times the weights:
    # 28+36+0+15+0+16+2+9+54+0+0+27+0+35+8+8+6 = 244; 244 mod 11 = 2 -> "X".
    body = "44030419900307123"
    assert sum(int(d) * w for d, w in zip(body, WEIGHTS, strict=True)) == 244
    assert check_char(body) == "X"
    assert validate("id_number", "44030419900307123X") == "44030419900307123X"
    # The often-quoted "...1234" is therefore not a valid number.
    assert rejects("id_number", "440304199003071234").code == "id-check-digit"


def test_id_normalisation() -> None:
    assert validate("id_number", "  11010519491231002x\t") == "11010519491231002X"
    fullwidth = "１１０１０５１９４９１２３１００２Ｘ"
    assert validate("id_number", fullwidth) == "11010519491231002X"
    assert normalise_id_number(" 11010519491231002x ") == "11010519491231002X"


def test_id_helpers() -> None:
    assert id_birth_date("11010519491231002X") == date(1949, 12, 31)
    assert id_gender("11010519491231002X") == "female"  # 17th digit 2
    assert id_gender("44030419900307123X") == "male"  # 17th digit 3
    with pytest.raises(ValueError, match="17"):
        id_check_char("1234")


def future_id() -> str:
    born = china_today() + timedelta(days=40)
    return with_check(f"110101{born:%Y%m%d}001")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("11010519491231002", "id-length"),
        ("11010519491231002X1", "id-length"),
        ("1101051949123100AX", "id-format"),
        ("11010519491231002Y", "id-format"),
        (with_check("00010119900101001"), "id-region"),
        (with_check("19010119900101001"), "id-region"),
        (with_check("84010119900101001"), "id-region"),
        (with_check("11010119900230001"), "id-birth-date"),
        (with_check("11010119901301001"), "id-birth-date"),
        (with_check("11010118991231001"), "id-birth-date-too-early"),
        (future_id(), "id-birth-date-future"),
        ("110105194912310021", "id-check-digit"),
        ("440304199003071235", "id-check-digit"),
        ("44030419900307123x".replace("x", "0"), "id-check-digit"),
    ],
)
def test_bad_id_numbers(raw: str, code: str) -> None:
    err = rejects("id_number", raw)
    assert err.code == code
    assert_no_echo(err, raw)


def test_wrong_check_digit_message() -> None:
    err = rejects("id_number", "11010519491231002Y".replace("Y", "1"))
    assert (err.message.text("zh"), err.message.text("en")) == (
        "身份证号校验码错误",
        "the check digit is wrong",
    )


def test_id_number_must_be_text() -> None:
    assert rejects("id_number", 110105194912310021).code == "wrong-type"
    assert rejects("id_number", None).code == "required"


def test_every_province_code_is_accepted() -> None:
    for code in PROVINCE_CODES:
        assert validate("id_number", with_check(f"{code:02d}010119900101001"))


valid_ids = st.builds(
    lambda region, rest, born, seq: with_check(f"{region:02d}{rest:04d}{born:%Y%m%d}{seq:03d}"),
    st.sampled_from(sorted(PROVINCE_CODES)),
    st.integers(0, 9999),
    st.dates(date(1900, 1, 1), date.today() - timedelta(days=2)),
    st.integers(0, 999),
)


@given(valid_ids)
def test_generated_valid_ids_round_trip(number: str) -> None:
    assert validate("id_number", number) == number
    assert validate("id_number", f" {number.lower()} ") == number
    assert id_check_char(number[:17]) == check_char(number[:17]) == number[17]
    assert id_birth_date(number) == date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    assert id_gender(number) == ("male" if int(number[16]) % 2 else "female")


@given(valid_ids, st.integers(0, 17), st.sampled_from("0123456789X"))
def test_any_single_substitution_is_caught(number: str, position: int, char: str) -> None:
    if number[position] == char or (position < 17 and char == "X"):
        char = str((int(number[position]) + 1) % 10) if number[position] != "X" else "0"
    changed = number[:position] + char + number[position + 1 :]
    assert changed != number
    with pytest.raises(InvalidValue):
        validate("id_number", changed)


@given(st.text())
def test_id_normalisation_is_idempotent(raw: str) -> None:
    once = normalise_id_number(raw)
    assert normalise_id_number(once) == once


# --------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        " 138 1234 5678 ",
        "138-1234-5678",
        "+86 138-1234-5678",
        "+8613812345678",
        "0086 138 1234 5678",
        "8613812345678",
        "１３８１２３４５６７８",
        "+86\u3000138\u20141234\u20145678",
    ],
)
def test_phone_normalisation(raw: str) -> None:
    assert normalise_phone(raw) == "13812345678"
    assert validate("phone", raw) == "13812345678"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("12812345678", "phone-prefix"),
        ("10012345678", "phone-prefix"),
        ("1381234567", "phone-length"),
        ("138123456789", "phone-length"),
        ("+85213812345678", "phone-format"),
        ("86138123456780", "phone-length"),
        ("138-1234-567a", "phone-format"),
        ("(0571)88888888", "phone-format"),
    ],
)
def test_bad_phones(raw: str, code: str) -> None:
    err = rejects("phone", raw)
    assert err.code == code
    assert_no_echo(err, raw)


@given(st.text())
def test_phone_normalisation_is_idempotent(raw: str) -> None:
    once = normalise_phone(raw)
    assert normalise_phone(once) == once


@given(st.sampled_from("3456789"), st.text("0123456789", min_size=9, max_size=9))
def test_every_mobile_prefix_13_to_19_is_accepted(second: str, rest: str) -> None:
    number = "1" + second + rest
    assert validate("phone", f"+86 {number}") == number


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("张三", "张三"),
        (" 欧阳娜娜 ", "欧阳娜娜"),
        ("阿依古丽·买买提", "阿依古丽·买买提"),
        ("阿依古丽•买买提", "阿依古丽·买买提"),
        ("阿依古丽 · 买买提", "阿依古丽·买买提"),
        ("John  Smith", "John Smith"),
        ("José O'Neil-Brown", "José O'Neil-Brown"),
        ("王𠇔", "王𠇔"),  # a character from CJK extension B, as in real names
    ],
)
def test_good_names(raw: str, normal: str) -> None:
    assert validate("name", raw) == normal


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("张3", "name-digits"),
        ("张３", "name-digits"),
        ("张" * 41, "too-long"),
        ("张<b>", "name-characters"),
        ("张_三", "name-characters"),
        ("·张三", "name-format"),
        ("阿依古丽··买买提", "name-format"),
        ("'-", "name-format"),
    ],
)
def test_bad_names(raw: str, code: str) -> None:
    assert rejects("name", raw).code == code


# --------------------------------------------------------------------------- dates, text


def test_past_date() -> None:
    assert validate("birth_date", " 1950-03-07 ") == "1950-03-07"
    assert validate("birth_date", date(1950, 3, 7)) == "1950-03-07"
    assert validate("birth_date", "1900-01-01") == "1900-01-01"
    assert rejects("birth_date", "1899-12-31").code == "date-too-early"
    future = (china_today() + timedelta(days=30)).isoformat()
    assert rejects("birth_date", future).code == "date-in-future"
    assert rejects("birth_date", "1950/03/07").code == "not-a-date"
    assert rejects("birth_date", "19500307").code == "not-a-date"
    assert rejects("birth_date", "1950-02-30").code == "not-a-date"


def test_text() -> None:
    assert validate("address", "  示范区桂语路18号  ") == "示范区桂语路18号"
    assert rejects("address", "").code == "empty"
    assert rejects("address", "a" * 201).code == "too-long"
    assert rejects("address", "桂语路\n18号").code == "control-characters"
    assert rejects("address", "桂语路\u202e18号").code == "control-characters"
    assert rejects("address", 18).code == "wrong-type"


def test_text_list() -> None:
    assert validate("health_conditions", [" 高血压 ", "糖尿病"]) == ["高血压", "糖尿病"]
    assert validate("health_conditions", []) == []
    assert validate("health_conditions", '["高血压"]') == ["高血压"]  # JSON text from a CSV cell
    assert rejects("health_conditions", ["高血压", ""]).code == "item2.empty"
    assert rejects("health_conditions", ["x" * 101]).code == "item1.too-long"
    assert rejects("health_conditions", ["x"] * 51).code == "too-many-items"
    assert rejects("health_conditions", "高血压").code == "wrong-type"


def test_ethnicity() -> None:
    assert len(ETHNIC_GROUPS) == len(set(ETHNIC_GROUPS)) == 56
    assert validate("ethnicity", "汉族") == "汉族"
    assert validate("ethnicity", "汉") == "汉族"
    assert validate("ethnicity", "蒙古") == "蒙古族"
    assert validate("ethnicity", "柯尔克孜") == "柯尔克孜族"
    assert validate("ethnicity", "其他") == "其他"
    assert validate("ethnicity", "外国血统") == "外国血统"
    for group in ETHNIC_GROUPS:
        assert validate("ethnicity", group.removesuffix("族")) == group
    assert rejects("ethnicity", "火星族").code == "ethnicity-unknown"
    assert rejects("ethnicity", "其他族").code == "ethnicity-unknown"


# --------------------------------------------------------------------------- objects


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (None, {"category": "none"}),
        ("none", {"category": "none"}),
        ("无", {"category": "none"}),
        ({"category": "none"}, {"category": "none"}),
        ({"category": "视力", "grade": 2}, {"category": "visual", "grade": 2}),
        ({"category": "肢体残疾", "grade": "三级"}, {"category": "physical", "grade": 3}),
        ({"category": "Mental", "grade": "4"}, {"category": "mental", "grade": 4}),
        ('{"category": "multiple", "grade": 1}', {"category": "multiple", "grade": 1}),
    ],
)
def test_disability_normal_form(raw: Any, normal: dict[str, Any]) -> None:
    assert validate("disability", raw) == normal


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ({"category": "visual"}, "missing-key"),
        ("visual", "missing-key"),
        ({"category": "visual", "grade": 5}, "disability-grade"),
        ({"category": "visual", "grade": True}, "disability-grade"),
        ({"category": "smell", "grade": 1}, "disability-category"),
        ({"category": "none", "grade": 2}, "disability-grade-unexpected"),
        ({"category": "visual", "grade": 1, "diagnosis": "x"}, "unexpected-key"),
        ("something", "disability-category"),
        (3, "wrong-type"),
    ],
)
def test_bad_disability(raw: Any, code: str) -> None:
    assert rejects("disability", raw).code == code


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (0, "0.00"),
        (1234.5, "1234.50"),
        ("1234.5", "1234.50"),
        (" 99.99 ", "99.99"),
        ("1200", "1200.00"),
        ("-0", "0.00"),
        ("9999999.99", "9999999.99"),
    ],
)
def test_money(raw: Any, normal: str) -> None:
    assert validate("subsidy_amount", raw) == normal


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("-1", "money-negative"),
        ("12.345", "money-decimals"),
        (0.001, "money-decimals"),
        ("10000000", "money-too-large"),
        ("NaN", "not-a-number"),
        ("inf", "not-a-number"),
        ("一千", "not-a-number"),
        (True, "not-a-number"),
        ("0.1000000000000000001", "number-too-precise"),
    ],
)
def test_bad_money(raw: Any, code: str) -> None:
    assert rejects("subsidy_amount", raw).code == code


def test_emergency_contact() -> None:
    raw = {"name": " 李四 ", "phone": "+86 139 0000 0000", "relation": "儿子"}
    assert validate("emergency_contact", raw) == {
        "name": "李四",
        "phone": "13900000000",
        "relation": "儿子",
    }
    bad_phone = rejects("emergency_contact", {**raw, "phone": "12345"})
    assert bad_phone.code == "phone.phone-length"
    assert bad_phone.message.text("zh") == "联系人电话：手机号码应为11位"
    assert bad_phone.message.text("en") == "contact phone: a mobile number has 11 digits"
    assert rejects("emergency_contact", {**raw, "name": "李4"}).code == "name.name-digits"
    assert rejects("emergency_contact", {**raw, "relation": " "}).code == "relation.empty"
    missing = rejects("emergency_contact", {"name": "李四", "phone": "13900000000"})
    assert missing.code == "missing-key"
    smuggled = rejects("emergency_contact", {**raw, "110101199003071234": 1})
    assert smuggled.code == "unexpected-key"
    assert_no_echo(smuggled, "110101199003071234")


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("京A12345", "京A12345"),
        ("京a·12345", "京A12345"),
        (" 浙A 8B2C3 ", "浙A8B2C3"),
        ("粤BD12345", "粤BD12345"),
        ("沪ＡＦ１２３４５", "沪AF12345"),
    ],
)
def test_plates(raw: str, normal: str) -> None:
    assert validate("vehicle_plate", raw) == normal


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("京A1234", "plate-length"),
        ("京A1234567", "plate-length"),
        ("港A12345", "plate-province"),
        ("AA12345X", "plate-province"),
        ("京112345", "plate-format"),
        ("京A12_45", "plate-format"),
        ("京A1234I", "plate-letter-io"),
        ("京AO2345", "plate-letter-io"),
    ],
)
def test_bad_plates(raw: str, code: str) -> None:
    assert rejects("vehicle_plate", raw).code == code


def test_integrity_records() -> None:
    raw = [{"date": "2024-05-01", "kind": "positive", "description": " 志愿服务 "}]
    assert validate("integrity_records", raw) == [
        {"date": "2024-05-01", "kind": "positive", "description": "志愿服务"}
    ]
    assert validate("integrity_records", []) == []
    bad_kind = [{"date": "2024-05-01", "kind": "neutral", "description": "x"}]
    assert rejects("integrity_records", bad_kind).code == "entry1.kind.not-in-enum"
    future = (china_today() + timedelta(days=30)).isoformat()
    bad_date = [*raw, {"date": future, "kind": "negative", "description": "x"}]
    assert rejects("integrity_records", bad_date).code == "entry2.date.date-in-future"
    too_long = [{"date": "2024-05-01", "kind": "negative", "description": "x" * 201}]
    assert rejects("integrity_records", too_long).code == "entry1.description.too-long"
    assert rejects("integrity_records", [{"date": "2024-05-01"}]).code == "entry1.missing-key"


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("FALSE", False),
        ("是", True),
        ("否", False),
        ("1", True),
        ("0", False),
        (1, True),
    ],
)
def test_boolean(raw: Any, expected: bool) -> None:
    assert validate("veteran_status", raw) is expected


def test_types() -> None:
    assert rejects("veteran_status", "maybe").code == "not-a-boolean"
    assert rejects("veteran_status", 2).code == "not-a-boolean"
    assert validate("gender", "female") == "female"
    assert validate("gender", "男") == "male"  # CSV sheets use the label
    assert validate("gender", "Female") == "female"
    assert rejects("gender", "x").code == "not-in-enum"
    assert rejects("gender", None).code == "required"
    assert validate("religion", "无") == "none"
    assert rejects("political_status", "party").code == "not-in-enum"


def test_every_catalogue_validator_is_known() -> None:
    check_catalogue(CATALOGUE)
    assert {s.validator for s in CATALOGUE if s.validator} <= set(VALIDATORS)


def test_unknown_validator_fails_loudly() -> None:
    broken = dataclasses.replace(SPEC["name"], validator="no_such_validator")
    with pytest.raises(CatalogueError, match="no_such_validator"):
        validator_for(broken)
    with pytest.raises(CatalogueError):
        validate_value(broken, "张三")


# --------------------------------------------------------------------------- records

GOOD = {
    "name": "张伟",
    "gender": "male",
    "birth_date": "1990-03-07",
    "id_number": "44030419900307123X",
    "phone": "+86 138 1234 5678",
}


def test_a_good_record_is_normalised() -> None:
    values, problems = validate_record(CATALOGUE, GOOD)
    assert problems == []
    assert values["phone"] == "13812345678"


def test_birth_date_mismatch_is_caught() -> None:
    _, problems = validate_record(CATALOGUE, {**GOOD, "birth_date": "1990-03-08"})
    assert [(p.field, p.code) for p in problems] == [("id_number", "id-birth-date-mismatch")]
    assert "1990" not in problems[0].message("zh") + problems[0].message("en")


def test_gender_mismatch_is_caught() -> None:
    _, problems = validate_record(CATALOGUE, {**GOOD, "gender": "female"})
    assert [(p.field, p.code) for p in problems] == [("id_number", "id-gender-mismatch")]


def test_cross_checks_use_the_stored_record_during_an_update() -> None:
    existing = {"id_number": "44030419900307123X", "birth_date": "1990-03-07", "gender": "male"}
    _, problems = validate_record(CATALOGUE, {"birth_date": "1991-01-01"}, existing)
    assert [(p.field, p.code) for p in problems] == [("birth_date", "id-birth-date-mismatch")]
    _, problems = validate_record(CATALOGUE, {"id_number": "11010519491231002X"}, existing)
    assert {p.code for p in problems} == {"id-birth-date-mismatch", "id-gender-mismatch"}
    assert {p.field for p in problems} == {"id_number"}
    _, problems = validate_record(CATALOGUE, {"birth_date": "1990-03-07"}, existing)
    assert problems == []
    _, problems = validate_record(CATALOGUE, {"name": "张三"}, {"birth_date": "2000-01-01"})
    assert problems == []


def test_all_problems_are_collected() -> None:
    values = {
        **GOOD,
        "id_number": "440304199003071235",
        "phone": "123",
        "shoe_size": 42,
        "veteran_status": "maybe",
    }
    normal, problems = validate_record(CATALOGUE, values)
    assert [(p.field, p.code) for p in problems] == [
        ("id_number", "id-check-digit"),
        ("phone", "phone-length"),
        ("shoe_size", "unknown-field"),
        ("veteran_status", "not-a-boolean"),
    ]
    assert set(normal) == {"name", "gender", "birth_date"}


def test_an_invalid_side_skips_the_cross_check() -> None:
    _, problems = validate_record(CATALOGUE, {**GOOD, "birth_date": "1990-02-30"})
    assert [p.code for p in problems] == ["not-a-date"]


# --------------------------------------------------------------------------- messages

_KEYS = st.sampled_from(["name", "phone", "relation", "date", "kind", "description", "category"])
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.dates()
    | st.text(max_size=24)
    | st.sampled_from(["11010519491231002X", "13812345678", "2999-01-01", "视力", "[", "{"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=4), inner),
    max_leaves=10,
)


def _ids(message: Message) -> Iterator[str]:
    """The message's id and those of the messages among its values (a nested part's)."""
    yield message.id
    for value in message.values.values():
        if isinstance(value, Message):
            yield from _ids(value)


@given(st.sampled_from(sorted(SPEC)), _VALUES)
def test_every_refusal_is_a_catalogue_message_in_both_languages(field: str, raw: Any) -> None:
    """Whatever a validator refuses, it says so by catalogue id: every id (a nested part's
    too) is in the catalogue, and each language's text is whole, no `{placeholder}` left."""
    try:
        validate(field, raw)
    except InvalidValue as err:
        message = err.message
    else:
        return  # accepted: nothing to say
    assert all(known(message_id) for message_id in _ids(message)), message
    for lang in LANGS:
        shown = message.text(lang)
        assert shown.strip() and not re.search(r"[{}]", shown), (lang, shown)
    assert message.text("zh") != message.text("en")


def test_the_fast_bad_text_class_is_the_definition_for_every_code_point() -> None:
    """`BAD_TEXT` (one regex, for imports) refuses exactly what `_bad_text_char` defines."""
    differ = [
        hex(c) for c in range(0x110000) if bool(BAD_TEXT.match(chr(c))) != _bad_text_char(chr(c))
    ]
    assert differ == []
