"""Properties of decisions for random subjects, purposes, actions, targets and field lists.

These run on the embedded engine alone (no OPA binary needed): the decision table in
test_policies.py already holds it to the OPA server.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import CachedEngine, Decision, RowScope, Treatment, load_bundle
from policies.cache import cache_key
from policies.demo import demo_bundle, demo_district, demo_subjects
from policies.embedded import EmbeddedEngine
from policies.inputs import ACTIONS, SUBJECT_TYPES, TARGETS, catalogue_fields, decision_input
from policies.interfaces import TREATMENT_RANK

DATA = load_bundle().data
PURPOSES = sorted(DATA["purposes"])
FIELDS = catalogue_fields()
SUBJECTS = demo_subjects()
ORGANISATIONS = sorted({s["organisation"] for s in SUBJECTS.values() if "organisation" in s})
JURISDICTION_IDS = {
    level: sorted({i for s in SUBJECTS.values() for i in s["jurisdiction"][level]})
    for level in ("communities", "grids", "buildings")
}
PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12)
jurisdictions = st.fixed_dictionaries(
    {level: st.lists(st.sampled_from(ids), unique=True) for level, ids in JURISDICTION_IDS.items()}
)
random_subjects = st.fixed_dictionaries(
    {
        "type": st.sampled_from(SUBJECT_TYPES) | words,
        "roles": st.lists(words, max_size=2),
        "jurisdiction": jurisdictions,
    },
    optional={"organisation": st.sampled_from(ORGANISATIONS) | words},
)
subjects = st.sampled_from(list(SUBJECTS.values())) | random_subjects
purposes = st.sampled_from(PURPOSES) | st.none() | st.just("") | words
actions = st.sampled_from(ACTIONS) | words
targets = st.sampled_from(TARGETS) | st.none()
field_lists = st.lists(st.sampled_from(FIELDS), unique_by=lambda f: f["name"], min_size=1)


def _mandated(subject: Mapping[str, Any]) -> list[str]:
    """The purposes the data document grants a demo subject (the type's, or its own)."""
    mandates = DATA["mandates"]
    own = demo_district()["mandates"].get(subject.get("organisation"), {})
    if own.get("type") == subject["type"] and "purposes" in own:
        return list(own["purposes"])
    return list(mandates["subject_types"].get(subject["type"], {}).get("purposes", []))


MANDATED = [(subject, purpose) for subject in SUBJECTS.values() for purpose in _mandated(subject)]


def _input(
    subject: Mapping[str, Any],
    purpose: str | None,
    action: str,
    target: str | None,
    fields: list[dict[str, Any]],
) -> dict[str, Any]:
    return decision_input(subject, purpose=purpose, action=action, target=target, fields=fields)


# Half the cases are a demo subject with a purpose its mandate grants, so that allowed
# decisions are common; the rest are anything at all.
inputs = st.one_of(
    st.builds(_input, subjects, purposes, actions, targets, field_lists),
    st.sampled_from(MANDATED).flatmap(
        lambda pair: st.builds(
            _input, st.just(pair[0]), st.just(pair[1]), actions, targets, field_lists
        )
    ),
)


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddedEngine]:
    with EmbeddedEngine(demo_bundle()) as embedded:
        yield embedded


def _ceiling(field: Mapping[str, Any], purpose: Mapping[str, Any]) -> int:
    """The most a purpose's rules allow for a field, from the data, in Python."""
    rule = purpose.get("fields", {}).get(field["name"])
    if rule is None:
        rule = purpose.get("categories", {}).get(field["category"], "denied")
    rank = TREATMENT_RANK.get(Treatment(rule), 0) if rule in set(Treatment) else 0
    if rank == TREATMENT_RANK[Treatment.GENERALISED] and not field.get("generalise"):
        rank = TREATMENT_RANK[Treatment.MASKED]
    return rank


@PROPERTIES
@given(case=inputs)
def test_decisions_keep_their_promises(engine: EmbeddedEngine, case: dict[str, Any]) -> None:
    decision = engine.evaluate(case)
    names = {f["name"] for f in case["fields"]}
    assert set(decision.fields) == names
    assert all(isinstance(t, Treatment) for t in decision.fields.values())
    if not decision.allow:
        assert set(decision.fields.values()) == {Treatment.DENIED}
        assert decision.rows.scope is RowScope.NONE
        assert decision.rows.communities == decision.rows.grids == decision.rows.buildings == ()
        assert decision.rows.legal_basis is None
        assert not decision.obligations.justification_required
        return
    subject = case["subject"]
    if subject["type"] == "resident":
        assert case.get("target") in {"self", "child"}
        assert set(decision.fields.values()) == {Treatment.CLEAR}
        return
    purpose = DATA["purposes"][case["purpose"]]
    assert subject["type"] in purpose["recipient_types"]
    assert case["action"] in purpose["actions"]
    by_name = {f["name"]: f for f in case["fields"]}
    for name, treatment in decision.fields.items():
        assert TREATMENT_RANK[treatment] <= _ceiling(by_name[name], purpose), name
        if treatment is Treatment.GENERALISED:
            assert by_name[name]["generalise"], name
    # Rows never reach beyond the subject's own jurisdiction.
    for level in ("communities", "grids", "buildings"):
        assert set(getattr(decision.rows, level)) <= set(subject["jurisdiction"][level])
    assert decision.rows.consent_required == (purpose["legal_basis"] == "consent")
    sensitive_shown = any(
        by_name[n]["sensitive"] and t is not Treatment.DENIED for n, t in decision.fields.items()
    )
    if case["action"] == "export" and sensitive_shown:
        assert decision.obligations.justification_required
        assert decision.obligations.rate_class == "bulk"


