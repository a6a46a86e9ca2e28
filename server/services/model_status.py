"""The registered models and the weights installed for them, whoever asks (REST API, HTML console)."""

from __future__ import annotations

from dataclasses import dataclass

from models.registry import KNOWN_MODELS, get_spec
from server.audit import AuditTrail
from server.core.config import Settings
from server.core.weights import AdminWeightStore

__all__ = ["ModelStatus", "describe_model", "describe_models"]


@dataclass(frozen=True)
class ModelStatus:
    """A registered model and its installed weights; ``manifest_error`` says why its manifest is not in force.

    When the manifest is broken, its last good copy (if any) is what the other fields describe.
    """

    name: str
    version: str
    description: str
    implemented: bool
    needs_weights: bool
    weights_sha256: str | None
    weights_installed_at: str | None
    validation: str | None
    manifest_error: str | None


def describe_model(store: AdminWeightStore, name: str) -> ModelStatus:
    """One registered model (:class:`models.registry.UnknownModelError` for an unknown name)."""
    spec = get_spec(name)
    installed = store.get(name) if spec.needs_weights else None
    return ModelStatus(
        name=spec.name,
        version=spec.version,
        description=spec.description,
        implemented=spec.implemented,
        needs_weights=spec.needs_weights,
        weights_sha256=installed.sha256 if installed else None,
        weights_installed_at=installed.installed_at if installed else None,
        validation=installed.validation if installed else None,
        manifest_error=store.manifest_error(name) if spec.needs_weights else None,
    )


def describe_models(settings: Settings, trail: AuditTrail) -> list[ModelStatus]:
    """Every registered model and installable alternative (lungmask); a broken manifest is audited."""
    store = AdminWeightStore(settings.weights_dir, trail)
    return [describe_model(store, name) for name in KNOWN_MODELS]
