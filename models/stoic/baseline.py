"""The STOIC2021 baseline member: I3D with two sigmoid outputs [P(COVID-19), P(severe)].

Thesis section 4.2.5: "The input CT scans were resampled to an isotropic spacing of 1.6 mm. A
center crop of 240*240*240 voxels was extracted from the CT, using zero padding when necessary.
The voxel values were clipped between -1100 and 300 HU and rescaled to the range [0,1]." The
public code that ran at inference (BLF ``inference/algorithm/preprocess.py``; models spec
section 1, "Repo-only detail") adds what the text leaves open, and this member does the same:

* resampling is SimpleITK's, on the scan's own grid, ``round(n * spacing / 1.6)`` voxels per axis,
  0 HU outside (:class:`~models.stoic.volumes.SimpleItkResampled`);
* the crop keeps the **last** 240 array slices along z and centres only y and x
  (``center_crop``: the z "centre" is ``n - 120``); padding is 0 HU, before clipping, so padded
  voxels read (0 + 1100) / 1400 = 0.786 after scaling;
* the single channel is expanded to the three RGB channels inside the network (``I3D.forward``).

The network (BL ``algorithm/i3d/i3dpt.py``, HZ-derived) is the zoo's I3D backbone
(:class:`models.zoo.InceptionV1`, pytorch-i3d layout) with two differences that change numbers,
built here: its BatchNorm epsilon is PyTorch's default 1e-5 (pytorch-i3d: 1e-3), and its head is
``AvgPool3d((2, 7, 7), stride 1)`` followed by a mean over what remains and ``Linear(1024, 2)``,
which at 240^3 (a 30 x 8 x 8 final map) weights border positions less than a global average
would.  The unused 400-way Kinetics logits convolution of ``i3dpt.py`` (410 000 parameters) is
left out.  i3dpt's static "SAME" padding equals the zoo's run-time padding on the even sizes
that a 240^3 input produces; its ``ceil_mode`` pools equal the zoo's zero-padded pools on
rectified inputs.  No age or sex (T§4.2.5).  ``I3D(nr_outputs=2)`` in BLF ``training/train.py``
did not load the Kinetics weights (models spec section 4), so nothing here depends on them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform
from torch import Tensor, nn

from models.device import inference_context, to_device
from models.stoic.member import MemberInputs, MemberOutput
from models.stoic.volumes import (
    GEOMETRY,
    IMAGE,
    RECORD,
    AsChannelTensord,
    ClipIntensityd,
    MemberConfig,
    PreparedInput,
    ScaleToUnitd,
    SimpleItkResampled,
    VolumeMember,
    check_inputs,
    run_transforms,
    summary_row,
)
from models.zoo import InceptionV1
from models.zoo.catalog import I3D_BACKBONE_PARAMETERS, ParameterReference

__all__ = [
    "DESCRIPTION",
    "NAME",
    "VERSION",
    "BaselineConfig",
    "BaselineCropd",
    "BaselineI3D",
    "StoicBaseline",
    "baseline_input",
    "baseline_transforms",
    "summary",
]

NAME = "stoic_baseline"
VERSION = "1.0.0"
DESCRIPTION = (
    "STOIC2021 baseline: I3D on the CT resampled to 1.6 mm and cropped to 240^3, two sigmoid outputs "
    "P(COVID-19) and P(severe) (thesis 4.2.5)"
)
#: Features of I3D's last Inception module.
_FEATURES = 1024


@dataclass(frozen=True)
class BaselineConfig(MemberConfig):
    """Preprocessing and head of the baseline (defaults: T§4.2.5 and BL ``preprocess.py``/``i3dpt.py``).

    Attributes
    ----------
    spacing_mm : float
        Isotropic voxel size after resampling (1.6 mm, T§4.2.5).
    shape : tuple of int
        The crop ``(z, y, x)``, even sizes (240^3, T§4.2.5; BL ``center_crop`` fails on odd ones).
    window : tuple of float
        HU clipped and scaled to [0, 1] ([-1100, 300], T§4.2.5).
    pad_hu : float
        HU outside the scan and in the crop's padding, before clipping (0, BL ``outside_val``).
    pool_kernel : tuple of int
        The head's average pool, stride 1 ((2, 7, 7), BL ``i3dpt.py``); smaller for small inputs.
    """

    spacing_mm: float = 1.6
    shape: tuple[int, int, int] = (240, 240, 240)
    window: tuple[float, float] = (-1100.0, 300.0)
    pad_hu: float = 0.0
    pool_kernel: tuple[int, int, int] = (2, 7, 7)

    def __post_init__(self) -> None:
        if self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if len(self.shape) != 3 or min(self.shape) < 2 or any(s % 2 for s in self.shape):
            raise ValueError(f"shape needs three even sizes (the baseline crop's rule), got {self.shape}")
        if not self.window[0] < self.window[1]:
            raise ValueError(f"window must be increasing, got {self.window}")
        if len(self.pool_kernel) != 3 or min(self.pool_kernel) < 1:
            raise ValueError(f"pool_kernel needs three positive sizes, got {self.pool_kernel}")


class BaselineCropd(MapTransform):
    """BL ``center_crop``: the last ``shape[0]`` slices along axis 0, centred along axes 1 and 2.

    Per axis the crop spans ``[c - s/2, c + s/2)`` with ``c = n - s/2`` on axis 0 (so it ends at
    the last slice) and ``c = n // 2`` on the others; what falls outside the array is filled with
    ``pad_value``.  The record gets ``crop_start`` (negative where padded) and ``padded``.
    """

    def __init__(self, keys: Sequence[str], shape: Sequence[int], pad_value: float) -> None:
        super().__init__(keys)
        if len(shape) != 3 or any(s < 2 or s % 2 for s in shape):
            raise ValueError(f"shape needs three even sizes, got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.pad_value = float(pad_value)

    def _starts(self, array_shape: Sequence[int]) -> list[int]:
        starts = []
        for axis, (n, size) in enumerate(zip(array_shape, self.shape, strict=True)):
            centre = n - size // 2 if axis == 0 else n // 2
            starts.append(centre - size // 2)
        return starts

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays of ``shape``."""
        d = dict(data)
        starts: list[int] = []
        padded = False
        for key in self.key_iterator(d):
            array = np.asarray(d[key], dtype=np.float32)
            starts = self._starts(array.shape)
            out = np.full(self.shape, self.pad_value, dtype=np.float32)
            source, target = [], []
            for start, size, n in zip(starts, self.shape, array.shape, strict=True):
                lo, hi = max(start, 0), min(start + size, n)
                source.append(slice(lo, hi))
                target.append(slice(lo - start, hi - start))
                padded |= start < 0 or start + size > n
            out[tuple(target)] = array[tuple(source)]
            d[key] = out
        d[RECORD] = {**d.get(RECORD, {}), "crop_start": tuple(starts), "padded": padded}
        return d


