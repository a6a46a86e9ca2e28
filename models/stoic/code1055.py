"""The Code 1055 member: five 3D ConvNeXt-Tiny folds, severity only (Table 4.1: AUC 0.815).

What ran at inference (C1055 ``inference/algorithm/submission.py`` with the validation transforms
stored in each checkpoint, ``training/algorithm/data/gpu_deformed.py`` and
``config/dataconfig.py``; models spec sections 1 and 4):

1. the image as SimpleITK gives it, transposed to ``(x, y, z)`` (``LoadSimpleITKImage``: ``.T``);
2. the whole scan resized to 224^3 with ``scipy.ndimage.zoom`` (cubic spline, scipy defaults;
   ``Zoom``);
3. HU clipped to [-1000, 500] and scaled to [0, 1] (``Scale01``; the following ``Clip(0, 1)``
   changes nothing and is not repeated here);
4. z-scored with the training set's statistics, mean 0.3110 and sd 0.3154 (``Normalize3D``);
5. the first axis (x) reversed (``NumpyNegativeStrideCorrection``, applied in training too);
6. each fold's network on the ``(1, 1, 224, 224, 224)`` tensor, **without** age and sex, and
   ``P(severe) = mean over folds of sigmoid(logit[1])``, ``P(COVID-19) = mean over folds of
   sigmoid(logit[0])`` (``BinaryCrossEntropySevOnly.finalize``; ``submission.py`` wrote both).

The thesis (T§4.3.3) describes 256^3 and a [-1100, 300] window: 256^3 is the training-time
alternative (a random 224^3 crop of it), and the repository's [-1000, 500] scaling is what the
deployed transforms did.  The COVID-19 logit was never trained (loss ``bce_sev``), which is why its
AUC was 0.616 (thesis Table 4.1): the member reports it as the authors' submission did, with a
note saying so; the thesis' top-three COVID-19 ensemble does not include Code 1055.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform
from torch import nn

from models.device import inference_context, to_device
from models.stoic.convnext3d import TINY_DEPTHS, TINY_DIMS, ConvNeXt3d
from models.stoic.member import MemberInputs, MemberOutput, age_bin
from models.stoic.volumes import (
    GEOMETRY,
    IMAGE,
    RECORD,
    AsChannelTensord,
    ClipIntensityd,
    MemberConfig,
    PreparedInput,
    ScaleToUnitd,
    VolumeMember,
    ZoomToShaped,
    ZScored,
    check_inputs,
    run_transforms,
    sex_note,
    summary_row,
)
from models.zoo.catalog import ParameterReference

__all__ = [
    "DESCRIPTION",
    "NAME",
    "COMPUTED_PARAMETERS",
    "VERSION",
    "Code1055Config",
    "StoicCode1055",
    "ReverseFirstAxisd",
    "ToXyzd",
    "code1055_input",
    "code1055_transforms",
    "metadata_vector",
    "summary",
]

NAME = "stoic_code1055"
VERSION = "1.0.0"
DESCRIPTION = (
    "Code 1055 (STOIC2021 winner): five 3D ConvNeXt-Tiny folds on the whole CT resized to 224^3, "
    "P(severe) only (thesis 4.3.3, Table 4.1)"
)
#: ConvNeXt-Tiny 3D on one channel with Code 1055's head: "about 31.9 M", counted by the lungcds
#: developers from C1055 ``models/convnext.py`` (models spec section 4).  Neither the thesis nor the
#: authors print a count, so it is a computed reference, not a published one.
COMPUTED_PARAMETERS = 31_900_000
#: STOIC's sex labels in Code 1055's one-hot order (C1055 ``EncodeSex``: F=0, M=1, O and A=2).
_SEX_INDEX = {"F": 0, "M": 1}


@dataclass(frozen=True)
class Code1055Config(MemberConfig):
    """Code 1055's input and network (defaults: C1055 ``dataconfig.py``, ``modelconfig.py``).

    Attributes
    ----------
    shape : tuple of int
        The resized volume ``(x, y, z)`` (224^3, ``GPUDeformedDataConfig.img_size``).
    window : tuple of float
        HU clipped and scaled to [0, 1] ([-1000, 500], ``Scale01``).
    mean, sd : float
        Fixed z-score statistics after scaling (0.3110, 0.3154, ``GPUDeformedDataConfig``).
    zoom_order : int
        Spline order of the resize (3: scipy's default in ``Zoom``).
    depths, dims : tuple of int
        ConvNeXt stages (Tiny: 3-3-9-3, 96-768; ``convnext_tiny_3d``).
    kernel_size : int
        Depthwise kernel (7).
    stem_stride : int
        Patchify stem (4).
    folds : int
        Cross-validation models averaged (5, T§4.3.3 "Inference strategy").
    """

    shape: tuple[int, int, int] = (224, 224, 224)
    window: tuple[float, float] = (-1000.0, 500.0)
    mean: float = 0.3110
    sd: float = 0.3154
    zoom_order: int = 3
    depths: tuple[int, int, int, int] = TINY_DEPTHS
    dims: tuple[int, int, int, int] = TINY_DIMS
    kernel_size: int = 7
    stem_stride: int = 4
    folds: int = 5

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1 or self.folds < 1 or self.sd <= 0:
            raise ValueError(f"invalid Code 1055 configuration: {self}")
        if not self.window[0] < self.window[1]:
            raise ValueError(f"window must be increasing, got {self.window}")


class ToXyzd(MapTransform):
    """``[z, y, x]`` arrays to ``(x, y, z)``: C1055's ``LoadSimpleITKImage``
    (``GetArrayFromImage(...).T``); the record gets ``layout``."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Transposed arrays."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = np.asarray(d[key]).T
        d[RECORD] = {**d.get(RECORD, {}), "layout": "(x, y, z)"}
        return d


class ReverseFirstAxisd(MapTransform):
    """The first axis reversed: C1055's ``NumpyNegativeStrideCorrection`` (``np.flip(img, axis=0)``).

    It comes last, after the zoom, as the authors ran it: ``scipy.ndimage.zoom`` is not symmetric
    between the two ends of an axis (its last output plane samples just beyond the input), so
    reversing before zooming changed 2 of 224 x-planes by up to 1 284 HU on a real scan.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays with the first axis reversed."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = np.ascontiguousarray(np.asarray(d[key])[::-1])
        d[RECORD] = {**d.get(RECORD, {}), "layout": "(x reversed, y, z)"}
        return d


def code1055_transforms(config: Code1055Config, shape: Sequence[int] | None = None) -> Compose:
    """The deployed validation transforms on ``{"image": HU [z, y, x]}``; ``shape`` replaces the
    224^3 target (training also zooms to 256^3 and crops, C1055 ``gpu_deformed.py``)."""
    low, high = config.window
    return Compose(
        [
            ToXyzd([IMAGE]),
            ZoomToShaped([IMAGE], shape or config.shape, order=config.zoom_order),
            ClipIntensityd([IMAGE], low, high),
            ScaleToUnitd([IMAGE], low, high),
            ZScored([IMAGE], config.mean, config.sd),
            ReverseFirstAxisd([IMAGE]),
            AsChannelTensord([IMAGE]),
        ]
    )


def code1055_input(config: Code1055Config, inputs: MemberInputs, shape: Sequence[int] | None = None) -> PreparedInput:
    """Code 1055's ``image`` ``(1, *shape)`` for one series (224^3 unless ``shape`` is given)."""
    check_inputs(inputs)
    data: dict[Hashable, Any] = {IMAGE: inputs.volume.hu, GEOMETRY: inputs.volume.geometry}
    out = run_transforms(code1055_transforms(config, shape), data)
    return PreparedInput(tensors={"image": out[IMAGE]}, record=out[RECORD])


def metadata_vector(age_years: float | None, sex: str | None) -> torch.Tensor:
    """Code 1055's training metadata ``[F, M, other, age / 85]`` (C1055 ``EncodeSex``, ``DivideAge``).

    Age is the STOIC bin; a missing age is 50 and a missing or other sex is "O", as
    ``LoadSimpleITKImage`` defaulted.  Only training used it (``submission.py`` passes no metadata).
    """
    binned = age_bin(age_years)
    sex_index = _SEX_INDEX.get((sex or "O").upper(), 2)
    vector = torch.zeros(4)
    vector[sex_index] = 1.0
    vector[3] = (50 if binned is None else binned) / 85.0
    return vector


class StoicCode1055(VolumeMember[Code1055Config]):
    """Code 1055: mean of the folds' sigmoid outputs, severity trained, COVID-19 untrained (module docstring)."""

    NAME = NAME
    VERSION = VERSION
    DESCRIPTION = DESCRIPTION
    CONFIG = Code1055Config

    @classmethod
    def network_groups(cls, config: Code1055Config) -> dict[str, int]:
        """One ConvNeXt per cross-validation fold."""
        return {"fold": config.folds}

    @classmethod
    def build_network(cls, config: Code1055Config, group: str) -> nn.Module:
        """A freshly initialised ConvNeXt (stochastic depth off: it is the identity at inference)."""
        return ConvNeXt3d(
            1, 2, config.depths, config.dims, kernel_size=config.kernel_size, stem_stride=config.stem_stride
        )

    def preprocess(self, inputs: MemberInputs) -> PreparedInput:
        """The ``(1, 224, 224, 224)`` z-scored input in ``(x reversed, y, z)`` layout; no masks used."""
        return code1055_input(self.config, inputs)

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """``P(severe)`` and ``P(COVID-19)``: means over folds of ``sigmoid(logit[1])`` and ``sigmoid(logit[0])``."""
        image = to_device(self.preprocess(inputs).tensors["image"].unsqueeze(0), self.device)
        with inference_context(self.device, bf16=False):
            probabilities = [torch.sigmoid(net(image).float()[0]) for net in self.networks["fold"]]
        folds = [float(p[1]) for p in probabilities]
        covid = [float(p[0]) for p in probabilities]
        notes = (
            *self.weight_notes(),
            f"age unused at inference (the submission called the folds with the image only; given: "
            f"{'unknown' if inputs.age_years is None else f'{inputs.age_years:g} years'})",
            sex_note("Code 1055", inputs.sex, used=False),
            "P(COVID-19) comes from an output Code 1055 never trained (loss bce_sev), as its submission "
            "reported it (thesis Table 4.1: COVID-19 AUC 0.616); the top-three COVID-19 ensemble leaves it out",
        )
        details = {f"fold{i}_p_severe": p for i, p in enumerate(folds)}
        details.update({f"fold{i}_p_covid": p for i, p in enumerate(covid)})
        return MemberOutput(p_covid=float(np.mean(covid)), p_severe=float(np.mean(folds)), notes=notes, details=details)


def summary() -> list[dict[str, Any]]:
    """Parameters and FLOPs of one Code 1055 fold at 1 x 224^3 (meta device; 5 passes per scan)."""
    with torch.device("meta"):
        network = ConvNeXt3d()
    return [
        summary_row(
            "stoic_code1055_convnext_tiny_3d",
            network,
            (1, 224, 224, 224),
            forward_passes=5,
            source="C1055 models/convnext.py ConvNeXt3dSTOIC (tiny, in_chan 1); models spec section 4",
            reference=ParameterReference.computed(
                COMPUTED_PARAMETERS,
                "C1055 models/convnext.py ConvNeXt3dSTOIC (tiny, in_chan 1), counted by the lungcds developers "
                "to about 31.9 M (models spec section 4); not published",
            ),
        )
    ]
