"""Policies: the Rego checks, what users notice, and the decision table on both engines.

OPA-dependent tests find the binary through OPA_BIN (`.ci/install-opa` prints its path).
Without it they are skipped, except under CI=true, where they fail: CI must compare the
embedded engine with a real OPA server. One OPA server is started per test session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from policies import (
    CachedEngine,
    Decision,
    PolicyEngineFault,
    PolicyInputError,
    PolicyUnavailable,
    RowScope,
    StalePolicyError,
    Treatment,
    decision_input,
    load_bundle,
)
from policies.build_wasm import WASM_PATH, compile_wasm, source_modules
from policies.bundle import PolicyBundle, build_bundle, policy_revision
from policies.demo import demo_bundle, demo_district, demo_subjects
from policies.embedded import EmbeddedEngine, shipped_wasm
from policies.explain import Explainer
from policies.inputs import ACTIONS, TARGETS, catalogue_fields
from policies.opa_server import OpaServerEngine, free_port, local_opa_server
from vault.catalogue import default_catalogue

POLICIES = Path(__file__).resolve().parents[1] / "policies"
IN_CI = os.environ.get("CI", "").lower() == "true"
COVERAGE_FLOOR = 90.0
SUBJECTS = demo_subjects()


def _opa_bin() -> str:
    path = os.environ.get("OPA_BIN", "")
    if path and os.access(path, os.X_OK):
        return path
    why = f"OPA_BIN={path!r} is not an executable" if path else "OPA_BIN is not set"
    if IN_CI:
        pytest.fail(f"CI=true but {why}: run .ci/install-opa and export OPA_BIN")
    pytest.skip(f"{why} (run .ci/install-opa)")


def _opa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_opa_bin(), *args], capture_output=True, text=True, check=False, timeout=120
    )


@pytest.fixture(scope="session")
def engine() -> Iterator[EmbeddedEngine]:
    with EmbeddedEngine(demo_bundle()) as embedded:
        yield embedded


@pytest.fixture(scope="session")
def opa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real OPA server running the shipped policy as a bundle; (url, decision log)."""
    opa = _opa_bin()
    tmp = tmp_path_factory.mktemp("opa")
    bundle = build_bundle(opa, load_bundle(), tmp / "bundle.tar.gz")
    log = tmp / "opa.log"
    with local_opa_server(opa, bundle=bundle, log=log) as url:
        yield url, log


@pytest.fixture(scope="session")
def server_engine(opa_server: tuple[str, Path]) -> Iterator[OpaServerEngine]:
    url, _ = opa_server
    with OpaServerEngine(url, expected_revision=load_bundle().revision, timeout=10) as server:
        server.load_district(demo_district())  # what the vault puts there from its database
        yield server


def _decide(engine: EmbeddedEngine, label: str, purpose: str | None, **kw: Any) -> Decision:
    return engine.evaluate(decision_input(SUBJECTS[label], purpose=purpose, **kw))


# --- (1) the Rego itself, by the real OPA ---------------------------------------------


def test_rego_is_formatted() -> None:
    done = _opa("fmt", "-l", "--fail", str(POLICIES))
    assert done.returncode == 0, f"opa fmt would change: {done.stdout}{done.stderr}"


def test_rego_passes_strict_check() -> None:
    done = _opa("check", "--strict", str(POLICIES))
    assert done.returncode == 0, done.stderr


def test_rego_tests_pass_with_coverage() -> None:
    done = _opa("test", "--coverage", str(POLICIES))
    assert done.returncode == 0, f"opa test failed:\n{_opa('test', '-v', str(POLICIES)).stdout}"
    report = json.loads(done.stdout)
    assert report["coverage"] >= COVERAGE_FLOOR, f"Rego coverage {report['coverage']:.1f}%"
    policies = {path for path in report["files"] if not path.endswith("_test.rego")}
    for path in policies:
        assert Path(path).with_name(Path(path).stem + "_test.rego").exists(), f"{path} untested"


# --- (2) behaviour a user would notice, on the embedded engine ------------------------


def test_civil_affairs_subsidy_review_sees_welfare_not_religion(engine: EmbeddedEngine) -> None:
    decision = _decide(engine, "civil_affairs", "subsidy-review", action="read")
    assert decision.allow and decision.reason.code == "mandate"
    welfare = [spec.name for spec in default_catalogue().by_category("welfare")]
    assert {decision.treatment(name) for name in welfare} == {Treatment.CLEAR}
    for name in ("religion", "political_status", "ethnicity", "integrity_records"):
        assert decision.treatment(name) is Treatment.DENIED, name
    assert decision.rows.legal_basis == "statutory-duty"
    assert not decision.rows.consent_required
    assert decision.rows.communities == ("cm_hexie", "cm_xingfu")


