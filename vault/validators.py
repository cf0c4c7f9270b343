"""Validation and normalisation of resident field values.

Every value that enters the vault passes through here first, whether it comes from the
API (JSON) or a bulk import (CSV cells, so everything may arrive as a string). A validator
either returns the value's *normal form* or raises `InvalidValue`. The normal form matters
beyond tidiness: values are encrypted field by field and the searchable ones are looked up
through a keyed blind index, so "the same" ID number or phone number must always produce
the same bytes (`normalise_id_number`, `normalise_phone`).

Error messages are shown to users and written to logs, so they say what is wrong and never
repeat the value itself: a log line must not become a copy of the ID number it rejected.

Layers, in the order `validate_value` applies them:

1. the catalogue `type` (string / date / enum / boolean / number / list / object), so a
   field without a validator is still checked;
2. the named validator from `VALIDATORS`, which knows the field's meaning;
3. in `validate_record`, the cross-field checks declared by `matches` in the catalogue
   (an ID number embeds the birth date and the gender).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from vault.catalogue import Catalogue, FieldSpec
from vault.errors import CatalogueError, FieldProblem, InvalidValue

__all__ = [
    "DISABILITY_CATEGORIES",
    "ETHNICITIES",
    "ETHNIC_GROUPS",
    "MAX_LIST_ITEMS",
    "MIN_DATE",
    "PROVINCE_CODES",
    "VALIDATORS",
    "Validator",
    "check_catalogue",
    "china_today",
    "id_birth_date",
    "id_check_char",
    "id_gender",
    "normalise_id_number",
    "normalise_phone",
    "validate_record",
    "validate_value",
    "validator_for",
]

Validator = Callable[[Any, FieldSpec], Any]
"""Takes a raw value and the field's spec; returns the normal form or raises InvalidValue."""

MIN_DATE: Final = date(1900, 1, 1)
"""Earliest birth or record date accepted: older dates are typing errors, not residents."""

MAX_LIST_ITEMS: Final = 50
"""Upper bound on list fields: enough for real records, small enough to stop abuse."""

_CHINA_TZ: Final = timezone(timedelta(hours=8), "CST")


def china_today() -> date:
    """Today's date in China (UTC+8, no daylight saving).

    "Not in the future" is judged in the residents' time zone, not the server's: a baby
    registered at 01:00 in Hangzhou is still "born today" on a server that runs on UTC.
    """
    return datetime.now(_CHINA_TZ).date()


# --------------------------------------------------------------------------- helpers


def _problem(code: str, zh: str, en: str) -> InvalidValue:
    return InvalidValue(code, zh, en)


def _wrong_type(zh_kind: str, en_kind: str) -> InvalidValue:
    return _problem("wrong-type", f"应为{zh_kind}", f"must be {en_kind}")


def _required() -> InvalidValue:
    return _problem("required", "缺少值", "a value is required")


# Full-width ASCII (U+FF01-U+FF5E) and the ideographic space are what Chinese input methods
# produce for digits, letters and punctuation; mapping them one character at a time (rather
# than full NFKC) keeps the normalisers idempotent and predictable.
_FULLWIDTH: Final[dict[int, int]] = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULLWIDTH[0x3000] = 0x20

