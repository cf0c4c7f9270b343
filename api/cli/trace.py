"""`resident-vault trace LEAKED_FILE [--json]`: which export did a leaked file come from?

Reads the file (NDJSON or CSV, whole or a subset of its rows), scores every export in the
`exports` table (`access.exports.trace`) and prints the most likely one — export id, request id,
organisation, client or user, time — with its posterior probability, its likelihood ratio
to the runner-up, and the runner-up. A file that cannot be read is one line and exit 2.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from access.exports.fingerprints import fingerprint_master, mark_key
from access.exports.records import all_exports
from access.exports.trace import LeakUnreadable, read_leak, score_exports, summary
from access.runtime import open_runtime
from api.settings import Settings
from vault.pseudonyms import Pseudonyms

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
MAX_BYTES = 512 * 1024 * 1024


def _lang(ctx: typer.Context) -> str:
    root = ctx.find_root()
    value = root.params.get("lang") if root.params else None
    return "en" if str(value or os.environ.get("VAULT_LANG", "zh")).startswith("en") else "zh"


def _fail(message: str) -> typer.Exit:
    err.print(f"resident-vault: {message}", markup=False)
    return typer.Exit(2)


def trace(
    ctx: typer.Context,
    leaked_file: Annotated[Path, typer.Argument(help="泄露的文件 / the leaked file")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON 输出 / print JSON")] = False,
) -> None:
    """追查泄露文件来自哪次导出 / Trace a leaked file to the export it came from."""
    lang = _lang(ctx)

    def t(zh: str, en: str) -> str:
        return en if lang == "en" else zh

    try:
        if leaked_file.stat().st_size > MAX_BYTES:
            raise _fail(t("文件过大", "the file is too large"))
        data = leaked_file.read_bytes()
    except OSError as exc:
        raise _fail(t(f"无法读取 {leaked_file}：{exc.strerror}",
                      f"cannot read {leaked_file}: {exc.strerror}")) from exc  # fmt: skip
    try:
        leak = read_leak(data)
    except LeakUnreadable as exc:
        raise _fail(t(f"{leaked_file}：{exc.zh}", f"{leaked_file}: {exc.en}")) from exc
    runtime = open_runtime(Settings())
    try:
        with runtime.vault.sessions() as session:
            records = all_exports(session)
            if not records:
                raise _fail(t("没有任何导出记录", "no exports are recorded"))
            master = fingerprint_master(runtime.vault.keyring)
            scored = score_exports(
                leak, records, master, mark_key(master), Pseudonyms(runtime.vault.keyring)
            )
            answer = summary(scored, leak)
    finally:
        runtime.close()
    if as_json:
        out.print(json.dumps(answer, ensure_ascii=False), markup=False)
        return
    _print(answer, t)


def _print(answer: dict[str, Any], t: Any) -> None:
    best = answer["best"]
    who = best["user"] or best["client"] or "-"
    out.print(t(f"读取 {answer['rows']} 行（{answer['format']}），"
                f"比对 {answer['exports_scored']} 次导出",
                f"read {answer['rows']} rows ({answer['format']}), scored "
                f"{answer['exports_scored']} exports"), markup=False)  # fmt: skip
    lines = [
        (t("导出", "export"), best["export_id"]),
        (t("请求", "request"), best["request_id"]),
        (t("机构", "organisation"), best["organisation"] or "-"),
        (t("客户端/用户", "client/user"), who),
        (t("用途", "purpose"), best["purpose"] or "-"),
        (t("时间", "time"), best["created_at"]),
        (t("置信度（后验概率）", "confidence (posterior)"), f"{best['posterior']:.6f}"),
    ]
    ratio = answer["log10_likelihood_ratio_to_runner_up"]
    if ratio is not None:
        shown = "∞" if math.isinf(ratio) else f"10^{ratio:.1f}"
        lines.append((t("相对次优的似然比", "likelihood ratio to runner-up"), shown))
    for label, value in lines:
        out.print(f"{label}: {value}", markup=False)
    runner = answer["runner_up"]
    if runner:
        out.print(t(f"次优：{runner['export_id']}（{runner['organisation'] or '-'}，"
                    f"后验 {runner['posterior']:.2e}）",
                    f"runner-up: {runner['export_id']} ({runner['organisation'] or '-'}, "
                    f"posterior {runner['posterior']:.2e})"), markup=False)  # fmt: skip
