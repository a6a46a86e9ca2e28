"""Installed model weights: one folder per model, a SHA-256 per file, a manifest per folder.

The hash is what every report prints next to a model's output, so it must describe exactly
the bytes a model loads.  Installation therefore streams the source once, hashing while it
copies, into a file named by its hash; the small JSON manifest is replaced atomically only
after that file is complete and synced.  A crash at any point leaves either the old manifest
(and the old weights) or the new one, never a manifest that names a half-written file.

Layout::

    root/<model_name>/manifest.json
    root/<model_name>/<sha256><suffix of the source file>
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from models.registry import KNOWN_MODELS, LUNGMASK_LTRCLOBES, LUNGMASK_R231, STOIC, STOIC_MEMBERS, get_spec

__all__ = [
    "MANIFEST_NAME",
    "InstalledWeights",
    "Manifest",
    "WeightStore",
    "WeightsError",
    "origin_sentence",
    "sha256_of",
]

logger = logging.getLogger(__name__)

#: File name of the per-model manifest.
MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


class WeightsError(ValueError):
    """A weights file that cannot be installed or an installation that cannot be read."""


@dataclass(frozen=True)
class InstalledWeights:
    """One installed weights file, as recorded in its manifest.

    Attributes
    ----------
    name : str
        Registered model name.
    sha256 : str
        Hex SHA-256 of the file's bytes.
    size : int
        File size in bytes.
    installed_at : str
        ISO 8601 UTC time of installation.
    source_filename : str
        Name of the file it was installed from (for the audit trail).
    path : pathlib.Path
        Where the installed copy is.
    validation : str or None
        Who validated these weights for clinical use here, and how (given at installation).
        Without it, every output of the weights is reported as unvalidated.
    origin : dict or None
        For weights imported from their authors' published files
        (:mod:`models.published.importer`): the format, repository, commit, licence and each
        source file's SHA-256 and whether it is the published file's bytes.  ``None`` for a
        file installed as it is.
    """

    name: str
    sha256: str
    size: int
    installed_at: str
    source_filename: str
    path: Path
    validation: str | None = None
    origin: dict[str, Any] | None = None

    @property
    def validated(self) -> bool:
        """True when an installer recorded a validation statement for these weights."""
        return bool(self.validation and self.validation.strip())


class Manifest(BaseModel):
    """What ``manifest.json`` records: :class:`InstalledWeights` with the file's name instead of its path."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str
    size: int
    installed_at: str
    source_filename: str
    file: str
    validation: str | None = None
    origin: dict[str, Any] | None = None

    def content(self) -> bytes:
        """The manifest as stored: indented JSON with sorted keys."""
        return json.dumps(self.model_dump(), indent=2, sort_keys=True).encode("utf-8")

    def installed(self, folder: Path) -> InstalledWeights:
        """The installation this manifest of ``folder`` describes."""
        fields = self.model_dump(exclude={"file"})
        return InstalledWeights(**fields, path=folder / self.file)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so that large weights need no memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to a temporary file beside ``path``, sync it, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: The lungmask network each lungmask model's file must be (its authors' checkpoint, as published).
_LUNGMASK_NETWORKS: dict[str, Literal["LTRCLobes", "R231"]] = {LUNGMASK_LTRCLOBES: "LTRCLobes", LUNGMASK_R231: "R231"}


def _check_lungmask(source: Path, model_name: str) -> None:
    """Refuse, before storing it, a file that is not the lungmask state dict ``model_name`` runs."""
    from models.segmentation.lungmask_lobes import LungmaskStateError, check_lungmask_state  # imports torch

    try:
        check_lungmask_state(source, _LUNGMASK_NETWORKS[model_name])
    except LungmaskStateError as exc:
        raise WeightsError(f"refusing {source} for {model_name}: {exc}") from exc