_BIDI_CONTROLS: Final = frozenset(chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def _bad_text_char(char: str) -> bool:
    """Control characters, lone surrogates, line separators and bidi overrides.

    They have no business in a name or an address, and they can hide or reorder what an
    operator sees in a page or a log line.
    """
    if char in _BIDI_CONTROLS:
        return True
    return unicodedata.category(char) in {"Cc", "Cs", "Zl", "Zp"}


def _clean_text(raw: Any, max_length: int | None) -> str:
    """The common rules for free text: a string, stripped, non-empty, printable, bounded."""
    if raw is None:
        raise _required()
    if not isinstance(raw, str):
        raise _wrong_type("文本", "text")
    text = raw.strip()
    if not text:
        raise _problem("empty", "不能为空", "must not be empty")
    if any(_bad_text_char(c) for c in text):
        raise _problem("control-characters", "包含不允许的控制字符", "contains control characters")
    if max_length is not None and len(text) > max_length:
        raise _problem(
            "too-long",
            f"不能超过{max_length}个字符",
            f"must be at most {max_length} characters",
        )
    return text


_ISO_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _parse_iso_date(raw: Any) -> date:
    """A calendar date written exactly as YYYY-MM-DD (or a `date`, for Python callers).

    `date.fromisoformat` alone also takes "20200101" and week dates; one spelling keeps
    CSV imports from silently reading a day-month order the operator did not mean.
    """
    if raw is None:
        raise _required()
    if isinstance(raw, datetime):  # a datetime is a date subclass; a timestamp is not a date
        raise _wrong_type("日期（YYYY-MM-DD）", "a date (YYYY-MM-DD)")
    if isinstance(raw, date):
        return raw
    if not isinstance(raw, str):
        raise _wrong_type("日期（YYYY-MM-DD）", "a date (YYYY-MM-DD)")
    text = raw.strip()
    if not _ISO_DATE.fullmatch(text):
        raise _problem(
            "not-a-date",
            "日期格式应为YYYY-MM-DD",
            "a date must be written YYYY-MM-DD",
        )
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _problem("not-a-date", "不是有效的日期", "is not a real calendar date") from None


def _past_date(raw: Any) -> date:
    day = _parse_iso_date(raw)
    if day > china_today():
        raise _problem("date-in-future", "日期不能晚于今天", "the date must not be in the future")
    if day < MIN_DATE:
        raise _problem(
            "date-too-early", "日期不能早于1900年1月1日", "the date must not be before 1900-01-01"
        )
    return day


def _nested(part: str, zh_part: str, en_part: str, err: InvalidValue) -> InvalidValue:
    """Re-raise a sub-value's problem with the part it concerns in its code and messages."""
    return _problem(
        f"{part}.{err.code}", f"{zh_part}：{err.message_zh}", f"{en_part}: {err.message_en}"
    )


def _require_mapping(
    raw: Any, required: Sequence[str], optional: Sequence[str] = ()
) -> Mapping[str, Any]:
    """An object with exactly the expected keys.

    Unknown keys are rejected rather than dropped: an object field is not a place to smuggle
    unlisted personal data past the catalogue.
    """
    if raw is None:
        raise _required()
    if not isinstance(raw, Mapping):
        raise _wrong_type("对象", "an object")
    allowed = [*required, *optional]
    if any(key not in allowed for key in raw):
        # Name the keys we allow, not the ones we got: a key can carry data too.
        names = ", ".join(allowed)
        raise _problem(
            "unexpected-key", f"只允许以下项：{names}", f"only these keys are allowed: {names}"
        )
    missing = [k for k in required if k not in raw]
    if missing:
        names = ", ".join(missing)
        raise _problem("missing-key", f"缺少必填项：{names}", f"is missing: {names}")
    return raw


def _require_list(raw: Any) -> Sequence[Any]:
    if raw is None:
        raise _required()
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise _wrong_type("列表", "a list")
    if len(raw) > MAX_LIST_ITEMS:
        raise _problem(
            "too-many-items",
            f"最多{MAX_LIST_ITEMS}项",
            f"may have at most {MAX_LIST_ITEMS} items",
        )
    return raw


# --------------------------------------------------------------------------- ID numbers

PROVINCE_CODES: Final = frozenset(
    {
        *range(11, 16),
        *range(21, 24),
        *range(31, 38),
        *range(41, 47),
        *range(50, 55),
        *range(61, 66),
        71,
        81,
        82,
        83,
        91,
    }
)
"""First two digits of GB/T 2260 region codes: provinces, Taiwan, Hong Kong, Macao, 83, 91."""

_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS: Final = "10X98765432"  # indexed by (weighted sum mod 11), per ISO 7064 MOD 11-2
_DIGITS: Final = frozenset("0123456789")


def normalise_id_number(raw: str) -> str:
    """The canonical spelling of an ID number, as hashed by the blind index.

    Full-width digits become ASCII, surrounding whitespace goes, and a lowercase check
    character x becomes X. Idempotent, and it does not validate: searching for a malformed
    number simply finds nothing.
    """
    return raw.translate(_FULLWIDTH).strip().replace("x", "X")


def id_check_char(first17: str) -> str:
    """The GB 11643 check character (0-9 or X) for the first 17 digits of an ID number."""
    if len(first17) != 17 or not set(first17) <= _DIGITS:
        raise ValueError("an ID number's body is exactly 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def id_birth_date(id_number: str) -> date:
    """The birth date encoded in digits 7-14 (YYYYMMDD); ValueError if it is not a date."""
    digits = normalise_id_number(id_number)[6:14]
    if len(digits) != 8 or not set(digits) <= _DIGITS:
        raise ValueError("an ID number's digits 7-14 are a YYYYMMDD date")
    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))


def id_gender(id_number: str) -> str:
    """'male' or 'female' from the parity of the 17th digit (odd means male)."""
    digit = normalise_id_number(id_number)[16:17]
    if digit not in _DIGITS:
        raise ValueError("an ID number's 17th character is a digit")
    return "male" if int(digit) % 2 else "female"


def _gb11643(raw: Any, spec: FieldSpec) -> str:
    """Resident ID number (GB 11643-1999): structure, region, birth date and check digit."""
    if raw is None:
        raise _required()
    if not isinstance(raw, str):
        raise _wrong_type("文本形式的身份证号", "an ID number written as text")
    number = normalise_id_number(raw)
    if len(number) != 18:
        raise _problem("id-length", "身份证号应为18位", "an ID number has 18 characters")
    if not set(number[:17]) <= _DIGITS or not (number[17] in _DIGITS or number[17] == "X"):
        raise _problem(
            "id-format",
            "身份证号前17位应为数字，最后一位为数字或X",
            "an ID number is 17 digits followed by a digit or X",
        )
    if int(number[:2]) not in PROVINCE_CODES:
        raise _problem(
            "id-region",
            "身份证号前两位不是有效的省级行政区划代码",
            "the first two digits are not a valid province code",
        )
    try:
        born = id_birth_date(number)
    except ValueError:
        raise _problem(
            "id-birth-date",
            "身份证号中的出生日期不是有效日期",
            "the birth date in the ID number is not a real date",
        ) from None
    if born > china_today():
        raise _problem(
            "id-birth-date-future",
            "身份证号中的出生日期晚于今天",
            "the birth date in the ID number is in the future",
        )
    if born < MIN_DATE:
        raise _problem(
            "id-birth-date-too-early",
            "身份证号中的出生日期早于1900年",
            "the birth date in the ID number is before 1900",
        )
    if id_check_char(number[:17]) != number[17]:
        raise _problem("id-check-digit", "身份证号校验码错误", "the check digit is wrong")
    return number


# --------------------------------------------------------------------------- phones

_PHONE_SEPARATORS: Final = re.compile(r"[\s\-\u2010-\u2015]")


def normalise_phone(raw: str) -> str:
    """The canonical spelling of a mainland mobile number, as hashed by the blind index.

    Full-width digits become ASCII; spaces and dashes go; a country prefix (+86, 0086 or
    86) goes when what follows is an 11-digit number. Idempotent: the result of stripping
    a prefix starts with 1, so no prefix can be stripped a second time. It does not
    validate.
    """
    number = _PHONE_SEPARATORS.sub("", raw.translate(_FULLWIDTH))
    for prefix in ("+86", "0086", "86"):
        if number.startswith(prefix) and len(number) - len(prefix) == 11:
            rest = number[len(prefix) :]
            if rest.startswith("1"):
                return rest
    return number


def _cn_mobile(raw: Any, spec: FieldSpec | None = None) -> str:
    """Mainland mobile number: 11 digits starting 13-19, after normalisation."""
    if raw is None:
        raise _required()
    if not isinstance(raw, str):
        raise _wrong_type("文本形式的手机号码", "a phone number written as text")
    number = normalise_phone(raw)
    if not number or not set(number) <= _DIGITS:
        raise _problem(
            "phone-format",
            "手机号码只能包含数字（可带+86前缀）",
            "a mobile number contains only digits (optionally after +86)",
        )
    if len(number) != 11:
        raise _problem("phone-length", "手机号码应为11位", "a mobile number has 11 digits")
    if number[0] != "1" or number[1] not in "3456789":
        raise _problem(
            "phone-prefix", "手机号码应以13至19开头", "a mobile number starts with 13 to 19"
        )
    return number


# --------------------------------------------------------------------------- names

_NAME_MAX: Final = 40
# Separators people type between the parts of a transliterated minority name; the standard
# one is U+00B7 MIDDLE DOT, which is what we store.
_MIDDLE_DOTS: Final = {ord(c): "·" for c in "•‧∙・･⋅"}
_CJK_RANGES: Final = (
    (0x3007, 0x3007),  # 〇
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2EE5F),
    (0x2F800, 0x2FA1F),
    (0x30000, 0x323AF),
)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_latin_letter(char: str) -> bool:
    return char.isalpha() and unicodedata.name(char, "").startswith("LATIN ")


