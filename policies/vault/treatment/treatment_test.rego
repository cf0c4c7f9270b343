package vault.treatment_test

import data.vault.treatment

_name := {"name": "name", "category": "identity", "sensitive": false, "mask": "surname", "generalise": null}

_birth := {
	"name": "birth_date", "category": "identity", "sensitive": false,
	"mask": "date_year", "generalise": "age_band",
}

_religion := {"name": "religion", "category": "identity", "sensitive": true, "mask": "redact", "generalise": null}

_health := {
	"name": "health_conditions", "category": "health", "sensitive": true,
	"mask": "redact", "generalise": "category",
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
	treatment.for_field(_religion, _purpose) == "denied"
	treatment.for_field(_name, _purpose) == "clear"
}

test_category_rule_applies_to_unnamed_fields if {
	treatment.for_field(_health, _purpose) == "clear"
}

test_unnamed_field_and_category_denied if {
	treatment.for_field(_health, {"fields": {}, "categories": {}}) == "denied"
	treatment.for_field(_health, {}) == "denied"
}

test_generalised_kept_when_catalogue_has_rule if {
	treatment.for_field(_birth, _purpose) == "generalised"
}

test_generalised_falls_back_to_masked_without_rule if {
	treatment.for_field(_name, {"fields": {"name": "generalised"}}) == "masked"
}

test_no_mask_rule_means_denied if {
	treatment.for_field(_unmaskable, {"fields": {"odd": "masked"}}) == "denied"
	treatment.for_field(_unmaskable, {"fields": {"odd": "generalised"}}) == "denied"
	treatment.for_field(_unmaskable, {"fields": {"odd": "clear"}}) == "clear"
}

test_invalid_rule_denies if {
	treatment.for_field(_name, {"fields": {"name": "clera"}, "categories": {"identity": "clear"}}) == "denied"
	treatment.for_field(_name, {"categories": {"identity": 3}}) == "denied"
}

test_sensitive_cap_applies_to_unnamed_sensitive_fields if {
	treatment.for_field(_health, _capped_purpose) == "masked"
	treatment.for_field(_religion, _capped_purpose) == "masked"
}

test_sensitive_cap_leaves_other_fields if {
	treatment.for_field(_name, _capped_purpose) == "clear"
	treatment.for_field(_birth, _capped_purpose) == "generalised"
}

test_named_sensitive_field_escapes_cap if {
	purpose := object.union(_capped_purpose, {"fields": {"health_conditions": "clear"}})
	treatment.for_field(_health, purpose) == "clear"
}

test_invalid_cap_is_ignored if {
	treatment.for_field(_health, object.union(_capped_purpose, {"sensitive_cap": "none"})) == "clear"
}

test_least if {
	treatment.least("clear", "masked") == "masked"
	treatment.least("masked", "generalised") == "masked"
	treatment.least("denied", "clear") == "denied"
	treatment.least("clear", "clear") == "clear"
	treatment.least("bogus", "clear") == "denied"
}
