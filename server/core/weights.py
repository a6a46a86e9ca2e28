"""The weights store as the server keeps it: each model's manifest is an admin file.

A manifest (:mod:`models.weights`) is what admins change when they install weights, so it is
an :class:`~server.core.admin_file.AdminFile` like the rules and destinations: written
atomically and read back, text with control characters refused, and when it is broken (edited
badly by hand, truncated) its last good copy stays in force, the error is audited and shown by
``GET /models`` and ``/health/ready``.  The weights files themselves need no copy: they are
named by their SHA-256, so the last good manifest still names intact bytes (``verify`` checks).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.registry import KNOWN_MODELS
from models.weights import MANIFEST_NAME, InstalledWeights, Manifest, WeightsError, WeightStore
from server.core.admin_file import AdminFile, Loaded, refuse_control_characters

if TYPE_CHECKING:
    from server.audit import AuditTrail

__all__ = ["AdminWeightStore"]


def _strings(value: object) -> Iterator[str]:
    """Every string in ``value``, however deeply nested in lists and dicts (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _refuse_control_characters_in(value: object) -> None:
    """``ValueError`` when any string in ``value`` holds a control character."""
    for text in _strings(value):
        refuse_control_characters(text)


def _parse(content: bytes) -> Manifest:
    manifest = Manifest.model_validate_json(content)
    _refuse_control_characters_in(manifest.model_dump())
    return manifest


def _in_force(loaded: Loaded[Manifest]) -> str:
    return "the last good copy" if loaded.value is not None else "no weights (the model does not run)"


class AdminWeightStore(WeightStore):
    """A :class:`~models.weights.WeightStore` whose manifests are admin files (see the module docstring).

    Parameters
    ----------
    root : pathlib.Path
        The store's folder.
    audit : AuditTrail, optional
        Where each broken version of a manifest is recorded (once per process).
    """

    def __init__(self, root: Path, audit: AuditTrail | None = None) -> None:
        super().__init__(root)
        self._audit = audit

    def manifest(self, name: str) -> Loaded[Manifest]:
        """The manifest of model ``name`` in force, where it comes from, and why the file is not it."""
        path = self._folder(name) / MANIFEST_NAME
        loaded = AdminFile(path, _parse).load()
        if loaded.error is not None and self._audit is not None:
            self._audit.record_rejected_file(path, loaded.error, loaded.fingerprint or loaded.error, _in_force(loaded))
        return loaded

    def manifest_error(self, name: str) -> str | None:
        """Why the manifest of model ``name`` is not in force, and what is instead (None when it is, or absent)."""
        loaded = self.manifest(name)
        return None if loaded.error is None else f"{loaded.error}; {_in_force(loaded)} is in force"

    def manifest_errors(self) -> dict[str, str]:
        """:meth:`manifest_error` of every model whose manifest is broken."""
        found = {name: self.manifest_error(name) for name in KNOWN_MODELS}
        return {name: error for name, error in found.items() if error is not None}

    def install(
        self,
        source: Path,
        model_name: str,
        *,
        validation: str | None = None,
        origin: dict[str, Any] | None = None,
        source_name: str | None = None,
    ) -> InstalledWeights:
        """:meth:`WeightStore.install`, refusing (``WeightsError``) text with control characters first.

        The texts end up in the manifest and in every report; the refusal comes before a byte
        is copied, so that nothing of a refused installation is left in the store.
        """
        try:
            _refuse_control_characters_in([validation, source_name, Path(source).name, origin])
        except ValueError as exc:
            raise WeightsError(f"refusing the weights for {model_name}: {exc}") from exc
        return super().install(source, model_name, validation=validation, origin=origin, source_name=source_name)

    def _load_manifest(self, folder: Path) -> Manifest | None:
        return self.manifest(folder.name).value

    def _save_manifest(self, path: Path, manifest: Manifest) -> None:
        AdminFile(path, _parse).save(manifest.content(), manifest)
