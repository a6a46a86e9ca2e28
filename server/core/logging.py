"""Structured, PHI-free logging for every lungcds process.

Modules log through ``logging.getLogger(__name__)`` with an ``extra`` dict of identifiers
(UIDs, job ids, AE titles); this configures structlog to render those records as one JSON
object per line.  Patient names, IDs and birth dates are never passed to a logger.
"""

from __future__ import annotations

import logging
import sys
import warnings

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Route stdlib logging through structlog (JSON lines, or a console format)."""
    pre_chain: list[structlog.typing.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
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
