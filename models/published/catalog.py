"""Every published-checkpoint format this pipeline imports, loaded only when asked for.

Each module of this package defines its formats as ``FORMATS`` (or one ``FORMAT``); importing
one builds no network, but does import torch and its member's code, so the catalog imports the
modules on first use.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from models.published.format import PublishedFormat

__all__ = ["FORMAT_MODULES", "published_formats"]

#: Modules of :mod:`models.published` holding formats, in the order ``models formats`` lists them.
FORMAT_MODULES: tuple[str, ...] = (
    "flyingbird",
    "simonj",
    "hal9000",
    "code1055",
    "uaux2",
    "baseline",
    "kinetics_i3d",
    "torchvision_densenet",
)


@cache
def published_formats() -> Mapping[str, PublishedFormat]:
    """Every format by its ``--format`` name.

    Raises
    ------
    RuntimeError
        If two modules define a format of the same name (a programming error).
    """
    found: dict[str, PublishedFormat] = {}
    for module_name in FORMAT_MODULES:
        module = importlib.import_module(f"models.published.{module_name}")
        formats = getattr(module, "FORMATS", None) or (module.FORMAT,)
        for format_ in formats:
            if format_.name in found:
                raise RuntimeError(f"two published formats are named {format_.name!r}")
            found[format_.name] = format_
    return MappingProxyType(found)
