package vault.decision_test

import data.vault.decision

# A few catalogue fields, as the gate passes them (FieldSpec.public_metadata).
_fields := [
	{"name": "name", "category": "identity", "sensitive": false, "mask": "surname", "generalise": null},
	{"name": "birth_date", "category": "identity", "sensitive": false, "mask": "date_year", "generalise": ["year", "age_band", "age_over"]},
	{"name": "id_number", "category": "identity", "sensitive": true, "linkable": true, "mask": "keep", "generalise": null},
	{"name": "religion", "category": "identity", "sensitive": true, "mask": "redact", "generalise": null},
	{"name": "ethnicity", "category": "identity", "sensitive": true, "mask": "redact", "generalise": null},
	{"name": "phone", "category": "contact", "sensitive": false, "linkable": true, "mask": "keep", "generalise": null},
	{"name": "address", "category": "contact", "sensitive": false, "mask": "truncate", "generalise": ["building", "community"]},
	{"name": "residence_type", "category": "housing", "sensitive": false, "mask": "redact", "generalise": null},
	{"name": "health_conditions", "category": "health", "sensitive": true, "mask": "redact", "generalise": ["category"]},
	{"name": "low_income_status", "category": "welfare", "sensitive": true, "mask": "redact", "generalise": null},
	{"name": "political_status", "category": "political", "sensitive": true, "mask": "redact", "generalise": null},
]

_civil_affairs := {
	"type": "department",
	"organisation": "org_civil_affairs",
	"roles": [],
	"jurisdiction": {"communities": ["cm_xingfu", "cm_hexie"], "grids": [], "buildings": []},
}

_anju := {
	"type": "property_company",
	"organisation": "org_anju_property",
	"roles": [],
	"jurisdiction": {"communities": [], "grids": [], "buildings": ["bd_xf_02", "bd_xf_01"]},
}

_grid_worker := {
	"type": "grid_worker",
	"organisation": "org_rc_xingfu",
	"roles": ["grid_worker"],
	"jurisdiction": {"communities": ["cm_xingfu"], "grids": ["gd_xf_1"], "buildings": ["bd_xf_01"]},
}

_resident := {"type": "resident", "roles": [], "jurisdiction": {}}

_input(subject, purpose, action) := {"subject": subject, "purpose": purpose, "action": action, "fields": _fields}

_denied_everything(d) if {
	d.allow == false
	every t in d.fields {
		t == "denied"
	}
	count(d.fields) == count(_fields)
	d.rows.scope == "none"
	d.rows.legal_basis == null
	d.obligations == {"justification_required": false, "rate_class": "standard", "break_glass": false}
}

_code(d) := d.reason.code

# The demo departments' mandates, as the database gives them (policies/district.py).
_demo_mandates := {
	"org_civil_affairs": {"type": "department", "purposes": ["subsidy-review", "elderly-care-visit", "community-statistics"]},
	"org_health": {"type": "department", "purposes": ["public-health-followup", "community-statistics"]},
	"org_public_security": {"type": "department", "purposes": ["household-registration-check"]},
}

# A mandate granting a purpose for some actions and fields only, on a basis of its own.
_granted(actions, fields, basis) := {"org_civil_affairs": {
	"type": "department",
	"purposes": ["subsidy-review"],
	"grants": {"subsidy-review": {"actions": actions, "fields": fields, "legal_basis": basis}},
}}

test_a_grant_confines_the_actions if {
	read := decision.decision with data.district.mandates as _granted(["read"], null, null)
		with input as _input(_civil_affairs, "subsidy-review", "read")
	read.allow == true
	export := decision.decision with data.district.mandates as _granted(["read"], null, null)
		with input as _input(_civil_affairs, "subsidy-review", "export")
	export.allow == false
	_code(export) == "action-not-mandated"
	{"code": "mandate-actions", "actions": ["read"]} in export.explanation.changes
}

