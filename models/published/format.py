"""What every published-checkpoint format shares: where its files came from, and how to read them.

A site with internet access downloads a member's checkpoint as its authors published it (a
STOIC2021 submission's Git LFS files, the Kinetics I3D file) and installs it here as it is.
Each format (one module of this package) knows its authors' file layout and parameter names and
converts the files to this pipeline's own weights file, whose model card then records exactly
which bytes it was made from.  The rules every format follows:

* nothing executes code from a checkpoint: PyTorch files are read with
  ``torch.load(weights_only=True)``, which refuses any pickled object but tensors and plain
  containers (the authors' files hold only those);
* the authors' parameter names map onto ours with no key missing, none left over and every shape
  equal (:func:`match_state`), or the import fails naming each difference;
* every source file's SHA-256 is recorded, and compared with the SHA-256 its repository's Git LFS
  pointer publishes (:class:`PublishedFile`), so that the card says "these are the published bytes"
  or "these are not the published bytes" instead of assuming either.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ImportedFile",
    "PublishedFile",
    "PublishedFormat",
    "PublishedFormatError",
    "Repository",
    "file_record",
    "match_state",
    "read_torch_checkpoint",
    "strip_prefix",
]


class PublishedFormatError(ValueError):
    """A path that is not (or not entirely) the published layout it was taken for."""


@dataclass(frozen=True)
class Repository:
    """A public repository that published checkpoints: its address, licence and the commit read."""

    name: str
    url: str
    licence: str
    commit: str


@dataclass(frozen=True)
class PublishedFile:
    """One file as its repository publishes it (from the Git LFS pointer at ``repository.commit``)."""

    repository: Repository
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ImportedFile:
    """A source file that an import read: where (relative to what was given), its hash and size,
    and the published file it is byte for byte (``None``: not a published file's bytes)."""

    path: str
    sha256: str
    size: int
    published: PublishedFile | None

    def as_card(self) -> dict[str, Any]:
        """JSON for the model card."""
        card: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "size": self.size}
        if self.published is not None:
            card["published_as"] = {
                "repository": self.published.repository.url,
                "commit": self.published.repository.commit,
                "path": self.published.path,
            }
        else:
            card["published_as"] = None
        return card


@dataclass(frozen=True)
class PublishedFormat:
    """One authors' checkpoint layout, and how it becomes this pipeline's weights file.

    Attributes
    ----------
    name : str
        The ``--format`` value.
    model : str
        The registered model it installs as (or, for an initialisation, the recipe it feeds).
    title : str
        What the files are, in a sentence (README and ``models formats``).
    repository : Repository
        Where the authors published it.
    published : tuple of PublishedFile
        The files the repository publishes in this layout, with their hashes.
    gives : str
        What installing it gives a site.
    missing : str
        What of the authors' model is still not published (empty when nothing is).
    detect : callable
        ``detect(path)``: whether ``path`` (a file or a folder) is in this layout.
    sources : callable
        ``sources(path)``: the files of ``path`` the conversion reads, in a fixed order.
    convert : callable
        ``convert(path, out, card)``: write the weights file to ``out`` from ``path``; ``card``
        holds the import record to store in the file's model card.  Raises
        :class:`PublishedFormatError`.
    installable : bool
        False for an initialisation (``--init`` of a training recipe), not a model to install.
    initialises : tuple of str
        Further recipes (registered model names) whose ``--init`` takes it, besides ``model``'s.
    produces : {"member", "i3d_backbone", "hal9000_backbones"}
        What its converted file holds for a training recipe: a member file (every installable
        format), or the backbone state dicts of an initialisation.
    notes : tuple of str
        What a site should know besides (``models formats --json`` and the README print them).
    """

    name: str
    model: str
    title: str
    repository: Repository
    published: tuple[PublishedFile, ...]
    gives: str
    missing: str
    detect: Callable[[Path], bool]
    sources: Callable[[Path], list[Path]]
    convert: Callable[[Path, Path, Mapping[str, Any]], Path]
    installable: bool = True
    initialises: tuple[str, ...] = ()
    produces: Literal["member", "i3d_backbone", "hal9000_backbones"] = "member"
    notes: tuple[str, ...] = ()

    def published_file(self, sha256: str) -> PublishedFile | None:
        """The published file with these bytes, if any."""
        return next((f for f in self.published if f.sha256 == sha256), None)


def file_record(path: Path, root: Path, format_: PublishedFormat) -> ImportedFile:
    """Hash ``path`` (in 1 MiB chunks) and say which published file, if any, it is."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    sha256 = digest.hexdigest()
    relative = path.name if path == root else str(path.relative_to(root))
    return ImportedFile(relative, sha256, size, format_.published_file(sha256))


#: numpy's pickled data (a scalar such as the validation AUC Flying Bird saves beside its state
#: dict, an array, their dtypes): rebuilt from bytes, no code of the file's choosing runs.
_MULTIARRAY = importlib.import_module("numpy._core.multiarray")
_NUMPY_DATA: list[Any] = [
    np.ndarray,
    np.dtype,
    *{type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"},
    *(
        (getattr(_MULTIARRAY, name), f"{module}.{name}")
        for name in ("scalar", "_reconstruct")
        for module in (
            "numpy._core.multiarray",  # numpy 2
            "numpy.core.multiarray",  # numpy 1, which the authors' files of 2022 were written with
        )
    ),
]


def read_torch_checkpoint(path: Path) -> Any:
    """A PyTorch checkpoint's contents, read without executing anything it holds.

    Tensors, plain containers and numpy data load; anything else (a pickled class or function)
    is refused.

    Raises
    ------
    PublishedFormatError
        If the file is not a PyTorch checkpoint, or holds objects other than tensors and plain
        containers (which could run code when unpickled: refused, never loaded).
    """
    try:
        with torch.serialization.safe_globals(_NUMPY_DATA):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for foreign files
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if "but got" in line or "Unsupported global" in line), None)
        raise PublishedFormatError(
            f"{path} cannot be read as a PyTorch checkpoint of tensors only ({type(exc).__name__}: "
            f"{detail or (lines[0] if lines else 'no detail')}); nothing in it was executed"
        ) from exc


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """``state`` with ``prefix`` removed from every key that has it (e.g. DataParallel's ``module.``)."""
    return {key[len(prefix) :] if key.startswith(prefix) else key: value for key, value in state.items()}


def match_state(expected: Mapping[str, Sequence[int]], found: Mapping[str, Any], what: str) -> dict[str, Tensor]:
    """``found`` checked to hold exactly the tensors of ``expected`` (name and shape), as tensors.

    Raises
    ------
    PublishedFormatError
        Naming the missing keys, the unexpected keys and every shape that differs.
    """
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    if unexpected:
        shown = ", ".join(unexpected[:5])
        problems.append(f"{len(unexpected)} unexpected ({shown}{', ...' if len(unexpected) > 5 else ''})")
    tensors: dict[str, Tensor] = {}
    for key in sorted(set(expected) & set(found)):
        value = found[key]
        if not isinstance(value, Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
            continue
        if list(value.shape) != list(expected[key]):
            problems.append(f"{key} has shape {list(value.shape)}, expected {list(expected[key])}")
            continue
        tensors[key] = value
    if problems:
        raise PublishedFormatError(f"{what}: " + "; ".join(problems))
    return tensors
