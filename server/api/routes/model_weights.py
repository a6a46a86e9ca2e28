"""Models and their weights: listed for viewers; weights installed by admins, checksum verified.

The upload is the raw weights file (``application/octet-stream``) with its expected SHA-256 in
the ``X-Content-SHA256`` header; the file is streamed to disk, hashed, and installed only when
the hash matches, so a truncated or corrupted transfer never becomes the model in use.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from models.registry import UnknownModelError, get_spec
from models.weights import WeightsError
from server.api.deps import Admin, AuditTrailDep, SettingsDep, Viewer
from server.api.problems import Problem
from server.core.weights import AdminWeightStore
from server.services.model_status import ModelStatus, describe_model, describe_models

router = APIRouter(prefix="/models", tags=["models"])

#: The upload route, below the router's prefix (it has its own body limit, LUNGCDS_MAX_WEIGHTS_UPLOAD_MB).
UPLOAD_PATH = "/{name}/weights"
#: Bytes of an upload gathered before they are written and hashed in a worker thread.
_FLUSH_BYTES = 4 * 2**20


@router.get("", response_model=list[ModelStatus])
def list_models(settings: SettingsDep, _caller: Viewer, trail: AuditTrailDep) -> list[ModelStatus]:
    """Every registered model and installable alternative (lungmask), with the hash of its installed weights.

    A broken manifest is audited and named in ``manifest_error``; its last good copy stays in force.
    """
    return describe_models(settings, trail)


class _Upload:
    """An upload written to a temporary file in ``folder`` and hashed, chunk by chunk (blocking: run in threads)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".safetensors")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self._file.write(data)

    def finish(self) -> str:
        """Close the file; the SHA-256 of everything written."""
        self._file.close()
        return self._digest.hexdigest()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


@router.put(UPLOAD_PATH, response_model=ModelStatus)
async def install_weights(
    name: str,
    request: Request,
    _caller: Admin,
    settings: SettingsDep,
    x_content_sha256: str = Header(..., pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the file"),
    validation: str | None = Query(None, max_length=500, description="The site's validation statement"),
) -> ModelStatus:
    """Install the uploaded weights for ``name`` after checking their SHA-256.

    The body streams to a temporary file in chunks of at most ``_FLUSH_BYTES``, written and
    hashed in worker threads: never held whole in memory, never blocking the event loop, and
    no larger than ``LUNGCDS_MAX_WEIGHTS_UPLOAD_MB``.
    """
    try:
        get_spec(name)
    except UnknownModelError as exc:
        raise Problem(404, "Unknown model", str(exc)) from exc
    upload = await run_in_threadpool(_Upload, settings.weights_dir)
    try:
        pending = bytearray()
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= _FLUSH_BYTES:
                await run_in_threadpool(upload.write, bytes(pending))
                pending.clear()
        await run_in_threadpool(upload.write, bytes(pending))
        digest = await run_in_threadpool(upload.finish)
        if digest != x_content_sha256.lower():
            raise Problem(422, "Checksum mismatch", f"the upload hashes to {digest}, not {x_content_sha256.lower()}")
        store = AdminWeightStore(settings.weights_dir)
        try:
            await run_in_threadpool(partial(store.install, upload.path, name, validation=validation))
        except WeightsError as exc:
            raise Problem(422, "Weights not installed", str(exc)) from exc
    finally:
        await run_in_threadpool(upload.discard)
    return await run_in_threadpool(describe_model, store, name)
