"""Models and their weights: listed for viewers; weights installed by admins, checksum verified.

The upload is the raw weights file (``application/octet-stream``) with its expected SHA-256 in
the ``X-Content-SHA256`` header; the file is streamed to disk, hashed, and installed only when
the hash matches, so a truncated or corrupted transfer never becomes the model in use.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel

from models.registry import MODEL_SPECS, UnknownModelError, get_spec
from models.weights import WeightsError, WeightStore
from server.api.deps import Admin, SettingsDep, Viewer
from server.api.problems import Problem

router = APIRouter(prefix="/models", tags=["models"])


class ModelPublic(BaseModel):
    """A registered model and its installed weights."""

    name: str
    version: str
    description: str
    implemented: bool
    needs_weights: bool
    weights_sha256: str | None
    weights_installed_at: str | None
    validation: str | None


def _public(store: WeightStore, name: str) -> ModelPublic:
    spec = get_spec(name)
    installed = store.get(name) if spec.needs_weights else None
    return ModelPublic(
        name=spec.name,
        version=spec.version,
        description=spec.description,
        implemented=spec.implemented,
        needs_weights=spec.needs_weights,
        weights_sha256=installed.sha256 if installed else None,
        weights_installed_at=installed.installed_at if installed else None,
        validation=installed.validation if installed else None,
    )


@router.get("", response_model=list[ModelPublic])
def list_models(settings: SettingsDep, _caller: Viewer) -> list[ModelPublic]:
    """Every registered model, with the hash of its installed weights."""
    store = WeightStore(settings.weights_dir)
    return [_public(store, spec.name) for spec in MODEL_SPECS]


@router.put("/{name}/weights", response_model=ModelPublic)
async def install_weights(
    name: str,
    request: Request,
    settings: SettingsDep,
    _caller: Admin,
    x_content_sha256: str = Header(..., pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the file"),
    validation: str | None = Query(None, max_length=500, description="The site's validation statement"),
) -> ModelPublic:
    """Install the uploaded weights for ``name`` after checking their SHA-256."""
    try:
        get_spec(name)
    except UnknownModelError as exc:
        raise Problem(404, "Unknown model", str(exc)) from exc
    settings.weights_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=settings.weights_dir, prefix=".upload-", suffix=".safetensors") as tmp:
        async for chunk in request.stream():
            digest.update(chunk)
            tmp.write(chunk)
        tmp.flush()
        if digest.hexdigest() != x_content_sha256.lower():
            raise Problem(
                422, "Checksum mismatch", f"the upload hashes to {digest.hexdigest()}, not {x_content_sha256.lower()}"
            )
        store = WeightStore(settings.weights_dir)
        try:
            store.install(Path(tmp.name), name, validation=validation)
        except WeightsError as exc:
            raise Problem(422, "Weights not installed", str(exc)) from exc
    return _public(store, name)