def test_property_company_sees_masked_phone_and_building_with_consent(
    engine: EmbeddedEngine,
) -> None:
    decision = _decide(engine, "anju_property", "property-notice", action="list")
    catalogue = default_catalogue()
    assert decision.allow
    assert decision.visible_fields
    for name in decision.visible_fields:
        assert catalogue[name].category == "contact", name
    # A notice needs the building, not the room: the address at its building level.
    assert decision.treatment("phone") is Treatment.MASKED
    assert decision.treatment("address") is Treatment.GENERALISED
    assert decision.levels == {"address": "building"}
    assert decision.identifier == "pseudonym"
    assert decision.rows.consent_required and decision.rows.legal_basis == "consent"
    assert decision.rows.scope is RowScope.JURISDICTION
    assert decision.rows.buildings == tuple(SUBJECTS["anju_property"]["jurisdiction"]["buildings"])
    assert decision.rows.communities == () and decision.rows.grids == ()


def test_grid_worker_scope_is_own_grids(engine: EmbeddedEngine) -> None:
    decision = _decide(engine, "grid_worker_xf_1", "grid-service", action="read")
    assert decision.allow
    assert decision.rows.scope is RowScope.JURISDICTION
    assert decision.rows.grids == ("gd_xf_1",)
    assert decision.rows.communities == () and decision.rows.buildings == ()
    catalogue = default_catalogue()
    for name, treatment in decision.fields.items():
        if catalogue[name].sensitive and name != "id_number":
            assert treatment in {Treatment.MASKED, Treatment.DENIED}, name


def test_resident_sees_own_record_in_clear(engine: EmbeddedEngine) -> None:
    decision = _decide(engine, "resident_guardian", None, action="read", target="self")
    assert decision.allow and decision.reason.code == "self"
    assert set(decision.fields) == set(default_catalogue().names)
    assert set(decision.fields.values()) == {Treatment.CLEAR}
    assert decision.rows.scope is RowScope.SELF
    child = _decide(engine, "resident_guardian", None, action="read", target="child")
    assert child.allow and child.reason.code == "guardian"
    assert child.rows.scope is RowScope.CHILDREN
    other = _decide(engine, "resident_guardian", None, action="read", target="other")
    assert not other.allow and other.reason.code == "not-own-record"


def test_auditor_is_denied_values(engine: EmbeddedEngine) -> None:
    decision = _decide(engine, "auditor", "subsidy-review", action="read")
    assert not decision.allow and decision.reason.code == "outside-role"
    assert "access records" in decision.reason.en
    assert set(decision.fields.values()) == {Treatment.DENIED}
    assert decision.rows.scope is RowScope.NONE


@pytest.mark.parametrize(
    ("label", "purpose", "code"),
    [
        ("civil_affairs", "marketing", "unknown-purpose"),
        ("civil_affairs", None, "purpose-required"),
        ("civil_affairs", "", "purpose-required"),
        ("health", "subsidy-review", "no-mandate"),
        ("anju_property", "subsidy-review", "no-mandate"),
        ("grid_worker_xf_1", "counter-service", "no-mandate"),
        ("oc_xingfu", "property-notice", "no-mandate"),
    ],
)
def test_denials_say_why(
    engine: EmbeddedEngine, label: str, purpose: str | None, code: str
) -> None:
    decision = _decide(engine, label, purpose, action="read")
    assert not decision.allow
    assert decision.reason.code == code
    assert decision.reason.zh and decision.reason.en
    assert decision.rules == (f"deny:{code}",)


def test_export_of_sensitive_fields_needs_justification(engine: EmbeddedEngine) -> None:
    export = _decide(engine, "civil_affairs", "subsidy-review", action="export")
    assert export.obligations.justification_required
    assert export.obligations.rate_class == "bulk"
    read = _decide(engine, "civil_affairs", "subsidy-review", action="read")
    assert not read.obligations.justification_required
    assert read.obligations.rate_class == "sensitive"


