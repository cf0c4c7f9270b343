package system.log_test

import data.system.log

_event := {
	"decision_id": "d1",
	"input": {
		"subject": {
			"type": "department",
			"organisation": "org_civil_affairs",
			"roles": [],
			"jurisdiction": {"communities": ["c1"], "grids": [], "buildings": [], "note": "x"},
			"user": "u_1",
			"resident_id": "r_0123456789abcdef",
		},
		"purpose": "subsidy-review",
		"action": "read",
		"target": "other",
		"fields": [{"name": "phone", "label": "手机号", "enum": ["a"]}, {"label": "nameless"}],
		"phone": "13800138000",
		"cases": [{"subject": {"type": "resident"}}],
	},
	"result": {"allow": true},
}

test_unknown_keys_are_erased if {
	masked := log.mask with input as _event
	"/input/phone" in masked
	"/input/cases" in masked
	"/input/subject/user" in masked
	"/input/subject/resident_id" in masked
	"/input/subject/jurisdiction/note" in masked
}

test_what_explains_a_decision_is_kept if {
	masked := log.mask with input as _event
	every path in ["/input/subject", "/input/purpose", "/input/action", "/input/target"] {
		not path in masked
	}
	not "/input/subject/organisation" in masked
	not "/input/subject/jurisdiction/communities" in masked
}

test_fields_are_cut_to_names if {
	masked := log.mask with input as _event
	{"op": "upsert", "path": "/input/fields", "value": ["phone", "?"]} in masked
}

test_an_input_that_is_not_an_object_is_erased if {
	masked := log.mask with input as {"input": "13800138000"}
	"/input" in masked
}

test_no_input_masks_nothing if {
	count(log.mask) == 0 with input as {"decision_id": "d2"}
}
