"""Options, the console and settings loading shared by the ``lungcds`` sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from server.core.config import Settings, load_settings
from server.core.logging import configure_logging

__all__ = ["ConfigOption", "console", "settings"]

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (environment wins)", exists=True)
]

#: Messages and progress bars of the commands, on stderr (stdout stays for data: keys, JSON).
#: Readable log lines are printed through it too, so they appear above a live progress bar.
console = Console(stderr=True, soft_wrap=True)


def settings(config: Path | None) -> Settings:
    """The settings (file, then environment) with logging configured from them."""
    loaded = load_settings(config)
    configure_logging(loaded.log_level, loaded.log_json, console)
    return loaded