def test_decision_covers_the_requested_fields_only(engine: EmbeddedEngine) -> None:
    fields = [f for f in catalogue_fields() if f["name"] in {"name", "religion"}]
    decision = engine.evaluate(
        decision_input(
            SUBJECTS["civil_affairs"], purpose="subsidy-review", action="read", fields=fields
        )
    )
    assert dict(decision.fields) == {"name": Treatment.CLEAR, "religion": Treatment.DENIED}


def test_duplicate_fields_are_refused(engine: EmbeddedEngine) -> None:
    fields = catalogue_fields()
    with pytest.raises(PolicyInputError):
        engine.evaluate(
            decision_input(SUBJECTS["civil_affairs"], action="read", fields=[*fields, fields[0]])
        )


def test_every_evaluation_has_its_own_id(engine: EmbeddedEngine) -> None:
    first = _decide(engine, "civil_affairs", "subsidy-review", action="read")
    second = _decide(engine, "civil_affairs", "subsidy-review", action="read")
    assert first.to_result() == second.to_result()
    assert first.evaluation_id != second.evaluation_id
    assert first != second  # the evaluation id is part of a decision's identity


def test_malformed_decisions_are_refused(engine: EmbeddedEngine) -> None:
    good = _decide(engine, "civil_affairs", "subsidy-review", action="read").to_result()
    denied = _decide(engine, "auditor", "subsidy-review", action="read").to_result()
    bad_results: list[object] = [
        None,
        {},
        {**good, "allow": "yes"},
        {**good, "fields": {"name": "visible"}},
        {**good, "rows": {**good["rows"], "scope": "everything"}},
        {**good, "rows": {**good["rows"], "grids": [1]}},
        {**denied, "fields": {**denied["fields"], "name": "clear"}},
        {**denied, "rows": {**denied["rows"], "scope": "all"}},
    ]
    for result in bad_results:
        with pytest.raises(PolicyEngineFault):
            Decision.from_result(result, revision="rev-x", evaluation_id="e")
    with pytest.raises(PolicyEngineFault):
        Decision.from_result(good, revision="rev-x", evaluation_id="e", field_names=frozenset())
    assert Decision.from_result(good, revision="rev-x", evaluation_id="e").to_result() == good


# --- the data document ------------------------------------------------------------------


def test_policy_data_names_only_catalogue_fields_and_categories() -> None:
    catalogue = default_catalogue()
    data = load_bundle().data
    for code, purpose in data["purposes"].items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", code)
        assert set(purpose["fields"]) <= set(catalogue.names), code
        assert set(purpose["categories"]) <= set(catalogue.categories), code
        assert purpose["legal_reference"]["zh"] and purpose["legal_reference"]["en"]
        assert purpose["retention_days"] > 0 and purpose["notice_version"]
        assert set(purpose["recipient_types"]) <= set(data["subject_types"])
    assert any(p["legal_basis"] == "statutory-duty" for p in data["purposes"].values())
    assert data["purposes"]["property-notice"]["legal_basis"] == "consent"


def test_revision_names_policy_and_data() -> None:
    bundle = load_bundle()
    assert re.fullmatch(r"rev-[0-9a-f]{16}", bundle.revision)
    assert load_bundle().revision == bundle.revision
    reordered = dict(reversed(list(bundle.data.items())))
    assert bundle.with_data(reordered).revision == bundle.revision
    changed = bundle.data
    changed["mandates"]["subject_types"]["department"]["purposes"] = ["subsidy-review"]
    assert bundle.with_data(changed).revision != bundle.revision
    # The district's data is named apart, after the policy's revision.
    district = bundle.with_district(demo_district() | {"revision": "42"})
    assert district.revision == bundle.revision
    assert district.decision_revision == f"{bundle.revision}.d42"
    edited = dict(bundle.modules)
    edited["vault/decision/decision.rego"] += "\n"
    assert policy_revision(edited, bundle.data) != bundle.revision


# --- (5) the shipped wasm is current --------------------------------------------------


def test_shipped_wasm_matches_its_sources() -> None:
    shipped_wasm(load_bundle())  # raises StalePolicyError when the Rego changed
    stale = PolicyBundle(
        modules={**load_bundle().modules, "vault/extra/extra.rego": "package vault.extra\n"},
        data_json=load_bundle().data_json,
    )
    with pytest.raises(StalePolicyError):
        EmbeddedEngine(stale)


def test_shipped_wasm_is_what_opa_builds_today() -> None:
    built = compile_wasm(_opa_bin(), source_modules())
    assert built == (POLICIES / WASM_PATH).read_bytes(), "run python -m policies.build_wasm"


