"""Validation and normalisation of resident field values.

Every value that enters the vault passes through here first, whether it comes from the
API (JSON) or a bulk import (CSV cells, so everything may arrive as a string). A validator
either returns the value's *normal form* or raises `InvalidValue`. The normal form matters
beyond tidiness: values are encrypted field by field and the searchable ones are looked up
through a keyed blind index, so "the same" ID number or phone number must always produce
the same bytes (`normalise_id_number`, `normalise_phone`).

Error messages are shown to users and written to logs, so they say what is wrong and never
repeat the value itself: a log line must not become a copy of the ID number it rejected.
Each is a catalogue message (`validation.<code>`, or `validation.<code>.<which>` where one
code has several wordings), so its two languages live in `vault/locale`, not here.

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
from vault.i18n import Message

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


def _wrong_type(message: Message) -> InvalidValue:
    """The value is of the wrong kind; `message` is the whole sentence (one id per kind, so
    each language words it its own way)."""
    return InvalidValue("wrong-type", message)


def _required() -> InvalidValue:
    return InvalidValue("required", Message("validation.required"))


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


# `_bad_text_char` as one character class, for the hot path (imports validate every cell):
# Cc is U+0000-001F and U+007F-009F, Cs the surrogates, Zl U+2028, Zp U+2029, and the bidi
# controls. tests/test_validators.py checks it against the definition for every code point.
BAD_TEXT: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _clean_text(raw: Any, max_length: int | None) -> str:
    """The common rules for free text: a string, stripped, non-empty, printable, bounded."""
    if raw is None:
        raise _required()
    if not isinstance(raw, str):
        raise _wrong_type(Message("validation.wrong-type.text"))
    text = raw.strip()
    if not text:
        raise InvalidValue("empty", Message("validation.empty"))
    if BAD_TEXT.search(text):
        raise InvalidValue("control-characters", Message("validation.control-characters"))
    if max_length is not None and len(text) > max_length:
        raise InvalidValue("too-long", Message("validation.too-long", {"max": max_length}))
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
        raise _wrong_type(Message("validation.wrong-type.date"))
    if isinstance(raw, date):
        return raw
    if not isinstance(raw, str):
        raise _wrong_type(Message("validation.wrong-type.date"))
    text = raw.strip()
    if not _ISO_DATE.fullmatch(text):
        raise InvalidValue("not-a-date", Message("validation.not-a-date.format"))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidValue("not-a-date", Message("validation.not-a-date.calendar")) from None


def _past_date(raw: Any) -> date:
    day = _parse_iso_date(raw)
    if day > china_today():
        raise InvalidValue("date-in-future", Message("validation.date-in-future"))
    if day < MIN_DATE:
        raise InvalidValue("date-too-early", Message("validation.date-too-early"))
    return day


def _nested(part: str, name: Message, err: InvalidValue) -> InvalidValue:
    """Re-raise a sub-value's problem with the part it concerns in its code and message
    (`name` is the part's own message, shown in the same language as the problem)."""
    return InvalidValue(
        f"{part}.{err.code}",
        Message("validation.nested", {"part": name, "problem": err.message}),
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
        raise _wrong_type(Message("validation.wrong-type.object"))
    allowed = [*required, *optional]
    if any(key not in allowed for key in raw):
        # Name the keys we allow, not the ones we got: a key can carry data too.
        names = ", ".join(allowed)
        raise InvalidValue("unexpected-key", Message("validation.unexpected-key", {"names": names}))
    missing = [k for k in required if k not in raw]
    if missing:
        names = ", ".join(missing)
        raise InvalidValue("missing-key", Message("validation.missing-key", {"names": names}))
    return raw


def _require_list(raw: Any) -> Sequence[Any]:
    if raw is None:
        raise _required()
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise _wrong_type(Message("validation.wrong-type.list"))
    if len(raw) > MAX_LIST_ITEMS:
        raise InvalidValue(
            "too-many-items", Message("validation.too-many-items", {"most": MAX_LIST_ITEMS})
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
        raise _wrong_type(Message("validation.wrong-type.id-number"))
    number = normalise_id_number(raw)
    if len(number) != 18:
        raise InvalidValue("id-length", Message("validation.id-length"))
    if not set(number[:17]) <= _DIGITS or not (number[17] in _DIGITS or number[17] == "X"):
        raise InvalidValue("id-format", Message("validation.id-format"))
    if int(number[:2]) not in PROVINCE_CODES:
        raise InvalidValue("id-region", Message("validation.id-region"))
    try:
        born = id_birth_date(number)
    except ValueError:
        raise InvalidValue("id-birth-date", Message("validation.id-birth-date")) from None
    if born > china_today():
        raise InvalidValue("id-birth-date-future", Message("validation.id-birth-date-future"))
    if born < MIN_DATE:
        raise InvalidValue("id-birth-date-too-early", Message("validation.id-birth-date-too-early"))
    if id_check_char(number[:17]) != number[17]:
        raise InvalidValue("id-check-digit", Message("validation.id-check-digit"))
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
        raise _wrong_type(Message("validation.wrong-type.phone"))
    number = normalise_phone(raw)
    if not number or not set(number) <= _DIGITS:
        raise InvalidValue("phone-format", Message("validation.phone-format"))
    if len(number) != 11:
        raise InvalidValue("phone-length", Message("validation.phone-length"))
    if number[0] != "1" or number[1] not in "3456789":
        raise InvalidValue("phone-prefix", Message("validation.phone-prefix"))
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
        raise _wrong_type(Message("validation.wrong-type.text"))
    name = " ".join(raw.translate(_FULLWIDTH).translate(_MIDDLE_DOTS).split())
    name = re.sub(r"\s*·\s*", "·", name)
    if not name:
        raise InvalidValue("empty", Message("validation.empty"))
    limit = min(max_length, _NAME_MAX)
    if len(name) > limit:
        raise InvalidValue("too-long", Message("validation.too-long.name", {"max": limit}))
    if any(unicodedata.category(c) == "Nd" for c in name):
        raise InvalidValue("name-digits", Message("validation.name-digits"))
    if not all(_is_cjk(c) or _is_latin_letter(c) or c in " ·'-" for c in name):
        raise InvalidValue("name-characters", Message("validation.name-characters"))
    if not any(_is_cjk(c) or _is_latin_letter(c) for c in name) or re.search(
        r"^[·'\-]|[·'\-]$|··", name
    ):
        raise InvalidValue("name-format", Message("validation.name-format"))
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
            part = Message("validation.part.item", {"index": index})
            raise _nested(f"item{index}", part, err) from None
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
    raise InvalidValue("ethnicity-unknown", Message("validation.ethnicity-unknown"))


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
        raise _wrong_type(Message("validation.wrong-type.disability-category"))
    word = raw.strip()
    if word.lower() in _NO_DISABILITY_WORDS:
        return "none"
    if word.lower() in DISABILITY_CATEGORIES:
        return word.lower()
    word = word.removesuffix("残疾")
    if word in _DISABILITY_BY_ZH:
        return _DISABILITY_BY_ZH[word]
    raise InvalidValue("disability-category", Message("validation.disability-category"))


def _disability_grade(raw: Any) -> int:
    grade: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        grade = raw
    elif isinstance(raw, str):
        word = raw.strip().removesuffix("级")
        grade = int(word) if word in {"1", "2", "3", "4"} else _GRADE_WORDS.get(word)
    if grade is None or not 1 <= grade <= 4:
        raise InvalidValue("disability-grade", Message("validation.disability-grade"))
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
        raise InvalidValue("missing-key", Message("validation.missing-key", {"names": "grade"}))
    record = _require_mapping(raw, required=("category",), optional=("grade",))
    category = _disability_category(record["category"])
    grade = record.get("grade")
    if category == "none":
        if grade not in (None, ""):
            raise InvalidValue(
                "disability-grade-unexpected", Message("validation.disability-grade-unexpected")
            )
        return {"category": "none"}
    if grade is None:
        raise InvalidValue("missing-key", Message("validation.missing-key", {"names": "grade"}))
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
        raise InvalidValue("not-a-number", Message("validation.not-a-number.money")) from None
    if not amount.is_finite():
        raise InvalidValue("not-a-number", Message("validation.not-a-number.money"))
    if amount < 0:
        raise InvalidValue("money-negative", Message("validation.money-negative"))
    if amount >= _MONEY_LIMIT:
        raise InvalidValue("money-too-large", Message("validation.money-too-large"))
    if amount != amount.quantize(_CENT):
        raise InvalidValue("money-decimals", Message("validation.money-decimals"))
    return f"{amount.quantize(_CENT) + 0:.2f}"  # + 0 turns -0.00 into 0.00


# --------------------------------------------------------------------------- contacts


def _validate_emergency_contact(raw: Any, spec: FieldSpec) -> dict[str, str]:
    """{"name", "phone", "relation"}: someone to call, with their relation to the resident."""
    record = _require_mapping(raw, required=("name", "phone", "relation"))
    try:
        name = _person_name(record["name"])
    except InvalidValue as err:
        raise _nested("name", Message("validation.part.contact-name"), err) from None
    try:
        phone = _cn_mobile(record["phone"])
    except InvalidValue as err:
        raise _nested("phone", Message("validation.part.contact-phone"), err) from None
    try:
        relation = _clean_text(record["relation"], 20)
    except InvalidValue as err:
        raise _nested("relation", Message("validation.part.relation"), err) from None
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
        raise _wrong_type(Message("validation.wrong-type.text"))
    plate = _PLATE_SEPARATORS.sub("", raw.translate(_FULLWIDTH))
    plate = "".join(c.upper() if "a" <= c <= "z" else c for c in plate)
    if len(plate) not in (7, 8):
        raise InvalidValue("plate-length", Message("validation.plate-length"))
    if plate[0] not in PLATE_PROVINCES:
        raise InvalidValue("plate-province", Message("validation.plate-province"))
    if not ("A" <= plate[1] <= "Z") or not set(plate[2:]) <= _PLATE_SERIAL:
        raise InvalidValue("plate-format", Message("validation.plate-format"))
    if set(plate[2:]) & {"I", "O"}:
        raise InvalidValue("plate-letter-io", Message("validation.plate-letter-io"))
    return plate


# --------------------------------------------------------------------------- integrity

_INTEGRITY_KINDS: Final = frozenset({"positive", "negative"})


def _validate_integrity_records(raw: Any, spec: FieldSpec) -> list[dict[str, str]]:
    """Entries of the community integrity record: {"date", "kind", "description"}."""
    entries = _require_list(raw)
    out: list[dict[str, str]] = []
    for index, entry in enumerate(entries, start=1):
        at = {"index": index}
        try:
            record = _require_mapping(entry, required=("date", "kind", "description"))
        except InvalidValue as err:
            raise _nested(f"entry{index}", Message("validation.part.entry", at), err) from None
        try:
            day = _past_date(record["date"]).isoformat()
        except InvalidValue as err:
            part = Message("validation.part.entry-date", at)
            raise _nested(f"entry{index}.date", part, err) from None
        kind = record["kind"]
        if not isinstance(kind, str) or kind.strip() not in _INTEGRITY_KINDS:
            raise InvalidValue(
                f"entry{index}.kind.not-in-enum", Message("validation.not-in-enum.entry-kind", at)
            )
        try:
            description = _clean_text(record["description"], spec.max_length)
        except InvalidValue as err:
            part = Message("validation.part.entry-description", at)
            raise _nested(f"entry{index}.description", part, err) from None
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
        raise _wrong_type(Message("validation.wrong-type.text"))
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
    raise InvalidValue("not-in-enum", Message("validation.not-in-enum"))


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
    raise InvalidValue("not-a-boolean", Message("validation.not-a-boolean"))


def _not_a_number() -> InvalidValue:
    # Made only when raised: an error renders its message, which costs more than the check.
    return InvalidValue("not-a-number", Message("validation.not-a-number"))


def _type_number(raw: Any, spec: FieldSpec) -> int | float:
    """A finite number; numeric text becomes int (if whole) or float.

    Text that a float cannot hold exactly (more than 15 significant digits) is refused
    rather than rounded, so what is stored is what was written.
    """
    if raw is None:
        raise _required()
    if isinstance(raw, bool):
        raise _not_a_number()
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise _not_a_number()
        return raw
    if not isinstance(raw, str):
        raise _not_a_number()
    try:
        number = Decimal(raw.strip())
    except InvalidOperation:
        raise _not_a_number() from None
    if not number.is_finite():
        raise _not_a_number()
    if number == number.to_integral_value() and abs(number) < 2**53:
        return int(number)
    as_float = float(number)
    if Decimal(repr(as_float)) != number:
        raise InvalidValue("number-too-precise", Message("validation.number-too-precise"))
    return as_float


def _decode_json_text(raw: Any, opener: str) -> Any:
    """A CSV cell holding JSON text for a list or object field becomes the decoded value."""
    if isinstance(raw, str) and raw.lstrip().startswith(opener):
        try:
            return json.loads(raw)
        except ValueError:
            raise InvalidValue("not-json", Message("validation.not-json")) from None
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
        raise _wrong_type(Message("validation.wrong-type.object"))
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
    message: Message


_MATCHES: Final[Mapping[str, Mapping[str, _Match]]] = {
    "gb11643": {
        "birth_date": _Match(
            lambda number: id_birth_date(number).isoformat(),
            "id-birth-date-mismatch",
            Message("validation.id-birth-date-mismatch"),
        ),
        "gender": _Match(
            id_gender,
            "id-gender-mismatch",
            Message("validation.id-gender-mismatch"),
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
            problems.append(
                FieldProblem(name, "unknown-field", Message("error.vault.unknown-field"))
            )
            continue
        try:
            normalised[name] = validate_value(catalogue[name], raw)
        except InvalidValue as err:
            problems.append(FieldProblem(name, err.code, err.message))

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
            problems.append(FieldProblem(where, match.code, match.message))
    return normalised, problems
