"""Explanations of decisions, in words, from what the policy itself returned.

The Rego decision carries its own reasons: the deciding rules, each field's source rule
and the steps that lowered it (`explanation.fields`), and what would change the outcome
(`explanation.changes`). This module only puts those codes into sentences, with the
texts kept in the policy's data document (`data.vault.explanations`, `reasons`, purpose
names), so there is no second, hand-written copy of the rules that could drift from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.interfaces import Decision
from policies.rows import rows_document
from vault.i18n import Message

__all__ = ["TREATMENT_WORDS", "Explainer"]

# The code's own words, from the catalogue (`explain.*`); a treatment or basis the code does
# not know is shown as its code.
TREATMENT_WORDS: Mapping[str, Message] = {
    "clear": Message("explain.treatment.clear"),
    "masked": Message("explain.treatment.masked"),
    "generalised": Message("explain.treatment.generalised"),
    "denied": Message("explain.treatment.denied"),
}

LEGAL_BASES: Mapping[str, Message] = {
    "consent": Message("explain.basis.consent"),
    "statutory-duty": Message("explain.basis.statutory-duty"),
    "public-health-emergency": Message("explain.basis.public-health-emergency"),
    "contract": Message("explain.basis.contract"),
    "self": Message("explain.basis.self"),
}


def _word(words: Mapping[str, Message], code: str, lang: str) -> str:
    found = words.get(code)
    return found.text(lang) if found is not None else code


def _label(value: Any, lang: str, fallback: str) -> str:
    if isinstance(value, Mapping):
        text = value.get("en" if lang.startswith("en") else "zh")
        return str(text) if text else fallback
    return fallback


class Explainer:
    """Words for decisions, from one policy data document and the field catalogue."""

    def __init__(
        self,
        data: Mapping[str, Any],
        fields: Sequence[Mapping[str, Any]],
        categories: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.data = data
        self.fields = {str(f["name"]): f for f in fields}
        self.categories = categories or {}
        self.texts: Mapping[str, Any] = data.get("explanations", {})
        self.purposes: Mapping[str, Any] = data.get("purposes", {})
        self.subject_types: Mapping[str, Any] = data.get("subject_types", {})

    # -- small words ----------------------------------------------------------------------

    def text(self, code: str, lang: str, **values: str) -> str:
        template = _label(self.texts.get(code), lang, code)
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            return template

    def purpose_name(self, code: str | None, lang: str) -> str:
        if not code:
            return ""
        return _label(self.purposes.get(code, {}).get("name"), lang, code)

    def field_label(self, name: str, lang: str) -> str:
        return _label(self.fields.get(name, {}).get("label"), lang, name)

    def treatment(self, treatment: str, lang: str) -> str:
        return _word(TREATMENT_WORDS, treatment, lang)

    def subject_type(self, kind: str, lang: str) -> str:
        return _label(self.subject_types.get(kind), lang, kind)

    def legal_basis(self, basis: str | None, lang: str) -> str | None:
        if basis is None:
            return None
        return _word(LEGAL_BASES, basis, lang)

    def _joined(self, items: Sequence[str], lang: str) -> str:
        return Message("explain.list-separator").text(lang).join(items)

    # -- one field ------------------------------------------------------------------------

    def field_lines(
        self, decision: Decision, name: str, lang: str, purpose: str | None
    ) -> dict[str, Any]:
        """Why one field has its treatment: the rule it came from, then each step."""
        explained: Mapping[str, Any] = decision.explanation.get("fields", {}).get(name, {})
        treatment = str(decision.treatment(name))
        source = str(explained.get("source", "decision-denied"))
        values = {
            "purpose": self.purpose_name(purpose, lang),
            "wanted": self.treatment(str(explained.get("wanted", treatment)), lang),
            "category": self._category_label(name, lang),
            "cap": self.treatment(
                str(self.purposes.get(purpose or "", {}).get("sensitive_cap", "masked")), lang
            ),
        }
        because = [self.text(source, lang, **values)]
        adjustments = [str(a) for a in explained.get("adjustments", ())]
        because += [self.text(step, lang, **values) for step in adjustments]
        if explained.get("linking_key") is True:
            why = self.purposes.get(purpose or "", {}).get("linking_fields", {}).get(name)
            because.append(self.text("linking-key", lang, why=_label(why, lang, "")))
        level = decision.levels.get(name)
        if level:
            because.append(self.text("level", lang, level=level))
        line: dict[str, Any] = {
            "field": name,
            "label": self.field_label(name, lang),
            "treatment": treatment,
            "source": source,
            "adjustments": adjustments,
            "because": because,
        }
        if level:
            line["level"] = level
        if explained.get("linking_key") is True:
            line["linking_key"] = True
        return line

    def _category_label(self, name: str, lang: str) -> str:
        category = str(self.fields.get(name, {}).get("category", ""))
        return _label(self.categories.get(category), lang, category)

    # -- what would change the outcome ------------------------------------------------------

    def change_line(self, change: Mapping[str, Any], lang: str) -> dict[str, Any]:
        code = str(change.get("code", ""))
        values: dict[str, str] = {}
        if "purposes" in change:
            purposes = change["purposes"]
            if isinstance(purposes, Mapping):
                values["purposes"] = self._joined(
                    [
                        Message(
                            "explain.purpose-treatment",
                            {
                                "purpose": self.purpose_name(p, lang),
                                "treatment": self.treatment(str(t), lang),
                            },
                        ).text(lang)
                        for p, t in sorted(purposes.items())
                    ],
                    lang,
                )
            else:
                values["purposes"] = self._joined(
                    [self.purpose_name(str(p), lang) for p in purposes], lang
                )
        if "organisations" in change or "subject_types" in change:
            names = [str(o) for o in change.get("organisations", ())]
            kinds = [self.subject_type(str(k), lang) for k in change.get("subject_types", ())]
            values["organisations"] = self._joined(names + kinds, lang) or "—"
            values["subject_types"] = ""
        if "subject_types" in change and "organisations" not in change:
            values["subject_types"] = self._joined(
                [self.subject_type(str(k), lang) for k in change["subject_types"]], lang
            )
        if "actions" in change:
            values["actions"] = self._joined([str(a) for a in change["actions"]], lang)
        if "level" in change:
            values["level"] = str(change["level"])
        if "field" in change:
            values["field"] = self.field_label(str(change["field"]), lang)
        if "purpose" in change:
            values["purpose"] = self.purpose_name(str(change["purpose"]), lang)
        plain = {k: v for k, v in change.items() if k != "code"}
        return {"code": code, **_plain(plain), "text": self.text(code, lang, **values)}

    # -- the whole decision -----------------------------------------------------------------

    def explain(
        self,
        decision: Decision,
        *,
        purpose: str | None,
        action: str,
        lang: str = "zh",
        fields: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The decision in words: outcome, reason, rules, purpose and basis, each field, and
        what would change the outcome."""
        names = list(fields) if fields else sorted(decision.fields)
        spec = self.purposes.get(purpose or "", {})
        explained = {
            "outcome": "allowed" if decision.allow else "denied",
            "reason": {"code": decision.reason.code, "text": decision.reason.text(lang)},
            "deciding_rules": list(decision.rules),
            "action": action,
            "purpose": {
                "code": purpose,
                "name": self.purpose_name(purpose, lang) or None,
                "legal_basis": decision.rows.legal_basis or spec.get("legal_basis"),
                "legal_basis_text": self.legal_basis(
                    decision.rows.legal_basis or spec.get("legal_basis"), lang
                ),
                "legal_reference": _label(spec.get("legal_reference"), lang, "") or None,
            }
            if purpose
            else None,
            "identifier": decision.identifier,
            "consent_required": decision.rows.consent_required,
            "rows": rows_document(decision.rows),
            "obligations": {
                "justification_required": decision.obligations.justification_required,
                "rate_class": str(decision.obligations.rate_class),
            },
            "fields": [
                self.field_lines(decision, n, lang, purpose) for n in names if n in decision.fields
            ],
            "changes": [self.change_line(c, lang) for c in decision.explanation.get("changes", ())],
            "policy_revision": decision.revision,
            "evaluation_id": decision.evaluation_id,
        }
        explained["summary"] = self.summary(decision, purpose, lang)
        return explained

    def summary(self, decision: Decision, purpose: str | None, lang: str) -> str:
        if not decision.allow:
            return decision.reason.text(lang)
        shown = [n for n, t in sorted(decision.fields.items()) if str(t) != "denied"]
        values = {
            "basis": self.legal_basis(decision.rows.legal_basis, lang) or "",
            "purpose": self.purpose_name(purpose, lang),
            "fields": self._joined([self.field_label(n, lang) for n in shown], lang),
        }
        # One whole sentence per case, so each language orders its own words.
        if decision.rows.consent_required:
            return Message("explain.summary.allowed-consented", values).text(lang)
        return Message("explain.summary.allowed", values).text(lang)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