# --- (3) the decision table: embedded engine and OPA server agree ---------------------


def _table() -> list[tuple[tuple[str, str | None, str, str], dict[str, Any]]]:
    purposes = [*sorted(load_bundle().data["purposes"]), None, "marketing"]
    fields = catalogue_fields()
    return [
        (
            (label, purpose, action, target),
            decision_input(subject, purpose=purpose, action=action, target=target, fields=fields),
        )
        for label, subject in SUBJECTS.items()
        for purpose in purposes
        for action in ACTIONS
        for target in TARGETS
    ]


def test_decision_table_is_identical_on_both_engines(
    engine: EmbeddedEngine, server_engine: OpaServerEngine
) -> None:
    """Every demo subject x purpose (and none, and an unknown one) x action x target.

    The server evaluates the table in batches (one query per chunk, as for dry runs);
    a sample also goes through the per-request path the gate uses.
    """
    table = _table()
    cases = [case for _, case in table]
    with ThreadPoolExecutor(max_workers=1) as background:  # OPA works while we do
        batch = background.submit(server_engine.evaluate_many, cases)
        embedded = [engine.evaluate(case) for case in cases]
        served = batch.result()
    differences = [
        f"{key}: embedded {a.to_result()} != server {b.to_result()}"
        for (key, _), a, b in zip(table, embedded, served, strict=True)
        if a.to_result() != b.to_result()
    ]
    assert not differences, f"{len(differences)} of {len(table)} differ:\n" + "\n".join(
        differences[:20]
    )
    assert {d.revision for d in served} == {engine.revision}
    sample = range(0, len(table), 29)
    with ThreadPoolExecutor(max_workers=4) as pool:
        one_by_one = list(pool.map(server_engine.evaluate, [cases[i] for i in sample]))
    assert [d.to_result() for d in one_by_one] == [embedded[i].to_result() for i in sample]
    # The table means something: every purpose is granted to someone, not everything is.
    granted = {key[1] for (key, _), d in zip(table, embedded, strict=True) if d.allow}
    assert set(load_bundle().data["purposes"]) <= granted
    assert 0 < sum(d.allow for d in embedded) < len(table) // 2


def test_server_decision_id_is_the_evaluation_id(
    server_engine: OpaServerEngine, opa_server: tuple[str, Path]
) -> None:
    _, log = opa_server
    decision = server_engine.evaluate(
        decision_input(SUBJECTS["health"], purpose="public-health-followup", action="read")
    )
    assert decision.allow
    deadline = time.monotonic() + 5
    while decision.evaluation_id not in log.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, "decision id not in OPA's decision log"
        time.sleep(0.05)
    cached = CachedEngine(server_engine)
    first = cached.evaluate(
        decision_input(SUBJECTS["health"], purpose="public-health-followup", action="list")
    )
    again = cached.evaluate(
        decision_input(SUBJECTS["health"], purpose="public-health-followup", action="list")
    )
    assert again.from_cache and again.evaluation_id == first.evaluation_id


def test_server_revision_is_checked(opa_server: tuple[str, Path]) -> None:
    url, _ = opa_server
    with OpaServerEngine(url) as server:
        assert server.revision == load_bundle().revision
    with (
        OpaServerEngine(url, expected_revision="rev-0000000000000000") as server,
        pytest.raises(PolicyEngineFault),
    ):
        server.evaluate(decision_input(SUBJECTS["health"], action="read"))


def test_pushed_policy_agrees_and_follows_data(engine: EmbeddedEngine) -> None:
    with local_opa_server(_opa_bin()) as url, OpaServerEngine.push(url, demo_bundle()) as server:
        with OpaServerEngine(url) as bundle_mode, pytest.raises(PolicyEngineFault):
            _ = bundle_mode.revision  # this server runs no bundle
        assert server.revision == engine.revision
        for label in ("civil_affairs", "anju_property", "grid_worker_hx_2"):
            for purpose in ("subsidy-review", "property-notice", "grid-service"):
                case = decision_input(SUBJECTS[label], purpose=purpose, action="read")
                assert server.evaluate(case).to_result() == engine.evaluate(case).to_result()
        district = demo_district() | {"revision": "43"}
        district["mandates"]["org_civil_affairs"]["purposes"] = []
        revision = server.load_district(district)
        assert revision != engine.revision == demo_bundle().decision_revision
        decision = server.evaluate(
            decision_input(SUBJECTS["civil_affairs"], purpose="subsidy-review", action="read")
        )
        assert decision.reason.code == "no-mandate" and decision.revision == revision


