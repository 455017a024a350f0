"""structlog set-up: key=value lines for people, JSON lines when HOSTATLAS_LOG_JSON is set.

Nothing here logs request bodies or headers, and tracebacks are plain (no local variables, which
could hold a raw key), so secrets (API keys, agent tokens) never reach a log.
"""

from __future__ import annotations

import logging

import structlog


def configure(level: str = "INFO", *, json: bool = False) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