def _person_name(raw: Any, max_length: int = _NAME_MAX) -> str:
    """A person's name: Chinese characters (with · between parts) or Latin letters.

    Rare characters outside the basic CJK block (CJK extensions B-H) are accepted on
    purpose: they are common in names and a validator that rejects them turns real
    residents away. Digits are never part of a name, so they point at a swapped column.
    """
    if raw is None:
        raise _required()
    if not isinstance(raw, str):
        raise _wrong_type("文本", "text")
    name = " ".join(raw.translate(_FULLWIDTH).translate(_MIDDLE_DOTS).split())
    name = re.sub(r"\s*·\s*", "·", name)
    if not name:
        raise _problem("empty", "不能为空", "must not be empty")
    limit = min(max_length, _NAME_MAX)
    if len(name) > limit:
        raise _problem(
            "too-long", f"姓名不能超过{limit}个字符", f"must be at most {limit} characters"
        )
    if any(unicodedata.category(c) == "Nd" for c in name):
        raise _problem("name-digits", "姓名不能包含数字", "a name must not contain digits")
    if not all(_is_cjk(c) or _is_latin_letter(c) or c in " ·'-" for c in name):
        raise _problem(
            "name-characters",
            "姓名只能包含汉字、拉丁字母、空格和间隔号",
            "a name may contain only Chinese characters, Latin letters, spaces and the middle dot",
        )
    if not any(_is_cjk(c) or _is_latin_letter(c) for c in name) or re.search(
        r"^[·'\-]|[·'\-]$|··", name
    ):
        raise _problem(
            "name-format",
            "姓名格式不正确：间隔号等符号不能在开头、结尾或连续出现",
            "a name cannot start or end with, or repeat, the middle dot or other marks",
        )
    return name


def _validate_person_name(raw: Any, spec: FieldSpec) -> str:
    return _person_name(raw, spec.max_length or _NAME_MAX)


# --------------------------------------------------------------------------- dates, text


def _validate_past_date(raw: Any, spec: FieldSpec) -> str:
    """A date in the past (or today), not before 1900: birth dates and record dates."""
    return _past_date(raw).isoformat()


def _validate_text(raw: Any, spec: FieldSpec) -> str:
    return _clean_text(raw, spec.max_length)


def _validate_text_list(raw: Any, spec: FieldSpec) -> list[str]:
    """A list of short texts (e.g. health conditions); empty means "none recorded"."""
    items = _require_list(raw)
    out: list[str] = []
    for index, item in enumerate(items, start=1):
        try:
            out.append(_clean_text(item, spec.max_length))
        except InvalidValue as err:
            raise _nested(f"item{index}", f"第{index}项", f"item {index}", err) from None
    return out


# --------------------------------------------------------------------------- ethnicity

ETHNIC_GROUPS: Final = (
    "汉族",
    "蒙古族",
    "回族",
    "藏族",
    "维吾尔族",
    "苗族",
    "彝族",
    "壮族",
    "布依族",
    "朝鲜族",
    "满族",
    "侗族",
    "瑶族",
    "白族",
    "土家族",
    "哈尼族",
    "哈萨克族",
    "傣族",
    "黎族",
    "傈僳族",
    "佤族",
    "畲族",
    "高山族",
    "拉祜族",
    "水族",
    "东乡族",
    "纳西族",
    "景颇族",
    "柯尔克孜族",
    "土族",
    "达斡尔族",
    "仫佬族",
    "羌族",
    "布朗族",
    "撒拉族",
    "毛南族",
    "仡佬族",
    "锡伯族",
    "阿昌族",
    "普米族",
    "塔吉克族",
    "怒族",
    "乌孜别克族",
    "俄罗斯族",
    "鄂温克族",
    "德昂族",
    "保安族",
    "裕固族",
    "京族",
    "塔塔尔族",
    "独龙族",
    "鄂伦春族",
    "赫哲族",
    "门巴族",
    "珞巴族",
    "基诺族",
)
"""The 56 officially recognised ethnic groups, in the order of GB/T 3304."""

ETHNICITIES: Final = frozenset({*ETHNIC_GROUPS, "其他", "外国血统"})
_ETHNICITY_ALIASES: Final = {"外国血统中国籍人士": "外国血统", "其它": "其他"}