@PROPERTIES
@given(case=inputs)
def test_decisions_minimise(engine: EmbeddedEngine, case: dict[str, Any]) -> None:
    decision = engine.evaluate(case)
    subject = case["subject"]
    if not decision.allow or subject["type"] == "resident":
        assert decision.levels == {}
        return
    purpose = DATA["purposes"][case["purpose"]]
    by_name = {f["name"]: f for f in case["fields"]}
    # Minimisation: organisations see pseudonyms, workers vault ids; a cross-system key
    # reaches a pseudonymous recipient in clear only where the purpose declares it; a
    # generalised field is shown at a level its catalogue entry offers.
    kind = DATA["subject_types"][subject["type"]]["kind"]
    assert decision.identifier == ("pseudonym" if kind == "organisation" else "vault-id")
    declared = purpose.get("linking_fields", {})
    for name, treatment in decision.fields.items():
        field = by_name[name]
        if decision.pseudonymous and field.get("linkable") and name not in declared:
            assert TREATMENT_RANK[treatment] <= TREATMENT_RANK[Treatment.MASKED], name
        if treatment is Treatment.GENERALISED:
            assert decision.levels[name] in field["generalise"], name
            wanted = purpose.get("generalise", {}).get(name)
            if wanted in field["generalise"]:
                assert decision.levels[name] == wanted
            else:  # no level named: the least revealing one
                assert decision.levels[name] == field["generalise"][-1]
        explained = decision.explanation["fields"][name]
        assert explained["treatment"] == str(treatment)
        if "linking-cap" in explained["adjustments"]:
            assert decision.pseudonymous and field.get("linkable") and name not in declared
        if explained.get("linking_key"):
            assert decision.pseudonymous and name in declared
    assert set(decision.levels) == {
        n for n, t in decision.fields.items() if t is Treatment.GENERALISED
    }


@PROPERTIES
@given(case=inputs)
def test_cache_returns_the_same_decision(engine: EmbeddedEngine, case: dict[str, Any]) -> None:
    cached = CachedEngine(engine, max_entries=8)
    first = cached.evaluate(case)
    again = cached.evaluate(case)
    direct = engine.evaluate(case)
    assert again == first  # the same evaluation, id included
    assert again.from_cache and not first.from_cache
    assert again.to_result() == direct.to_result()
    assert cached.stats().hits == 1 and cached.stats().misses == 1


catalogue_noise = st.fixed_dictionaries(
    {
        "label": st.fixed_dictionaries({"zh": words, "en": words}),
        "grade": st.sampled_from(["L1", "L2", "L3", "L4"]),
        "type": words,
        "searchable": st.booleans(),
        "values": st.dictionaries(words, st.fixed_dictionaries({"zh": words, "en": words})),
    }
)


@PROPERTIES
@given(case=inputs, noise=catalogue_noise)
def test_decisions_read_only_the_keyed_field_metadata(
    engine: EmbeddedEngine, case: dict[str, Any], noise: dict[str, Any]
) -> None:
    """CachedEngine keys on FIELD_METADATA_READ alone; no other metadata may matter."""
    noisy = dict(case, fields=[{**field, **noise} for field in case["fields"]])
    assert cache_key(noisy) == cache_key(case)
    assert engine.evaluate(noisy).to_result() == engine.evaluate(case).to_result()


@PROPERTIES
@given(
    case=inputs,
    odd=st.integers() | st.booleans() | st.lists(st.integers(), max_size=2),
    part=st.sampled_from(["purpose", "action", "target"]),
)
def test_non_text_parts_count_as_absent(
    engine: EmbeddedEngine, case: dict[str, Any], odd: object, part: str
) -> None:
    """cache_key folds a non-string purpose, action or target into None: so must the policy."""
    odd_case, absent = dict(case, **{part: odd}), dict(case, **{part: None})
    assert cache_key(odd_case) == cache_key(absent)
    assert engine.evaluate(odd_case).to_result() == engine.evaluate(absent).to_result()


def _no_civil_affairs_mandate() -> dict[str, Any]:
    district = demo_district() | {"revision": "revoked"}
    district["mandates"]["org_civil_affairs"]["purposes"] = []
    return district


@pytest.fixture(scope="module")
def swappable() -> Iterator[EmbeddedEngine]:
    """An engine of its own, since this test changes its data."""
    with EmbeddedEngine(demo_bundle()) as embedded:
        yield embedded


@settings(max_examples=40, deadline=None)
@given(case=inputs)
def test_cache_key_follows_the_revision(swappable: EmbeddedEngine, case: dict[str, Any]) -> None:
    civil_affairs = decision_input(
        SUBJECTS["civil_affairs"], purpose="subsidy-review", action="read", fields=FIELDS
    )
    shipped = demo_district()
    cached = CachedEngine(swappable)
    before: Decision = cached.evaluate(civil_affairs)
    cached.evaluate(case)
    old_revision = cached.revision
    try:
        new_revision = swappable.load_district(_no_civil_affairs_mandate())
        assert new_revision != old_revision == before.revision
        after = cached.evaluate(civil_affairs)
        assert not after.from_cache
        assert after.revision == new_revision and not after.allow
        assert before.allow
        stats = cached.stats()
        assert stats.revision == new_revision
        assert stats.entries == 1 and stats.invalidations == 1
    finally:
        assert swappable.load_district(shipped) == old_revision
