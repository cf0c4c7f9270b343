"""The one catalogue of user-facing text (vault/i18n.py, vault/locale/): every id the code
and the templates name exists in both languages, the two catalogues hold the same ids with
the same placeholders, and the one language picker picks as documented."""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import click
import pytest
from babel.messages.pofile import read_po

from api.cli.lang import choose, current, say
from api.oauth.routes import _PAGE
from api.pages.core import NAV
from vault.i18n import HTML_LANG, LANGS, gettext_for, negotiate, text

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vault", "audit", "policies", "consent", "access", "api", "migrations")
LOCALES = {"zh": "zh_CN", "en": "en"}
TEMPLATES = ROOT / "api" / "pages" / "templates"
# Functions whose first string argument is a message id: the catalogue's own (`text`,
# `Message`), the command line's `say`, the pages' `message`; `error_page` takes
# it second.
ID_FIRST = {"text", "Message", "say", "message"}
ID_SECOND = {"error_page"}
MESSAGE_ID = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*")
TEMPLATE_ID = re.compile(r"""\b_\(\s*(['"])([^'"]+)\1\s*([,)~])""")


@cache
def catalogue(lang: str) -> dict[str, str]:
    """Every entry of every `.po` file of `lang` (messages.po, cli.po), read as files."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "vault" / "locale" / LOCALES[lang] / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as handle:
            entries = read_po(handle, locale=LOCALES[lang])
        for m in entries:
            if m.id:
                assert str(m.id) not in found, f"{m.id} is in two files"
                found[str(m.id)] = str(m.string)
    return found


def _python_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _name(node: ast.expr) -> str | None:
    """`text` of `text(...)` or `i18n.text(...)`; None for a method (`self.text(...)` is the
    policy explainer's own words, by the policy data's keys)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr if node.value.id in {"i18n", "session"} else None
    return None


