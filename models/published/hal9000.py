"""hal9000's published ImageNet checkpoints: where its training starts, not the trained member.

What hal9000's final-phase inference runs (HAL ``inference/process.py``) is ten networks read from
``artifact/mobile_{1-5}.pth.tar`` and ``artifact/resnet_{1-5}.pth.tar``, which the training
container writes (HAL ``training/main.py`` copies each run's ``auc_model.pth`` there).  None of the
ten is in the repository, so the member itself cannot be imported.  What the repository publishes:

* ``training/image_classification_pytorch/checkpoints/mobnet_v3_large_imgnet.pth`` and
  ``resnet18_imgnet.pth`` (Git LFS): torchvision's ImageNet weights of ``mobilenet_v3_large`` and
  ``resnet18`` (their SHA-256 begin ``8738ca79`` and ``f37072fd``, the hash prefixes in
  torchvision's own file names ``mobilenet_v3_large-8738ca79.pth`` and ``resnet18-f37072fd.pth``).
  HAL ``training/image_classification_pytorch/trainers/example_model.py: create_model`` loads
  them strictly into ``torchvision.models.mobilenet_v3_large()`` / ``resnet18()``, then replaces
  ``classifier`` / ``fc`` by ``nn.Identity`` and adds a fresh ``Linear(960 | 512, 2)``; every
  config (``configs/config_{mobile,resnet}_{1-5}.json``) has ``train_mode: fromscratch``, so no
  other checkpoint is loaded.  These two files are therefore the initial backbone of each of the
  ten networks; this format turns them into that initialisation (``installable`` is False).
* ``inference/algorithm/cnn_baseline/cnn_adam/cnn_acc_model.pth`` (458 507 bytes; the same bytes
  as ``pre_trained/model.pth``): read by no code of the repository.  Its size matches a state dict
  of the template's 4-block ``ConvNet`` (``cnn_baseline/nets/cnn_module.py: cnn``, 112 517
  numbers, 1 input channel); it is far too small for any hal9000 network (2 973 874 and
  11 177 538 parameters), so it is not part of the member and is not imported.
* ``inference/algorithm/i3d/model_rgb.pth``: the Kinetics I3D RGB file of the baseline template
  (same SHA-256 as the baseline's and uaux2's copies), unused by hal9000's inference.

Our :class:`models.stoic.mobilenet.MobileNetV3Large` and :class:`models.zoo.ResNet` keep
torchvision's module names, so the mapping is the identity once the ImageNet heads
(``classifier.0``, ``classifier.3``; ``fc``) are removed, as the authors' ``nn.Identity`` does.

Given path: the ``checkpoints`` folder, ``training/image_classification_pytorch``, ``training`` or
the repository root; torchvision's own file names are accepted in place of the authors'.
The output is a safetensors file (card format :data:`INIT_CARD_FORMAT`) holding each backbone
under its kind (``mobilenet_v3_large.*``, ``resnet18.*``), read by :func:`read_initialisation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models.card_file import read_card_file, write_card_file
from models.published.format import (
    PublishedFile,
    PublishedFormat,
    PublishedFormatError,
    Repository,
    match_state,
    read_torch_checkpoint,
)
from models.stoic.hal9000 import NAME, HalConfig, NetworkKind, build_network
from models.stoic.mobilenet import MobileNetV3Large
from models.stoic.storage import prefixed
from models.zoo import ResNet

__all__ = [
    "FORMAT",
    "INIT_CARD_FORMAT",
    "KINDS",
    "checkpoint_paths",
    "expected_state",
    "read_initialisation",
]

REPOSITORY = Repository(
    name="DIAGNijmegen/stoic2021-finalphase-submission-hal9000",
    url="https://github.com/DIAGNijmegen/stoic2021-finalphase-submission-hal9000",
    licence="MIT",
    commit="292d4c64ac88705a18e5356e86d35b14af8678d1",
)
_CHECKPOINTS = "training/image_classification_pytorch/checkpoints"
#: Architectures in the order of :attr:`models.stoic.hal9000.HalConfig.kinds`.
KINDS: tuple[NetworkKind, ...] = ("mobilenet_v3_large", "resnet18")
#: Per kind: the authors' file name, then torchvision's name for the same bytes.
_FILE_NAMES: dict[NetworkKind, tuple[str, str]] = {
    "mobilenet_v3_large": ("mobnet_v3_large_imgnet.pth", "mobilenet_v3_large-8738ca79.pth"),
    "resnet18": ("resnet18_imgnet.pth", "resnet18-f37072fd.pth"),
}
_PUBLISHED = (
    PublishedFile(
        REPOSITORY,
        f"{_CHECKPOINTS}/mobnet_v3_large_imgnet.pth",
        "8738ca797c879b547d18bbd15da5736ff2557b2036a9af72225393ca61759a04",
        22_139_423,
    ),
    PublishedFile(
        REPOSITORY,
        f"{_CHECKPOINTS}/resnet18_imgnet.pth",
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
        46_830_571,
    ),
)
#: The ImageNet head each kind's training replaces by ``nn.Identity`` (HAL ``example_model.py``).
_HEADS: dict[NetworkKind, str] = {"mobilenet_v3_large": "classifier.", "resnet18": "fc."}
_IMAGENET_CLASSES = 1000
#: Model card format of the initialisation file.
INIT_CARD_FORMAT = "lungcds.hal9000-imagenet-init/1"


def _folder(path: Path) -> Path | None:
    """The folder holding a MobileNet and a ResNet file, looked for at and below ``path``."""
    for candidate in (
        path,
        path / "checkpoints",
        path / "image_classification_pytorch" / "checkpoints",
        path / _CHECKPOINTS,
    ):
        if all(any((candidate / name).is_file() for name in names) for names in _FILE_NAMES.values()):
            return candidate
    return None


def checkpoint_paths(path: Path) -> list[Path]:
    """The MobileNetV3-Large file, then the ResNet-18 file (the authors' names before torchvision's).

    Raises
    ------
    PublishedFormatError
        If either file is missing.
    """
    folder = _folder(path)
    if folder is None:
        wanted = " and ".join(" or ".join(names) for names in _FILE_NAMES.values())
        raise PublishedFormatError(f"{path} does not hold {wanted} (hal9000's ImageNet checkpoints)")
    return [next(folder / n for n in _FILE_NAMES[kind] if (folder / n).is_file()) for kind in KINDS]


def expected_state(kind: NetworkKind) -> dict[str, list[int]]:
    """Name and shape of every tensor of torchvision's ImageNet ``kind``, head included (meta device)."""
    with torch.device("meta"):
        network: torch.nn.Module
        if kind == "mobilenet_v3_large":
            network = MobileNetV3Large(3, _IMAGENET_CLASSES)
        else:
            network = ResNet(2, 3, _IMAGENET_CLASSES, block="basic", layers=(2, 2, 2, 2))
    return {key: list(value.shape) for key, value in network.state_dict().items()}