test_a_grant_confines_the_fields if {
	d := decision.decision with data.district.mandates as _granted(["read"], ["name"], null)
		with input as _input(_civil_affairs, "subsidy-review", "read")
	d.allow == true
	d.fields.name == "clear"
	d.fields.low_income_status == "denied"
	d.fields.phone == "denied"
	d.explanation.fields.phone.source == "not-in-mandate"
}

test_a_grant_on_consent_requires_consent if {
	d := decision.decision with data.district.mandates as _granted(["read"], null, "consent")
		with input as _input(_civil_affairs, "subsidy-review", "read")
	d.allow == true
	d.rows.consent_required == true
	d.rows.legal_basis == "consent"
}

test_the_district_registry_replaces_the_shipped_one if {
	d := decision.decision with data.district.mandates as _demo_mandates
		with data.district.purposes as {}
		with input as _input(_civil_affairs, "subsidy-review", "read")
	_code(d) == "unknown-purpose"
}

test_civil_affairs_subsidy_review_sees_welfare_not_religion if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "subsidy-review", "read")
	d.allow == true
	d.reason.code == "mandate"
	d.fields.low_income_status == "clear"
	d.fields.id_number == "clear"
	d.fields.religion == "denied"
	d.fields.ethnicity == "denied"
	d.fields.political_status == "denied"
	d.fields.health_conditions == "denied"
	d.rows == {
		"scope": "jurisdiction",
		"communities": ["cm_hexie", "cm_xingfu"],
		"grids": [],
		"buildings": [],
		"consent_required": false,
		"legal_basis": "statutory-duty",
	}
	d.obligations == {"justification_required": false, "rate_class": "sensitive", "break_glass": false}
	"mandate:organisation:org_civil_affairs" in d.rules
}

test_export_of_sensitive_fields_needs_justification if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "subsidy-review", "export")
	d.obligations == {"justification_required": true, "rate_class": "bulk", "break_glass": false}
	"obligation:justification" in d.rules
}

test_property_company_sees_masked_contact_with_consent if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_anju, "property-notice", "read")
	d.allow == true
	{name | some name, t in d.fields; t != "denied"} == {"phone", "address"}
	d.fields.phone == "masked"
	d.fields.address == "generalised"
	d.rows.scope == "jurisdiction"
	d.rows.buildings == ["bd_xf_01", "bd_xf_02"]
	d.rows.communities == []
	d.rows.consent_required == true
	d.rows.legal_basis == "consent"
	"consent-required" in d.rules
}

test_property_company_cannot_export if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_anju, "property-notice", "export")
	_denied_everything(d)
	_code(d) == "action-not-permitted"
}

test_owners_vote_under_contract if {
	owners := object.union(_anju, {"type": "owners_committee", "organisation": "org_oc_xingfu"})
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(owners, "owners-vote", "list")
	d.allow == true
	d.fields.residence_type == "clear"
	d.fields.name == "masked"
	d.fields.address == "generalised"
	d.fields.phone == "denied"
	d.rows.legal_basis == "contract"
	d.rows.consent_required == false
}

test_grid_worker_scope_is_own_grids_and_sensitive_masked if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_grid_worker, "grid-service", "read")
	d.allow == true
	d.rows.grids == ["gd_xf_1"]
	d.rows.communities == []
	d.rows.buildings == []
	d.fields.name == "clear"
	d.fields.ethnicity == "masked"
	d.fields.health_conditions == "masked"
	d.fields.low_income_status == "masked"
	d.fields.religion == "denied"
	d.fields.political_status == "denied"
	d.fields.birth_date == "generalised"
	"sensitive-cap:masked" in d.rules
}

test_grid_worker_without_grids_has_no_jurisdiction if {
	worker := object.union(_grid_worker, {"jurisdiction": {"communities": ["cm_xingfu"], "grids": []}})
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(worker, "grid-service", "read")
	_denied_everything(d)
	_code(d) == "no-jurisdiction"
}

