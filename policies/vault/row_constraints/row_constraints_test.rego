package vault.row_constraints_test

import data.vault.row_constraints

_jurisdiction := {
	"communities": ["cm_xingfu"],
	"grids": ["gd_xf_2", "gd_xf_1", "gd_xf_1"],
	"buildings": [],
}

test_all_has_no_id_lists if {
	rows := row_constraints.for_mandate("all", {}, "statutory-duty")
	rows.scope == "all"
	rows.communities == []
	rows.legal_basis == "statutory-duty"
	rows.consent_required == false
}

test_level_keeps_only_that_level_sorted_and_distinct if {
	rows := row_constraints.for_mandate("grids", _jurisdiction, "statutory-duty")
	rows.scope == "jurisdiction"
	rows.grids == ["gd_xf_1", "gd_xf_2"]
	rows.communities == []
	rows.buildings == []
}

test_consent_basis_requires_consent if {
	rows := row_constraints.for_mandate("communities", _jurisdiction, "consent")
	rows.consent_required == true
	rows.communities == ["cm_xingfu"]
}

test_empty_level_is_undefined if {
	not row_constraints.for_mandate("buildings", _jurisdiction, "consent")
	not row_constraints.for_mandate("buildings", {}, "consent")
	not row_constraints.for_mandate("grids", null, "consent")
}

test_unknown_level_is_undefined if {
	not row_constraints.for_mandate("streets", _jurisdiction, "consent")
}

test_ids_ignore_non_strings_and_non_arrays if {
	row_constraints.ids_at({"grids": ["gd_1", 7, null]}, "grids") == ["gd_1"]
	row_constraints.ids_at({"grids": "gd_1"}, "grids") == []
	row_constraints.ids_at("nope", "grids") == []
}

test_resident_rows if {
	rows := row_constraints.for_resident("children")
	rows.scope == "children"
	rows.legal_basis == "self"
	rows.consent_required == false
}

test_none_denies_everything if {
	row_constraints.none.scope == "none"
	row_constraints.none.legal_basis == null
}
