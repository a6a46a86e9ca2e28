"""Options and settings loading shared by the ``lungcds`` sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from server.core.config import Settings, load_settings
from server.core.logging import configure_logging

__all__ = ["ConfigOption", "settings"]

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (environment wins)", exists=True)
]


def settings(config: Path | None) -> Settings:
    """The settings (file, then environment) with logging configured from them."""
    loaded = load_settings(config)
    configure_logging(loaded.log_level, loaded.log_json)
    return loaded
