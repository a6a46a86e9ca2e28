"""What ``--init FILE`` of a training recipe becomes: our own file as it is, or an authors' file converted.

The recipes read this pipeline's files (a backbone state dict, a member file).  The published
initialisations (the Kinetics I3D ``model_rgb.pth``, hal9000's ImageNet backbones) and the
members' published checkpoints are converted first by their format, into the run's output
folder, so that the training's record names the authors' file and its hash, and what the
recipe loads is checked name by name like an installation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.published.format import PublishedFormatError, file_record
from models.published.importer import import_record, resolve_format

__all__ = ["Initialisation", "initialisation"]

#: What the recipe receives: a member file (``initial_weights``), a backbone state dict of the
#: zoo's InceptionV1 (I3D), hal9000's per-kind backbones, or the given file unchanged.
InitKind = Literal["member", "i3d_backbone", "hal9000_backbones", "as_given"]


@dataclass(frozen=True)
class Initialisation:
    """The file a recipe loads, what it holds, and (converted) the import record of the authors' files."""

    path: Path
    kind: InitKind
    record: dict[str, Any] | None


def initialisation(path: Path, recipe: str, scratch: Path) -> Initialisation:
    """The initialisation of ``recipe`` (a registered model name) from ``path``.

    A path in no published layout is returned as it is (the recipe checks it when it loads it).
    A published layout is converted into ``scratch`` when it initialises ``recipe``.

    Raises
    ------
    PublishedFormatError
        If ``path`` is a published layout that does not initialise ``recipe``.
    """
    path = Path(path)
    try:
        format_ = resolve_format(path)
    except PublishedFormatError:
        return Initialisation(path, "as_given", None)
    if recipe != format_.model and recipe not in format_.initialises:
        starts = ", ".join(dict.fromkeys((format_.model, *format_.initialises)))
        raise PublishedFormatError(f"{path} ({format_.title}) initialises {starts}, not {recipe}")
    kind: InitKind = format_.produces
    files = tuple(file_record(source, path, format_) for source in format_.sources(path))
    record = import_record(format_, path, files)
    scratch.mkdir(parents=True, exist_ok=True)
    converted = format_.convert(path, scratch / f"init-{format_.name}.safetensors", record)
    return Initialisation(converted, kind, record)