test_worker_does_not_inherit_the_committee_mandate if {
	mandates := {"org_rc_xingfu": {"type": "residents_committee", "purposes": ["counter-service"]}}
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_grid_worker, "counter-service", "read")
		with data.district.mandates as mandates
	_code(d) == "no-mandate"
}

test_elderly_care_visit_generalises if {
	committee := {
		"type": "residents_committee",
		"organisation": "org_rc_hexie",
		"jurisdiction": {"communities": ["cm_hexie"]},
	}
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(committee, "elderly-care-visit", "read")
	d.allow == true
	d.fields.birth_date == "generalised"
	d.fields.health_conditions == "generalised"
	d.fields.id_number == "denied"
	d.rows.communities == ["cm_hexie"]
	d.obligations.rate_class == "standard"
	"mandate:subject-type:residents_committee" in d.rules
}

test_public_security_sees_id_number_in_clear if {
	police := object.union(_civil_affairs, {"organisation": "org_public_security"})
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(police, "household-registration-check", "search")
	d.allow == true
	d.fields.id_number == "clear"
	d.fields.religion == "denied"
}

test_resident_self_sees_everything_clear if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as {"subject": _resident, "action": "read", "target": "self", "fields": _fields}
	d.allow == true
	_code(d) == "self"
	every t in d.fields {
		t == "clear"
	}
	d.rows.scope == "self"
	d.rows.legal_basis == "self"
	d.obligations == {"justification_required": false, "rate_class": "standard", "break_glass": false}
	d.rules == ["identifier:vault-id", "resident:self"]
}

test_resident_export_is_bulk_without_justification if {
	export := {"subject": _resident, "purpose": null, "action": "export", "target": "self", "fields": _fields}
	d := decision.decision with data.district.mandates as _demo_mandates with input as export
	d.obligations == {"justification_required": false, "rate_class": "bulk", "break_glass": false}
}

test_guardian_sees_child_record if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as {"subject": _resident, "action": "read", "target": "child", "fields": _fields}
	d.allow == true
	_code(d) == "guardian"
	d.rows.scope == "children"
	d.fields.religion == "clear"
}

test_resident_reading_another_is_denied if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as {"subject": _resident, "action": "read", "target": "other", "fields": _fields}
	_denied_everything(d)
	_code(d) == "not-own-record"
	no_target := decision.decision with data.district.mandates as _demo_mandates with input as {"subject": _resident, "action": "read", "fields": _fields}
	_code(no_target) == "not-own-record"
}

test_resident_cannot_write_or_search if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as {"subject": _resident, "action": "write", "target": "self", "fields": _fields}
	_denied_everything(d)
	_code(d) == "action-not-permitted"
}

test_auditor_never_sees_values if {
	auditor := {"type": "auditor", "organisation": "org_audit", "roles": ["auditor"]}
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(auditor, "subsidy-review", "read")
	_denied_everything(d)
	_code(d) == "outside-role"
	d.reason.en == "Auditors see access records, never the values of residents' data."
}

test_purpose_required if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as {"subject": _civil_affairs, "action": "read", "fields": _fields}
	_denied_everything(d)
	_code(d) == "purpose-required"
	_code(decision.decision) == "purpose-required" with input as _input(_civil_affairs, "", "read")
	_code(decision.decision) == "purpose-required" with input as _input(_civil_affairs, null, "read")
	_code(decision.decision) == "purpose-required" with input as _input(_civil_affairs, 7, "read")
}

test_unknown_purpose if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "marketing", "read")
	_denied_everything(d)
	_code(d) == "unknown-purpose"
	d.rules == ["deny:unknown-purpose"]
}