class WeightStore:
    """The weights installed for the registered models, under one root folder.

    Parameters
    ----------
    root : pathlib.Path
        Folder holding one sub-folder per model; created on the first installation.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _folder(self, model_name: str) -> Path:
        """The folder of a registered model; refuses unknown names before touching the disk."""
        get_spec(model_name)
        return self.root / model_name

    def install(
        self,
        source: Path,
        model_name: str,
        *,
        validation: str | None = None,
        origin: dict[str, Any] | None = None,
        source_name: str | None = None,
    ) -> InstalledWeights:
        """Copy a weights file into the store and record its hash.

        Parameters
        ----------
        source : pathlib.Path
            The weights file (any format the model's loader reads; for the lungmask models, the
            authors' state dict, checked here to be exactly that network's).
        model_name : str
            A registered model that needs weights.
        validation : str, optional
            The site's statement that these weights are validated for clinical use (who, on
            what data, which report).  Absent, the outputs are marked unvalidated.
        origin : dict, optional
            Where the file was converted from (:attr:`InstalledWeights.origin`).
        source_name : str, optional
            What the audit trail calls the source (default: the file's name; an import names the
            authors' file or folder, not the converted file).

        Returns
        -------
        InstalledWeights
            What was recorded.

        Raises
        ------
        models.registry.UnknownModelError
            If the name is not registered (a :class:`ValueError`).
        WeightsError
            If the model is weight-free, or the source is missing, not a file or empty, or not the
            lungmask network a lungmask model needs.
        """
        source = Path(source)
        folder = self._folder(model_name)
        if model_name == STOIC:
            raise WeightsError(
                f"{STOIC!r} is the ensemble of its members and has no weights of its own; install each member's "
                f"file under the member's name ({', '.join(STOIC_MEMBERS)})"
            )
        if not get_spec(model_name).needs_weights:
            raise WeightsError(f"model {model_name!r} is weight-free; there are no weights to install")
        if not source.is_file():
            raise WeightsError(f"weights file {source} does not exist or is not a regular file")
        if model_name in _LUNGMASK_NETWORKS:
            _check_lungmask(source, model_name)
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".incoming-", suffix=".tmp")
        try:
            with source.open("rb") as reader, os.fdopen(fd, "wb") as writer:
                while chunk := reader.read(_CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
                    size += len(chunk)
                writer.flush()
                os.fsync(writer.fileno())
            if size == 0:
                raise WeightsError(f"weights file {source} is empty")
            sha256 = digest.hexdigest()
            target = folder / f"{sha256}{source.suffix}"
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        previous = self.get(model_name)
        manifest = Manifest(
            name=model_name,
            sha256=sha256,
            size=size,
            installed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            source_filename=source_name or source.name,
            file=target.name,
            validation=validation.strip() if validation and validation.strip() else None,
            origin=json.loads(json.dumps(origin)) if origin is not None else None,
        )
        self._save_manifest(folder / MANIFEST_NAME, manifest)
        record = manifest.installed(folder)
        if previous is not None and previous.path != target:
            previous.path.unlink(missing_ok=True)
        logger.info("installed weights for %s: sha256 %s (%d bytes)", model_name, sha256, size)
        return record

    def _load_manifest(self, folder: Path) -> Manifest | None:
        """The manifest of one model folder, ``None`` (with a log line) if absent or unreadable.

        The server's store (:class:`server.core.weights.AdminWeightStore`) overrides this and
        :meth:`_save_manifest` to keep a last good copy of each manifest.
        """
        path = folder / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable weights manifest %s: %s", path, exc)
            return None

    def _save_manifest(self, path: Path, manifest: Manifest) -> None:
        """Replace the manifest at ``path`` atomically."""
        _write_atomically(path, manifest.content())

    def _read(self, folder: Path) -> InstalledWeights | None:
        """The installation recorded in one model folder, ``None`` when there is none."""
        manifest = self._load_manifest(folder)
        return manifest.installed(folder) if manifest is not None else None

    def get(self, name: str) -> InstalledWeights | None:
        """The installed weights of a registered model, ``None`` when nothing is installed.

        Raises
        ------
        models.registry.UnknownModelError
            If the name is not registered.
        """
        return self._read(self._folder(name))

    def installed(self) -> dict[str, InstalledWeights]:
        """Every registered model with installed weights, by name."""
        if not self.root.is_dir():
            return {}
        found = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name in KNOWN_MODELS):
            record = self._read(folder)
            if record is not None and record.name == folder.name:
                found[record.name] = record
        return found

    def verify(self, name: str) -> bool:
        """True when the installed file still has the recorded hash (detects tampering or rot)."""
        record = self.get(name)
        return record is not None and record.path.is_file() and sha256_of(record.path) == record.sha256


def origin_sentence(origin: dict[str, Any]) -> str:
    """One line for reports on imported weights (:attr:`InstalledWeights.origin`): which authors'
    files, and whether they are the published bytes."""
    count = len(origin.get("files", []))
    bytes_said = {
        "all": "byte-identical to the published files",
        "none": "NOT the published files' bytes (trained or changed elsewhere)",
        "some": "only partly the published files' bytes",
    }.get(str(origin.get("published_bytes")), "published bytes not checked")
    return (
        f"imported from {origin.get('repository')} ({origin.get('format')}, {count} file"
        f"{'s' if count != 1 else ''}, {bytes_said}; licence {origin.get('licence')})"
    )
