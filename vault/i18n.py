"""The one catalogue of user-facing text, Simplified Chinese by default and English beside
it, and the one place a language is picked.

Text lives in gettext catalogues (`vault/locale/<locale>/LC_MESSAGES/*.po`), read
with Babel and compiled in memory when first used, so there is no build step and a
translator edits ordinary `.po` files. Message ids are short dotted names
(`problem.not-found.title`, `portal.download.csv`); both languages have a catalogue, so an
id missing from English falls back to Chinese, and an id missing from both shows itself:
a gap is visible, never silent. Values are filled with `str.format` names (`{n}`).

The ground floor owns the catalogue so that every floor above (domain errors, the API's
problems, the pages, the command line) names its text by id and none picks a language of
its own.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Final

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

__all__ = [
    "DEFAULT_LANG",
    "HTML_LANG",
    "LANGS",
    "Message",
    "gettext_for",
    "known",
    "negotiate",
    "text",
    "translations",
]

LANGS: Final = ("zh", "en")
DEFAULT_LANG: Final = "zh"
HTML_LANG: Final = {"zh": "zh-CN", "en": "en"}  # BCP 47, for <html lang> and Content-Language
_LOCALE_DIRS: Final = {"zh": "zh_CN", "en": "en"}


@cache
def translations(lang: str) -> gettext.GNUTranslations:
    """The compiled catalogue of one language (`zh` or `en`): every `.po` file of its
    folder merged into one (`messages.po` for the domain, the API and the pages; `cli.po`
    for the command line), so a floor keeps its text in a file of its own while there is
    still one catalogue. An id written in two files is a mistake and refuses to load."""
    folder = resources.files("vault") / "locale" / _LOCALE_DIRS[lang] / "LC_MESSAGES"
    merged: Catalog | None = None
    for source in sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".po")),
        key=lambda entry: entry.name,
    ):
        with source.open("rb") as handle:
            catalog = read_po(handle, locale=_LOCALE_DIRS[lang])
        if merged is None:
            merged = catalog
            continue
        for message in catalog:
            if not message.id:
                continue  # the header
            if message.id in merged:
                raise ValueError(f"message id {message.id!r} is in two catalogue files")
            merged[message.id] = message
    if merged is None:
        raise FileNotFoundError(f"no catalogue for {lang!r} in {folder}")
    compiled = io.BytesIO()
    write_mo(compiled, merged)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def known(message_id: str) -> bool:
    return bool(translations(DEFAULT_LANG)._catalog.get(message_id))  # type: ignore[attr-defined]


def text(message_id: str, lang: str = DEFAULT_LANG, /, **values: Any) -> str:
    """The text of `message_id` in `lang`, with `values` filled in."""
    found = translations(lang if lang in LANGS else DEFAULT_LANG).gettext(message_id)
    if found == message_id and lang != DEFAULT_LANG:
        found = translations(DEFAULT_LANG).gettext(message_id)
    return found.format(**values) if values else found


def gettext_for(lang: str) -> Callable[..., str]:
    """`gettext(id, **values)` in `lang`: what a Jinja2 template with the i18n extension
    calls as `_('portal.download.csv')` or `_('console.total', n=3)`. Values fill the
    catalogue's `{name}` placeholders with `str.format`, as `text` does."""

    def translated(message_id: str, /, **values: Any) -> str:
        return text(message_id, lang, **values)

    return translated


def negotiate(
    asked: str | None = None, remembered: str | None = None, accept_language: str | None = None
) -> str:
    """The language of one request or command, in the order warehouse picks it: an explicit
    choice (`?lang=`, `--lang`, VAULT_LANG), then a remembered one (a cookie), then the
    first language of `Accept-Language` we speak; Chinese when nothing says otherwise."""
    for choice in (asked, remembered):
        if choice:
            lang = _language(choice)
            if lang:
                return lang
    for part in (accept_language or "").split(","):
        lang = _language(part.split(";")[0])
        if lang:
            return lang
    return DEFAULT_LANG


def _language(tag: str) -> str | None:
    primary = tag.strip().lower().replace("_", "-").split("-")[0]
    return primary if primary in LANGS else None


@dataclass(frozen=True)
class Message:
    """A message id with its values, translated when shown: what an error carries instead
    of two strings side by side."""

    id: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def text(self, lang: str = DEFAULT_LANG) -> str:
        """The text in `lang`; a value that is itself a `Message` (a part's name, a nested
        problem) is shown in the same language, so a sentence built of sentences still
        translates whole."""
        values = {
            name: value.text(lang) if isinstance(value, Message) else value
            for name, value in self.values.items()
        }
        return text(self.id, lang, **values)

    def __str__(self) -> str:
        return self.text(DEFAULT_LANG)