test_purpose_outside_mandate if {
	health := object.union(_civil_affairs, {"organisation": "org_health"})
	_code(decision.decision) == "no-mandate" with input as _input(health, "subsidy-review", "read")
	_code(decision.decision) == "no-mandate" with input as _input(_anju, "subsidy-review", "read")
	unknown_department := object.union(_civil_affairs, {"organisation": "org_new"})
	_code(decision.decision) == "no-mandate" with input as _input(unknown_department, "subsidy-review", "read")
}

test_organisation_mandate_of_another_type_is_ignored if {
	posing := object.union(_anju, {"organisation": "org_civil_affairs"})
	_code(decision.decision) == "no-mandate" with input as _input(posing, "subsidy-review", "read")
}

test_mandate_beyond_the_purpose_recipients if {
	mandates := {"org_anju_property": {"type": "property_company", "purposes": ["subsidy-review"]}}
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_anju, "subsidy-review", "read")
		with data.district.mandates as mandates
	_denied_everything(d)
	_code(d) == "recipient-not-allowed"
}

test_unknown_subject_and_action if {
	_code(decision.decision) == "unknown-subject" with input as _input({"type": "journalist"}, "subsidy-review", "read")
	no_subject := {"purpose": "subsidy-review", "action": "read", "fields": _fields}
	_code(decision.decision) == "unknown-subject" with input as no_subject
	_code(decision.decision) == "unknown-action" with input as _input(_civil_affairs, "subsidy-review", "delete")
}

test_empty_input_is_a_complete_denial if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as {}
	d.allow == false
	d.fields == {}
	d.rows.scope == "none"
	d.rules == ["deny:unknown-subject"]
}

test_malformed_fields_are_skipped if {
	fields := [7, {"category": "identity"}, {"name": "name", "category": "identity", "mask": "surname"}]
	d := decision.decision with data.district.mandates as _demo_mandates with input as object.union(_input(_civil_affairs, "subsidy-review", "read"), {"fields": fields})
	d.fields == {"name": "clear"}
}

test_rows_all_for_a_mandate_without_jurisdiction if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(object.remove(_civil_affairs, ["jurisdiction"]), "subsidy-review", "read")
		with data.vault.mandates.subject_types.department.rows as "all"
	d.allow == true
	d.rows.scope == "all"
	d.rows.communities == []
}

test_missing_jurisdiction_denies if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(object.remove(_civil_affairs, ["jurisdiction"]), "subsidy-review", "read")
	_code(d) == "no-jurisdiction"
}

test_reason_text_falls_back_to_code if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "subsidy-review", "read")
		with data.vault.reasons as {}
	d.reason == {"code": "mandate", "zh": "mandate", "en": "mandate"}
}

test_no_data_denies if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "subsidy-review", "read")
		with data.vault.subject_types as {}
		with data.vault.purposes as {}
		with data.vault.mandates as {}
		with data.vault.reasons as {}
	_denied_everything(d)
	d.reason == {"code": "unknown-subject", "zh": "unknown-subject", "en": "unknown-subject"}
}

test_every_shipped_purpose_is_well_formed if {
	every code, purpose in data.vault.purposes {
		purpose.legal_basis in {"consent", "statutory-duty", "public-health-emergency", "vital-interests", "contract"}
		count(purpose.recipient_types) > 0
		every t in object.union(object.get(purpose, "fields", {}), object.get(purpose, "categories", {})) {
			t in {"clear", "masked", "generalised", "denied"}
		}
		regex.match(`^[a-z]+(-[a-z]+)*$`, code)
	}
}

test_every_mandated_purpose_exists if {
	every mandate in object.union(data.vault.mandates.subject_types, _demo_mandates) {
		every purpose in mandate.purposes {
			data.vault.purposes[purpose]
		}
	}
}

