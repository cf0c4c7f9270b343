"""structlog set-up: JSON events, and a last line of defence against personal data in logs.

Log calls name identifiers and field *names*, never values. The redaction processor still
replaces any event key that is a catalogue field or a secret-looking name, in case a
future call slips.
"""

from __future__ import annotations

import logging
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
        logger_factory=structlog.PrintLoggerFactory(file=_stderr()),
        cache_logger_on_first_use=False,
    )


def _stderr() -> Any:
    import sys  # noqa: PLC0415 - resolved at configure time so tests can capture stderr

    return sys.stderr
