# METADATA
# title: Field treatments
# description: |
#   How a purpose's field rules become one treatment per field. The field's own rule
#   wins, else its category's rule, else the field is denied. A purpose may cap
#   sensitive fields it does not name (e.g. grid service sees them masked at most),
#   and no treatment goes beyond what the field's catalogue entry allows: a field
#   without a generalisation rule is masked instead, one without a mask is denied.
#   Every function here depends only on its arguments.
package vault.treatment

# METADATA
# title: Treatment ranks
# description: |
#   The four treatments from least to most revealing. "generalised" ranks above
#   "masked" because a field that cannot be generalised falls back to masked.
ranks := {"denied": 0, "masked": 1, "generalised": 2, "clear": 3}

# METADATA
# title: Treatment of one field for one purpose
# description: |
#   field is the catalogue's public metadata of the field (name, category, sensitive,
#   mask, generalise); purpose is the purpose's registry entry. Always defined.
for_field(field, purpose) := _within_catalogue(field, _capped(field, purpose, _wanted(field, purpose)))

# METADATA
# title: Least revealing of two treatments
# description: The lower-ranked of a and b; "denied" for anything that is not a treatment.
least(a, b) := a if {
	ranks[a] <= ranks[b]
} else := b if {
	ranks[b] < ranks[a]
} else := "denied"

# The purpose's rule for the field by name, else by category, else denied. A rule naming
# the field wins even when it is not a valid treatment (it then denies).
_wanted(field, purpose) := _valid(rule) if {
	rule := purpose.fields[field.name]
} else := _valid(rule) if {
	rule := purpose.categories[field.category]
} else := "denied"

_valid(rule) := rule if {
	ranks[rule]
} else := "denied"

# Sensitive fields the purpose does not name are capped at the purpose's sensitive_cap.
_capped(field, purpose, wanted) := least(wanted, purpose.sensitive_cap) if {
	field.sensitive == true
	not purpose.fields[field.name]
	ranks[purpose.sensitive_cap]
} else := wanted

_within_catalogue(field, wanted) := wanted if {
	wanted in {"clear", "denied"}
} else := wanted if {
	wanted == "generalised"
	_has_rule(field, "generalise")
} else := "masked" if {
	wanted in {"generalised", "masked"}
	_has_rule(field, "mask")
} else := "denied"

_has_rule(field, kind) if {
	rule := field[kind]
	is_string(rule)
	rule != ""
}
