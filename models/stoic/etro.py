"""etro: 13 lesion and patient features, a bag of 20 logistic regressions, and a 3D ConvNeXt-Base for COVID-19.

Thesis section 4.3.3 and Table 4.1 (AUC severe 0.763, COVID 0.677 on test set B).  What the
public final-phase code ran (ETRO ``inference/process.py``, ``features.py``,
``algorithm/preprocess.py``, ``algorithm/preprocessing/*.py``; models spec section 1, rows
"etro") and this module reproduces:

**Severity** (P(severe) = mean of 20 bootstrap logistic regressions):

* Lung mask binarised; its largest 26-connected component kept, and the second largest when it
  has at least 100 000 voxels (``postprocess_lung_seg``; the authors' mask was the U-Net R231,
  here it is the pipeline's lung mask).
* CT cropped to the mask's bounding box plus 5 voxels (the upper bound is exclusive, so the crop
  ends 4 voxels after the mask), clipped to [-1000, 100] HU and scaled to [-1, 1], resampled to
  1 mm isotropic with SimpleITK (linear, ``round(n * spacing)`` voxels, 0 outside).
* Lesion labels: the authors' nnU-Net gives ground glass (1), consolidation (2) and healthy lung
  (3).  Here only the union of lesions exists (``MemberInputs.lesions``), so it is split by
  attenuation: lesion voxels below -300 HU are ground glass, the rest consolidation; healthy
  lung is lung outside the lesions.  Masks are resampled with nearest neighbour.
* Features, in the order the regressions take them: age ``(age - 55) / 20`` of the STOIC age bin
  (Patient's Age held the bin there); sex F = 0, else 1;
  ground-glass and consolidation volume fractions of (GGO + consolidation + healthy lung); mean,
  kurtosis and skewness of GGO, consolidation and healthy lung on the [-1, 1] image (SimpleITK
  ``LabelIntensityStatisticsImageFilter``).  An absent lesion class takes mean -1 and the
  healthy lung's kurtosis and skewness; absent healthy lung takes mean -1, kurtosis 6.1 and
  skewness 2.3 ("median value from the training data").  Kurtosis and skewness are rescaled to
  [-1, 1] with the training-set extrema stored in the weights file; the means already lie in
  [-1, 1] because the image does.
* A missing age stops the authors' code (``sys.exit``), so this member then refuses to run.

**COVID-19** (P(COVID-19) = softmax[1] of a fixed 3D ConvNeXt-Base, 3-3-27-3 blocks of 128-1024
channels, 3 input channels; ETRO ``algorithm/models/convnext3D_MT_FE.py``): CT set to 0 HU
outside the lung mask, [-1150, 350] HU scaled to [0, 1] with clipping, cropped to the mask
(slices: first to last, exclusive; rows and columns: 5-voxel margin, exclusive upper bound),
centre-padded (zeros) or cropped to 112 x 224 x 224, repeated to 3 channels.  The code's
``Orientation(axcodes="RAS")`` gets no affine and so leaves the array as stored.  The blocks are
the 3D ConvNeXt blocks of :mod:`models.stoic.convnext3d` (Code 1055's network); etro's head is
LayerNorm of the pooled features and one linear layer, without Code 1055's pre-head.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from monai.transforms.compose import Compose
from monai.transforms.croppad.array import ResizeWithPadOrCrop
from monai.transforms.transform import MapTransform
from scipy import ndimage
from torch import Tensor, nn

from models.device import inference_context, place_network, to_device
from models.findings import Geometry
from models.stoic.convnext3d import ConvNeXtBackbone3d
from models.stoic.member import MemberInputs, MemberOutput, MemberUnavailable, age_bin
from models.stoic.storage import MEMBER_CARD_FORMAT, prefixed, read_member_file, sitk_resample, write_member_file
from models.stoic.volumes import summary_row
from models.zoo import count_parameters

__all__ = [
    "BASE_DEPTHS",
    "BASE_DIMS",
    "BOOTSTRAPS",
    "CONVNEXT_INPUT",
    "DESCRIPTION",
    "FEATURES",
    "GGO_THRESHOLD_HU",
    "NAME",
    "RESCALED",
    "VERSION",
    "CropAroundMaskd",
    "CropForConvNeXtd",
    "EtroConvNeXt",
    "EtroHeads",
    "EtroInput",
    "EtroMember",
    "KeepLungComponentsd",
    "LesionLabelsd",
    "LesionStatistics",
    "MaskAndScaled",
    "PadOrCropToInputd",
    "ResampleIsotropicd",
    "ScaleWindowd",
    "build_convnext_transforms",
    "build_severity_transforms",
    "age_sex",
    "feature_vector",
    "itk_moments",
    "lesion_statistics",
    "severity_statistics",
    "summary",
]

NAME = "stoic_etro"
VERSION = "1.0.0"
DESCRIPTION = (
    "STOIC2021 etro: age, sex and 11 lesion/lung features into 20 bootstrap logistic regressions (severity); "
    "3D ConvNeXt-Base (COVID-19) (thesis 4.3.3, Table 4.1)"
)

#: The 13 features in the regressions' order (ETRO ``process.py``: ``X_test``).
FEATURES: tuple[str, ...] = (
    "age",
    "sex",
    "fraction_ggo",
    "fraction_cons",
    "mean_ggo",
    "mean_cons",
    "mean_healthy",
    "kurtosis_ggo",
    "kurtosis_cons",
    "kurtosis_healthy",
    "skewness_ggo",
    "skewness_cons",
    "skewness_healthy",
)
#: Features rescaled to [-1, 1] with training extrema (ETRO ``training/train.py``: ``rescale_values``).
RESCALED: tuple[str, ...] = (
    "kurtosis_healthy",
    "kurtosis_ggo",
    "kurtosis_cons",
    "skewness_healthy",
    "skewness_ggo",
    "skewness_cons",
)
#: Bagged regressions (ETRO ``training/train.py``: ``n_models = 20``).
BOOTSTRAPS = 20
#: Lesion voxels below this are ground glass, the rest consolidation (our split; see module docstring).
GGO_THRESHOLD_HU = -300.0
#: CT window of the severity features (ETRO ``definitions.py``: ``MIN_HU``, ``MAX_HU``), mapped to [-1, 1].
FEATURE_WINDOW_HU: tuple[float, float] = (-1000.0, 100.0)
#: Crop margin in voxels (ETRO ``definitions.py``: ``CROP_MARGIN``) and resampled spacing (``SPACING``).
CROP_MARGIN = 5
SPACING_MM = 1.0
#: A second lung component is kept only from this size on (ETRO ``MIN_NUM_VOXEL_PER_COMP``).
MIN_SECOND_COMPONENT = 100_000
#: Fallbacks when the healthy lung is absent (ETRO ``features.py``).
HEALTHY_FALLBACK = {"mean": -1.0, "kurtosis": 6.1, "skewness": 2.3}
#: ConvNeXt-Base (ETRO ``convnext3D_MT_FE.py``: ``convnext_base``).
BASE_DEPTHS: tuple[int, int, int, int] = (3, 3, 27, 3)
BASE_DIMS: tuple[int, int, int, int] = (128, 256, 512, 1024)
#: ConvNeXt input: window, size (slices, rows, columns) (ETRO ``preprocess.py``).
CONVNEXT_WINDOW_HU: tuple[float, float] = (-1150.0, 350.0)
CONVNEXT_INPUT: tuple[int, int, int] = (112, 224, 224)

IMAGE, LUNGS, LESIONS, LABELS, GEOMETRY, RECORD = "image", "lungs", "lesions", "labels", "geometry", "record"
_GGO, _CONS, _HEALTHY = 1, 2, 3


class KeepLungComponentsd(MapTransform):
    """ETRO ``postprocess_lung_seg``: the largest 26-connected component, plus the second largest
    when it has at least ``min_second`` voxels."""

    def __init__(self, keys: Sequence[str], min_second: int = MIN_SECOND_COMPONENT) -> None:
        super().__init__(keys)
        self.min_second = min_second

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Boolean masks of one or two components."""
        d = dict(data)
        for key in self.key_iterator(d):
            labels, count = ndimage.label(np.asarray(d[key]) > 0, structure=np.ones((3, 3, 3), dtype=bool))
            if count == 0:
                raise MemberUnavailable("the lung mask is empty; etro crops and measures within the lungs")
            sizes = np.bincount(labels.ravel())[1:]
            order = np.argsort(sizes)[::-1]
            keep = [int(order[0]) + 1]
            if count > 1 and sizes[order[1]] >= self.min_second:
                keep.append(int(order[1]) + 1)
            d[key] = np.isin(labels, keep)
        return d