def _validate_ethnicity(raw: Any, spec: FieldSpec) -> str:
    """One of the 56 groups, 其他 or 外国血统; "汉" is accepted and stored as "汉族"."""
    text = _clean_text(raw, 20)
    text = _ETHNICITY_ALIASES.get(text, text)
    if text in ETHNICITIES:
        return text
    if text + "族" in ETHNICITIES:
        return text + "族"
    raise _problem("ethnicity-unknown", "不是有效的民族名称", "is not a recognised ethnic group")


# --------------------------------------------------------------------------- disability

DISABILITY_CATEGORIES: Final[Mapping[str, tuple[str, str]]] = {
    "visual": ("视力", "Visual"),
    "hearing": ("听力", "Hearing"),
    "speech": ("言语", "Speech"),
    "physical": ("肢体", "Physical"),
    "intellectual": ("智力", "Intellectual"),
    "mental": ("精神", "Mental"),
    "multiple": ("多重", "Multiple"),
}
"""The seven categories of GB/T 26341 (key -> short zh, en); stored by English key."""

_DISABILITY_BY_ZH: Final = {zh: key for key, (zh, _) in DISABILITY_CATEGORIES.items()}
_NO_DISABILITY_WORDS: Final = frozenset({"", "none", "无", "否", "无残疾"})
_GRADE_WORDS: Final = {"一": 1, "二": 2, "三": 3, "四": 4}


def _disability_category(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _wrong_type("残疾类别文字", "a disability category name")
    word = raw.strip()
    if word.lower() in _NO_DISABILITY_WORDS:
        return "none"
    if word.lower() in DISABILITY_CATEGORIES:
        return word.lower()
    word = word.removesuffix("残疾")
    if word in _DISABILITY_BY_ZH:
        return _DISABILITY_BY_ZH[word]
    raise _problem(
        "disability-category",
        "残疾类别应为视力、听力、言语、肢体、智力、精神或多重",
        "the category must be visual, hearing, speech, physical, intellectual, mental or multiple",
    )


def _disability_grade(raw: Any) -> int:
    grade: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        grade = raw
    elif isinstance(raw, str):
        word = raw.strip().removesuffix("级")
        grade = int(word) if word in {"1", "2", "3", "4"} else _GRADE_WORDS.get(word)
    if grade is None or not 1 <= grade <= 4:
        raise _problem(
            "disability-grade", "残疾等级应为1至4级", "the disability grade must be 1 to 4"
        )
    return grade


def _validate_disability(raw: Any, spec: FieldSpec) -> dict[str, Any]:
    """Disability category and grade, stored in one normal form.

    Normal form: ``{"category": "none"}`` when there is no disability (null, "none", "无"
    and an empty string all mean that), otherwise ``{"category": <English key>, "grade":
    1..4}``. Always an object, so readers never branch on null versus "none" versus {}.
    """
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in _NO_DISABILITY_WORDS):
        return {"category": "none"}
    if isinstance(raw, str):
        _disability_category(raw)  # a bare known category still lacks its grade
        raise _problem("missing-key", "缺少必填项：grade", "is missing: grade")
    record = _require_mapping(raw, required=("category",), optional=("grade",))
    category = _disability_category(record["category"])
    grade = record.get("grade")
    if category == "none":
        if grade not in (None, ""):
            raise _problem(
                "disability-grade-unexpected",
                "无残疾时不应填写残疾等级",
                "a grade is not expected when there is no disability",
            )
        return {"category": "none"}
    if grade is None:
        raise _problem("missing-key", "缺少必填项：grade", "is missing: grade")
    return {"category": category, "grade": _disability_grade(grade)}


# --------------------------------------------------------------------------- money

_MONEY_LIMIT: Final = Decimal(10_000_000)
_CENT: Final = Decimal("0.01")


