"""``lungcds models install`` of an authors' published file or folder.

The path is matched against every known layout (:func:`resolve_format`), each source file is
hashed and compared with the published hashes, the format converts the files into this
pipeline's weights file (strict name and shape checks), and the weight store installs that file
with the import record as its origin.  The record travels with the weights: the converted
file's model card holds it too, so a copy of the file still says where it came from.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.published.catalog import published_formats
from models.published.format import ImportedFile, PublishedFormat, PublishedFormatError, file_record
from models.weights import InstalledWeights, WeightStore

__all__ = ["ImportResult", "import_published", "import_record", "resolve_format"]


@dataclass(frozen=True)
class ImportResult:
    """What an import installed, from which files, in which format."""

    format: PublishedFormat
    files: tuple[ImportedFile, ...]
    installed: InstalledWeights


def resolve_format(path: Path, format_name: str | None = None) -> PublishedFormat:
    """The published format of ``path``: the one named, checked, or the only one that matches.

    Raises
    ------
    PublishedFormatError
        For an unknown format name, a path the named format does not match, a path no format
        matches, or one several formats match (then ``--format`` must say which).
    """
    formats = published_formats()
    if format_name is not None:
        if format_name not in formats:
            raise PublishedFormatError(f"unknown format {format_name!r}; known: {', '.join(formats)}")
        chosen = formats[format_name]
        if not chosen.detect(path):
            raise PublishedFormatError(f"{path} is not in the {format_name} layout ({chosen.title})")
        return chosen
    matches = [f for f in formats.values() if f.detect(path)]
    if not matches:
        raise PublishedFormatError(
            f"{path} is in none of the published layouts ({', '.join(formats)}); "
            "a lungcds weights file is installed with --name"
        )
    if len(matches) > 1:
        raise PublishedFormatError(
            f"{path} matches several published layouts ({', '.join(f.name for f in matches)}); choose one with --format"
        )
    return matches[0]


def import_record(format_: PublishedFormat, path: Path, files: tuple[ImportedFile, ...]) -> dict[str, Any]:
    """The origin of imported weights, as the manifest and the model card store it."""
    published = sum(1 for f in files if f.published is not None)
    return {
        "format": format_.name,
        "title": format_.title,
        "repository": format_.repository.url,
        "commit": format_.repository.commit,
        "licence": format_.repository.licence,
        "given_path": str(path),
        "files": [f.as_card() for f in files],
        "published_bytes": "all" if published == len(files) else ("none" if published == 0 else "some"),
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def import_published(
    path: Path,
    store: WeightStore,
    *,
    format_name: str | None = None,
    model_name: str | None = None,
    validation: str | None = None,
) -> ImportResult:
    """Convert an authors' file or folder and install it under its model's name.

    Raises
    ------
    PublishedFormatError
        If the layout is unknown or ambiguous, names or shapes differ from the authors', the
        format is an initialisation (not a model), or ``model_name`` is another model.
    models.weights.WeightsError
        If the weight store refuses the converted file.
    """
    path = Path(path)
    format_ = resolve_format(path, format_name)
    if not format_.installable:
        raise PublishedFormatError(
            f"{path} ({format_.title}) initialises training, it is not a model: give it as --init to the "
            f"training of {', '.join((format_.model, *format_.initialises))}"
        )
    if model_name is not None and model_name != format_.model:
        raise PublishedFormatError(
            f"{path} is in the {format_.name} layout, which installs {format_.model}, not {model_name}"
        )
    files = tuple(file_record(source, path, format_) for source in format_.sources(path))
    record = import_record(format_, path, files)
    with tempfile.TemporaryDirectory(prefix="lungcds-import-") as scratch:
        converted = format_.convert(path, Path(scratch) / f"{format_.model}.safetensors", record)
        installed = store.install(
            converted, format_.model, validation=validation, origin=record, source_name=path.name or str(path)
        )
    return ImportResult(format_, files, installed)
