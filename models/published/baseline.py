"""A STOIC2021 baseline checkpoint as the authors' training code writes it: ``artifact/baseline.pth``.

The baseline's trained weights were never published.  Its final-phase repository
(luukboulogne/stoic2021-baseline-finalphase) holds the code and the Kinetics file
``model_rgb.pth`` (:mod:`models.published.kinetics_i3d`) only; ``inference/artifact/`` holds a
``Readme.md`` ("Output directory for training Docker container") and nothing else.  A site that
runs the authors' training container on STOIC2021 data gets the file this format reads:

* BL ``training/train.py`` ``get_learn``/``train``: ``Learner(..., model=I3D(nr_outputs=2),
  model_dir=artifact_dir)`` with ``SaveModelCallback(monitor="roc_probseverecovid",
  fname=config["experiment_name"])``; ``experiment_name`` is the config file's stem,
  ``baseline`` (BL ``config.py``, ``CONFIGFILE = /opt/train/config/baseline.json``), and the
  artifact folder ``/output/`` is ``inference/artifact/`` (BL ``training/test.sh``).  fastai's
  callback saves with ``with_opt=False``, and fastai ``save_model`` then writes
  ``torch.save(get_model(model).state_dict())``: a plain state dict of BL ``I3D``, without a
  ``module.`` prefix (``get_model`` unwraps ``DataParallel``), in float32 (fastai >= 2.5.3's
  ``to_fp16`` is automatic mixed precision, which keeps float32 weights).
* BL ``inference/process.py`` ``StoicAlgorithm.__init__`` reads it back with
  ``I3D(nr_outputs=2).load_state_dict(torch.load("./artifact/baseline.pth"))``, strictly.

So the file holds all 346 tensors of BL ``algorithm/i3d/i3dpt.py`` ``I3D(nr_outputs=2)``, in
hassony2's names (:data:`models.published.kinetics_i3d.I3DPT`): the backbone, the unused 400-way
``conv3d_0c_1x1`` and the trained ``linear``.  They map onto
:class:`models.stoic.baseline.BaselineI3D` as

* backbone tensor ``<their name>`` -> ``backbone.<our name>`` (the unit-by-unit table of
  :func:`models.published.kinetics_i3d.backbone_names`, shapes equal);
* ``linear.weight``, ``linear.bias`` -> ``fc.weight``, ``fc.bias`` (``Linear(1024, 2)``; output 0
  is COVID-19, output 1 severe, BL ``process.py``);
* ``conv3d_0c_1x1.conv3d.{weight,bias}`` -> nothing: ``I3D.forward`` never calls it (it pools,
  averages and applies ``linear``), so it holds its untrained initial values and changes no
  output.  The card lists it as dropped.

``BaselineI3D`` computes as BL ``I3D`` does with these weights (BatchNorm eps 1e-5, the head's
``AvgPool3d((2, 7, 7), 1)`` and mean; see :mod:`models.stoic.baseline` for the padding).  Given
path: the ``.pth`` file itself (any name, e.g. another config's ``<experiment>.pth``), or a folder
holding ``baseline.pth``, ``artifact/baseline.pth`` or ``inference/artifact/baseline.pth``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from models.published.format import (
    PublishedFormat,
    PublishedFormatError,
    Repository,
    match_state,
    read_torch_checkpoint,
    strip_prefix,
)
from models.published.kinetics_i3d import I3DPT, backbone_names, expected_state
from models.stoic.baseline import BaselineConfig, BaselineI3D, StoicBaseline

__all__ = ["FORMAT", "REPOSITORY", "checkpoint_path", "expected_checkpoint", "our_names"]

REPOSITORY = Repository(
    name="luukboulogne/stoic2021-baseline-finalphase",
    url="https://github.com/luukboulogne/stoic2021-baseline-finalphase",
    licence="MIT",
    commit="1f3820cf08c0a3f77bce8d1dc0d495ec48cbfdfd",
)
_FILE_NAME = "baseline.pth"
_FOLDERS = (Path("."), Path("artifact"), Path("inference/artifact"))
#: BL ``I3D.linear`` -> ``BaselineI3D.fc``.
_HEAD = {"linear.weight": "fc.weight", "linear.bias": "fc.bias"}
_OUTPUTS = 2


def our_names() -> dict[str, str]:
    """The authors' name of every tensor :class:`BaselineI3D` holds -> our name."""
    names = {theirs: f"backbone.{ours}" for theirs, ours in backbone_names(I3DPT).items()}
    return {**names, **_HEAD}


