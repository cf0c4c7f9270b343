"""Fictional residents for demos, tests and benchmarks.

Everything here is generated from a `random.Random` and belongs to no one. Real personal
data must never be used to demonstrate or test a vault of personal data, and generated
data must not be mistaken for real data either, so:

* ID numbers use the real prefecture code of Hangzhou (3301) and of a few other cities,
  but county codes 91-96, which (as far as we know) no county has ever used, so a
  generated number should not be a real person's, while still passing every check the
  vault makes (province, birth date, gender digit, MOD 11-2 check character).
* Addresses are in a fictional district (示范区) on fictional roads.
* Names are ordinary combinations of common surnames and given-name characters; phone
  numbers and plates follow the real formats and so *may* coincide with a real number:
  never call, text or look up anything generated here.

The same seed gives the same people, forever: ages are computed as of `today`, which
defaults to the fixed `REFERENCE_DATE` rather than the real date. Pass `today=` to get
people whose ages are right as of another day (it must not be in the future, or their
birth dates may be).

Every record passes `vault.validators.validate_record` with no problems. A record has
every catalogue field except `vehicle_plate`, which only residents with a car have (a
string field has no "none" value, and absent is what "no car" means).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from vault.validators import id_check_char

__all__ = [
    "REFERENCE_DATE",
    "SyntheticPerson",
    "make_address",
    "make_household",
    "make_identity",
    "make_person",
]

REFERENCE_DATE: Final = date(2026, 1, 1)
"""Default "today" of generated people, fixed so that a seed always gives the same data."""

# Prefecture codes are real (Hangzhou; Zhengzhou, Chengdu, Hefei, Wuhan, Changsha, Nanchang
# for residents registered elsewhere); the county digits 91-96 are not allocated to any
# county, which keeps generated ID numbers from being anyone's.
_LOCAL_REGIONS: Final = ("330191", "330192", "330193", "330194", "330195", "330196")
_NONLOCAL_REGIONS: Final = ("410191", "510192", "340193", "420194", "430195", "360196")

_SURNAMES: Final = tuple(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
    "龚邵万钱严覃武戴莫孔向汤"
)
# Roughly how common each surname is: the first few cover a large share of the population.
_SURNAME_WEIGHTS: Final = tuple(1.0 / (rank + 8) for rank in range(len(_SURNAMES)))
_COMPOUND_SURNAMES: Final = ("欧阳", "司马", "诸葛", "上官", "司徒", "东方")

_GIVEN_MALE: Final = tuple(
    "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆旭宁龙林阳博文建国志海峰东晨轩睿哲子天泽宏"
)
_GIVEN_FEMALE: Final = tuple(
    "芳娜敏静丽艳娟霞秀燕玲桂丹萍红梅琳雪婷慧颖莉佳欣怡雨萱涵思琪晓悦璐瑶诗梦"
)
# Names in fashion when today's oldest residents were born.
_OLDER_MALE: Final = (
    "建国",
    "国庆",
    "建华",
    "卫东",
    "福生",
    "德明",
    "志强",
    "长海",
    "永福",
    "金生",
)
_OLDER_FEMALE: Final = (
    "秀英",
    "桂英",
    "玉兰",
    "淑珍",
    "秀兰",
    "桂兰",
    "凤英",
    "玉珍",
    "素芬",
    "月娥",
)

# Transliterated Uyghur names: personal name, then father's name, joined by a middle dot.
_DOTTED_MALE: Final = ("艾力", "买买提", "阿不都", "吐尔逊", "艾山", "努尔")
_DOTTED_FEMALE: Final = ("阿依古丽", "古丽娜尔", "帕提古丽", "热依拉", "米热古丽")

_ETHNICITIES: Final = ("汉族", "回族", "满族", "畲族", "壮族", "苗族", "土家族", "蒙古族", "朝鲜族")
_ETHNICITY_WEIGHTS: Final = (91.0, 2.0, 1.5, 1.5, 1.0, 1.0, 1.0, 0.5, 0.5)

_RELIGIONS: Final = ("none", "buddhism", "protestantism", "taoism", "catholicism", "islam", "other")
_RELIGION_WEIGHTS: Final = (88.0, 6.0, 2.5, 1.2, 0.8, 1.0, 0.5)

_ROADS: Final = ("桂语路", "和畅路", "云栖街", "翠柳巷", "明月路", "春晖路", "安澜街", "枫林路")

_PHONE_PREFIXES: Final = (
    *(f"13{d}" for d in range(10)),
    "150",
    "151",
    "152",
    "153",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "173",
    "175",
    "176",
    "177",
    "178",
    *(f"18{d}" for d in range(10)),
    "191",
    "193",
    "195",
    "196",
    "197",
    "198",
    "199",
)

_CONDITIONS: Final = (
    "高血压",
    "糖尿病",
    "冠心病",
    "慢性阻塞性肺疾病",
    "骨关节炎",
    "骨质疏松",
    "哮喘",
    "脑卒中后遗症",
    "慢性肾病",
    "白内障",
    "帕金森病",
    "阿尔茨海默病",
)
_DISABILITIES: Final = ("visual", "hearing", "speech", "physical", "intellectual", "mental")

_PLATE_LETTERS: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O, as on real plates
_POSITIVE_DEEDS: Final = (
    "参加社区志愿服务，获评优秀志愿者",
    "协助调解邻里纠纷",
    "积极参与垃圾分类宣传",
    "拾金不昧，受到社区表扬",
)
_NEGATIVE_DEEDS: Final = (
    "拖欠物业费，已补缴",
    "违规饲养犬只，经劝导已整改",
    "占用消防通道停车，已整改",
    "楼道堆放杂物，经提醒已清理",
)

_EXTERNAL_RELATIONS: Final = ("兄弟", "姐妹", "朋友", "邻居", "亲属")


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class SyntheticPerson:
    """The identity core of a generated resident; every other field is derived around it.

    `surname` is the family name children inherit (for a dotted minority name, the
    father's-name part is not a surname, and `surname` is empty).
    """

    name: str
    surname: str
    gender: str  # "male" | "female"
    birth_date: date
    region_code: str  # 6 digits: where the ID number was first issued
    sequence: str  # ID digits 15-17; the last one's parity is the gender

    @property
    def id_number(self) -> str:
        body = f"{self.region_code}{self.birth_date:%Y%m%d}{self.sequence}"
        return body + id_check_char(body)

    @property
    def local(self) -> bool:
        return self.region_code in _LOCAL_REGIONS

    def age(self, on: date) -> int:
        born = self.birth_date
        return max(0, on.year - born.year - ((on.month, on.day) < (born.month, born.day)))


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=day.year - years, day=28)


def _birth_for_age(rng: random.Random, age: int, today: date) -> date:
    """A birth date that makes someone exactly `age` on `today`."""
    latest = _years_before(today, age)
    earliest = _years_before(today, age + 1) + timedelta(days=1)
    return earliest + timedelta(days=rng.randrange((latest - earliest).days + 1))


def _random_age(rng: random.Random) -> int:
    """An age drawn from a city community's age pyramid (many middle-aged, some very old)."""
    bands = (
        (0, 13),
        (14, 17),
        (18, 29),
        (30, 44),
        (45, 59),
        (60, 69),
        (70, 79),
        (80, 89),
        (90, 99),
    )
    weights = (13, 4, 14, 22, 22, 12, 8, 4, 1)
    low, high = rng.choices(bands, weights)[0]
    return rng.randint(low, high)


def _surname(rng: random.Random) -> str:
    if rng.random() < 0.01:
        return rng.choice(_COMPOUND_SURNAMES)
    return rng.choices(_SURNAMES, _SURNAME_WEIGHTS)[0]


def _given_name(rng: random.Random, gender: str, born: date) -> str:
    if born.year < 1965 and rng.random() < 0.5:
        return rng.choice(_OLDER_MALE if gender == "male" else _OLDER_FEMALE)
    chars = _GIVEN_MALE if gender == "male" else _GIVEN_FEMALE
    if rng.random() < 0.3:
        return rng.choice(chars)
    return rng.choice(chars) + rng.choice(chars)


def make_identity(
    rng: random.Random,
    *,
    birth_date: date | None = None,
    gender: str | None = None,
    surname: str | None = None,
    local: bool | None = None,
    today: date | None = None,
    dotted_name: bool = False,
) -> SyntheticPerson:
    """Name, gender, birth date and ID number of one fictional person.

    With `dotted_name`, a transliterated Uyghur-style name ("阿依古丽·买买提") instead of
    a Han name; `surname` is ignored then.
    """
    today = today or REFERENCE_DATE
    gender = gender or rng.choice(("male", "female"))
    born = birth_date or _birth_for_age(rng, _random_age(rng), today)
    if dotted_name:
        own = rng.choice(_DOTTED_MALE if gender == "male" else _DOTTED_FEMALE)
        name, family = f"{own}·{rng.choice(_DOTTED_MALE)}", ""
    else:
        family = surname or _surname(rng)
        name = family + _given_name(rng, gender, born)
    if local is None:
        local = rng.random() < 0.7
    region = rng.choice(_LOCAL_REGIONS if local else _NONLOCAL_REGIONS)
    parity = rng.choice("13579" if gender == "male" else "02468")
    sequence = f"{rng.randrange(100):02d}{parity}"
    return SyntheticPerson(name, family, gender, born, region, sequence)


# --------------------------------------------------------------------------- fields


def make_address(rng: random.Random) -> str:
    """A fictional address: road, number, building, unit and room in 示范区, Hangzhou."""
    road, number = rng.choice(_ROADS), rng.randint(1, 300)
    building, unit = rng.randint(1, 30), rng.randint(1, 4)
    room = f"{rng.randint(1, 18)}{rng.randint(1, 4):02d}"
    return f"浙江省杭州市示范区{road}{number}号{building}幢{unit}单元{room}室"


def _phone(rng: random.Random) -> str:
    return rng.choice(_PHONE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def _plate(rng: random.Random) -> str:
    if rng.random() < 0.25:  # new-energy: D (battery) or F (hybrid), then five digits
        return "浙A" + rng.choice("DF") + f"{rng.randrange(10**5):05d}"
    serial = [rng.choice("0123456789") for _ in range(5)]
    for position in rng.sample(range(5), rng.choice((0, 0, 1, 2))):
        serial[position] = rng.choice(_PLATE_LETTERS)
    return "浙A" + "".join(serial)


def _employment(rng: random.Random, age: int, gender: str) -> str:
    retirement_age = 60 if gender == "male" else rng.choice((50, 55))
    if age < 6:
        return "preschool"
    if age < 18 or (age < 23 and rng.random() < 0.7):
        return "student"
    if age >= retirement_age:
        return rng.choices(("retired", "employed", "other"), (85, 5, 10))[0]
    return rng.choices(("employed", "self_employed", "unemployed", "other"), (74, 14, 7, 5))[0]


def _political(rng: random.Random, age: int) -> str:
    if age < 14:
        return "masses"
    if age <= 28 and rng.random() < 0.4:
        return "cyl_member"
    if age < 18:
        return "masses"
    return rng.choices(
        ("masses", "cpc_member", "cpc_probationary", "democratic_party"), (90.5, 8, 0.5, 1)
    )[0]


def _health(rng: random.Random, age: int) -> list[str]:
    chance = 0.05 if age < 40 else 0.2 if age < 60 else 0.5 if age < 75 else 0.7
    if rng.random() >= chance:
        return []
    pool = list(_CONDITIONS if age >= 75 else _CONDITIONS[:10])
    return rng.sample(pool, rng.choice((1, 1, 2, 3)))


def _disability(rng: random.Random, age: int) -> dict[str, Any]:
    if rng.random() >= (0.08 if age >= 65 else 0.025):
        return {"category": "none"}
    return {"category": rng.choice(_DISABILITIES), "grade": rng.randint(1, 4)}


def _welfare(rng: random.Random, age: int, disabled: bool) -> tuple[str, str]:
    """Low-income status and monthly subsidy in yuan; dibao is rare, as in a city."""
    draw = rng.random()
    if draw < 0.02:
        return "dibao", f"{rng.randrange(800, 1400, 10)}.00"
    if draw < 0.03:
        return "dibao_edge", f"{rng.randrange(200, 600, 10)}.00"
    if draw < 0.035 and (age >= 60 or disabled):
        return "tekun", f"{rng.randrange(1500, 2300, 10)}.00"
    return "none", "0.00"


def _integrity(rng: random.Random, person: SyntheticPerson, today: date) -> list[dict[str, str]]:
    if person.age(today) < 18 or rng.random() >= 0.05:
        return []
    earliest = max(_years_before(person.birth_date, -18), date(2015, 1, 1))
    span = max((today - earliest).days, 0)
    records = []
    for _ in range(rng.choice((1, 1, 2))):
        kind = rng.choices(("positive", "negative"), (2, 1))[0]
        records.append(
            {
                "date": (earliest + timedelta(days=rng.randint(0, span))).isoformat(),
                "kind": kind,
                "description": rng.choice(
                    _POSITIVE_DEEDS if kind == "positive" else _NEGATIVE_DEEDS
                ),
            }
        )
    return sorted(records, key=lambda r: r["date"])


def _outside_contact(rng: random.Random, person: SyntheticPerson, today: date) -> dict[str, str]:
    """Someone who does not live with the resident: a child for the old, a parent for the young."""
    age = person.age(today)
    if age < 18:
        relation = rng.choice(("父亲", "母亲"))
    elif age >= 65:
        relation = rng.choice(("儿子", "女儿"))
    else:
        relation = rng.choice(_EXTERNAL_RELATIONS)
    contact_gender = "male" if relation in {"父亲", "儿子", "兄弟"} else "female"
    # Fathers and siblings share the resident's surname, and so do a man's children.
    same_surname = relation in {"父亲", "兄弟", "姐妹"} or (
        relation in {"儿子", "女儿"} and person.gender == "male"
    )
    surname = person.surname if same_surname and person.surname else _surname(rng)
    name = surname + _given_name(rng, contact_gender, person.birth_date)
    return {"name": name, "phone": _phone(rng), "relation": relation}


def _record(
    rng: random.Random,
    person: SyntheticPerson,
    today: date,
    *,
    address: str,
    relation: str,
    ethnicity: str,
    hukou_type: str,
    residence_type: str,
    phone: str,
    contact: dict[str, str],
    living_alone: bool,
) -> dict[str, Any]:
    age = person.age(today)
    disability = _disability(rng, age)
    low_income, subsidy = _welfare(rng, age, disability["category"] != "none")
    veteran_chance = (0.04 if person.gender == "male" else 0.003) if age >= 30 else 0.0
    record: dict[str, Any] = {
        "name": person.name,
        "gender": person.gender,
        "birth_date": person.birth_date.isoformat(),
        "id_number": person.id_number,
        "phone": phone,
        "address": address,
        "hukou_type": hukou_type,
        "residence_type": residence_type,
        "household_relation": relation,
        "ethnicity": ethnicity,
        "religion": rng.choices(_RELIGIONS, _RELIGION_WEIGHTS)[0],
        "health_conditions": _health(rng, age),
        "disability": disability,
        "low_income_status": low_income,
        "subsidy_amount": subsidy,
        "elderly_living_alone": living_alone and age >= 70,
        "veteran_status": rng.random() < veteran_chance,
        "political_status": _political(rng, age),
        "employment_status": _employment(rng, age, person.gender),
        "emergency_contact": contact,
        "integrity_records": _integrity(rng, person, today),
    }
    if 22 <= age <= 75 and rng.random() < 0.3:
        record["vehicle_plate"] = _plate(rng)
    return record


def _hukou(rng: random.Random, local: bool) -> str:
    if local:
        return rng.choices(("local_urban", "local_rural"), (85, 15))[0]
    return rng.choice(("nonlocal_urban", "nonlocal_rural"))


def _residence(rng: random.Random, local: bool) -> str:
    weights = (75, 20, 5) if local else (25, 70, 5)
    return rng.choices(("owner", "tenant", "other"), weights)[0]


def _ethnicity(rng: random.Random) -> str:
    return rng.choices(_ETHNICITIES, _ETHNICITY_WEIGHTS)[0]


def make_person(
    rng: random.Random,
    *,
    birth_date: date | None = None,
    gender: str | None = None,
    surname: str | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """One fictional resident as a record of catalogue fields (see the module docstring).

    A person on their own: the head of their household if an adult, with an emergency
    contact who lives elsewhere; 70 or older, they may be living alone.
    """
    today = today or REFERENCE_DATE
    dotted = surname is None and rng.random() < 0.01
    person = make_identity(
        rng, birth_date=birth_date, gender=gender, surname=surname, today=today, dotted_name=dotted
    )
    age = person.age(today)
    return _record(
        rng,
        person,
        today,
        address=make_address(rng),
        relation="head" if age >= 18 else "child",
        ethnicity="维吾尔族" if dotted else _ethnicity(rng),
        hukou_type=_hukou(rng, person.local),
        residence_type=_residence(rng, person.local),
        phone=_phone(rng),
        contact=_outside_contact(rng, person, today),
        living_alone=age >= 70 and rng.random() < 0.3,
    )


# --------------------------------------------------------------------------- households


@dataclass
class _Member:
    person: SyntheticPerson
    relation: str  # household_relation enum key
    contact: int | None = None  # index of the member to call in an emergency
    contact_word: str = ""  # what that member is to this one: 配偶, 父亲, 女儿...
    guardian: int | None = None  # whose phone a young child's record carries
    parents: tuple[int, ...] = ()  # members this one is a child of


_PARENT_WORD: Final = {"male": "父亲", "female": "母亲"}
_CHILD_WORD: Final = {"male": "儿子", "female": "女儿"}
_HOUSEHOLD_SIZES: Final = (1, 2, 3, 4, 5, 6)
_HOUSEHOLD_WEIGHTS: Final = (15, 25, 30, 15, 10, 5)
_MIN_PARENT_GAP: Final = 20  # years between a parent and their child
_MAX_PARENT_GAP: Final = 42


class _Family:
    """Builds a household member by member, keeping surnames, ages and region coherent."""

    def __init__(self, rng: random.Random, today: date) -> None:
        self.rng = rng
        self.today = today
        self.local = rng.random() < 0.7
        self.members: list[_Member] = []

    def add(
        self,
        relation: str,
        age: int,
        *,
        gender: str | None = None,
        surname: str | None = None,
    ) -> int:
        person = make_identity(
            self.rng,
            birth_date=_birth_for_age(self.rng, max(0, min(age, 100)), self.today),
            gender=gender,
            surname=surname,
            local=self.local if self.rng.random() < 0.9 else None,
            today=self.today,
        )
        self.members.append(_Member(person, relation))
        return len(self.members) - 1

    def age(self, index: int) -> int:
        return self.members[index].person.age(self.today)

    def link(self, member: int, contact: int, word: str | None = None) -> None:
        """Make `contact` the member's emergency contact, naming what they are to them.

        Without `word`, the older of the two is the parent of the other.
        """
        me, them = self.members[member].person, self.members[contact].person
        if word is None:
            older = them.birth_date < me.birth_date
            word = (_PARENT_WORD if older else _CHILD_WORD)[them.gender]
        self.members[member].contact, self.members[member].contact_word = contact, word

    def children_of(
        self,
        parents: Sequence[int],
        count: int,
        relation: str,
        surname: str,
        *,
        min_age: int = 0,
        max_age: int = 40,
    ) -> list[int]:
        """Children of the given parents, aged to fit them (parents 20-42 years older).

        Most take `surname` (the father's); a few the other parent's.
        """
        youngest_parent = min(self.age(p) for p in parents)
        high = max(0, min(youngest_parent - _MIN_PARENT_GAP, max_age))
        low = min(high, max(min_age, youngest_parent - _MAX_PARENT_GAP))
        others = [self.members[p].person.surname for p in parents]
        others = [name for name in others if name and name != surname] or [surname]
        added = []
        for _ in range(count):
            name = surname if self.rng.random() < 0.95 else self.rng.choice(others)
            child = self.add(relation, self.rng.randint(low, high), surname=name)
            self.members[child].guardian = parents[0]
            self.members[child].parents = tuple(parents)
            self.link(child, parents[0])
            added.append(child)
        return added


def _young_family(family: _Family, size: int) -> None:
    """A head with (usually) a spouse, children and possibly the head's parents."""
    rng = family.rng
    spouse_count = 1 if rng.random() < 0.9 else 0
    rest = size - 1 - spouse_count
    elders = min(rest, rng.choice((0, 0, 1, 2))) if size >= 3 else 0
    children = rest - elders
    head_age = rng.randint(26, 52) if children else rng.randint(22, 60)
    if elders:
        head_age = min(head_age, 60)
    head = family.add("head", head_age, gender="male" if rng.random() < 0.65 else "female")
    head_person = family.members[head].person
    parents = [head]
    if spouse_count:
        gender = "female" if head_person.gender == "male" else "male"
        spouse = family.add("spouse", head_age + rng.randint(-4, 4), gender=gender)
        family.link(head, spouse, "配偶")
        family.link(spouse, head, "配偶")
        parents.append(spouse)
    father = next((p for p in parents if family.members[p].person.gender == "male"), head)
    surname = family.members[father].person.surname or head_person.surname
    kids = family.children_of(parents, children, "child", surname, max_age=35)
    for index, elder_gender in enumerate(("male", "female")[:elders]):
        # The head's own parents (or, for a young head, sometimes a grandparent).
        grand = family.age(head) <= 35 and rng.random() < 0.2
        gap = rng.randint(45, 60) if grand else rng.randint(22, 35)
        relation = "grandparent" if grand else "parent"
        elder = family.add(
            relation,
            min(family.age(head) + gap, 98),
            gender=elder_gender,
            surname=head_person.surname if index == 0 else None,
        )
        grandchild_word = {"male": "孙子", "female": "孙女"}[head_person.gender]
        family.link(elder, head, grandchild_word if grand else None)
    if not spouse_count:
        adult_kids = [k for k in kids if family.age(k) >= 18]
        if adult_kids:
            family.link(head, adult_kids[0])


def _elder_family(family: _Family, size: int) -> None:
    """An older head (and spouse) with a grown-up child's family."""
    rng = family.rng
    head = family.add(
        "head", rng.randint(58, 88), gender="male" if rng.random() < 0.6 else "female"
    )
    head_person = family.members[head].person
    spouse_count = 1 if size >= 3 and rng.random() < 0.75 else 0
    parents = [head]
    if spouse_count:
        gender = "female" if head_person.gender == "male" else "male"
        spouse = family.add("spouse", family.age(head) + rng.randint(-5, 3), gender=gender)
        family.link(head, spouse, "配偶")
        family.link(spouse, head, "配偶")
        parents.append(spouse)
    father = next((p for p in parents if family.members[p].person.gender == "male"), None)
    surname = family.members[father].person.surname if father is not None else None
    # Old enough to have children of their own if the household has grandchildren.
    (child,) = family.children_of(
        parents, 1, "child", surname or _surname(rng), min_age=24, max_age=60
    )
    if not spouse_count:
        family.link(head, child)
    rest = size - 1 - spouse_count - 1
    child_person = family.members[child].person
    in_laws = 1 if rest >= 2 and rng.random() < 0.7 else 0
    grand_parents = [child]
    if in_laws:  # the child's spouse: a son- or daughter-in-law, "other" to the head
        gender = "female" if child_person.gender == "male" else "male"
        partner = family.add("other", family.age(child) + rng.randint(-4, 4), gender=gender)
        family.link(partner, child, "配偶")
        grand_parents.append(partner)
    father = next((p for p in grand_parents if family.members[p].person.gender == "male"), None)
    grand_surname = family.members[father].person.surname if father is not None else None
    family.children_of(
        grand_parents, rest - in_laws, "grandchild", grand_surname or _surname(rng), max_age=30
    )


def make_household(
    rng: random.Random,
    *,
    address: str,
    size_hint: int | None = None,
    today: date | None = None,
) -> list[dict[str, Any]]:
    """A fictional household of 1-6 people at `address`, with coherent relations.

    A head (the first record), usually a spouse, children (often minors) and sometimes
    the head's parents; or an older couple with a grown-up child's family. Parents are
    20-42 years older than their children, children share the father's surname, young
    children (under 12) carry a parent's phone number, emergency contacts point at
    another member, and only someone 70 or older living on their own is marked as an
    elderly person living alone. `size_hint` is clamped to 1-6.
    """
    today = today or REFERENCE_DATE
    size = rng.choices(_HOUSEHOLD_SIZES, _HOUSEHOLD_WEIGHTS)[0] if size_hint is None else size_hint
    size = max(1, min(size, 6))
    family = _Family(rng, today)
    if size == 1:
        age = rng.choice((rng.randint(22, 69), rng.randint(70, 95)))
        family.add("head", age)
    elif rng.random() < (0.3 if size >= 3 else 0.2):
        _elder_family(family, size)
    else:
        _young_family(family, size)

    head = family.members[0].person
    hukou_type = _hukou(rng, head.local)
    residence_type = _residence(rng, head.local)
    ethnicities: list[str] = []
    for member in family.members:
        if member.parents:  # children take a parent's ethnicity
            ethnicities.append(ethnicities[rng.choice(member.parents)])
        elif ethnicities and member.relation in {"spouse", "other"} and rng.random() < 0.15:
            ethnicities.append(_ethnicity(rng))  # married into the family
        else:
            ethnicities.append(ethnicities[0] if ethnicities else _ethnicity(rng))
    phones = [_phone(rng) for _ in family.members]
    for index, member in enumerate(family.members):
        if member.guardian is not None and member.person.age(today) < 12:
            phones[index] = phones[member.guardian]  # a young child's record: a parent's phone
    records = []
    for index, member in enumerate(family.members):
        person = member.person
        if member.contact is None:
            contact = _outside_contact(rng, person, today)
        else:
            other = family.members[member.contact].person
            contact = {
                "name": other.name,
                "phone": phones[member.contact],
                "relation": member.contact_word,
            }
        records.append(
            _record(
                rng,
                person,
                today,
                address=address,
                relation=member.relation,
                ethnicity=ethnicities[index],
                hukou_type=hukou_type if person.local == head.local else _hukou(rng, person.local),
                residence_type=residence_type,
                phone=phones[index],
                contact=contact,
                living_alone=size == 1,
            )
        )
    return records
