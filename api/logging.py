"""structlog set-up: JSON events, and a last line of defence against personal data in logs.

Log calls name identifiers and field *names*, never values. The redaction processor still
replaces any event key that is a catalogue field or a secret-looking name, in case a
future call slips.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from vault.catalogue import default_catalogue

_SECRET_KEYS = frozenset(
    {
        "password",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "key",
        "private_key",
        "authorization",
    }
)
REDACTED = "[redacted]"
# Built once: this runs on every log event.
_FORBIDDEN = _SECRET_KEYS | frozenset(default_catalogue().names)


def redact_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in _FORBIDDEN:
            event_dict[key] = REDACTED
    return event_dict


def configure_logging(*, json: bool = True, level: int = logging.INFO) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )


class _StderrLogger:
    """Writes each event line to whatever `sys.stderr` is at that moment, so a stream that
    was current at configure time (a test's capture, a CLI runner's) and has since been
    closed is never written to."""

    def __init__(self, *_args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class StructlogHandler(logging.Handler):
    """Standard-library records (uvicorn's own: its error log, a request it could not
    parse, an app that stopped mid-answer) as structlog JSON lines like every other event:
    the logger's name, level and fixed message, and an exception only by its type, since
    an exception's text may quote what a caller sent."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[0] is not None:
                event["error"] = record.exc_info[0].__name__
            # The template, not the filled line: uvicorn fills in addresses and paths.
            message = str(record.msg).strip()
            structlog.get_logger(record.name).log(record.levelno, message, **event)
        except Exception:  # a log line must never take the server down
            self.handleError(record)


def uvicorn_log_config(level: str = "WARNING") -> dict[str, Any]:
    """uvicorn's `log_config`: its loggers through `StructlogHandler`, so nothing it prints
    is anything but one JSON line (`serve` passes it; tests/test_openapi_contract.py)."""
    handler = {"()": f"{__name__}.StructlogHandler"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"structlog": handler},
        "loggers": {
            name: {"handlers": ["structlog"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }
