"""Pulmonary lobe segmentation: network, preprocessing, inference and anatomical post-processing.

The thesis obtained lobe masks from RTSU-Net, a relational two-stage U-Net (T§2.4.5, T§3.3.4,
ref [78]); its weights and code are not available here.  This module uses instead the network
family the thesis uses for its lesion masks, an nnU-Net-v1-style 3D U-Net
(:class:`~models.segmentation.nnunet.GenericUNet`: base 30 features doubled per stage up to
320, five 2x2x2 poolings, two conv + instance norm + leaky ReLU per stage), with six outputs:
background and the lobes in :data:`models.findings.LOBE_NAMES` order (LUL, LLL, RUL, RML, RLL).

Choices, and why:

* 1.5 mm isotropic voxels: the grid on which the thesis's CO-RADS model reads the scan
  (T§3.3.4; I3Dr uses 1.6 mm, T§2.4.4).  Lobe borders finer than the models that consume the
  masks gain nothing; coarser ones would blur the fissures at that resolution.
* HU clipped to [-1100, 300] and scaled to [0, 1], the window of the same models (T§3.3.4,
  T§2.4.4): it spans air to soft tissue, so fissures (about -700 HU) and vessels stay visible.
* crop to the lung mask plus 10 mm, the distance beyond which the CO-RADS preprocessing drops
  slices (T§3.3.4): the lobes lie inside the lungs, so the rest of the scan only costs time.
* 128x128x128 patches (19 cm at 1.5 mm, nnU-Net's usual isotropic CT patch), sliding windows
  with Gaussian blending as nnU-Net infers, but with overlap 0.25 instead of nnU-Net's 0.5: on
  the real 64-slice test series (lung crop 193x155x200 voxels) that is 8 windows instead of 18,
  which matters on a CPU worker (about 8.4e11 FLOPs per window).  Lobes are large, so the
  window-border refinement a wider overlap buys matters less than for small lesions; with no
  trained weights this could not be measured, and ``LobeSettings(overlap=0.5)`` restores it.
* post-processing in the CT's own grid: the left-lung voxels choose between LUL and LLL only,
  the right-lung voxels between RUL, RML and RLL only (so a left lobe can never appear in the
  right lung), every lobe keeps its largest connected component, and fragments go to the
  nearest kept lobe of the same lung, so the lobes tile each lung mask exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.inferers.inferer import Inferer
from monai.transforms.compose import Compose
from torch import nn

from models.findings import LOBE_NAMES, Volume
from models.segmentation.inference import argmax_on_grid, predict_probabilities, sliding_window_inferer
from models.segmentation.nnunet import GenericUNet
from models.segmentation.postprocessing import tile_region
from models.segmentation.preprocessing import IntensityWindow, build_preprocessing, crop_spacing, to_ct_grid

__all__ = [
    "LEFT_LOBES",
    "LOBE_CLASSES",
    "LOBE_FEATURES",
    "RIGHT_LOBES",
    "LobeSettings",
    "build_lobe_network",
    "lobe_inferer",
    "lobe_preprocessing",
    "segment_lobes",
]

#: Output channel of each lobe (channel 0 is background); also the label values for training.
LOBE_CLASSES: dict[str, int] = {name: index for index, name in enumerate(LOBE_NAMES, start=1)}
#: Lobes of the patient's left lung and of the right lung.
LEFT_LOBES: tuple[str, ...] = ("LUL", "LLL")
RIGHT_LOBES: tuple[str, ...] = ("RUL", "RML", "RLL")
#: Feature widths of the full-size lobe network (nnU-Net v1 rule: base 30, x2, cap 320).
LOBE_FEATURES: tuple[int, ...] = (30, 60, 120, 240, 320, 320)


@dataclass(frozen=True)
class LobeSettings:
    """Pre- and post-processing of the lobe network (module docstring gives the reasons).

    Attributes
    ----------
    spacing_mm : tuple of float
        Network voxel spacing (z, y, x) in canonical orientation.
    window : IntensityWindow
        HU clip and scaling.
    crop_margin_mm : float
        Margin around the lung mask's bounding box.
    patch : tuple of int
        Sliding-window size (z, y, x); divisible by the network's strides.
    overlap : float
        Sliding-window overlap.
    """

    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    window: IntensityWindow = field(default_factory=lambda: IntensityWindow(-1100.0, 300.0))
    crop_margin_mm: float = 10.0
    patch: tuple[int, int, int] = (128, 128, 128)
    overlap: float = 0.25


def build_lobe_network(
    features: Sequence[int] = LOBE_FEATURES, strides: Sequence[Sequence[int]] | None = None
) -> GenericUNet:
    """The lobe network: a Generic_UNet with 1 input and 6 outputs (background + 5 lobes).

    Parameters
    ----------
    features : sequence of int
        Stage widths; the default is the full-size network, smaller values serve tests and quick
        training experiments.
    strides : sequence of sequence of int, optional
        Pooling strides; default 2x2x2 between every pair of stages.
    """
    pools = [(2, 2, 2)] * (len(features) - 1) if strides is None else strides
    return GenericUNet(3, 1, 1 + len(LOBE_NAMES), features, pools)


def lobe_preprocessing(settings: LobeSettings, label_keys: Sequence[str] = ()) -> Compose:
    """Reorient, crop to the lungs, resample, scale: the input chain of the lobe network.

    The input dict has ``image``, ``spacing``, ``direction``, ``lungs``, ``lung_left`` and
    ``lung_right``; training adds its label map under ``label_keys`` (resampled with the image).
    """
    return build_preprocessing(
        window=settings.window,
        crop_mask_key="lungs",
        crop_margin_mm=settings.crop_margin_mm,
        spacing=settings.spacing_mm,
        mask_keys=("lungs", "lung_left", "lung_right"),
        label_keys=label_keys,
    )


def lobe_inferer(settings: LobeSettings) -> Inferer:
    """Sliding-window inferer with the settings' patch and overlap."""
    return sliding_window_inferer(settings.patch, settings.overlap)


