package vault.treatment_test

import data.vault.treatment

_name := {"name": "name", "category": "identity", "sensitive": false, "mask": "surname", "generalise": null}

_birth := {
	"name": "birth_date", "category": "identity", "sensitive": false,
	"mask": "date_year", "generalise": ["year", "age_band", "age_over"],
}

_religion := {"name": "religion", "category": "identity", "sensitive": true, "mask": "redact", "generalise": null}

_health := {
	"name": "health_conditions", "category": "health", "sensitive": true,
	"mask": "redact", "generalise": ["category"],
}

_unmaskable := {"name": "odd", "category": "identity", "sensitive": false}

_purpose := {
	"fields": {"name": "clear", "birth_date": "generalised", "religion": "denied"},
	"categories": {"identity": "clear", "health": "clear"},
}

_capped_purpose := {
	"sensitive_cap": "masked",
	"fields": {"birth_date": "generalised"},
	"categories": {"identity": "clear", "health": "clear"},
}

test_field_rule_wins_over_category if {
	treatment.for_field(_religion, _purpose, false) == "denied"
	treatment.for_field(_name, _purpose, false) == "clear"
}

test_category_rule_applies_to_unnamed_fields if {
	treatment.for_field(_health, _purpose, false) == "clear"
}

test_unnamed_field_and_category_denied if {
	treatment.for_field(_health, {"fields": {}, "categories": {}}, false) == "denied"
	treatment.for_field(_health, {}, false) == "denied"
}

test_generalised_kept_when_catalogue_has_rule if {
	treatment.for_field(_birth, _purpose, false) == "generalised"
}

test_generalised_falls_back_to_masked_without_rule if {
	treatment.for_field(_name, {"fields": {"name": "generalised"}}, false) == "masked"
}

test_no_mask_rule_means_denied if {
	treatment.for_field(_unmaskable, {"fields": {"odd": "masked"}}, false) == "denied"
	treatment.for_field(_unmaskable, {"fields": {"odd": "generalised"}}, false) == "denied"
	treatment.for_field(_unmaskable, {"fields": {"odd": "clear"}}, false) == "clear"
}

test_invalid_rule_denies if {
	treatment.for_field(_name, {"fields": {"name": "clera"}, "categories": {"identity": "clear"}}, false) == "denied"
	treatment.for_field(_name, {"categories": {"identity": 3}}, false) == "denied"
}

test_sensitive_cap_applies_to_unnamed_sensitive_fields if {
	treatment.for_field(_health, _capped_purpose, false) == "masked"
	treatment.for_field(_religion, _capped_purpose, false) == "masked"
}

test_sensitive_cap_leaves_other_fields if {
	treatment.for_field(_name, _capped_purpose, false) == "clear"
	treatment.for_field(_birth, _capped_purpose, false) == "generalised"
}

test_named_sensitive_field_escapes_cap if {
	purpose := object.union(_capped_purpose, {"fields": {"health_conditions": "clear"}})
	treatment.for_field(_health, purpose, false) == "clear"
}

test_invalid_cap_is_ignored if {
	treatment.for_field(_health, object.union(_capped_purpose, {"sensitive_cap": "none"}), false) == "clear"
}

test_least if {
	treatment.least("clear", "masked") == "masked"
	treatment.least("masked", "generalised") == "masked"
	treatment.least("denied", "clear") == "denied"
	treatment.least("clear", "clear") == "clear"
	treatment.least("bogus", "clear") == "denied"
}

_id_number := {
	"name": "id_number", "category": "identity", "sensitive": true, "linkable": true,
	"mask": "keep", "generalise": null,
}

_statutory := {"fields": {"id_number": "clear"}, "linking_fields": {"id_number": {"zh": "核查", "en": "check"}}}

test_linkable_field_masked_for_pseudonymous_recipient_unless_declared if {
	treatment.for_field(_id_number, {"fields": {"id_number": "clear"}}, true) == "masked"
	treatment.for_field(_id_number, {"fields": {"id_number": "clear"}}, false) == "clear"
	treatment.for_field(_id_number, _statutory, true) == "clear"
}

test_linking_cap_never_raises_a_treatment if {
	treatment.for_field(_id_number, {"fields": {"id_number": "denied"}}, true) == "denied"
	treatment.for_field(_name, {"fields": {"name": "clear"}}, true) == "clear"
}

test_explain_names_each_lowering_step if {
	e := treatment.explain_field(_id_number, {"fields": {"id_number": "clear"}}, true)
	e.treatment == "masked"
	e.source == "purpose-field"
	e.wanted == "clear"
	e.adjustments == ["linking-cap"]
	e.linking_key == false
	d := treatment.explain_field(_id_number, _statutory, true)
	d.adjustments == []
	d.linking_key == true
	c := treatment.explain_field(_health, _capped_purpose, false)
	c.source == "purpose-category"
	c.adjustments == ["sensitive-cap"]
	f := treatment.explain_field(_name, {"fields": {"name": "generalised"}}, false)
	f.adjustments == ["catalogue-fallback"]
	n := treatment.explain_field(_health, {}, false)
	n.source == "not-covered"
}

test_level_is_the_purposes_choice_else_least_revealing if {
	treatment.level(_birth, {"generalise": {"birth_date": "age_band"}}) == "age_band"
	treatment.level(_birth, {"generalise": {"birth_date": "no-such-level"}}) == "age_over"
	treatment.level(_birth, {}) == "age_over"
	e := treatment.explain_field(_birth, object.union(_purpose, {"generalise": {"birth_date": "year"}}), false)
	e.level == "year"
	not treatment.level(_name, {})
}