def baseline_transforms(spacing_mm: float, shape: Sequence[int], window: tuple[float, float], pad_hu: float) -> Compose:
    """The baseline's preprocessing (BL ``preprocess``) on ``{"image": HU [z, y, x], "geometry"}``:
    resample, crop, clip, scale, and a ``(1, *shape)`` tensor under ``image``."""
    low, high = window
    return Compose(
        [
            SimpleItkResampled([IMAGE], (spacing_mm,) * 3, outside_value=pad_hu),
            BaselineCropd([IMAGE], shape, pad_hu),
            ClipIntensityd([IMAGE], low, high),
            ScaleToUnitd([IMAGE], low, high),
            AsChannelTensord([IMAGE]),
        ]
    )


def baseline_input(
    inputs: MemberInputs, spacing_mm: float, shape: Sequence[int], window: tuple[float, float], pad_hu: float
) -> PreparedInput:
    """The baseline's network input ``image`` ``(1, *shape)`` for one series (also deakin_team's)."""
    check_inputs(inputs)
    transforms = baseline_transforms(spacing_mm, shape, window, pad_hu)
    out = run_transforms(transforms, {IMAGE: inputs.volume.hu, GEOMETRY: inputs.volume.geometry})
    return PreparedInput(tensors={"image": out[IMAGE]}, record=out[RECORD])