def _as_mask(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    if tuple(array.shape) != shape:
        raise ValueError(f"{name} has shape {array.shape}, the volume {shape}")
    return np.asarray(array, dtype=bool)


def segment_lobes(
    volume: Volume,
    lung_left: np.ndarray,
    lung_right: np.ndarray,
    network: nn.Module,
    *,
    device: torch.device | str = "cpu",
    settings: LobeSettings | None = None,
    inferer: Inferer | None = None,
) -> dict[str, np.ndarray]:
    """Boolean masks of the five lobes on the volume's grid, tiling the given lung masks.

    Parameters
    ----------
    volume : Volume
        The CT (HU on its own grid).
    lung_left, lung_right : numpy.ndarray
        Boolean masks of the patient's left and right lung on the volume's grid; they must not
        overlap.  Every lobe lies inside its own lung's mask.
    network : torch.nn.Module
        A lobe network (:func:`build_lobe_network`) with weights loaded.
    device : torch.device or str
        Where the network runs (it is moved there).
    settings : LobeSettings, optional
        Pre- and post-processing; defaults to :class:`LobeSettings()`.
    inferer : monai.inferers.Inferer, optional
        How the network is applied; defaults to :func:`lobe_inferer` of the settings.

    Returns
    -------
    dict of str to numpy.ndarray
        One boolean ``[z, y, x]`` mask per name of :data:`LOBE_NAMES`.  A lung with no voxels
        gives empty lobes (and with no lung at all the network does not run).
    """
    settings = LobeSettings() if settings is None else settings
    shape = tuple(volume.hu.shape)
    left = _as_mask(lung_left, shape, "lung_left")
    right = _as_mask(lung_right, shape, "lung_right")
    if np.any(left & right):
        raise ValueError("the left and right lung masks overlap")
    if not (left.any() or right.any()):  # nothing to divide: skip the network
        return {name: np.zeros(shape, dtype=bool) for name in LOBE_NAMES}
    if inferer is None and isinstance(network, GenericUNet):
        divisor = network.divisor
        if any(p % d for p, d in zip(settings.patch, divisor, strict=True)):
            raise ValueError(f"patch {settings.patch} is not divisible by the network's strides {divisor}")
    data = lobe_preprocessing(settings)(
        {
            "image": volume.hu,
            "spacing": volume.geometry.spacing,
            "direction": volume.geometry.direction,
            "lungs": left | right,
            "lung_left": left,
            "lung_right": right,
        }
    )
    probabilities = predict_probabilities(
        network, data["image"], lobe_inferer(settings) if inferer is None else inferer, device
    )
    crop_shape = tuple(data["crop_shape"])
    spacing = crop_spacing(data, volume.geometry.spacing)
    labels = np.zeros(crop_shape, dtype=np.int8)
    for side, names in (("lung_left", LEFT_LOBES), ("lung_right", RIGHT_LOBES)):
        region = data[side]
        if not region.any():
            continue
        channels = [LOBE_CLASSES[name] for name in names]
        choice = argmax_on_grid(probabilities, crop_shape, channels)
        side_labels = np.where(region, np.asarray(channels, dtype=np.int8)[choice], 0).astype(np.int8)
        labels += tile_region(side_labels, region, spacing)
    return {name: to_ct_grid(labels == LOBE_CLASSES[name], data, shape, fill=False) for name in LOBE_NAMES}