def _literal(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def code_ids() -> dict[str, str]:
    """Message id -> where the code names it (first place)."""
    found: dict[str, str] = {}
    for path in _python_files():
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            candidates: list[ast.expr] = []
            if isinstance(node, ast.Call):
                name = _name(node.func)
                if name in ID_FIRST and node.args:
                    candidates.append(node.args[0])
                if name in ID_SECOND and len(node.args) > 1:
                    candidates.append(node.args[1])
            elif isinstance(node, ast.Assign) and any(_name(t) == "flash" for t in node.targets):
                candidates.append(node.value)  # session.flash = "consent.granted_msg"
            for candidate in candidates:
                value = _literal(candidate)
                if value is not None and value not in LANGS and MESSAGE_ID.fullmatch(value):
                    found.setdefault(value, f"{where}:{candidate.lineno}")
    for items in NAV.values():
        for _href, key in items:
            found.setdefault(key, "api/pages/core.py NAV")
    return found


def template_ids() -> tuple[dict[str, str], dict[str, str]]:
    """(ids, prefixes): `_('id')` and `_('prefix.' ~ value)` in the page templates."""
    ids: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for path in sorted(TEMPLATES.rglob("*.html")):
        where = str(path.relative_to(ROOT))
        for match in TEMPLATE_ID.finditer(path.read_text(encoding="utf-8")):
            target = prefixes if match.group(3) == "~" else ids
            target.setdefault(match.group(2), where)
    return ids, prefixes


def oauth_template_ids() -> dict[str, str]:
    return {m.group(2): "api/oauth/routes.py _PAGE" for m in TEMPLATE_ID.finditer(_PAGE)}


def placeholders(message: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(message) if name is not None}


# -- the catalogues ------------------------------------------------------------------------


def test_both_catalogues_hold_the_same_ids() -> None:
    zh, en = set(catalogue("zh")), set(catalogue("en"))
    assert sorted(zh - en) == [], "only in Chinese"
    assert sorted(en - zh) == [], "only in English"


@pytest.mark.parametrize("lang", LANGS)
def test_no_message_is_empty(lang: str) -> None:
    assert [k for k, v in catalogue(lang).items() if not v.strip()] == []


def _given(key: str) -> bool:
    """A text handed in both languages (`{zh}` / `{en}`), shown as given."""
    return catalogue("zh")[key] == "{zh}" and catalogue("en")[key] == "{en}"


def test_placeholders_agree_between_languages() -> None:
    zh, en = catalogue("zh"), catalogue("en")
    differ = {
        key: (sorted(placeholders(zh[key])), sorted(placeholders(en[key])))
        for key in zh.keys() & en.keys()
        if placeholders(zh[key]) != placeholders(en[key]) and not _given(key)
    }
    assert differ == {}


def test_every_id_the_code_names_is_in_both_catalogues() -> None:
    used = code_ids()
    assert len(used) > 150  # the walk finds the CLI's, the login form's, the errors' ids
    for lang in LANGS:
        missing = {key: where for key, where in used.items() if key not in catalogue(lang)}
        assert missing == {}, lang


def _given_names(node: ast.Call, name: str) -> set[str] | None:
    """The value names a call fills: `Message(id, {...})`'s keys, `text(id, lang, k=...)`'s
    keywords; None when the code builds them (`**values`, a variable), so they are unknown."""
    if name != "Message":
        if any(k.arg is None for k in node.keywords):
            return None
        return {str(k.arg) for k in node.keywords}
    if node.keywords:
        return None
    if len(node.args) < 2:
        return set()
    values = node.args[1]
    if isinstance(values, ast.Dict) and all(isinstance(k, ast.Constant) for k in values.keys):
        return {str(k.value) for k in values.keys if isinstance(k, ast.Constant)}
    return None


def test_every_message_the_code_fills_names_its_placeholders() -> None:
    """A call names exactly the catalogue's placeholders: one missing fails when shown
    (`str.format`), one the catalogue lacks is lost."""
    zh = catalogue("zh")
    checked: set[str] = set()
    differ: dict[str, tuple[list[str], list[str]]] = {}
    for path in _python_files():
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            if name not in ID_FIRST or not node.args:
                continue
            key = _literal(node.args[0])
            if key is None or key not in zh or _given(key):
                continue
            given = _given_names(node, name)
            if given is None:
                continue
            checked.add(key)
            if given != placeholders(zh[key]):
                differ[f"{where}:{node.lineno} {key}"] = (
                    sorted(given),
                    sorted(placeholders(zh[key])),
                )
    assert len(checked) > 150
    assert differ == {}


def test_every_id_the_templates_name_is_in_both_catalogues() -> None:
    ids, prefixes = template_ids()
    ids |= oauth_template_ids()
    assert len(ids) > 150
    for lang in LANGS:
        known = catalogue(lang)
        assert {k: w for k, w in ids.items() if k not in known} == {}, lang
        assert {
            p: w for p, w in prefixes.items() if not any(k.startswith(p) for k in known)
        } == {}, lang


def test_templates_ask_through_gettext_only() -> None:
    """No template still calls the old `t()` picker."""
    old = re.compile(r"(?<![\w.])t\(")
    for path in TEMPLATES.rglob("*.html"):
        assert not old.search(path.read_text(encoding="utf-8")), path


def test_the_command_line_has_one_picker() -> None:
    """No module of api/cli picks a language of its own: no `t(zh, en)`, no VAULT_LANG."""
    for path in sorted((ROOT / "api" / "cli").glob("*.py")):
        if path.name == "lang.py":
            continue
        source = path.read_text(encoding="utf-8")
        assert 'VAULT_LANG"' not in source.replace('envvar="VAULT_LANG"', ""), path
        assert not re.search(r"def (t|_t|_lang|_english|_translator)\(", source), path


# -- text and negotiate --------------------------------------------------------------------


def test_text_fills_values_and_falls_back() -> None:
    assert text("cli.lookup.not-found", "zh") == "未找到"
    assert text("cli.lookup.not-found", "en") == "not found"
    assert text("cli.export.written", "en", output="x.json") == "written to x.json"
    assert text("cli.lookup.not-found", "fr") == "未找到"  # an unknown language: Chinese
    assert text("no.such.message", "en") == "no.such.message"  # a gap shows itself
    assert gettext_for("en")("console.total", n=3) == text("console.total", "en", n=3)


@pytest.mark.parametrize(
    ("asked", "remembered", "accept", "expected"),
    [
        (None, None, None, "zh"),  # nothing says otherwise
        ("en", None, None, "en"),
        ("EN-gb", None, None, "en"),
        ("en_US", None, None, "en"),
        ("zh", "en", "en", "zh"),  # the explicit choice first
        (None, "en", "zh-CN", "en"),  # then the remembered one
        ("fr", "en", None, "en"),  # a language we do not speak is no choice
        (None, None, "fr-FR,en;q=0.8,zh;q=0.5", "en"),  # the first we speak
        (None, None, "zh-TW, en", "zh"),
        (None, None, "de, fr", "zh"),
        ("", "", "", "zh"),
    ],
)
def test_negotiate(
    asked: str | None, remembered: str | None, accept: str | None, expected: str
) -> None:
    assert negotiate(asked, remembered, accept) == expected
    assert expected in HTML_LANG


# -- the command line's picker -------------------------------------------------------------


def test_cli_language_from_the_root_option_then_vault_lang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = click.Command("resident-vault", params=[click.Option(["--lang"])])
    monkeypatch.setenv("VAULT_LANG", "en")
    with click.Context(root) as context:
        context.params["lang"] = None
        assert current() == "en"  # VAULT_LANG
        assert say("cli.lookup.not-found") == "not found"
        context.params["lang"] = "zh"
        assert current() == "zh"  # --lang wins
    group = click.Command("db")  # a command group run on its own has no --lang
    monkeypatch.setenv("VAULT_LANG", "zh-CN")
    with click.Context(group):
        assert say("cli.lookup.not-found") == "未找到"


def test_cli_language_after_click_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main()` prints its one-line error once Click is done: the root's --lang still counts."""
    monkeypatch.delenv("VAULT_LANG", raising=False)
    try:
        choose("en")
        assert current() == "en"
        choose(None)
        assert current() == "zh"
        monkeypatch.setenv("VAULT_LANG", "en")
        assert current() == "en"
    finally:
        choose(None)
