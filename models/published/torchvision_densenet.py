"""torchvision's ImageNet DenseNet-201 (``densenet201-c1103571.pth``): the 2D weights CO-RADS inflates.

The thesis initialised its 3D DenseNet-201 by inflating ImageNet weights of the 2D network
(T section 3.3.3, "Pre-training"), which is what ``lungcds train corads --init FILE`` does with
this file.  torchvision publishes it at ``https://download.pytorch.org/models/densenet201-c1103571.pth``
(BSD-3-Clause) and names it after the first eight hex digits of its SHA-256, which the import
checks (the full hash is not published).  The file is a plain state dict in torchvision's old
key pattern (``denselayer1.norm.1.weight``); torchvision's own loader rewrites those keys to
``denselayer1.norm1.weight`` before loading, and so does :func:`imagenet_state`.  Our
:mod:`models.zoo.densenet` keeps torchvision's names, so after that the mapping is the identity
and every key and shape of the 2D network must be present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from models.published.format import (
    PublishedFormat,
    PublishedFormatError,
    Repository,
    match_state,
    read_torch_checkpoint,
)
from models.zoo.densenet import DENSENET_CONFIGS, DenseNet

__all__ = ["FORMAT", "expected_state", "imagenet_state"]

REPOSITORY = Repository(
    name="pytorch/vision",
    url="https://download.pytorch.org/models/densenet201-c1103571.pth",
    licence="BSD-3-Clause",
    commit="",
)
#: torchvision names each weights file ``<architecture>-<first 8 hex digits of its SHA-256>.pth``.
FILE_NAME = "densenet201-c1103571.pth"
_HASH_PREFIX = "c1103571"
#: torchvision's ``_load_state_dict`` pattern for the pre-0.3 DenseNet keys (``norm.1`` -> ``norm1``).
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def expected_state() -> dict[str, list[int]]:
    """Name and shape of every tensor of the 2D DenseNet-201 with the 1000-class ImageNet head."""
    with torch.device("meta"):
        network = DenseNet(2, 3, 1000, block_config=DENSENET_CONFIGS[201])
    return {key: list(value.shape) for key, value in network.state_dict().items() if "num_batches" not in key}


def imagenet_state(path: Path) -> dict[str, Tensor]:
    """The file's state dict with torchvision's current key names, checked against DenseNet-201.

    Raises
    ------
    PublishedFormatError
        If the file is not a plain state dict of exactly that network.
    """
    state = read_torch_checkpoint(path)
    if not isinstance(state, Mapping):
        raise PublishedFormatError(f"{path} is not a state dict (torchvision saves the plain state dict)")
    renamed = {}
    for key, value in state.items():
        if str(key).endswith("num_batches_tracked"):
            continue  # newer saves carry BatchNorm's step counters; the 2017 file has none, and they hold no weight
        match = _OLD_KEY.match(str(key))
        renamed[match.group(1) + match.group(2) if match else str(key)] = value
    return match_state(expected_state(), renamed, str(path))


def _detect(path: Path) -> bool:
    return path.is_file() and path.name.startswith("densenet201-") and path.suffix == ".pth"


def _convert(path: Path, out: Path, imported: Mapping[str, Any]) -> Path:
    """The renamed 2D state dict as safetensors (what ``TrainingConfig.pretrained_2d`` reads)."""
    files = imported.get("files", [])
    if files and not str(files[0].get("sha256", "")).startswith(_HASH_PREFIX):
        raise PublishedFormatError(
            f"{path}: its SHA-256 does not start with {_HASH_PREFIX}, the prefix torchvision names {FILE_NAME} by"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in imagenet_state(path).items()}, str(out))
    return out


FORMAT = PublishedFormat(
    name="torchvision-densenet201-imagenet",
    model="corads",
    title="torchvision's ImageNet DenseNet-201 (densenet201-c1103571.pth), 2D weights to inflate",
    repository=REPOSITORY,
    published=(),
    gives="the ImageNet initialisation the thesis inflated into the 3D DenseNet-201 (`lungcds train corads --init`)",
    missing="the trained CO-RADS ensemble itself was never published",
    detect=_detect,
    sources=lambda path: [path],
    convert=_convert,
    installable=False,
    notes=(f"torchvision publishes no full SHA-256; a file whose hash does not start with {_HASH_PREFIX} is refused.",),
)