def test_unreachable_server_is_unavailable() -> None:
    with OpaServerEngine(f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=0) as server:
        with pytest.raises(PolicyUnavailable):
            server.evaluate(decision_input(SUBJECTS["health"], action="read"))
        with pytest.raises(PolicyUnavailable):
            _ = server.revision


def test_embedded_data_swap_keeps_revision_and_decision_together() -> None:
    """Decisions evaluated while the data is swapped name the revision of their data."""
    bundle = demo_bundle()
    closed = demo_district() | {"revision": "closed"}
    closed["mandates"]["org_civil_affairs"]["purposes"] = []
    allowed_under = bundle.decision_revision
    case = decision_input(SUBJECTS["civil_affairs"], purpose="subsidy-review", action="read")
    with EmbeddedEngine(bundle) as swapping:
        denied_under = bundle.with_district(closed).decision_revision

        def evaluate(_: int) -> Decision:
            return swapping.evaluate(case)

        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(evaluate, i) for i in range(150)]
            for i in range(20):
                swapping.load_district(closed if i % 2 == 0 else demo_district())
            results = [f.result() for f in futures]
    for decision in results:
        assert decision.revision == (allowed_under if decision.allow else denied_under)


@pytest.mark.parametrize(
    ("label", "purpose", "action", "outcome", "rule"),
    [
        ("civil_affairs", "subsidy-review", "read", "allowed", "purpose:subsidy-review"),
        ("anju_property", "property-notice", "list", "allowed", "consent-required"),
        ("anju_property", "subsidy-review", "read", "denied", "deny:no-mandate"),
        ("grid_worker_xf_1", "subsidy-review", "read", "denied", "deny:no-mandate"),
        ("auditor", "subsidy-review", "read", "denied", "deny:outside-role"),
    ],
)
def test_explanations_name_the_deciding_rule_on_both_engines(  # noqa: PLR0917 - parametrised
    engine: EmbeddedEngine,
    server_engine: OpaServerEngine,
    label: str,
    purpose: str,
    action: str,
    outcome: str,
    rule: str,
) -> None:
    catalogue = default_catalogue()
    explainer = Explainer(load_bundle().data, catalogue_fields(catalogue))
    case = decision_input(SUBJECTS[label], purpose=purpose, action=action)
    explained = [
        explainer.explain(e.evaluate(case), purpose=purpose, action=action, lang=lang)
        for e in (engine, server_engine)
        for lang in ("zh", "en")
    ]
    for one in explained:
        one.pop("evaluation_id")
    embedded_zh, embedded_en, server_zh, server_en = explained
    assert embedded_zh == server_zh and embedded_en == server_en
    assert embedded_zh["outcome"] == outcome and rule in embedded_zh["deciding_rules"]
    assert embedded_zh["summary"] != embedded_en["summary"]  # both languages, both texts
    if outcome == "denied":
        assert embedded_zh["changes"], "a refusal says what would change it"
        assert all(f["treatment"] == "denied" for f in embedded_zh["fields"])
    else:
        shown = [f for f in embedded_zh["fields"] if f["treatment"] != "denied"]
        assert shown and all(f["because"] for f in shown)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.mark.parametrize(
    ("label", "purpose", "action"),
    [
        ("civil_affairs", "subsidy-review", "read"),
        ("anju_property", "property-notice", "list"),  # consent-required: the longer sentence
        ("anju_property", "subsidy-review", "read"),
    ],
)
def test_an_explanation_in_english_has_no_chinese(
    engine: EmbeddedEngine, label: str, purpose: str, action: str
) -> None:
    """Each sentence is one catalogue (or policy data) text, so none mixes the languages."""
    explainer = Explainer(load_bundle().data, catalogue_fields(default_catalogue()))
    decision = engine.evaluate(decision_input(SUBJECTS[label], purpose=purpose, action=action))
    english = explainer.explain(decision, purpose=purpose, action=action, lang="en")
    chinese = explainer.explain(decision, purpose=purpose, action=action, lang="zh")
    han = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
    assert [s for s in _strings(english) if han.search(s)] == []
    assert han.search(chinese["summary"])
    if decision.allow and decision.rows.consent_required:
        assert english["summary"].endswith("Only residents who have consented are included.")
        assert chinese["summary"].endswith("仅包括已同意的居民。")