def _validate_money(raw: Any, spec: FieldSpec) -> str:
    """An amount in yuan, stored as a string with exactly two decimals ("1234.50").

    A string, not a float: binary floats cannot hold most cent amounts, and the text form
    goes through JSON, encryption and back without ever being rounded.
    """
    if raw is None:
        raise _required()
    try:
        if isinstance(raw, bool):
            raise TypeError
        if isinstance(raw, Decimal | int):
            amount = Decimal(raw)
        elif isinstance(raw, float):
            amount = Decimal(repr(raw))  # the shortest text that reads back as this float
        elif isinstance(raw, str):
            amount = Decimal(raw.strip())
        else:
            raise TypeError
    except (TypeError, InvalidOperation):
        raise _problem("not-a-number", "应为金额数字", "must be an amount of money") from None
    if not amount.is_finite():
        raise _problem("not-a-number", "应为金额数字", "must be an amount of money")
    if amount < 0:
        raise _problem("money-negative", "金额不能为负数", "an amount cannot be negative")
    if amount >= _MONEY_LIMIT:
        raise _problem(
            "money-too-large", "金额应小于1000万元", "an amount must be below 10,000,000"
        )
    if amount != amount.quantize(_CENT):
        raise _problem(
            "money-decimals", "金额最多保留两位小数", "an amount has at most two decimals"
        )
    return f"{amount.quantize(_CENT) + 0:.2f}"  # + 0 turns -0.00 into 0.00


# --------------------------------------------------------------------------- contacts


def _validate_emergency_contact(raw: Any, spec: FieldSpec) -> dict[str, str]:
    """{"name", "phone", "relation"}: someone to call, with their relation to the resident."""
    record = _require_mapping(raw, required=("name", "phone", "relation"))
    try:
        name = _person_name(record["name"])
    except InvalidValue as err:
        raise _nested("name", "联系人姓名", "contact name", err) from None
    try:
        phone = _cn_mobile(record["phone"])
    except InvalidValue as err:
        raise _nested("phone", "联系人电话", "contact phone", err) from None
    try:
        relation = _clean_text(record["relation"], 20)
    except InvalidValue as err:
        raise _nested("relation", "与本人关系", "relation", err) from None
    return {"name": name, "phone": phone, "relation": relation}


# --------------------------------------------------------------------------- plates

PLATE_PROVINCES: Final = frozenset(
    "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领"
)
_PLATE_SEPARATORS: Final = re.compile(r"[\s·•・\-]")
_PLATE_SERIAL: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _validate_cn_plate(raw: Any, spec: FieldSpec) -> str:
    """Mainland plate: province character, issuing-office letter, 5 (or 6, new-energy) serial.

    Stored without separators and in upper case ("京A12345"), the way it is painted.
    The serial never contains I or O, which the plate standard leaves out as lookalikes
    of 1 and 0.
    """
    if raw is None:
        raise _required()
    if not isinstance(raw, str):
        raise _wrong_type("文本", "text")
    plate = _PLATE_SEPARATORS.sub("", raw.translate(_FULLWIDTH))
    plate = "".join(c.upper() if "a" <= c <= "z" else c for c in plate)
    if len(plate) not in (7, 8):
        raise _problem(
            "plate-length",
            "车牌号应为7位（新能源车8位）",
            "a plate has 7 characters (8 for new-energy vehicles)",
        )
    if plate[0] not in PLATE_PROVINCES:
        raise _problem(
            "plate-province", "车牌号首字应为省份简称", "a plate starts with a province character"
        )
    if not ("A" <= plate[1] <= "Z") or not set(plate[2:]) <= _PLATE_SERIAL:
        raise _problem(
            "plate-format",
            "车牌号第二位应为字母，其后为字母或数字",
            "a plate's second character is a letter, followed by letters and digits",
        )
    if set(plate[2:]) & {"I", "O"}:
        raise _problem(
            "plate-letter-io",
            "车牌号序号中不能有字母I或O",
            "a plate's serial never contains the letters I or O",
        )
    return plate


# --------------------------------------------------------------------------- integrity

_INTEGRITY_KINDS: Final = frozenset({"positive", "negative"})


def _validate_integrity_records(raw: Any, spec: FieldSpec) -> list[dict[str, str]]:
    """Entries of the community integrity record: {"date", "kind", "description"}."""
    entries = _require_list(raw)
    out: list[dict[str, str]] = []
    for index, entry in enumerate(entries, start=1):
        zh_part, en_part = f"第{index}条", f"entry {index}"
        try:
            record = _require_mapping(entry, required=("date", "kind", "description"))
        except InvalidValue as err:
            raise _nested(f"entry{index}", zh_part, en_part, err) from None
        try:
            day = _past_date(record["date"]).isoformat()
        except InvalidValue as err:
            raise _nested(f"entry{index}.date", f"{zh_part}日期", f"{en_part} date", err) from None
        kind = record["kind"]
        if not isinstance(kind, str) or kind.strip() not in _INTEGRITY_KINDS:
            raise _problem(
                f"entry{index}.kind.not-in-enum",
                f"{zh_part}类型应为positive（正面）或negative（负面）",
                f"{en_part} kind must be positive or negative",
            )
        try:
            description = _clean_text(record["description"], spec.max_length)
        except InvalidValue as err:
            raise _nested(
                f"entry{index}.description", f"{zh_part}描述", f"{en_part} description", err
            ) from None
        out.append({"date": day, "kind": kind.strip(), "description": description})
    return out


