"""Lobe masks from lungmask's published networks, run by the ``lungmask`` package's own code.

lungmask (Hofmanninger et al., "Automatic lung segmentation in routine imaging is primarily a
data diversity problem, not a methodology problem", Eur Radiol Exp 2020;4:50; Apache-2.0)
publishes two networks this module runs: ``unet_ltrclobes`` (background and five lobes) and
``unet_r231`` (background, right and left lung), both plain torch state dicts of the package's
2D U-Net (:class:`lungmask.resunet.UNet`).  lungmask recommends running LTRCLobes fused with
R231 ("LTRCLobes_R231": R231 decides what is lung, LTRCLobes which lobe).  Nothing of
lungmask's inference is re-implemented here: :class:`LungmaskLobes` hands the installed files to
:class:`lungmask.mask.LMInferer` (``modelpath``, ``fillmodel_path``, CPU, no progress bar) and
gives it the series as a SimpleITK image with the volume's patient geometry, which lungmask
reorients to LPS itself and its labels back.  This module only checks that a file is what
lungmask's loader expects (so that a wrong file is refused with a clear reason instead of a
torch error) and maps lungmask's labels to :data:`models.findings.LOBE_NAMES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import SimpleITK as sitk
import torch
from lungmask.mask import LMInferer
from lungmask.resunet import UNet
from torch import nn

from models.findings import LOBE_NAMES, Volume

__all__ = [
    "LUNGMASK_CLASSES",
    "LUNGMASK_LOBE_LABELS",
    "LungmaskLobes",
    "LungmaskLungs",
    "LungmaskNetwork",
    "LungmaskStateError",
    "check_lungmask_state",
    "lungmask_network",
    "volume_image",
]

#: The two published networks this module runs.
LungmaskNetwork = Literal["LTRCLobes", "R231"]
#: Output classes of each network (background included), as lungmask's ``MODEL_URLS`` gives them.
LUNGMASK_CLASSES: Mapping[str, int] = MappingProxyType({"LTRCLobes": 6, "R231": 3})
#: lungmask's LTRCLobes labels and our lobe names: 1 left upper, 2 left lower, 3 right upper,
#: 4 right middle, 5 right lower lobe.
LUNGMASK_LOBE_LABELS: Mapping[int, str] = MappingProxyType({1: "LUL", 2: "LLL", 3: "RUL", 4: "RML", 5: "RLL"})


class LungmaskStateError(ValueError):
    """A file that is not the state dict of the lungmask network it was given for."""


def lungmask_network(network: LungmaskNetwork) -> nn.Module:
    """lungmask's U-Net with the configuration ``lungmask.mask.get_model`` builds it with.

    Parameters
    ----------
    network : {"LTRCLobes", "R231"}
        Which published network (decides the number of output classes).
    """
    return UNet(  # type: ignore[no-any-return]
        n_classes=LUNGMASK_CLASSES[network],
        padding=True,
        depth=5,
        up_mode="upsample",
        batch_norm=True,
        residual=False,
    )


def _examples(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def check_lungmask_state(path: Path, network: LungmaskNetwork) -> None:
    """Refuse a file that lungmask's loader would not load as ``network`` exactly.

    The file must be a plain state dict (parameter name to tensor) with exactly the names and
    shapes of :func:`lungmask_network`, and its last tensor must have the network's number of
    classes (lungmask reads the class count from it).

    Raises
    ------
    LungmaskStateError
        With what is wrong: not a torch file, not a state dict, missing or unexpected names,
        other shapes.
    """
    path = Path(path)
    what = f"{path.name} is not a lungmask {network} checkpoint"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear refusal
        raise LungmaskStateError(f"{what}: torch cannot read it as a state dict ({type(exc).__name__})") from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise LungmaskStateError(f"{what}: it is not a plain state dict (parameter name to tensor) as lungmask saves")
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in lungmask_network(network).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [
        f"{name} {tuple(state[name].shape)} instead of {shape}"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing parameters ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected parameters ({_examples(unexpected)})")
    if reshaped:
        problems.append(f"{len(reshaped)} parameters of another shape ({_examples(reshaped)})")
    if problems:
        raise LungmaskStateError(f"{what}: " + "; ".join(problems))
    last = list(state.values())[-1]
    if last.shape[0] != LUNGMASK_CLASSES[network]:
        raise LungmaskStateError(
            f"{what}: its last tensor has {last.shape[0]} entries where lungmask reads the "
            f"{LUNGMASK_CLASSES[network]} classes of {network}"
        )


def volume_image(volume: Volume) -> sitk.Image:
    """The volume as a SimpleITK image with its patient geometry (LPS origin, spacing, direction).

    SimpleITK's direction is row-major with the x, y, z axes as columns and its spacing is
    ``(x, y, z)``: the layout of :class:`~models.findings.Geometry` with the spacing reversed.
    """
    image = sitk.GetImageFromArray(np.asarray(volume.hu))
    geometry = volume.geometry
    image.SetOrigin(tuple(float(v) for v in geometry.origin))  # type: ignore[no-untyped-call]
    image.SetSpacing(tuple(float(v) for v in geometry.spacing[::-1]))  # type: ignore[no-untyped-call]
    image.SetDirection(tuple(float(v) for row in geometry.direction for v in row))  # type: ignore[no-untyped-call]
    return image


class LungmaskLobes:
    """lungmask's LTRCLobes network (fused with R231 when given), as lungmask runs it.

    Parameters
    ----------
    lobes_path : pathlib.Path
        The LTRCLobes state dict (``unet_ltrclobes-3a07043d.pth`` as published).
    fill_path : pathlib.Path, optional
        The R231 state dict (``unet_r231-d5d2fc3d.pth``): lungmask's fill model.  Without it,
        LTRCLobes runs alone.
    batch_size : int
        Slices per forward pass (lungmask's default 20; it does not change the labels).

    Raises
    ------
    LungmaskStateError
        If a file is not the state dict of its network.
    """

    def __init__(self, lobes_path: Path, fill_path: Path | None = None, *, batch_size: int = 20) -> None:
        check_lungmask_state(lobes_path, "LTRCLobes")
        if fill_path is not None:
            check_lungmask_state(fill_path, "R231")
        self.fused = fill_path is not None
        self.inferer = LMInferer(
            modelpath=str(lobes_path),
            fillmodel_path=str(fill_path) if fill_path is not None else None,
            force_cpu=True,
            batch_size=batch_size,
            tqdm_disable=True,
        )

    def labels(self, volume: Volume) -> np.ndarray:
        """lungmask's label map ``[z, y, x]`` on the volume's grid (0 background, 1-5 the lobes)."""
        labels = np.asarray(self.inferer.apply(volume_image(volume)))
        if labels.shape != volume.hu.shape:
            raise ValueError(f"lungmask returned labels of shape {labels.shape} for a volume of {volume.hu.shape}")
        found = set(np.unique(labels).tolist()) - {0, *LUNGMASK_LOBE_LABELS}
        if found:
            raise ValueError(f"lungmask returned labels {sorted(found)} that are not lobes")
        return labels

    def segment(self, volume: Volume) -> dict[str, np.ndarray]:
        """One boolean ``[z, y, x]`` mask per name of :data:`LOBE_NAMES`, from lungmask's labels."""
        labels = self.labels(volume)
        masks = {name: labels == value for value, name in LUNGMASK_LOBE_LABELS.items()}
        return {name: masks[name] for name in LOBE_NAMES}


#: lungmask's R231 labels: 1 right lung, 2 left lung (lungmask's README; SJ ``transforms.py``
#: ``CreateLungMask`` says the same).
R231_RIGHT, R231_LEFT = 1, 2


class LungmaskLungs:
    """lungmask's R231 network alone, as lungmask runs it: the left and right lung masks.

    Several STOIC2021 teams computed their input from this mask (FB ``inference/process.py``:
    ``LungMask.get_model('unet', 'R231', modelpath=...unet_r231-d5d2fc3d.pth)`` then
    ``LungMask.apply``; SJ ``transforms.py`` ``CreateLungMask``), so their members get it when it
    is installed (:data:`models.stoic.catalog.AUTHORS_LUNG_MASKS`).

    Raises
    ------
    LungmaskStateError
        If the file is not the R231 state dict.
    """

    def __init__(self, path: Path, *, batch_size: int = 20) -> None:
        check_lungmask_state(path, "R231")
        self.inferer = LMInferer(modelpath=str(path), force_cpu=True, batch_size=batch_size, tqdm_disable=True)

    def segment(self, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
        """``(left, right)`` boolean ``[z, y, x]`` masks on the volume's grid."""
        labels = np.asarray(self.inferer.apply(volume_image(volume)))
        if labels.shape != volume.hu.shape:
            raise ValueError(f"lungmask returned labels of shape {labels.shape} for a volume of {volume.hu.shape}")
        found = set(np.unique(labels).tolist()) - {0, R231_RIGHT, R231_LEFT}
        if found:
            raise ValueError(f"lungmask R231 returned labels {sorted(found)} that are not a lung")
        return labels == R231_LEFT, labels == R231_RIGHT
