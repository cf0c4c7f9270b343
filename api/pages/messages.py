"""The pages' words come from the one catalogue (`vault/i18n.py`, `vault/locale/`). Templates
ask with `_('id', **values)` (Jinja2's i18n extension, `gettext` passed by `core.render`);
this module names what the views and `label()` in templates use."""

from __future__ import annotations

from vault.i18n import HTML_LANG, LANGS, known, text

__all__ = ["HTML_LANG", "LANGS", "label", "message"]


def label(prefix: str, value: str | None, lang: str) -> str:
    """The catalogue's text for a code (an action, a treatment), or the code itself."""
    if not value:
        return ""
    key = f"{prefix}.{value}"
    return text(key, lang) if known(key) else value


def message(key: str, lang: str) -> str:
    return text(key, lang)