def _bounds(mask: np.ndarray, margins: Sequence[int]) -> list[tuple[int, int]]:
    """Per axis ``[max(first - m, 0), min(last + m, n))``: the authors' exclusive upper bound."""
    bounds = []
    for axis, margin in enumerate(margins):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        bounds.append((max(int(present[0]) - margin, 0), min(int(present[-1]) + margin, mask.shape[axis])))
    return bounds


class CropAroundMaskd(MapTransform):
    """ETRO ``crop_around_mask``: every array cropped to the mask's bounds with ``margin`` voxels."""

    def __init__(self, keys: Sequence[str], mask_key: str, margin: int, geometry_key: str = GEOMETRY) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.mask_key, self.margin, self.geometry_key = mask_key, margin, geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Cropped arrays; the geometry keeps its origin, as the authors' ``convert_to_sitk`` did."""
        d = dict(data)
        bounds = _bounds(np.asarray(d[self.mask_key]), (self.margin,) * 3)
        index = tuple(slice(lo, hi) for lo, hi in bounds)
        for key in self.key_iterator(d):
            d[key] = np.asarray(d[key])[index]
        geometry: Geometry = d[self.geometry_key]
        shape = np.asarray(d[self.mask_key]).shape
        d[self.geometry_key] = Geometry(
            geometry.origin, geometry.spacing, geometry.direction, (shape[0], shape[1], shape[2])
        )
        d[RECORD] = {**d.get(RECORD, {}), "crop": tuple(bounds)}
        return d


