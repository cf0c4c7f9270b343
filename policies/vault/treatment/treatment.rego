# METADATA
# title: Field treatments
# description: |
#   How a purpose's field rules become one treatment per field. The field's own rule
#   wins, else its category's rule, else the field is denied. A purpose may cap
#   sensitive fields it does not name (e.g. grid service sees them masked at most).
#   A cross-system identifier (a catalogue field marked linkable, such as the ID
#   number) reaches a recipient who sees residents under a pseudonym in clear only
#   where the purpose declares it a linking key, with its reason; otherwise it is
#   masked at most, so pseudonymous copies cannot be joined on it. No treatment goes
#   beyond what the field's catalogue entry allows: a field without a generalisation
#   rule is masked instead, one without a mask is denied. A generalised field is shown
#   at the generalisation level the purpose names, else at the field's least revealing
#   level. Every function here depends only on its arguments.
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
#   linkable, mask, generalise); purpose is the purpose's registry entry; pseudonymous
#   is whether the recipient sees residents under a pseudonym. Always defined.
for_field(field, purpose, pseudonymous) := _steps(field, purpose, pseudonymous).final

# METADATA
# title: Why a field has its treatment
# description: |
#   source is where the purpose's wish came from (purpose-field, purpose-category or
#   not-covered); wanted is that wish; adjustments names each step that lowered it
#   (sensitive-cap, linking-cap, catalogue-fallback); linking-key is set when the
#   purpose declares the field a cross-system key; level is the generalisation level.
explain_field(field, purpose, pseudonymous) := object.union(
	{
		"treatment": steps.final,
		"source": _source(field, purpose),
		"wanted": steps.wanted,
		"adjustments": [name |
			some name, lowered in {
				"sensitive-cap": steps.capped != steps.wanted,
				"linking-cap": steps.unlinked != steps.capped,
				"catalogue-fallback": steps.final != steps.unlinked,
			}
			lowered
		],
		"linking_key": _linking_declared(field, purpose, pseudonymous),
	},
	_level_part(field, purpose, steps.final),
) if {
	steps := _steps(field, purpose, pseudonymous)
}

# METADATA
# title: Generalisation level
# description: |
#   The level a generalised field is shown at: the purpose's choice when the field's
#   catalogue entry offers it, else the field's least revealing level (the last).
#   Undefined for a field with no generalisation levels.
level(field, purpose) := chosen if {
	chosen := purpose.generalise[field.name]
	chosen in _levels(field)
} else := _levels(field)[count(_levels(field)) - 1] if {
	count(_levels(field)) > 0
}

# METADATA
# title: Least revealing of two treatments
# description: The lower-ranked of a and b; "denied" for anything that is not a treatment.
least(a, b) := a if {
	ranks[a] <= ranks[b]
} else := b if {
	ranks[b] < ranks[a]
} else := "denied"

_steps(field, purpose, pseudonymous) := {
	"wanted": wanted,
	"capped": capped,
	"unlinked": unlinked,
	"final": _within_catalogue(field, unlinked),
} if {
	wanted := _wanted(field, purpose)
	capped := _capped(field, purpose, wanted)
	unlinked := _unlinked(field, purpose, pseudonymous, capped)
}

# The purpose's rule for the field by name, else by category, else denied. A rule naming
# the field wins even when it is not a valid treatment (it then denies).
_wanted(field, purpose) := _valid(rule) if {
	rule := purpose.fields[field.name]
} else := _valid(rule) if {
	rule := purpose.categories[field.category]
} else := "denied"

_source(field, purpose) := "purpose-field" if {
	purpose.fields[field.name]
} else := "purpose-category" if {
	purpose.categories[field.category]
} else := "not-covered"

_valid(rule) := rule if {
	ranks[rule]
} else := "denied"

# Sensitive fields the purpose does not name are capped at the purpose's sensitive_cap.
_capped(field, purpose, wanted) := least(wanted, purpose.sensitive_cap) if {
	field.sensitive == true
	not purpose.fields[field.name]
	ranks[purpose.sensitive_cap]
} else := wanted

# A linkable field goes to a pseudonymous recipient masked at most, unless declared.
_unlinked(field, purpose, pseudonymous, wanted) := least(wanted, "masked") if {
	pseudonymous == true
	field.linkable == true
	not purpose.linking_fields[field.name]
} else := wanted

_linking_declared(field, purpose, pseudonymous) if {
	pseudonymous == true
	field.linkable == true
	purpose.linking_fields[field.name]
} else := false

_within_catalogue(field, wanted) := wanted if {
	wanted in {"clear", "denied"}
} else := wanted if {
	wanted == "generalised"
	count(_levels(field)) > 0
} else := "masked" if {
	wanted in {"generalised", "masked"}
	_has_mask(field)
} else := "denied"

_level_part(field, purpose, final) := {"level": level(field, purpose)} if {
	final == "generalised"
} else := {}

_levels(field) := [name |
	is_array(field.generalise)
	some name in field.generalise
	is_string(name)
]

_has_mask(field) if {
	is_string(field.mask)
	field.mask != ""
}