def expected_checkpoint() -> dict[str, list[int]]:
    """Every tensor of BL ``I3D(nr_outputs=2).state_dict()``: backbone, Kinetics logits, ``linear``."""
    return {**expected_state(I3DPT), "linear.weight": [_OUTPUTS, 1024], "linear.bias": [_OUTPUTS]}


def checkpoint_path(path: Path) -> Path:
    """``path`` if it is a file, else ``baseline.pth`` where the authors' containers put it.

    Raises
    ------
    PublishedFormatError
        If there is no such file.
    """
    if path.is_file():
        return path
    for folder in _FOLDERS:
        candidate = path / folder / _FILE_NAME
        if candidate.is_file():
            return candidate
    raise PublishedFormatError(
        f"{path} holds no {_FILE_NAME} (the STOIC2021 baseline's trained state dict, BL inference/artifact/)"
    )


def _network_state(path: Path) -> dict[str, Tensor]:
    """The checkpoint's tensors under :class:`BaselineI3D`'s names, checked complete first."""
    file = checkpoint_path(path)
    checkpoint = read_torch_checkpoint(file)
    if not isinstance(checkpoint, Mapping):
        raise PublishedFormatError(f"{file} is not a state dict (found a {type(checkpoint).__name__})")
    tensors = match_state(expected_checkpoint(), strip_prefix(checkpoint, "module."), str(file))
    return {ours: tensors[theirs] for theirs, ours in our_names().items()}


def _detect(path: Path) -> bool:
    if path.is_file():
        return path.name == _FILE_NAME
    return any((path / folder / _FILE_NAME).is_file() for folder in _FOLDERS)


def _sources(path: Path) -> list[Path]:
    return [checkpoint_path(path)]


def _convert(path: Path, out: Path, imported: Mapping[str, Any]) -> Path:
    """Load the checkpoint strictly into :class:`BaselineI3D` and write the member file."""
    config = BaselineConfig()
    network = BaselineI3D(pool_kernel=config.pool_kernel)
    network.load_state_dict(_network_state(path), strict=True)
    member = StoicBaseline.trained(
        config,
        {"model": [network]},
        weights=(
            "a STOIC2021 baseline checkpoint written by the authors' training code (BL training/train.py), "
            "imported unchanged; not published by the authors"
        ),
        imported_from=dict(imported),
        dropped_tensors=sorted(I3DPT.logits_shapes()),
    )
    return member.save(out)


FORMAT = PublishedFormat(
    name="stoic-baseline-checkpoint",
    model=StoicBaseline.NAME,
    title="STOIC2021 baseline state dict (baseline.pth) written by the authors' fastai training container",
    repository=REPOSITORY,
    published=(),
    gives=(
        "the baseline member (P(COVID-19) and P(severe)) as the authors' inference container would compute "
        "it from the same baseline.pth"
    ),
    missing=(
        "The trained weights: the authors published no baseline.pth. Their repository (commit 1f3820c) has "
        "only the training and inference code, the Kinetics file model_rgb.pth (which the baseline does not "
        "load) and an empty inference/artifact/ folder; the file this format reads exists only where a site "
        "has run the authors' training container (BL training/) on STOIC2021 data itself."
    ),
    detect=_detect,
    sources=_sources,
    convert=_convert,
    notes=(
        "conv3d_0c_1x1 (the 400-way Kinetics logits in BL I3D) is dropped: I3D.forward never uses it.",
        "A checkpoint of another experiment config (<name>.pth) is read the same way when given as a file.",
    ),
)
