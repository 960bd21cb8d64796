"""structlog set-up with token scrubbing (platform §4.11, §12.3).

Every line carries ``timestamp``, ``level``, ``event``, ``logger``, ``service``, ``version``,
``request_id``, ``tenant_id`` and ``user_id``. A processor replaces secrets with
``[REDACTED]`` in every string field.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"
_SECRET_PARAMS = ("token", "access_token", "api_key", "key", "client_secret")
_PARAM_RE = re.compile(
    r"(?i)(?P<name>(?<![A-Za-z0-9_])(?:" + "|".join(_SECRET_PARAMS) + r"))=(?P<value>[^&\s\"']+)"
)
_SGK_RE = re.compile(r"sgk_[A-Za-z0-9_-]{8,}")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_SECRET_KEYS = frozenset(
    {"authorization", "token", "access_token", "api_key", "key", "client_secret", "password"}
)


def scrub(text: str) -> str:
    """Replace every secret pattern of platform §4.11 inside ``text``."""
    text = _PARAM_RE.sub(lambda m: f"{m.group('name')}={REDACTED}", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _SGK_RE.sub(REDACTED, text)
    return _JWT_RE.sub(REDACTED, text)


def _scrub_value(key: str, value: Any) -> Any:
    if key.lower() in _SECRET_KEYS and value is not None:
        return REDACTED
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value("", v) for v in value]
    return value


def scrub_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: scrub every field, the event included."""
    for key in list(event_dict):
        event_dict[key] = _scrub_value(key, event_dict[key])
    return event_dict


def _defaults(service: str, version: str) -> structlog.types.Processor:
    def add(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        event_dict.setdefault("version", version)
        for key in ("request_id", "tenant_id", "user_id"):
            event_dict.setdefault(key, None)
        return event_dict

    return add


def configure_logging(
    service: str, version: str, *, fmt: str = "json", level: str = "info", stream: Any = None
) -> None:
    """Configure structlog and the stdlib root logger for a service process."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _defaults(service, version),
        structlog.processors.format_exc_info,
        scrub_processor,
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    for noisy in ("hypercorn.access",):
        logging.getLogger(noisy).disabled = True
