"""COVID-19 lesion segmentation: the CORADS-AI nnU-Net, or the S4 3D U-Net as an alternative.

``kind="nnunet"``: the lesion network of CORADS-AI, "a 3D nnU-Net trained by Lessmann et al.,
which segments ground-glass opacities (GGOs) and consolidations" (T§3.3.3), 29.69 M parameters
and 9.41e11 FLOPs per patch (T§3.4.5); see :mod:`models.segmentation.nnunet` for how the layout
reproduces those numbers.  Three outputs: background, GGO (1), consolidation (2); the thesis
does not say how the classes are numbered, so this order is our convention.  Its plan (spacing,
intensity statistics) is not published; the defaults are documented choices:

* 1.5 mm isotropic voxels and 64x192x192 patches (the patch inferred from the FLOPs, models spec
  section 3), sliding windows with overlap 0.5 and Gaussian blending (nnU-Net's inference).  On
  the real 64-slice test series this makes 12 windows, near the 12.8 patches per scan of T§3.4.5;
* nnU-Net's CT normalisation with the window of the thesis's other lesion nnU-Net (team etro,
  T§4.3.3; its repository's preprocessing clips to [-1000, 100] HU and scales to [-1, 1], models
  spec section 1), i.e. z-scoring with mean -450 and standard deviation 550 after clipping.
  The real plan's foreground percentiles and statistics replace these through
  :class:`LesionSettings` once its weights are installed;
* the volume is cropped to the lungs plus 10 mm (lesions outside the lungs are discarded anyway).

``kind="resnet18_unet"``: the S4 3D U-Net (:mod:`models.segmentation.resnet_unet`), one
"infiltrate" class.  S4 §2.2 clips HU to [-2000, 500]; S4 §2.4 trains on "volumes consisting of
18 slices with a resolution of 112 x 112 px", then 20 slices of 256 x 256 ("progressive
resizing"), which we read as whole volumes resized, not patches; so inference resizes the whole
volume to 20x256x256 and runs the network once (MONAI ``SimpleInferer``).  S4 does not state an intensity
scaling after clipping; [0, 1] is our choice.  The grey image is repeated to 3 channels (S4 Fig. 1).

Either way the returned masks are restricted to the lung mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from monai.inferers.inferer import Inferer, SimpleInferer
from monai.transforms.compose import Compose
from torch import nn

from models.findings import Volume
from models.segmentation.inference import argmax_on_grid, predict_probabilities, sliding_window_inferer
from models.segmentation.nnunet import CORADS_NNUNET_FEATURES, CORADS_NNUNET_PATCH, CORADS_NNUNET_STRIDES, GenericUNet
from models.segmentation.preprocessing import IntensityWindow, build_preprocessing, to_ct_grid
from models.segmentation.resnet_unet import ResNet18UNet

__all__ = [
    "LESION_CLASSES",
    "LesionKind",
    "LesionSettings",
    "build_lesion_network",
    "lesion_inferer",
    "lesion_preprocessing",
    "segment_lesions",
]

LesionKind = Literal["nnunet", "resnet18_unet"]
#: Output channels per network kind (channel 0 is background); the names are LESION_NAMES.
LESION_CLASSES: dict[str, dict[str, int]] = {
    "nnunet": {"ggo": 1, "consolidation": 2},
    "resnet18_unet": {"lesions": 1},
}


@dataclass(frozen=True)
class LesionSettings:
    """Pre-processing and inference of both lesion networks (module docstring gives reasons).

    Attributes
    ----------
    nnunet_spacing_mm : tuple of float
        nnU-Net voxel spacing (z, y, x).
    nnunet_window : IntensityWindow
        nnU-Net CT normalisation (clip, then z-score).
    nnunet_patch : tuple of int
        nnU-Net sliding-window size; divisible by 32 (five 2x2x2 poolings).
    nnunet_overlap : float
        Sliding-window overlap.
    crop_margin_mm : float
        Margin around the lungs' bounding box (nnU-Net only; S4 reads the whole volume).
    s4_shape : tuple of int
        Whole-volume input shape of the S4 U-Net (S4 §2.4: 20x256x256).
    s4_window : IntensityWindow
        S4 clip [-2000, 500] HU (S4 §2.2), scaled to [0, 1].
    """

    nnunet_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    nnunet_window: IntensityWindow = field(
        default_factory=lambda: IntensityWindow.zscore(-1000.0, 100.0, mean=-450.0, std=550.0)
    )
    nnunet_patch: tuple[int, int, int] = CORADS_NNUNET_PATCH
    nnunet_overlap: float = 0.5
    crop_margin_mm: float = 10.0
    s4_shape: tuple[int, int, int] = (20, 256, 256)
    s4_window: IntensityWindow = field(default_factory=lambda: IntensityWindow(-2000.0, 500.0))


def build_lesion_network(kind: LesionKind) -> nn.Module:
    """The full-size lesion network of ``kind`` (weights uninitialised for use: load or demo them).

    ``"nnunet"``: Generic_UNet, 1 input, 3 outputs, 29 695 280 parameters.
    ``"resnet18_unet"``: S4 U-Net, 3 inputs, 2 outputs.
    """
    if kind == "nnunet":
        return GenericUNet(3, 1, 3, CORADS_NNUNET_FEATURES, CORADS_NNUNET_STRIDES)
    if kind == "resnet18_unet":
        return ResNet18UNet(spatial_dims=3, in_channels=3, out_channels=2)
    raise ValueError(f"unknown lesion network kind {kind!r}; expected 'nnunet' or 'resnet18_unet'")


def lesion_preprocessing(kind: LesionKind, settings: LesionSettings) -> Compose:
    """The input chain of a lesion network of ``kind``."""
    if kind == "nnunet":
        return build_preprocessing(
            window=settings.nnunet_window,
            crop_mask_key="lungs",
            crop_margin_mm=settings.crop_margin_mm,
            spacing=settings.nnunet_spacing_mm,
            mask_keys=("lungs",),
        )
    if kind == "resnet18_unet":
        return build_preprocessing(
            window=settings.s4_window,
            crop_mask_key=None,
            crop_margin_mm=0.0,
            shape=settings.s4_shape,
            mask_keys=("lungs",),
            channels=3,
        )
    raise ValueError(f"unknown lesion network kind {kind!r}")


def lesion_inferer(kind: LesionKind, settings: LesionSettings) -> Inferer:
    """Sliding windows for the nnU-Net, one whole-volume pass for the S4 U-Net."""
    if kind == "nnunet":
        return sliding_window_inferer(settings.nnunet_patch, settings.nnunet_overlap)
    return SimpleInferer()


def segment_lesions(
    volume: Volume,
    lungs: np.ndarray,
    network: nn.Module,
    *,
    kind: LesionKind,
    device: torch.device | str = "cpu",
    settings: LesionSettings | None = None,
    inferer: Inferer | None = None,
) -> dict[str, np.ndarray]:
    """Boolean lesion masks on the volume's grid, inside the lung mask.

    Parameters
    ----------
    volume : Volume
        The CT.
    lungs : numpy.ndarray
        Boolean lung mask on the volume's grid.
    network : torch.nn.Module
        A network from :func:`build_lesion_network` of the same ``kind``, weights loaded.
    kind : {"nnunet", "resnet18_unet"}
        Which network (selects preprocessing, inferer and output classes).
    device : torch.device or str
        Where the network runs (it is moved there).
    settings : LesionSettings, optional
        Defaults to :class:`LesionSettings()`.
    inferer : monai.inferers.Inferer, optional
        Defaults to :func:`lesion_inferer`.

    Returns
    -------
    dict of str to numpy.ndarray
        ``"lesions"`` (all opacities) always; ``"ggo"`` and ``"consolidation"`` when the network
        separates them (``kind="nnunet"``).  With an empty lung mask all are empty and the
        network does not run.
    """
    if kind not in LESION_CLASSES:
        raise ValueError(f"unknown lesion network kind {kind!r}; expected one of {sorted(LESION_CLASSES)}")
    settings = LesionSettings() if settings is None else settings
    shape = tuple(volume.hu.shape)
    if tuple(lungs.shape) != shape:
        raise ValueError(f"lungs has shape {lungs.shape}, the volume {shape}")
    if kind == "nnunet" and inferer is None and isinstance(network, GenericUNet):
        divisor = network.divisor
        if any(p % d for p, d in zip(settings.nnunet_patch, divisor, strict=True)):
            raise ValueError(f"patch {settings.nnunet_patch} is not divisible by the network's strides {divisor}")
    classes = LESION_CLASSES[kind]
    if not np.any(lungs):  # lesions are only reported inside the lungs: skip the network
        return {name: np.zeros(shape, dtype=bool) for name in ("lesions", *classes)}
    data = lesion_preprocessing(kind, settings)(
        {
            "image": volume.hu,
            "spacing": volume.geometry.spacing,
            "direction": volume.geometry.direction,
            "lungs": np.asarray(lungs, dtype=bool),
        }
    )
    probabilities = predict_probabilities(
        network, data["image"], lesion_inferer(kind, settings) if inferer is None else inferer, device
    )
    if probabilities.shape[0] != 1 + len(classes):
        raise ValueError(f"a {kind} network must have {1 + len(classes)} outputs, got {probabilities.shape[0]}")
    crop_shape = tuple(data["crop_shape"])
    choice = argmax_on_grid(probabilities, crop_shape, list(range(probabilities.shape[0])))
    inside = data["lungs"]
    masks = {
        name: to_ct_grid((choice == channel) & inside, data, shape, fill=False) for name, channel in classes.items()
    }
    if "lesions" not in masks:
        masks["lesions"] = np.logical_or.reduce([masks[name] for name in classes])
    return masks
