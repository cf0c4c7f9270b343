# METADATA
# title: Decision-log mask
# description: |
#   What OPA keeps of a decision's input in its decision log: an allowlist. The vault's
#   decision input names the caller's type, organisation, roles and jurisdiction, the
#   purpose, the action and the field catalogue, never a resident; anything else that
#   reaches OPA (a batch of cases, a key a future caller adds, a justification's free
#   text) is erased before the line is written, and the catalogue is cut to field names.
#   Results are decisions about callers, not residents, and are kept for correlation.
package system.log

_input_kept := {"subject", "purpose", "action", "target", "fields"}

_subject_kept := {"type", "organisation", "roles", "jurisdiction"}

_jurisdiction_kept := {"communities", "grids", "buildings"}

# METADATA
# title: Paths erased from a logged decision
mask contains path if {
	some key, _ in input.input
	not key in _input_kept
	path := concat("/", ["", "input", key])
}

mask contains path if {
	some key, _ in input.input.subject
	not key in _subject_kept
	path := concat("/", ["", "input", "subject", key])
}

mask contains path if {
	some key, _ in input.input.subject.jurisdiction
	not key in _jurisdiction_kept
	path := concat("/", ["", "input", "subject", "jurisdiction", key])
}

mask contains "/input" if {
	some key, value in input
	key == "input"
	not is_object(value)
}

# The catalogue's labels and enumerations are long and say nothing about the caller.
mask contains {"op": "upsert", "path": "/input/fields", "value": names} if {
	is_array(input.input.fields)
	names := [name | some field in input.input.fields; name := _field_name(field)]
}

_field_name(field) := field.name if is_string(field.name)

else := "?"