# --------------------------------------------------------------------------- registry

VALIDATORS: dict[str, Validator] = {
    "person_name": _validate_person_name,
    "past_date": _validate_past_date,
    "gb11643": _gb11643,
    "cn_mobile": _cn_mobile,
    "text": _validate_text,
    "ethnicity": _validate_ethnicity,
    "text_list": _validate_text_list,
    "disability": _validate_disability,
    "money": _validate_money,
    "emergency_contact": _validate_emergency_contact,
    "cn_plate": _validate_cn_plate,
    "integrity_records": _validate_integrity_records,
}
"""Validator name (as written in catalogue.yaml) -> validator."""


def validator_for(spec: FieldSpec) -> Validator | None:
    """The field's validator, or None if it has none; CatalogueError for an unknown name.

    An unknown name is a broken catalogue, never a reason to accept values unchecked.
    """
    if spec.validator is None:
        return None
    try:
        return VALIDATORS[spec.validator]
    except KeyError:
        raise CatalogueError(
            f"field {spec.name!r}: unknown validator {spec.validator!r} "
            f"(known: {', '.join(sorted(VALIDATORS))})"
        ) from None


# --------------------------------------------------------------------------- types

_TRUE_WORDS: Final = frozenset({"true", "1", "是", "yes", "y"})
_FALSE_WORDS: Final = frozenset({"false", "0", "否", "no", "n"})


def _type_string(raw: Any, spec: FieldSpec) -> str:
    return _clean_text(raw, spec.max_length)


def _type_date(raw: Any, spec: FieldSpec) -> str:
    return _parse_iso_date(raw).isoformat()


def _type_enum(raw: Any, spec: FieldSpec) -> str:
    """An enum key; the zh or en label of a value is accepted too (CSV sheets say "男")."""
    if raw is None:
        raise _required()
    if not isinstance(raw, str):
        raise _wrong_type("文本", "text")
    word = raw.strip()
    if word in spec.values:
        return word
    by_label: dict[str, list[str]] = {}
    for key, label in spec.values.items():
        for text in {label.zh, label.en.casefold(), key.casefold()}:
            by_label.setdefault(text, []).append(key)
    keys = by_label.get(word) or by_label.get(word.casefold()) or []
    if len(keys) == 1:
        return keys[0]
    raise _problem("not-in-enum", "不是允许的选项", "is not one of the allowed values")


def _type_boolean(raw: Any, spec: FieldSpec) -> bool:
    if raw is None:
        raise _required()
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().casefold()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise _problem("not-a-boolean", "应为“是”或“否”", "must be true or false")


def _type_number(raw: Any, spec: FieldSpec) -> int | float:
    """A finite number; numeric text becomes int (if whole) or float.

    Text that a float cannot hold exactly (more than 15 significant digits) is refused
    rather than rounded, so what is stored is what was written.
    """
    if raw is None:
        raise _required()
    not_a_number = _problem("not-a-number", "应为数字", "must be a number")
    if isinstance(raw, bool):
        raise not_a_number
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise not_a_number
        return raw
    if not isinstance(raw, str):
        raise not_a_number
    try:
        number = Decimal(raw.strip())
    except InvalidOperation:
        raise not_a_number from None
    if not number.is_finite():
        raise not_a_number
    if number == number.to_integral_value() and abs(number) < 2**53:
        return int(number)
    as_float = float(number)
    if Decimal(repr(as_float)) != number:
        raise _problem(
            "number-too-precise", "数字的精度超出范围", "has more precision than can be stored"
        )
    return as_float


def _decode_json_text(raw: Any, opener: str) -> Any:
    """A CSV cell holding JSON text for a list or object field becomes the decoded value."""
    if isinstance(raw, str) and raw.lstrip().startswith(opener):
        try:
            return json.loads(raw)
        except ValueError:
            raise _problem("not-json", "不是有效的JSON文本", "is not valid JSON text") from None
    return raw


