# METADATA
# title: Access decisions for residents' data
# description: |
#   One decision per (subject, purpose, action, policy revision), never per record:
#   whether the caller may read, each field's treatment, the row constraints as data,
#   the obligations, and the rules that decided. Deny by default: every part has a
#   default, and allow needs every condition to hold, so a missing input attribute
#   denies rather than opening the gate. The policy's own data lives under data.vault
#   (subject_types, actions, resident_access, the subject types' default mandates,
#   reasons); the district's data under data.district (the purpose registry and the
#   organisations' mandates, from the database at a data revision: policies/district.py).
#   Without data.district, the purposes shipped in data.vault apply and no organisation
#   holds a mandate of its own.
package vault.decision

import data.vault.row_constraints
import data.vault.treatment

# METADATA
# title: The decision
# description: The one document the gate queries (data.vault.decision.decision).
# entrypoint: true
decision := _decision # regal ignore:rule-name-repeats-package

_decision := {
	"allow": allow,
	"reason": reason,
	"fields": fields,
	"rows": rows,
	"obligations": obligations,
	"rules": rules,
	"identifier": identifier,
	"levels": levels,
	"explanation": explanation,
}

# METADATA
# title: Allow
# description: A resident's own or child's record, or a purpose within the caller's mandate.
default allow := false

allow if _resident_allowed

allow if _mandate_allowed

# METADATA
# title: Reason
# description: Why, as a code with Chinese and English text from data.vault.reasons.
default reason := {"code": "denied", "zh": "策略拒绝了此次访问。", "en": "The policy denied this access."}

reason := _reason(data.vault.reasons, _allow_code) if allow

reason := _reason(data.vault.reasons, _deny_code) if not allow

# METADATA
# title: Field treatments
# description: Every field named in input.fields with its treatment; all denied when not allowed.
default fields := {}

fields := {name: "denied" | some field in _input_fields; name := field.name} if not allow

fields := {name: "clear" | some field in _input_fields; name := field.name} if _resident_allowed

fields := {name: _granted_treatment(field) |
	some field in _input_fields
	name := field.name
} if _mandate_allowed

# METADATA
# title: Resident identifier
# description: |
#   How residents are named to the caller: "vault-id" for the resident, their community
#   workers and auditors; "pseudonym" (per recipient organisation, keyed, so two
#   recipients cannot join their copies) for every organisation's system. Pseudonymous
#   unless the subject type says otherwise.
default identifier := "pseudonym"

identifier := "vault-id" if _resident_allowed

identifier := _type_identifier if not _resident_allowed

# METADATA
# title: Generalisation levels
# description: The level of each field shown generalised (e.g. birth_date at age_over).
default levels := {}

levels := {name: level |
	some field in _input_fields
	name := field.name
	fields[name] == "generalised"
	level := treatment.level(field, _purpose)
} if _mandate_allowed

# METADATA
# title: Explanation
# description: |
#   Why each field has its treatment (from the treatment rules themselves), and what
#   would change the outcome: other purposes of the caller's mandate that show a field
#   more, who holds the purpose in their mandate, which callers, actions and
#   jurisdiction it admits, and whether a resident's consent is needed.
default explanation := {"fields": {}, "changes": []}

explanation := {"fields": _field_explanations, "changes": sort(_changes)}

# METADATA
# title: Row constraints
# description: Which residents' rows the decision covers; scope "none" when not allowed.
default rows := {
	"scope": "none",
	"communities": [],
	"grids": [],
	"buildings": [],
	"consent_required": false,
	"legal_basis": null,
}

rows := row_constraints.for_resident(_resident_access.scope) if _resident_allowed

rows := _mandate_rows if _mandate_allowed

# METADATA
# title: Obligations
# description: |
#   An export that includes any sensitive field needs a justification and is rate
#   limited as bulk; a read that shows a sensitive field in clear is rate limited as
#   sensitive. A resident's access to their own record never needs a justification.
#   A break-glass purpose (an emergency beyond normal policy) always needs a written
#   justification and an active break-glass grant for the one resident, which the gate
#   checks; its accesses are flagged, notified and reviewed.
default obligations := {"justification_required": false, "rate_class": "standard", "break_glass": false}

obligations := {
	"justification_required": _justification_required,
	"rate_class": _rate_class,
	"break_glass": _break_glass,
} if allow

# METADATA
# title: Deciding rules
# description: Names of the rules that decided, sorted, for explanations and audit.
default rules := []

rules := sort(_rules)

# --- the subject ------------------------------------------------------------------

_subject := input.subject if is_object(input.subject)

_subject_type := _subject.type if data.vault.subject_types[_subject.type]

_kind := data.vault.subject_types[_subject_type].kind

_organisation := _subject.organisation if is_string(_subject.organisation)