class ScaleWindowd(MapTransform):
    """Clip to ``window`` and map it linearly onto ``target`` (ETRO ``normalize_intensity``: [-1000, 100] HU
    to [-1, 1])."""

    def __init__(self, keys: Sequence[str], window: tuple[float, float], target: tuple[float, float]) -> None:
        super().__init__(keys)
        self.window, self.target = window, target

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """float32 arrays in ``target``."""
        d = dict(data)
        (low, high), (a, b) = self.window, self.target
        for key in self.key_iterator(d):
            clipped = np.clip(np.asarray(d[key], dtype=np.float32), low, high)
            d[key] = (a + (clipped - low) * ((b - a) / (high - low))).astype(np.float32)
        return d


class ResampleIsotropicd(MapTransform):
    """ETRO ``resample``: SimpleITK to ``spacing`` mm isotropic, ``round(n * spacing / new)`` voxels,
    origin and direction kept, linear for the image and nearest neighbour for masks, 0 outside."""

    def __init__(self, keys: Sequence[str], spacing: float, mask_keys: Sequence[str], geometry_key: str = GEOMETRY):
        super().__init__(keys, allow_missing_keys=True)
        self.spacing, self.mask_keys, self.geometry_key = float(spacing), tuple(mask_keys), geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays on the isotropic grid."""
        d = dict(data)
        geometry: Geometry = d[self.geometry_key]
        depth, rows, columns = (
            int(np.round(n * s / self.spacing)) for n, s in zip(geometry.shape, geometry.spacing, strict=True)
        )
        shape = (depth, rows, columns)
        for key in self.key_iterator(d):
            is_mask = key in self.mask_keys
            source = np.asarray(d[key], dtype=np.uint8 if is_mask else np.float32)
            # = ResampleImageFilter with the identity transform and default 0
            array, _ = sitk_resample(source, geometry, (self.spacing,) * 3, shape, nearest=is_mask)
            d[key] = array > 0 if is_mask else array.astype(np.float32)
        d[self.geometry_key] = Geometry(geometry.origin, (self.spacing,) * 3, geometry.direction, shape)
        d[RECORD] = {**d.get(RECORD, {}), "resampled_shape": shape}
        return d


class LesionLabelsd(MapTransform):
    """The nnU-Net's label map stood in for: 1 ground glass (lesion below ``threshold`` on the
    scaled image), 2 consolidation (lesion at or above it), 3 healthy lung (lung outside lesions)."""

    def __init__(self, image_key: str, lung_key: str, lesion_key: str, threshold: float) -> None:
        super().__init__([image_key, lung_key, lesion_key])
        self.image_key, self.lung_key, self.lesion_key, self.threshold = image_key, lung_key, lesion_key, threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Adds the uint8 ``labels`` array."""
        d = dict(data)
        image = np.asarray(d[self.image_key])
        lesion = np.asarray(d[self.lesion_key], dtype=bool)
        labels = np.zeros(image.shape, dtype=np.uint8)
        labels[np.asarray(d[self.lung_key], dtype=bool) & ~lesion] = _HEALTHY
        labels[lesion & (image < self.threshold)] = _GGO
        labels[lesion & (image >= self.threshold)] = _CONS
        d[LABELS] = labels
        return d