def _type_list(raw: Any, spec: FieldSpec) -> Any:
    value = _decode_json_text(raw, "[")
    if spec.validator is not None and (isinstance(value, str) or value is None):
        return value  # structured fields with a validator let it judge (and reject) scalars
    return list(_require_list(value))


def _type_object(raw: Any, spec: FieldSpec) -> Any:
    value = _decode_json_text(raw, "{")
    if spec.validator is not None and (isinstance(value, str) or value is None):
        # e.g. disability: null and "none" are its shorthand for "no disability"
        return value
    if value is None:
        raise _required()
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _wrong_type("对象", "an object")
    return dict(value)


_TYPE_CHECKS: Final[Mapping[str, Validator]] = {
    "string": _type_string,
    "date": _type_date,
    "enum": _type_enum,
    "boolean": _type_boolean,
    "number": _type_number,
    "list": _type_list,
    "object": _type_object,
}


def validate_value(spec: FieldSpec, raw: Any) -> Any:
    """Check `raw` against the field's type and then its validator; return the normal form.

    Raises InvalidValue for a bad value, CatalogueError for a field whose validator name
    is unknown (checked before the value is looked at, so it fails loudly every time).
    """
    validator = validator_for(spec)
    value = _TYPE_CHECKS[spec.type](raw, spec)
    return value if validator is None else validator(value, spec)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class _Match:
    """How one field's value implies another's, for a `matches` role in the catalogue."""

    implied: Callable[[Any], Any]  # this field's normal form -> the other field's normal form
    code: str
    message_zh: str
    message_en: str


_MATCHES: Final[Mapping[str, Mapping[str, _Match]]] = {
    "gb11643": {
        "birth_date": _Match(
            lambda number: id_birth_date(number).isoformat(),
            "id-birth-date-mismatch",
            "身份证号中的出生日期与出生日期不一致",
            "the birth date in the ID number does not match the date of birth",
        ),
        "gender": _Match(
            id_gender,
            "id-gender-mismatch",
            "身份证号第17位表示的性别与性别不一致",
            "the gender encoded in the ID number (17th digit) does not match the gender",
        ),
    }
}


def _match_for(spec: FieldSpec, role: str) -> _Match:
    try:
        return _MATCHES[spec.validator or ""][role]
    except KeyError:
        raise CatalogueError(
            f"field {spec.name!r}: no cross-field check {role!r} for validator {spec.validator!r}"
        ) from None


def check_catalogue(catalogue: Catalogue) -> None:
    """Raise CatalogueError unless every validator name and `matches` role is known.

    Call at start-up so a typo in catalogue.yaml stops the service instead of surfacing
    on the first write of that field.
    """
    for spec in catalogue:
        validator_for(spec)
        for role in spec.matches:
            _match_for(spec, role)


def validate_record(
    catalogue: Catalogue,
    values: Mapping[str, Any],
    existing: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[FieldProblem]]:
    """Validate the given fields of one resident; return (normal forms, all problems).

    Every field is checked and every problem reported, so a form or a CSV row can be fixed
    in one go. Cross-field checks (`matches`) compare with the other field from `values`,
    or else from `existing` (the stored record, during an update), and run only when one
    side is being written and both sides are valid on their own. A mismatch is reported
    on the ID field if it is being written, otherwise on the other field.
    """
    normalised: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for name, raw in values.items():
        if name not in catalogue:
            problems.append(FieldProblem(name, "unknown-field", "未知字段", "unknown field"))
            continue
        try:
            normalised[name] = validate_value(catalogue[name], raw)
        except InvalidValue as err:
            problems.append(FieldProblem(name, err.code, err.message_zh, err.message_en))

    def current(name: str) -> Any:
        """The field's valid normal form after this write, or None if unknown or invalid."""
        if name in values:
            return normalised.get(name)
        if existing is None or existing.get(name) is None or name not in catalogue:
            return None
        try:
            return validate_value(catalogue[name], existing[name])
        except InvalidValue:
            return None

    for spec in catalogue:
        for role, other in spec.matches.items():
            match = _match_for(spec, role)
            if spec.name not in values and other not in values:
                continue
            mine, theirs = current(spec.name), current(other)
            if mine is None or theirs is None or match.implied(mine) == theirs:
                continue
            where = spec.name if spec.name in values else other
            problems.append(FieldProblem(where, match.code, match.message_zh, match.message_en))
    return normalised, problems
