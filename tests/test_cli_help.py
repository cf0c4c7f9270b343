"""The command line's help comes from the catalogue (`cli.help.*` in cli.po), in VAULT_LANG's
language when the app is built: Chinese by default, English with VAULT_LANG=en, never an
id left showing and never the old "中文 / English" pairs."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "api" / "cli"
HELP_FUNCTIONS = {"help_text", "option", "argument", "group"}
CJK = re.compile(r"[\u4e00-\u9fff]")

# Prints {command path: [command help, help of each option and argument]} of the app as
# built in this process: the help Click will render.
DUMP = """
import json, typer
from api.cli.main import app

def walk(command, path):
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from walk(sub, [*path, name])

helps = {}
for path, command in walk(typer.main.get_command(app), []):
    params = [p.help for p in command.params if getattr(p, "help", None)]
    helps[" ".join(path) or "(root)"] = [command.help or "", *params]
print(json.dumps(helps, ensure_ascii=False))
"""


@cache
def cli_catalogue(locale: str) -> dict[str, str]:
    path = ROOT / "vault" / "locale" / locale / "LC_MESSAGES" / "cli.po"
    with path.open("rb") as handle:
        return {str(m.id): str(m.string) for m in read_po(handle, locale=locale) if m.id}


def help_ids() -> dict[str, str]:
    """`cli.help.*` id -> where api/cli names it, from calls of the help helpers."""
    found: dict[str, str] = {}
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id in HELP_FUNCTIONS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.setdefault(first.value, f"{path.name}:{node.lineno}")
    return found


def built_helps(lang: str | None) -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "VAULT_LANG"}
    if lang is not None:
        env["VAULT_LANG"] = lang
    done = subprocess.run(
        [sys.executable, "-c", DUMP], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_every_help_id_is_in_both_languages_and_used() -> None:
    named = help_ids()
    assert len(named) > 100
    assert all(key.startswith("cli.help.") for key in named), named
    for locale in ("zh_CN", "en"):
        known = cli_catalogue(locale)
        assert {k: w for k, w in named.items() if k not in known} == {}, locale
        unused = sorted(k for k in known if k.startswith("cli.help.") and k not in named)
        assert unused == [], locale


def test_no_command_line_module_holds_chinese_text_outside_comments() -> None:
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strings = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
        assert [s for s in strings if CJK.search(s)] == [], path.name


@pytest.mark.parametrize("lang", [None, "en"])
def test_help_is_in_vault_lang_when_the_app_is_built(lang: str | None) -> None:
    helps = built_helps(lang)
    assert {"(root)", "keys rotate", "audit partitions detach", "keys tokens list"} <= set(helps)
    texts = [text for command in helps.values() for text in command]
    assert not [t for t in texts if t.startswith("cli.help.")]  # every id found its text
    assert not [t for t in texts if " / " in t and CJK.search(t)]  # no "中文 / English" pair
    if lang == "en":
        assert [t for t in texts if CJK.search(t)] == []
    else:  # Chinese by default: every command and group says what it does in Chinese
        assert [path for path, command in helps.items() if not CJK.search(command[0])] == []
