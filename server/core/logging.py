"""Structured, PHI-free logging for every lungcds process.

Modules log through ``logging.getLogger(__name__)`` with an ``extra`` dict of identifiers
(UIDs, job ids, AE titles); this configures structlog to render those records as one JSON
object per line for machines (files, journald, containers) or as readable lines for a person at
a terminal.  Patient names, IDs and birth dates are never passed to a logger, and tracebacks are
rendered without local variables, which could hold them.
"""

from __future__ import annotations

import logging
import sys
import warnings

import structlog
from rich.console import Console
from rich.text import Text

__all__ = ["configure_logging"]


class _ConsoleHandler(logging.Handler):
    """Prints each rendered record through a rich Console.

    The Console that draws a progress bar puts what it prints above the bar; a plain stream
    handler would write through the bar and leave broken lines behind.
    """

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(Text.from_ansi(self.format(record)), soft_wrap=True, highlight=False)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller (logging.Handler's contract)
            self.handleError(record)


def configure_logging(level: str = "INFO", json: bool | None = None, console: Console | None = None) -> None:
    """Route stdlib logging through structlog: JSON lines, or readable lines on a terminal.

    Parameters
    ----------
    level
        Root level, e.g. ``"INFO"``.
    json
        True: JSON lines on stderr.  False: readable lines through ``console``.  None (the
        default of ``LUNGCDS_LOG_JSON``): readable when ``console`` is a terminal, else JSON.
    console
        The rich Console the command draws on (default: a Console on stderr); readable lines go
        through it so that they do not break its progress bars.
    """
    out = console if console is not None else Console(stderr=True)
    as_json = not out.is_terminal if json is None else json
    pre_chain: list[structlog.typing.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    handler: logging.Handler
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        handler = logging.StreamHandler(sys.stderr)
    else:
        # Colours as ANSI codes, which rich turns into styles (and drops when ``out`` is no terminal).
        renderer = structlog.dev.ConsoleRenderer(colors=True, exception_formatter=structlog.dev.plain_traceback)
        handler = _ConsoleHandler(out)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # "openjpeg": pylibjpeg-openjpeg logs every JPEG 2000 frame it encodes (the SEGs, reports.seg) at INFO.
    for noisy in ("pynetdicom", "highdicom", "openjpeg", "sqlalchemy.engine", "alembic", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # highdicom warns about single-component person names and quotes the name: patient data.
    # Source names are copied faithfully, so the warning is silenced rather than logged.
    warnings.filterwarnings("ignore", message=r".*unlikely to represent the intended person name", category=UserWarning)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*pre_chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