class BaselineI3D(nn.Module):
    """I3D with the STOIC baseline's head: ``AvgPool3d(pool_kernel, 1)``, mean, ``Linear(1024, out)``.

    Parameters
    ----------
    in_channels : int
        Channels of the backbone (3, RGB-inflated); a 1-channel input is expanded to them.
    out_channels : int
        Outputs (2: COVID-19 and severe logits).
    pool_kernel : tuple of int
        The head's average-pool window (BL ``i3dpt.py``: (2, 7, 7)).
    batchnorm_eps : float
        Epsilon of every BatchNorm (PyTorch's default 1e-5 in ``i3dpt.py``).

    Raises
    ------
    ValueError
        For non-positive sizes.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        pool_kernel: Sequence[int] = (2, 7, 7),
        batchnorm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if out_channels < 1 or len(pool_kernel) != 3 or min(pool_kernel) < 1 or batchnorm_eps <= 0:
            raise ValueError(f"invalid head: {out_channels} outputs, pool {tuple(pool_kernel)}, eps {batchnorm_eps}")
        self.in_channels = in_channels
        self.backbone = InceptionV1(3, in_channels, None)
        for module in self.backbone.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.eps = batchnorm_eps
        kernel = (int(pool_kernel[0]), int(pool_kernel[1]), int(pool_kernel[2]))
        self.pool = nn.AvgPool3d(kernel, stride=1)
        self.fc = nn.Linear(_FEATURES, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, out_channels)`` of volumes ``(N, 1 or in_channels, D, H, W)``."""
        if x.shape[1] == 1 and self.in_channels > 1:
            x = x.expand(-1, self.in_channels, -1, -1, -1)
        pooled = self.pool(self.backbone.feature_map(x)).mean(dim=(2, 3, 4))
        out: Tensor = self.fc(pooled)
        return out


class StoicBaseline(VolumeMember[BaselineConfig]):
    """The baseline member: one I3D, sigmoid outputs ``[P(COVID-19), P(severe)]`` (T§4.2.5).

    Build with :meth:`from_safetensors` (one network under ``model.0.``) or :meth:`demo`.
    """

    NAME = NAME
    VERSION = VERSION
    DESCRIPTION = DESCRIPTION
    CONFIG = BaselineConfig

    @classmethod
    def network_groups(cls, config: BaselineConfig) -> dict[str, int]:
        """One network (the baseline is a single model, T§4.2.5)."""
        return {"model": 1}

    @classmethod
    def build_network(cls, config: BaselineConfig, group: str) -> nn.Module:
        """A freshly initialised :class:`BaselineI3D`."""
        return BaselineI3D(pool_kernel=config.pool_kernel)

    def preprocess(self, inputs: MemberInputs) -> PreparedInput:
        """The ``(1, 240, 240, 240)`` input in [0, 1] (BL ``preprocess``); no masks are used."""
        c = self.config
        return baseline_input(inputs, c.spacing_mm, c.shape, c.window, c.pad_hu)

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """Sigmoid of the two logits: index 0 COVID-19, index 1 severe (BLF ``inference/process.py``)."""
        image = to_device(self.preprocess(inputs).tensors["image"].unsqueeze(0), self.device)
        with inference_context(self.device, bf16=False):
            logits = self.networks["model"][0](image)
            p_covid, p_severe = (float(v) for v in torch.sigmoid(logits.float())[0])
        notes = (*self.weight_notes(), "the baseline does not use age or sex (thesis 4.2.5)")
        return MemberOutput(p_covid=p_covid, p_severe=p_severe, notes=notes, details={})


def summary() -> list[dict[str, Any]]:
    """Parameters and FLOPs of the baseline network at its 1 x 240^3 input (meta device)."""
    with torch.device("meta"):
        network = BaselineI3D()
        backbone = InceptionV1(3, 3, None)
    return [
        summary_row(
            "stoic_baseline_i3d",
            network,
            (1, 240, 240, 240),
            forward_passes=1,
            source="BL algorithm/i3d/i3dpt.py (I3D, 2 outputs; unused 400-way logits conv left out)",
        ),
        summary_row(
            "stoic_baseline_i3d_backbone",
            backbone,
            (3, 240, 240, 240),
            forward_passes=1,
            source="I3D backbone (zoo inception_v1_3d features); thesis Table 3.3 prints 12.29 M with a 5-way head",
            reference=ParameterReference.computed(
                I3D_BACKBONE_PARAMETERS,
                "pytorch-i3d pytorch_i3d.py InceptionI3d without its logits, counted by the lungcds developers "
                "(models spec sections 2 and 5); not published",
            ),
        ),
    ]