def _scaled_hu(hu: float) -> float:
    """A HU value on the [-1, 1] scale of the severity features."""
    low, high = FEATURE_WINDOW_HU
    return float(-1.0 + 2.0 * (min(max(hu, low), high) - low) / (high - low))


def build_severity_transforms() -> Compose:
    """The severity chain on a dict with ``image`` (HU), ``lungs`` (after :class:`KeepLungComponentsd`),
    ``lesions`` and ``geometry``."""
    return Compose(
        [
            CropAroundMaskd([IMAGE, LUNGS, LESIONS], LUNGS, CROP_MARGIN),
            ScaleWindowd([IMAGE], FEATURE_WINDOW_HU, (-1.0, 1.0)),
            ResampleIsotropicd([IMAGE, LUNGS, LESIONS], SPACING_MM, mask_keys=(LUNGS, LESIONS)),
            LesionLabelsd(IMAGE, LUNGS, LESIONS, _scaled_hu(GGO_THRESHOLD_HU)),
        ]
    )


class CropForConvNeXtd(MapTransform):
    """ETRO ``crop_around_mask_convnext``: slices from the first mask slice to the last (exclusive),
    rows and columns with ``margin`` voxels (exclusive upper bound)."""

    def __init__(self, keys: Sequence[str], mask_key: str, margin: int) -> None:
        super().__init__(keys)
        self.mask_key, self.margin = mask_key, margin

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Cropped arrays."""
        d = dict(data)
        mask = np.asarray(d[self.mask_key])
        bounds = _bounds(mask, (0, self.margin, self.margin))
        index = tuple(slice(lo, hi) for lo, hi in bounds)
        for key in self.key_iterator(d):
            d[key] = np.asarray(d[key])[index]
        d[RECORD] = {**d.get(RECORD, {}), "convnext_crop": tuple(bounds)}
        return d


class MaskAndScaled(MapTransform):
    """MONAI ``MaskIntensity`` (0 HU outside the mask) then ``ScaleIntensityRange(-1150, 350, 0, 1, clip=True)``."""

    def __init__(self, image_key: str, mask_key: str, window: tuple[float, float]) -> None:
        super().__init__([image_key, mask_key])
        self.image_key, self.mask_key, self.window = image_key, mask_key, window

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """The masked, scaled image."""
        d = dict(data)
        low, high = self.window
        masked = np.where(
            np.asarray(d[self.mask_key], dtype=bool), np.asarray(d[self.image_key], dtype=np.float32), 0.0
        )
        d[self.image_key] = np.clip((masked - low) / (high - low), 0.0, 1.0).astype(np.float32)
        return d


class PadOrCropToInputd(MapTransform):
    """MONAI ``ResizeWithPadOrCrop(size, mode="constant")``: symmetric zero padding or centre crop."""

    def __init__(self, keys: Sequence[str], size: tuple[int, int, int]) -> None:
        super().__init__(keys)
        self.resize = ResizeWithPadOrCrop(spatial_size=size, mode="constant")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """float32 tensors ``(3, *size)``: the grey volume repeated to three channels."""
        d = dict(data)
        for key in self.key_iterator(d):
            fitted = torch.as_tensor(self.resize(torch.from_numpy(np.asarray(d[key])[None]))).as_subclass(Tensor)
            d[key] = fitted.to(torch.float32).expand(3, -1, -1, -1).contiguous()
        return d


def build_convnext_transforms(size: tuple[int, int, int] = CONVNEXT_INPUT) -> Compose:
    """The COVID-19 input chain on a dict with ``image`` (HU) and ``lungs`` (after :class:`KeepLungComponentsd`)."""
    return Compose(
        [
            MaskAndScaled(IMAGE, LUNGS, CONVNEXT_WINDOW_HU),
            CropForConvNeXtd([IMAGE, LUNGS], LUNGS, CROP_MARGIN),
            PadOrCropToInputd([IMAGE], size),
        ]
    )


@dataclass(frozen=True)
class LesionStatistics:
    """The 11 image features before rescaling (volume fractions; mean, kurtosis, skewness on [-1, 1])."""

    fraction_ggo: float
    fraction_cons: float
    mean_ggo: float
    mean_cons: float
    mean_healthy: float
    kurtosis_ggo: float
    kurtosis_cons: float
    kurtosis_healthy: float
    skewness_ggo: float
    skewness_cons: float
    skewness_healthy: float


def itk_moments(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, kurtosis and skewness exactly as ITK's ``LabelIntensityStatisticsImageFilter`` (which
    the authors called through SimpleITK) computes them: from raw power sums in double precision
    with the sample variance ``s^2`` (n - 1), ``skewness = m3 / s^3`` and ``kurtosis = m4 / s^4 - 3``
    with the population central moments ``m3``, ``m4``; both 0 when ``s^2`` is not positive."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    s1, s2, s3, s4 = x.sum(), (x * x).sum(), (x**3).sum(), (x**4).sum()
    mean = s1 / n
    variance = (s2 - s1 * s1 / n) / (n - 1) if n > 1 else 0.0
    if variance <= 0:
        return float(mean), 0.0, 0.0
    mean2 = mean * mean
    skewness = ((s3 - 3.0 * mean * s2) / n + 2.0 * mean * mean2) / (variance * math.sqrt(variance))
    kurtosis = ((s4 - 4.0 * mean * s3 + 6.0 * mean2 * s2) / n - 3.0 * mean2 * mean2) / (variance * variance) - 3.0
    return float(mean), float(kurtosis), float(skewness)


def lesion_statistics(image: np.ndarray, labels: np.ndarray) -> LesionStatistics:
    """ETRO ``lesion_fractions`` and ``intensity_and_texture`` on a 1 mm label map and its image.

    Volumes are voxel counts (the voxels are isotropic), so the fractions equal the authors'
    ratios of physical sizes; the moments are :func:`itk_moments`.

    Raises
    ------
    MemberUnavailable
        When no voxel carries a label (nothing to measure).
    """
    count = {label: int(np.count_nonzero(labels == label)) for label in (_GGO, _CONS, _HEALTHY)}
    total = sum(count.values())
    if total == 0:
        raise MemberUnavailable("no lung or lesion voxel is left after cropping and resampling to 1 mm")

    def stats(label: int, fallback: tuple[float, float, float]) -> tuple[float, float, float]:
        return itk_moments(image[labels == label]) if count[label] else fallback

    healthy = stats(_HEALTHY, (HEALTHY_FALLBACK["mean"], HEALTHY_FALLBACK["kurtosis"], HEALTHY_FALLBACK["skewness"]))
    ggo = stats(_GGO, (-1.0, healthy[1], healthy[2]))
    cons = stats(_CONS, (-1.0, healthy[1], healthy[2]))
    return LesionStatistics(
        fraction_ggo=count[_GGO] / total,
        fraction_cons=count[_CONS] / total,
        mean_ggo=ggo[0],
        mean_cons=cons[0],
        mean_healthy=healthy[0],
        kurtosis_ggo=ggo[1],
        kurtosis_cons=cons[1],
        kurtosis_healthy=healthy[1],
        skewness_ggo=ggo[2],
        skewness_cons=cons[2],
        skewness_healthy=healthy[2],
    )


def age_sex(age_years: float | None, sex: str | None) -> tuple[float, float]:
    """ETRO ``process.py``: ``(age - 55) / 20`` and F = 0, anything else 1.

    The authors read Patient's Age from STOIC's headers, which held the ten-year bin (T§4.2), so
    the age is first put into that bin (:func:`~models.stoic.member.age_bin`: 58 -> 55 -> 0).

    Raises
    ------
    MemberUnavailable
        Without a usable age (the authors' code exits).
    """
    binned = age_bin(age_years)
    if binned is None:
        raise MemberUnavailable("patient age unknown; etro's regressions need it (the authors' code stops without it)")
    return (binned - 55.0) / 20.0, 0.0 if (sex or "").upper() == "F" else 1.0


def feature_vector(
    statistics: LesionStatistics, age: float, sex: float, rescale_min: np.ndarray, rescale_max: np.ndarray
) -> np.ndarray:
    """The 13 features of :data:`FEATURES`, kurtosis and skewness rescaled with training extrema.

    ``rescale_min``/``rescale_max`` are in :data:`RESCALED` order; a feature becomes
    ``2 (x - min) / (max - min) - 1`` (ETRO ``process.py``).
    """
    values = {**asdict(statistics), "age": age, "sex": sex}
    for name, low, high in zip(RESCALED, rescale_min, rescale_max, strict=True):
        values[name] = 2.0 * (values[name] - float(low)) / (float(high) - float(low)) - 1.0
    return np.asarray([values[name] for name in FEATURES], dtype=np.float64)


@dataclass(frozen=True)
class EtroHeads:
    """The bag of regressions ``coef (20, 13)``, ``intercept (20,)`` and the rescaling extrema ``(6,)``."""

    coef: np.ndarray
    intercept: np.ndarray
    rescale_min: np.ndarray
    rescale_max: np.ndarray

    def __post_init__(self) -> None:
        if self.coef.ndim != 2 or self.coef.shape[1] != len(FEATURES) or self.intercept.shape != (self.coef.shape[0],):
            raise ValueError(f"need coef (models, {len(FEATURES)}) and intercept (models,), got {self.coef.shape}")
        if self.rescale_min.shape != (len(RESCALED),) or self.rescale_max.shape != (len(RESCALED),):
            raise ValueError(f"need {len(RESCALED)} rescaling extrema")
        if np.any(self.rescale_max <= self.rescale_min):
            raise ValueError("every rescaling maximum must exceed its minimum")

    def probability(self, features: np.ndarray) -> float:
        """Mean over the bag of ``sigmoid(x . coef + intercept)``."""
        logits = self.coef @ features + self.intercept
        return float(np.mean(1.0 / (1.0 + np.exp(-np.clip(logits, -700.0, 700.0)))))

    def tensors(self) -> dict[str, Tensor]:
        """The safetensors entries under ``heads.``."""
        arrays = {
            "coef": self.coef,
            "intercept": self.intercept,
            "rescale_min": self.rescale_min,
            "rescale_max": self.rescale_max,
        }
        return {f"heads.{k}": torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> EtroHeads:
        """Inverse of :meth:`tensors` (keys without the prefix)."""
        return cls(**{k: tensors[k].double().numpy() for k in ("coef", "intercept", "rescale_min", "rescale_max")})


class EtroConvNeXt(ConvNeXtBackbone3d):
    """etro's 3D ConvNeXt: the shared ConvNeXt backbone (patchify stem, four stages of 3D ConvNeXt
    blocks, LayerNorm of the pooled features) and ``Linear(dims[-1], num_classes)``.

    Module names are ETRO's (``downsample_layers``, ``stages``, ``norm``, ``head``).

    Parameters
    ----------
    in_channels : int
        3 (the CT repeated).
    num_classes : int
        2 (softmax index 1 = COVID-19).
    depths, dims : sequence of 4 int
        ConvNeXt-Base by default (3-3-27-3, 128-1024).

    Raises
    ------
    ValueError
        For non-positive classes, or a backbone :class:`~models.stoic.convnext3d.ConvNeXtBackbone3d` refuses.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        depths: Sequence[int] = BASE_DEPTHS,
        dims: Sequence[int] = BASE_DIMS,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        super().__init__(in_channels, depths, dims)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self.initialise)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of volumes ``(N, in_channels, D, H, W)``."""
        logits: Tensor = self.head(self.features(x))
        return logits


@dataclass(frozen=True)
class EtroInput:
    """The 13 features, the ConvNeXt input ``(3, 112, 224, 224)`` (None without a network), raw
    statistics, and what was done (``record``, ``notes``)."""

    features: np.ndarray
    statistics: LesionStatistics
    convnext: Tensor | None
    record: Mapping[str, Any]
    notes: tuple[str, ...]


def _run(transforms: Compose, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
    try:
        return cast(dict[Hashable, Any], transforms(data))
    except RuntimeError as error:  # MONAI's Compose wraps a transform's exception; unwrap ours
        if isinstance(error.__cause__, MemberUnavailable | ValueError):
            raise error.__cause__ from None
        raise


def severity_statistics(
    inputs: MemberInputs,
) -> tuple[LesionStatistics, np.ndarray, dict[str, Any], tuple[str, ...]]:
    """The 11 image statistics of one series, the kept lung components, the record and notes.

    Raises
    ------
    MemberUnavailable
        Without a lesion mask or with an empty lung mask.
    """
    if inputs.lesions is None:
        raise MemberUnavailable(
            "no lesion mask: etro's severity features need ground-glass and consolidation segmentations"
        )
    lungs = _run(Compose([KeepLungComponentsd([LUNGS])]), {LUNGS: inputs.lungs})[LUNGS]
    severity = _run(
        build_severity_transforms(),
        {
            IMAGE: inputs.volume.hu,
            LUNGS: lungs,
            LESIONS: np.asarray(inputs.lesions) > 0.5,
            GEOMETRY: inputs.volume.geometry,
        },
    )
    notes = (
        "lesion classes from the lesion mask split at -300 HU (below: ground glass, above: consolidation), "
        "in place of the authors' multi-class nnU-Net",
        "lung mask: the pipeline's, in place of the authors' U-Net R231",
    )
    return lesion_statistics(severity[IMAGE], severity[LABELS]), lungs, dict(severity[RECORD]), notes


class EtroMember:
    """The etro member: the bag of regressions and, when installed, the ConvNeXt for COVID-19.

    Parameters
    ----------
    heads : EtroHeads
        Regressions and rescaling extrema.
    convnext : EtroConvNeXt or None
        The COVID-19 network; without it P(COVID-19) is None (said in the notes).
    card : mapping
        Model card (``"demo": true`` for generated weights).
    convnext_input : tuple of 3 int
        ConvNeXt input size (112, 224, 224; smaller only for tests).
    device : torch.device or str, optional
        Where the ConvNeXt runs (CPU by default); the regressions run on the host in float64.
    """

    NAME: ClassVar[str] = NAME
    VERSION: ClassVar[str] = VERSION
    DESCRIPTION: ClassVar[str] = DESCRIPTION

    def __init__(
        self,
        heads: EtroHeads,
        convnext: EtroConvNeXt | None,
        card: Mapping[str, Any],
        *,
        convnext_input: tuple[int, int, int] = CONVNEXT_INPUT,
        device: torch.device | str | None = None,
    ) -> None:
        self.name = NAME
        self.heads = heads
        self.device = torch.device(device or "cpu")
        self.convnext = None if convnext is None else place_network(convnext.eval().requires_grad_(False), self.device)
        self.card: dict[str, Any] = dict(card)
        self.convnext_input = convnext_input

    @staticmethod
    def make_card(
        *,
        convnext: Mapping[str, Any] | None,
        convnext_input: tuple[int, int, int] = CONVNEXT_INPUT,
        demo: bool,
        **provenance: Any,
    ) -> dict[str, Any]:
        """A model card: features, ConvNeXt configuration (or None), output definition, provenance."""
        return {
            "format": MEMBER_CARD_FORMAT,
            "member": NAME,
            "version": VERSION,
            "description": DESCRIPTION,
            "features": list(FEATURES),
            "rescaled": list(RESCALED),
            "ggo_threshold_hu": GGO_THRESHOLD_HU,
            "convnext": dict(convnext) if convnext is not None else None,
            "convnext_input": list(convnext_input),
            "output": "P(severe) = mean of the bagged regressions; P(COVID-19) = softmax(ConvNeXt)[1]",
            "source": "ETRO inference/process.py, features.py, algorithm/preprocess.py",
            "demo": demo,
            **provenance,
        }

    @classmethod
    def parameter_count(cls, depths: Sequence[int] = BASE_DEPTHS, dims: Sequence[int] = BASE_DIMS) -> int:
        """ConvNeXt parameters plus the regressions' 20 x 14 coefficients."""
        with torch.device("meta"):
            network = EtroConvNeXt(3, 2, depths, dims)
        return count_parameters(network) + BOOTSTRAPS * (len(FEATURES) + 1)

    @classmethod
    def demo(
        cls,
        seed: int,
        *,
        convnext: bool = True,
        depths: Sequence[int] = BASE_DEPTHS,
        dims: Sequence[int] = BASE_DIMS,
        convnext_input: tuple[int, int, int] = CONVNEXT_INPUT,
        device: torch.device | str | None = None,
    ) -> EtroMember:
        """Generated, deterministic, untrained weights (card ``"demo": true``) on ``device``: never clinical.

        Regression coefficients N(0, 0.5) and intercepts N(-1, 0.5) from
        ``numpy.random.default_rng(seed)``; rescaling extrema kurtosis [-1, 30] and skewness
        [-3, 6] (plausible ranges, not the authors'); the ConvNeXt with its initialisation under
        torch seed ``seed``.  ``depths``, ``dims`` and ``convnext_input`` shrink it for tests.
        """
        rng = np.random.default_rng(seed)
        heads = EtroHeads(
            coef=rng.normal(0.0, 0.5, (BOOTSTRAPS, len(FEATURES))),
            intercept=rng.normal(-1.0, 0.5, BOOTSTRAPS),
            rescale_min=np.asarray([-1.0, -1.0, -1.0, -3.0, -3.0, -3.0]),
            rescale_max=np.asarray([30.0, 30.0, 30.0, 6.0, 6.0, 6.0]),
        )
        network = None
        if convnext:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = EtroConvNeXt(3, 2, depths, dims)
        card = cls.make_card(
            convnext={"depths": list(depths), "dims": list(dims)} if convnext else None,
            convnext_input=convnext_input,
            demo=True,
            seed=seed,
            provenance="generated demonstration weights: never trained, no clinical meaning",
        )
        return cls(heads, network, card, convnext_input=convnext_input, device=device)

    @classmethod
    def from_safetensors(cls, path: Path | str, *, device: torch.device | str | None = None) -> EtroMember:
        """Load a file written by :meth:`save` (``heads.*`` and, when the card has one, ``convnext.*``) onto ``device``.

        Raises
        ------
        ValueError
            For a file of another member or format, or tensors that do not fit the card.
        """
        tensors, card = read_member_file(Path(path), NAME)
        heads = EtroHeads.from_tensors(prefixed(tensors, "heads"))
        network = None
        if card.get("convnext") is not None:
            network = EtroConvNeXt(3, 2, card["convnext"]["depths"], card["convnext"]["dims"])
            network.load_state_dict(prefixed(tensors, "convnext"), strict=True)
        size = card["convnext_input"]
        return cls(heads, network, card, convnext_input=(int(size[0]), int(size[1]), int(size[2])), device=device)

    def save(self, path: Path | str) -> Path:
        """Write regressions, the ConvNeXt (if any) and the card to one safetensors file."""
        tensors = self.heads.tensors()
        if self.convnext is not None:
            tensors.update({f"convnext.{k}": v for k, v in self.convnext.state_dict().items()})
        return write_member_file(Path(path), tensors, self.card)

    def preprocess(self, inputs: MemberInputs) -> EtroInput:
        """Features (and the ConvNeXt input) of one series (module docstring).

        Raises
        ------
        MemberUnavailable
            Without a lesion mask, without an age, or with an empty lung mask.
        """
        age, sex = age_sex(inputs.age_years, inputs.sex)
        statistics, lungs, record, notes = severity_statistics(inputs)
        features = feature_vector(statistics, age, sex, self.heads.rescale_min, self.heads.rescale_max)
        if (inputs.sex or "").upper() not in ("M", "F"):
            notes = (*notes, "patient sex unknown or other: coded 1 (not female), as the authors' code does")
        convnext_input = None
        if self.convnext is not None:
            covid = _run(build_convnext_transforms(self.convnext_input), {IMAGE: inputs.volume.hu, LUNGS: lungs})
            convnext_input = covid[IMAGE]
            record = {**record, **covid[RECORD]}
        return EtroInput(features, statistics, convnext_input, record, notes)

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """P(severe) from the bag, P(COVID-19) from the ConvNeXt (None without one); the features in ``details``."""
        prepared = self.preprocess(inputs)
        p_severe = self.heads.probability(prepared.features)
        details = {name: float(value) for name, value in zip(FEATURES, prepared.features, strict=True)}
        notes = list(prepared.notes)
        p_covid = None
        if self.convnext is not None and prepared.convnext is not None:
            image = to_device(prepared.convnext[None], self.device)
            with inference_context(self.device, bf16=False):
                logits = self.convnext(image)
            p_covid = float(torch.softmax(logits.double(), dim=1)[0, 1])
        else:
            notes.append("no ConvNeXt weights in this file: etro gives no P(COVID-19)")
        if self.card.get("demo"):
            notes.insert(0, "demonstration weights: the probabilities have no clinical meaning")
        return MemberOutput(p_covid=p_covid, p_severe=p_severe, notes=tuple(notes), details=details)


def summary(depths: Sequence[int] = BASE_DEPTHS, dims: Sequence[int] = BASE_DIMS) -> list[dict[str, Any]]:
    """Parameters and FLOPs of the COVID-19 ConvNeXt at its input ``3 x 112 x 224 x 224`` (one pass
    per prediction); the severity bag adds 20 x 14 regression coefficients."""
    with torch.device("meta"):
        network = EtroConvNeXt(3, 2, depths, dims)
    return [
        summary_row(
            f"{NAME}_convnext_base_3d",
            network,
            (3, *CONVNEXT_INPUT),
            forward_passes=1,
            source="ETRO algorithm/models/convnext3D_MT_FE.py (convnext_base, 3D); no count published",
        )
    ]
