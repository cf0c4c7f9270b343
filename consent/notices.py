"""Plain-language notices (PIPL Art. 17): who receives which fields, why, for how long.

Generated from the purpose registry in the policy data, so a notice can never say less or
other than what policy does; its version is the registry's `notice_version`, which every
consent records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vault.catalogue import Catalogue

RECIPIENTS = {
    "department": ("政府部门", "government departments"),
    "residents_committee": ("居民委员会", "the residents' committee"),
    "grid_worker": ("网格员", "grid workers"),
    "community_worker": ("社区工作者", "community workers"),
    "property_company": ("物业公司", "the property company"),
    "owners_committee": ("业主委员会", "the owners' committee"),
}
BASES = {
    "consent": (
        "需要您的单独同意，您可随时撤回，撤回不影响此前已进行的处理。",
        "needs your separate consent; you may withdraw it at any time, which does not "
        "undo earlier lawful processing.",
    ),
    "statutory-duty": (
        "为履行法定职责所必需，不需要您的同意。",
        "necessary for a statutory duty; it does not require your consent.",
    ),
    "public-health-emergency": (
        "为应对突发公共卫生事件所必需，不需要您的同意。",
        "necessary in a public-health emergency; it does not require your consent.",
    ),
    "vital-interests": (
        "为保护生命健康和财产安全所必需，不需要您的同意。",
        "necessary to protect life, health or property; it does not require your consent.",
    ),
    "contract": (
        "为履行您作为一方的合同或业主共同决定所必需，不需要您的同意。",
        "necessary for a contract you are party to (owners' joint decisions); it does "
        "not require your consent.",
    ),
}


def notice(code: str, spec: Mapping[str, Any], catalogue: Catalogue) -> dict[str, Any]:
    """The notice for one purpose, in Simplified Chinese and English."""
    fields = [
        name
        for name, treatment in (spec.get("fields") or {}).items()
        if treatment != "denied" and name in catalogue
    ]
    for category, treatment in (spec.get("categories") or {}).items():
        if treatment != "denied":
            fields += [f.name for f in catalogue.by_category(category) if f.name not in fields]
    labels_zh = "、".join(catalogue[f].label.zh for f in fields) or "无"
    labels_en = ", ".join(catalogue[f].label.en.lower() for f in fields) or "none"
    who = [RECIPIENTS.get(t, (t, t)) for t in spec.get("recipient_types", [])]
    who_zh = "、".join(w[0] for w in who) or "—"
    who_en = ", ".join(w[1] for w in who) or "—"
    name = spec.get("name") or {}
    basis = BASES.get(str(spec.get("legal_basis")), ("", ""))
    days = spec.get("retention_days")
    keep_zh = f"保存不超过 {days} 天。" if days else ""
    keep_en = f"Kept for at most {days} days." if days else ""
    reference = spec.get("legal_reference") or {}
    return {
        "version": spec.get("notice_version"),
        "zh": (
            f"用途：{name.get('zh', code)}。接收方：{who_zh}。使用的信息：{labels_zh}。"
            f"{basis[0]}{keep_zh}依据：{reference.get('zh', '—')}"
        ),
        "en": (
            f"Purpose: {name.get('en', code)}. Recipients: {who_en}. Information used: "
            f"{labels_en}. This {basis[1]} {keep_en} Basis: {reference.get('en', '—')}"
        ),
    }