def _backbone(file: Path, kind: NetworkKind) -> dict[str, Tensor]:
    """One file checked against torchvision's names, its ImageNet head dropped, loaded strictly into
    our backbone (so the result is exactly what ``network.net`` holds)."""
    checkpoint = read_torch_checkpoint(file)
    if not isinstance(checkpoint, dict):
        raise PublishedFormatError(f"{file} holds a {type(checkpoint).__name__}, not a state dict")
    tensors = match_state(expected_state(kind), checkpoint, str(file))
    backbone = {key: value for key, value in tensors.items() if not key.startswith(_HEADS[kind])}
    build_network(kind, HalConfig()).net.load_state_dict(backbone, strict=True)
    return backbone


def _convert(path: Path, out: Path, imported: Mapping[str, Any]) -> Path:
    """Write both backbones, each under its kind, with a card saying what they initialise."""
    tensors: dict[str, Tensor] = {}
    for kind, file in zip(KINDS, checkpoint_paths(path), strict=True):
        tensors.update({f"{kind}.{key}": value.contiguous() for key, value in _backbone(file, kind).items()})
    card = {
        "format": INIT_CARD_FORMAT,
        "member": NAME,
        "kinds": list(KINDS),
        "initialises": (
            "the backbone (``net``) of every hal9000 network of that kind; the Linear(features, 2) classifier "
            "starts from PyTorch's default initialisation, as in HAL example_model.py"
        ),
        "imported_from": dict(imported),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_card_file(out, tensors, card)
    return out


def read_initialisation(path: Path) -> dict[NetworkKind, dict[str, Tensor]]:
    """The backbone state dict per kind of a file this format wrote (for ``network.net``).

    Raises
    ------
    ValueError
        If the file is not a hal9000 ImageNet initialisation.
    """
    tensors, _ = read_card_file(Path(path), INIT_CARD_FORMAT, "a hal9000 ImageNet initialisation")
    return {kind: prefixed(tensors, kind) for kind in KINDS}


def _detect(path: Path) -> bool:
    return _folder(path) is not None


FORMAT = PublishedFormat(
    name="hal9000-imagenet-init",
    model=NAME,
    title="hal9000's ImageNet initialisation: torchvision MobileNetV3-Large and ResNet-18 ImageNet state dicts",
    repository=REPOSITORY,
    published=_PUBLISHED,
    gives=(
        "the ImageNet backbones every hal9000 network starts from in its authors' training (HAL "
        "example_model.py create_model): an initialisation for the hal9000 training recipe, not a model"
    ),
    missing=(
        "the ten trained networks (artifact/mobile_1-5.pth.tar, resnet_1-5.pth.tar, written by the final-phase "
        "training container and read by HAL inference/process.py) were never published; the published "
        "cnn_acc_model.pth (= pre_trained/model.pth) is no hal9000 network (by its size a state dict of the "
        "template's small ConvNet) and is read by no code; i3d/model_rgb.pth is the unused Kinetics I3D"
    ),
    detect=_detect,
    sources=checkpoint_paths,
    convert=_convert,
    installable=False,
    produces="hal9000_backbones",
)