test_organisations_see_pseudonyms_and_workers_vault_ids if {
	dept := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "subsidy-review", "read")
	dept.identifier == "pseudonym"
	"identifier:pseudonym" in dept.rules
	worker := decision.decision with data.district.mandates as _demo_mandates with input as _input(_grid_worker, "grid-service", "read")
	worker.identifier == "vault-id"
	me := decision.decision with data.district.mandates as _demo_mandates with input as {"subject": _resident, "action": "read", "target": "self", "fields": _fields}
	me.identifier == "vault-id"
}

test_declared_linking_keys_are_clear_and_named if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "subsidy-review", "read")
	d.fields.id_number == "clear"
	"linking-key:id_number" in d.rules
	d.explanation.fields.id_number.linking_key == true
}

_undeclared_review := {
	"recipient_types": ["department"],
	"actions": ["read"],
	"legal_basis": "statutory-duty",
	"fields": {"id_number": "clear"},
}

test_undeclared_linking_key_is_masked_for_pseudonymous_recipient if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "subsidy-review", "read")
		with data.vault.purposes as {"subsidy-review": _undeclared_review}
	d.fields.id_number == "masked"
	d.explanation.fields.id_number.adjustments == ["linking-cap"]
	not "linking-key:id_number" in d.rules
}

test_generalisation_levels_are_the_least_revealing_that_serve if {
	committee := {"type": "residents_committee", "organisation": "org_rc_hexie", "jurisdiction": {"communities": ["cm_hexie"]}}
	visit := decision.decision with data.district.mandates as _demo_mandates with input as _input(committee, "elderly-care-visit", "read")
	visit.levels.birth_date == "age_over"
	notice := decision.decision with data.district.mandates as _demo_mandates with input as _input(_anju, "property-notice", "read")
	notice.fields.address == "generalised"
	notice.levels.address == "building"
	worker := decision.decision with data.district.mandates as _demo_mandates with input as _input(_grid_worker, "grid-service", "read")
	worker.levels.birth_date == "age_band"
}

test_denial_explains_who_holds_the_purpose if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_anju, "subsidy-review", "read")
	_code(d) == "no-mandate"
	{"code": "mandate-holders", "organisations": ["org_civil_affairs"], "subject_types": []} in d.explanation.changes
	{"code": "other-purposes", "purposes": ["property-notice"]} in d.explanation.changes
	d.explanation.fields.phone.source == "decision-denied"
}

test_consent_purpose_explains_the_consent_needed if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_anju, "property-notice", "read")
	{"code": "consent-needed", "purpose": "property-notice"} in d.explanation.changes
	d.explanation.fields.phone.source == "purpose-field"
	d.explanation.fields.religion.source == "not-covered"
}

test_field_shown_more_under_another_purpose_of_the_mandate if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "elderly-care-visit", "read")
	d.fields.id_number == "denied"
	some change in d.explanation.changes
	change.code == "field-elsewhere"
	change.field == "id_number"
	change.purposes == {"subsidy-review": "clear"}
}

_grid_worker_far := object.union(_grid_worker, {"jurisdiction": {"communities": ["cm_xingfu"], "grids": ["gd_xf_1"], "buildings": []}})

test_break_glass_reaches_beyond_jurisdiction_with_obligations if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_grid_worker_far, "emergency-rescue", "read")
	d.allow == true
	d.rows.scope == "all"
	d.obligations.break_glass == true
	d.obligations.justification_required == true
	d.fields.health_conditions == "clear"
	d.fields.religion == "denied"
	"obligation:break-glass" in d.rules
}

test_break_glass_is_for_reading_one_record_only if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_grid_worker_far, "emergency-rescue", "list")
	d.allow == false
	_code(d) == "action-not-permitted"
	e := decision.decision with data.district.mandates as _demo_mandates with input as _input(_civil_affairs, "emergency-rescue", "read")
	e.allow == false
}

test_normal_purposes_carry_no_break_glass if {
	d := decision.decision with data.district.mandates as _demo_mandates with input as _input(_grid_worker, "grid-service", "read")
	d.obligations.break_glass == false
	d.rows.scope == "jurisdiction"
}
