"""Generated people: valid, coherent, deterministic, and visibly no one's."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest

from vault.catalogue import default_catalogue
from vault.synthetic import REFERENCE_DATE, make_household, make_identity, make_person
from vault.validators import id_birth_date, id_gender, validate_record

CATALOGUE = default_catalogue()
ADDRESS = "浙江省杭州市示范区桂语路18号3幢2单元501室"
PEOPLE_SEEDS = range(400)
HOUSEHOLD_SEEDS = range(300)
OPTIONAL = {"vehicle_plate"}  # only residents with a car have one


def age(record: dict[str, Any], today: date = REFERENCE_DATE) -> int:
    born = date.fromisoformat(record["birth_date"])
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def with_conditions(group: list[dict[str, Any]]) -> float:
    return sum(bool(p["health_conditions"]) for p in group) / len(group)


def assert_valid(record: dict[str, Any]) -> None:
    normal, problems = validate_record(CATALOGUE, record)
    assert problems == [], problems
    assert normal == record  # generated values are already in normal form


@pytest.fixture(scope="module")
def people() -> list[dict[str, Any]]:
    return [make_person(random.Random(seed)) for seed in PEOPLE_SEEDS]


@pytest.fixture(scope="module")
def households() -> list[list[dict[str, Any]]]:
    return [make_household(random.Random(seed), address=ADDRESS) for seed in HOUSEHOLD_SEEDS]


def test_every_person_is_valid_and_complete(people: list[dict[str, Any]]) -> None:
    for person in people:
        assert_valid(person)
        assert set(CATALOGUE.names) - OPTIONAL <= set(person) <= set(CATALOGUE.names)
    assert any("vehicle_plate" in p for p in people)


def test_every_household_member_is_valid(households: list[list[dict[str, Any]]]) -> None:
    for household in households:
        for person in household:
            assert_valid(person)
            assert set(CATALOGUE.names) - OPTIONAL <= set(person)


def test_same_seed_same_people() -> None:
    assert make_person(random.Random(42)) == make_person(random.Random(42))
    assert make_household(random.Random(42), address=ADDRESS) == make_household(
        random.Random(42), address=ADDRESS
    )
    assert make_person(random.Random(1)) != make_person(random.Random(2))


def test_requested_identity_is_respected() -> None:
    born = date(1950, 3, 7)
    person = make_person(random.Random(3), birth_date=born, gender="female", surname="欧阳")
    assert person["birth_date"] == "1950-03-07"
    assert person["gender"] == "female"
    assert person["name"].startswith("欧阳")
    assert id_birth_date(person["id_number"]) == born
    assert id_gender(person["id_number"]) == "female"
    assert_valid(person)


def test_ages_follow_the_given_today() -> None:
    today = date(2020, 6, 1)
    for seed in range(50):
        person = make_person(random.Random(seed), today=today)
        assert date.fromisoformat(person["birth_date"]) <= today
        assert_valid(person)


def test_id_numbers_use_unallocated_county_codes(people: list[dict[str, Any]]) -> None:
    """Prefectures are real, the county digits (91-96) are not: nobody holds these numbers."""
    for person in people:
        assert person["id_number"][4:6] in {"91", "92", "93", "94", "95", "96"}
    identity = make_identity(random.Random(9), local=True)
    assert identity.id_number.startswith("3301")


def test_distributions_look_like_a_community(people: list[dict[str, Any]]) -> None:
    han = sum(p["ethnicity"] == "汉族" for p in people) / len(people)
    no_religion = sum(p["religion"] == "none" for p in people) / len(people)
    dibao = sum(p["low_income_status"] != "none" for p in people) / len(people)
    assert han > 0.8
    assert no_religion > 0.75
    assert dibao < 0.1
    for person in people:
        if person["elderly_living_alone"]:
            assert age(person) >= 70
        if person["low_income_status"] == "none":
            assert person["subsidy_amount"] == "0.00"
    old = [p for p in people if age(p) >= 70]
    young = [p for p in people if age(p) < 40]
    assert with_conditions(old) > with_conditions(young)


def test_household_structure(households: list[list[dict[str, Any]]]) -> None:
    sizes = {len(h) for h in households}
    assert sizes == {1, 2, 3, 4, 5, 6}
    minors = 0
    for household in households:
        head, *others = household
        assert head["household_relation"] == "head"
        assert all(p["household_relation"] != "head" for p in others)
        assert all(p["address"] == ADDRESS for p in household)
        assert sum(p["household_relation"] == "spouse" for p in household) <= 1
        head_age = age(head)
        for person in others:
            relation = person["household_relation"]
            if relation == "child":
                assert head_age - age(person) >= 20
            if relation in {"parent", "grandparent"}:
                assert age(person) - head_age >= 20
            if relation == "grandchild":
                assert head_age - age(person) >= 40
            if relation == "spouse":
                assert person["gender"] != head["gender"]
        for person in household:
            assert person["elderly_living_alone"] == (len(household) == 1 and age(person) >= 70)
        minors += sum(age(p) < 14 for p in household)
    assert minors > 0


def test_emergency_contacts_are_household_members_when_possible(
    households: list[list[dict[str, Any]]],
) -> None:
    for household in households:
        phones = {p["name"]: p["phone"] for p in household}
        for person in household:
            contact = person["emergency_contact"]
            if len(household) > 1 and contact["name"] in phones:
                assert contact["phone"] == phones[contact["name"]]
            if person["household_relation"] == "spouse":
                assert contact["name"] == household[0]["name"]
                assert contact["relation"] == "配偶"


def test_young_children_carry_a_parents_phone(households: list[list[dict[str, Any]]]) -> None:
    seen = 0
    for household in households:
        adults = {p["phone"] for p in household if age(p) >= 18}
        for person in household:
            if age(person) < 12 and person["household_relation"] in {"child", "grandchild"}:
                assert person["phone"] in adults
                seen += 1
    assert seen > 0


def test_size_hint_is_clamped() -> None:
    assert len(make_household(random.Random(1), address=ADDRESS, size_hint=0)) == 1
    assert len(make_household(random.Random(1), address=ADDRESS, size_hint=9)) == 6
    for size in range(1, 7):
        for seed in range(20):
            household = make_household(random.Random(seed), address=ADDRESS, size_hint=size)
            assert len(household) == size