_jurisdiction := _subject.jurisdiction if {
	is_object(_subject.jurisdiction)
} else := {}

_action := input.action if input.action in data.vault.actions

_purpose_code := input.purpose if {
	is_string(input.purpose)
	input.purpose != ""
}

# The purpose registry: the district's, else the one shipped with the policy.
_purposes := data.district.purposes if {
	is_object(data.district.purposes)
} else := data.vault.purposes

_organisation_mandates := data.district.mandates if {
	is_object(data.district.mandates)
} else := {}

_purpose := _purposes[_purpose_code]

_input_fields := [field |
	some field in input.fields
	is_object(field)
	is_string(field.name)
]

# --- residents: their own record, or a minor child's as guardian --------------------

_target := input.target if {
	is_string(input.target)
} else := "other"

_resident_access := data.vault.resident_access.targets[_target] if _kind == "resident"

_resident_allowed if {
	_resident_access.scope
	_action in data.vault.resident_access.actions
}

# --- organisations and their workers: a purpose within the mandate ------------------

# A subject type's default mandate, overridden key by key by the organisation's own
# mandate when that names the same subject type (a worker of a residents' committee is
# a grid_worker, and does not inherit the committee's own mandate).
_type_mandate := data.vault.mandates.subject_types[_subject_type] if {
	_kind in {"organisation", "worker"}
} else := {}

_organisation_mandate := mandate if {
	mandate := _organisation_mandates[_organisation]
	mandate.type == _subject_type
} else := {}

_mandate := object.union(_type_mandate, _organisation_mandate)

_mandate_source := concat(":", ["organisation", _organisation]) if {
	_organisation_mandate.purposes
} else := concat(":", ["subject-type", _subject_type])

_mandated if _purpose_code in _mandate.purposes

_recipient if _subject_type in _purpose.recipient_types

_purpose_action if _action in _purpose.actions

# An organisation's own mandate grants a purpose for some of its actions, maybe only some
# of its fields, on a basis of its own. A default (subject-type) mandate grants the
# purpose as the purpose stands.
_grant := _organisation_mandate.grants[_purpose_code]

_granted_action if not _grant

_granted_action if _action in _grant.actions

# (A helper rule: `not is_array(_grant.fields)` fails outright when there is no grant.)
_fields_listed if is_array(_grant.fields)

_field_granted(_) if not _fields_listed

_field_granted(name) if name in _grant.fields

_granted_treatment(field) := treatment.for_field(field, _purpose, _pseudonymous) if {
	_field_granted(field.name)
} else := "denied"

_legal_basis := _grant.legal_basis if {
	is_string(_grant.legal_basis)
} else := _purpose.legal_basis

# A break-glass purpose reaches beyond the caller's jurisdiction; the gate confines it to
# the one resident of the grant.
_rows_level := "all" if {
	_purpose.break_glass == true
} else := _mandate.rows

_mandate_rows := row_constraints.for_mandate(_rows_level, _jurisdiction, _legal_basis)

_type_identifier := data.vault.subject_types[_subject_type].identifier if {
	data.vault.subject_types[_subject_type].identifier in {"vault-id", "pseudonym"}
} else := "pseudonym"

_pseudonymous := identifier == "pseudonym"

_mandate_allowed if {
	_kind in {"organisation", "worker"}
	_purpose
	_mandated
	_recipient
	_purpose_action
	_granted_action
	_mandate_rows
}

# --- reasons -------------------------------------------------------------------------

_allow_code := _resident_access.reason if _resident_allowed

_allow_code := "mandate" if _mandate_allowed

# The first check that fails, in the order API.md gives (purpose present, purpose known,
# then the policy proper); only read when allow is false.
_deny_code := "unknown-subject" if {
	not _kind
} else := "unknown-action" if {
	not _action
} else := "not-own-record" if {
	_kind == "resident"
	not _resident_access
} else := "action-not-permitted" if {
	_kind == "resident"
} else := "outside-role" if {
	_kind == "auditor"
} else := "purpose-required" if {
	not _purpose_code
} else := "unknown-purpose" if {
	not _purpose
} else := "no-mandate" if {
	not _mandated
} else := "recipient-not-allowed" if {
	not _recipient
} else := "action-not-permitted" if {
	not _purpose_action
} else := "action-not-mandated" if {
	not _granted_action
} else := "no-jurisdiction" if {
	not _mandate_rows
} else := "denied"

_denied_because := _deny_code if not allow

_reason(texts, code) := {
	"code": code,
	"zh": object.get(object.get(texts, code, {}), "zh", code),
	"en": object.get(object.get(texts, code, {}), "en", code),
}

# --- obligations ---------------------------------------------------------------------

_sensitive_shown contains field.name if {
	some field in _input_fields
	field.sensitive == true
	fields[field.name] != "denied"
}

