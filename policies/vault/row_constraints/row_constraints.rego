# METADATA
# title: Row constraints
# description: |
#   Which residents' rows a decision covers, as data that our own code turns into
#   SQL with bound parameters: a scope, the jurisdiction ids at one level, whether an
#   active consent is required, and the legal basis. Every function here depends only
#   on its arguments.
package vault.row_constraints

# METADATA
# title: No rows
# description: The row constraints of a denied decision.
none := {
	"scope": "none",
	"communities": [],
	"grids": [],
	"buildings": [],
	"consent_required": false,
	"legal_basis": null,
}

# METADATA
# title: Jurisdiction levels
# description: The levels a mandate can confine rows to, from the widest.
levels := ["communities", "grids", "buildings"]

# METADATA
# title: Rows of a resident's own access
# description: scope is "self" or "children"; the legal basis is the resident themself.
for_resident(scope) := object.union(none, {"scope": scope, "legal_basis": "self"})

# METADATA
# title: Rows of a mandate
# description: |
#   level is the mandate's "rows": "all", or one of levels, which confines rows to the
#   subject's jurisdiction ids at that level. Undefined when that level of the
#   jurisdiction is empty or the level is unknown: no rows to read means no access.
for_mandate(level, _, legal_basis) := rows if {
	level == "all"
	rows := object.union(none, {
		"scope": "all",
		"consent_required": legal_basis == "consent",
		"legal_basis": legal_basis,
	})
}

for_mandate(level, jurisdiction, legal_basis) := rows if {
	level in levels
	ids := ids_at(jurisdiction, level)
	count(ids) > 0
	rows := object.union(none, {
		"scope": "jurisdiction",
		level: ids,
		"consent_required": legal_basis == "consent",
		"legal_basis": legal_basis,
	})
}

# METADATA
# title: Jurisdiction ids at one level
# description: The distinct string ids at that level of a jurisdiction object, sorted.
ids_at(jurisdiction, level) := sort({id |
	is_object(jurisdiction)
	some id in _as_array(object.get(jurisdiction, level, []))
	is_string(id)
})

_as_array(value) := value if {
	is_array(value)
} else := []