_sensitive_clear contains field.name if {
	some field in _input_fields
	field.sensitive == true
	fields[field.name] == "clear"
}

_break_glass if {
	_mandate_allowed
	_purpose.break_glass == true
} else := false

_justification_required if {
	_break_glass == true
} else if {
	_action == "export"
	_kind != "resident"
	count(_sensitive_shown) > 0
} else := false

_rate_class := "bulk" if {
	_action == "export"
} else := "sensitive" if {
	_kind != "resident"
	count(_sensitive_clear) > 0
} else := "standard"

# --- deciding rules ------------------------------------------------------------------

_rules contains concat(":", ["deny", _deny_code]) if not allow

_rules contains concat(":", ["resident", _target]) if _resident_allowed

_rules contains concat(":", ["purpose", _purpose_code]) if _mandate_allowed

_rules contains concat(":", ["mandate", _mandate_source]) if _mandate_allowed

_rules contains concat(":", ["legal-basis", _legal_basis]) if _mandate_allowed

_rules contains concat(":", ["rows", _mandate.rows]) if _mandate_allowed

_rules contains concat(":", ["sensitive-cap", _purpose.sensitive_cap]) if {
	_mandate_allowed
	_purpose.sensitive_cap
}

_rules contains "consent-required" if rows.consent_required

_rules contains "obligation:justification" if obligations.justification_required

_rules contains "obligation:break-glass" if obligations.break_glass

_rules contains concat(":", ["identifier", identifier]) if allow

_rules contains concat(":", ["linking-key", name]) if {
	_mandate_allowed
	some name, explained in _field_explanations
	explained.linking_key == true
}

# --- explanations --------------------------------------------------------------------

_field_explanations := {name: explained |
	some field in _input_fields
	name := field.name
	explained := _explain_granted(field)
} if {
	_mandate_allowed
} else := {name: {"treatment": "clear", "source": _allow_code, "adjustments": []} |
	some field in _input_fields
	name := field.name
} if {
	_resident_allowed
} else := {name: {"treatment": "denied", "source": "decision-denied", "adjustments": []} |
	some field in _input_fields
	name := field.name
}

_explain_granted(field) := treatment.explain_field(field, _purpose, _pseudonymous) if {
	_field_granted(field.name)
} else := {"treatment": "denied", "source": "not-in-mandate", "adjustments": []}

# Other purposes of the caller's own mandate under which a field is shown more.
_more_elsewhere[name] := better if {
	_mandate_allowed
	some field in _input_fields
	name := field.name
	fields[name] != "clear"
	better := {code: shown |
		some code in _mandate.purposes
		code != _purpose_code
		other := _purposes[code]
		_subject_type in other.recipient_types
		_action in other.actions
		_field_granted_under(code, name)
		shown := treatment.for_field(field, other, _pseudonymous)
		treatment.ranks[shown] > treatment.ranks[fields[name]]
	}
	count(better) > 0
}

_fields_listed_under(code) if is_array(_organisation_mandate.grants[code].fields)

_field_granted_under(code, _) if not _fields_listed_under(code)

_field_granted_under(code, name) if name in _organisation_mandate.grants[code].fields

_holders := sort([org |
	some org, mandate in _organisation_mandates
	_purpose_code in mandate.purposes
])

_holder_types := sort([kind |
	some kind, mandate in data.vault.mandates.subject_types
	_purpose_code in mandate.purposes
])

_own_purposes := sort([code | some code in _mandate.purposes])

_changes contains {"code": "other-purposes", "purposes": _own_purposes} if {
	not allow
	_kind in {"organisation", "worker"}
	count(_own_purposes) > 0
}

_changes contains {"code": "mandate-holders", "organisations": _holders, "subject_types": _holder_types} if {
	_denied_because == "no-mandate"
}

_changes contains {"code": "recipient-types", "subject_types": _purpose.recipient_types} if {
	_denied_because == "recipient-not-allowed"
}

_changes contains {"code": "purpose-actions", "actions": _purpose.actions} if {
	_denied_because == "action-not-permitted"
	_kind in {"organisation", "worker"}
}

_changes contains {"code": "mandate-actions", "actions": _grant.actions} if {
	_denied_because == "action-not-mandated"
}

_changes contains {"code": "jurisdiction-needed", "level": _mandate.rows} if {
	_denied_because == "no-jurisdiction"
}

_changes contains {"code": "resident-only", "targets": ["self", "child"]} if {
	_denied_because == "not-own-record"
}

_changes contains {"code": "audit-log-only"} if {
	_denied_because == "outside-role"
}

_changes contains {"code": "consent-needed", "purpose": _purpose_code} if {
	rows.consent_required
}

_changes contains {"code": "field-elsewhere", "field": name, "purposes": better} if {
	some name, better in _more_elsewhere
}
