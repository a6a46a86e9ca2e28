"""simon.j ("Balaitous"): ViT-L/16 CLS features of every lung slice, logistic regressions, a learned blend.

Thesis section 4.3.3 and Table 4.1 (AUC severe 0.810, COVID 0.845 on test set B); what the public
final-phase code ran at inference is SJ ``inference/algorithm/balaitous.py`` and
``transforms.py`` (``DIAGNijmegen/stoic2021-finalphase-submission-simonj``), which this module
follows step by step (models spec section 1, row "simon.j"):

1. ``SitkResample``: SimpleITK linear resampling to 1.5 x 1.5 x 5 mm, output size
   ``int(size * spacing / new_spacing)``, same origin and direction, 0 outside.
2. ``CreateLungMask`` + ``CleanLungMask``: per lung the largest 3D component (26-connected),
   then every 2D component (8-connected) whose 5th HU percentile exceeds -100 is removed.  The
   authors used the U-Net R231 on the resampled CT; here the pipeline's left and right lung
   masks are resampled (nearest neighbour) onto the same grid, and the member says so.
3. ``SitkToNumpy``: rows reversed (``[::-1]``); harmless because the features average each
   slice with its vertical flip, but kept so that crop centres round exactly as there.
4. ``CropPad``: rows and columns longer than 224 are cropped to 224 around the centre of the
   lungs' extent, ``clip((first + last) // 2, 112, n - 112)``; shorter ones are padded with
   -1024 HU, ``(224 - n) // 2`` before.
5. ``CropLungs(10)``: slices from the first lung slice up to, *excluding*, the last one (the
   code slices ``start:end``), then ``int(0.1 n)`` to ``int(0.9 n)`` of those.
6. ``iBOTExtractor('full', 'vitl_ct', 24 blocks)``: [-1024, 600] HU to [0, 1], grey x 3,
   ImageNet mean/sd per channel; the CLS token (no final norm) averaged over slices and over
   their vertical flips ("we impose a vertical flip invariance").
7. ``ApplyLungMask(-1024)`` and ``iBOTExtractor('lung', 'vitl_i22k', 16 blocks)``: the same on
   the lung-masked slices with the ImageNet-22k model cut after 16 blocks.
8. ``ParseAgeSex`` + ``ApplySTOICLogisticRegressions``: the STOIC age bin / 100 clipped to
   [0.25, 0.95] (65 when unknown), sex M = 1, F = 0, otherwise 0.5, appended to the features for severity
   only; ``P = alpha * sigmoid(X_full . w + b) + (1 - alpha) * sigmoid(X_lung . w' + b')``.

The thesis says the slice features were "combined through pixel-wise average pooling"; the code
averages CLS tokens, and the code is what produced Table 4.1 (models spec section 4).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform
from scipy import ndimage
from torch import Tensor

from models.device import inference_context, place_network, to_device
from models.findings import Geometry
from models.stoic.member import MemberInputs, MemberOutput, MemberUnavailable, age_bin
from models.stoic.storage import (
    MEMBER_CARD_FORMAT,
    prefixed,
    read_member_file,
    sitk_resample,
    write_member_file,
)
from models.stoic.vit import VIT_L16, VisionTransformer
from models.stoic.volumes import summary_row
from models.zoo import count_parameters

__all__ = [
    "AGE_DEFAULT_YEARS",
    "DESCRIPTION",
    "FULL_DEPTH",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LUNG_DEPTH",
    "NAME",
    "SPACING_MM",
    "VERSION",
    "WINDOW_HU",
    "ApplyLungMaskd",
    "CleanLungMaskd",
    "CropLungSlicesd",
    "CropPadAroundLungsd",
    "LogisticHead",
    "ResampleSitkd",
    "ReverseRowsd",
    "SimonjHeads",
    "SimonjInput",
    "SimonjMember",
    "age_sex_features",
    "build_transforms",
    "imagenet_normalise",
    "VIT_L16_PUBLISHED_PARAMETERS",
    "slice_features",
    "summary",
]

NAME = "stoic_simonj"
VERSION = "1.0.0"
DESCRIPTION = (
    "STOIC2021 simon.j: ViT-L/16 CLS features of the lung slices (CT and lung-masked CT), logistic "
    "regressions and a learned blend (thesis 4.3.3, Table 4.1)"
)

#: Target spacing (x, y, z) in mm (SJ ``balaitous.py``: ``SitkResample(output_spacing=(1.5, 1.5, 5))``).
SPACING_MM: tuple[float, float, float] = (1.5, 1.5, 5.0)
#: In-plane size after crop/pad and its padding value (SJ ``CropPad(output_size=224, constant_values=-1024)``).
SIZE = 224
PAD_HU = -1024.0
#: Fraction of the lung slices dropped at each end (SJ ``CropLungs(percentile=10)``).
DROP_FRACTION = 0.10
#: Lung-mask cleaning (SJ ``CleanLungMask(hu_threshold=-100, percentile=5)``).
CLEAN_HU_THRESHOLD = -100.0
CLEAN_PERCENTILE = 5.0
#: Intensity window mapped to [0, 1] (SJ ``iBOTExtractor(vmin=-1024, vmax=600)``).
WINDOW_HU: tuple[float, float] = (-1024.0, 600.0)
#: ImageNet normalisation (SJ ``imagenet_preprocessing``).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Blocks of the CT model (X_full) and of the lung model (X_lung) (SJ ``balaitous.py``).
FULL_DEPTH = 24
LUNG_DEPTH = 16
#: Age used when the header has none: "median of the STOIC dataset" (SJ ``ParseAgeSex``).
AGE_DEFAULT_YEARS = 65.0
#: Age feature bounds after dividing by 100 (SJ ``ParseAgeSex``).
AGE_CLIP: tuple[float, float] = (0.25, 0.95)

IMAGE, LEFT, RIGHT, MASK, LUNG_IMAGE, GEOMETRY, RECORD = (
    "image",
    "lung_left",
    "lung_right",
    "mask",
    "image_lung",
    "geometry",
    "record",
)
_OUTPUTS = ("covid", "severe")
_KEYS = ("full", "lung")


class ResampleSitkd(MapTransform):
    """SimpleITK resampling to ``spacing`` (x, y, z) mm as SJ ``SitkResample`` does it.

    The output grid keeps origin and direction, has ``int(size * spacing / new_spacing)`` voxels
    per axis and is filled with 0 outside the input.  The image is interpolated linearly (and
    stays float32, where STOIC's int16 files were cast back to int16); masks use nearest
    neighbour, standing in for the R231 mask the authors computed on the resampled CT.
    """

    def __init__(
        self, keys: Sequence[str], spacing: tuple[float, float, float], mask_keys: Sequence[str], geometry_key: str
    ) -> None:
        super().__init__(keys)
        self.spacing = tuple(float(s) for s in spacing)
        self.mask_keys = tuple(mask_keys)
        self.geometry_key = geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays on the new grid; its geometry and shape recorded."""
        d = dict(data)
        geometry: Geometry = d[self.geometry_key]
        size_xyz = np.asarray(geometry.shape[::-1], dtype=float)
        spacing_xyz = np.asarray(geometry.spacing[::-1], dtype=float)
        out_size = [int(v) for v in (size_xyz * spacing_xyz / np.asarray(self.spacing))]
        if min(out_size) < 1:
            raise MemberUnavailable(f"the series is too small to resample to {self.spacing} mm")
        spacing_zyx = (self.spacing[2], self.spacing[1], self.spacing[0])
        shape = (out_size[2], out_size[1], out_size[0])
        for key in self.key_iterator(d):
            is_mask = key in self.mask_keys
            source = np.asarray(d[key], dtype=np.uint8 if is_mask else np.float32)
            array, _ = sitk_resample(source, geometry, spacing_zyx, shape, nearest=is_mask)
            d[key] = array > 0 if is_mask else array.astype(np.float32)
        d[self.geometry_key] = Geometry(geometry.origin, spacing_zyx, geometry.direction, shape)
        d[RECORD] = {**d.get(RECORD, {}), "resampled_shape": shape}
        return d


class ReverseRowsd(MapTransform):
    """Reverse the row axis, as SJ ``SitkToNumpy`` does with ``[::-1]`` on its ``(y, x, z)`` array."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays with rows reversed."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = np.ascontiguousarray(np.asarray(d[key])[:, ::-1, :])
        return d


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component (skimage ``measure.label`` default connectivity)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    result: np.ndarray = labels == int(np.argmax(sizes)) + 1
    return result


class CleanLungMaskd(MapTransform):
    """SJ ``CleanLungMask``: largest component per lung, then no dense 2D components.

    Each lung keeps its largest 3D component; then, slice by slice, every 8-connected component
    whose ``percentile``-th HU value exceeds ``threshold`` is removed (soft tissue mistaken for
    lung).  The union becomes ``output_key``.
    """

    def __init__(
        self, image_key: str, lung_keys: Sequence[str], output_key: str, threshold: float, percentile: float
    ) -> None:
        super().__init__([image_key, *lung_keys])
        self.image_key = image_key
        self.lung_keys = tuple(lung_keys)
        self.output_key = output_key
        self.threshold = threshold
        self.percentile = percentile

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Adds the cleaned boolean mask; the per-lung masks are dropped."""
        d = dict(data)
        image = np.asarray(d[self.image_key])
        clean = np.zeros(image.shape, dtype=bool)
        for key in self.lung_keys:
            clean |= _largest_component(np.asarray(d.pop(key), dtype=bool))
        structure = np.ones((3, 3), dtype=bool)
        removed = 0
        for z in np.flatnonzero(clean.any(axis=(1, 2))):
            labels, count = ndimage.label(clean[z], structure=structure)
            for index in range(1, count + 1):
                component = labels == index
                if np.percentile(image[z][component], self.percentile) > self.threshold:
                    clean[z][component] = False
                    removed += 1
        d[self.output_key] = clean
        d[RECORD] = {**d.get(RECORD, {}), "removed_dense_components": removed}
        return d


class CropPadAroundLungsd(MapTransform):
    """SJ ``CropPad``: rows and columns to ``size``, cropped around the lungs or padded.

    An axis longer than ``size`` is cropped to ``[c - size // 2, c + size // 2)`` with
    ``c = clip((first + last) // 2, size // 2, n - size // 2)`` over the mask's extent on that
    axis; a shorter one is padded with ``pad_values[key]``, ``(size - n) // 2`` in front.
    """

    def __init__(self, keys: Sequence[str], mask_key: str, size: int, pad_values: Mapping[str, float]) -> None:
        super().__init__(keys)
        self.mask_key = mask_key
        self.size = size
        self.pad_values = dict(pad_values)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays of ``(slices, size, size)``; crop starts and padding recorded."""
        d = dict(data)
        mask = np.asarray(d[self.mask_key])
        if not mask.any():
            raise MemberUnavailable("the lung mask is empty after cleaning; simon.j crops around the lungs")
        width = self.size // 2
        starts: list[int] = []
        for axis in (1, 2):
            n = mask.shape[axis]
            if n > self.size:
                other = tuple(a for a in range(3) if a != axis)
                extent = np.flatnonzero(mask.sum(axis=other) > 0)
                centre = int(np.clip((int(extent[0]) + int(extent[-1])) // 2, width, n - width))
                starts.append(centre - width)
                for key in self.key_iterator(d):
                    d[key] = np.take(np.asarray(d[key]), range(centre - width, centre + width), axis=axis)
            else:
                starts.append(0)
        shape = np.asarray(np.asarray(d[self.mask_key]).shape)
        delta = self.size - shape
        delta[0] = 0
        before = delta // 2
        pad = tuple((int(b), int(t - b)) for b, t in zip(before, delta, strict=True))
        for key in self.key_iterator(d):
            d[key] = np.pad(np.asarray(d[key]), pad, constant_values=self.pad_values[key])
        d[RECORD] = {**d.get(RECORD, {}), "crop_starts": tuple(starts), "padding": pad[1:]}
        return d


class CropLungSlicesd(MapTransform):
    """SJ ``CropLungs``: the lung slices (last one excluded, as ``start:end`` there), minus ``fraction``
    of them at each end (``int(fraction n)`` to ``int((1 - fraction) n)``)."""

    def __init__(self, keys: Sequence[str], mask_key: str, fraction: float) -> None:
        super().__init__(keys)
        self.mask_key = mask_key
        self.fraction = fraction

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays restricted to the kept slices (indices on the resampled grid recorded)."""
        d = dict(data)
        slices = np.flatnonzero(np.asarray(d[self.mask_key]).sum(axis=(1, 2)) > 0)
        start, end = int(slices[0]), int(slices[-1])
        n = end - start
        first, last = start + int(n * self.fraction), start + int(n * (1 - self.fraction))
        if last <= first:
            raise MemberUnavailable(
                f"only {n} lung slice(s) at 5 mm remain before dropping {self.fraction:.0%} at each end; "
                "simon.j has no slice to describe"
            )
        for key in self.key_iterator(d):
            d[key] = np.asarray(d[key])[first:last]
        d[RECORD] = {**d.get(RECORD, {}), "lung_slices": (start, end), "kept_slices": (first, last)}
        return d


class ApplyLungMaskd(MapTransform):
    """SJ ``ApplyLungMask(-1024)``: a copy of the image with everything outside the mask set to ``value``."""

    def __init__(self, image_key: str, mask_key: str, output_key: str, value: float) -> None:
        super().__init__([image_key, mask_key])
        self.image_key, self.mask_key, self.output_key, self.value = image_key, mask_key, output_key, value

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Adds the masked image under ``output_key``."""
        d = dict(data)
        d[self.output_key] = np.where(np.asarray(d[self.mask_key]), np.asarray(d[self.image_key]), self.value)
        return d


def build_transforms() -> Compose:
    """Steps 1-5 and 7 of the module docstring on a dict with ``image`` (HU), ``lung_left``,
    ``lung_right`` and ``geometry``; adds ``mask``, ``image_lung`` and ``record``."""
    return Compose(
        [
            ResampleSitkd([IMAGE, LEFT, RIGHT], SPACING_MM, mask_keys=(LEFT, RIGHT), geometry_key=GEOMETRY),
            ReverseRowsd([IMAGE, LEFT, RIGHT]),
            CleanLungMaskd(IMAGE, (RIGHT, LEFT), MASK, CLEAN_HU_THRESHOLD, CLEAN_PERCENTILE),
            CropPadAroundLungsd([IMAGE, MASK], MASK, SIZE, {IMAGE: PAD_HU, MASK: False}),
            CropLungSlicesd([IMAGE, MASK], MASK, DROP_FRACTION),
            ApplyLungMaskd(IMAGE, MASK, LUNG_IMAGE, PAD_HU),
        ]
    )


def imagenet_normalise(slices_hu: np.ndarray) -> Tensor:
    """SJ ``imagenet_preprocessing``: ``(Z, H, W)`` HU to ``(Z, 3, H, W)`` float32, window
    [-1024, 600] scaled to [0, 1], then ImageNet mean and sd per channel."""
    low, high = WINDOW_HU
    scaled = (np.clip(np.asarray(slices_hu, dtype=np.float32), low, high) - low) / (high - low)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return torch.from_numpy(np.ascontiguousarray((scaled[:, None] - mean) / std, dtype=np.float32))


def age_sex_features(age_years: float | None, sex: str | None) -> tuple[float, float, tuple[str, ...]]:
    """SJ ``ParseAgeSex``: (age / 100 clipped to [0.25, 0.95], sex M = 1 / F = 0 / else 0.5, notes).

    The authors read Patient's Age from STOIC's headers, which held the ten-year bin (T§4.2), so
    the age is first put into that bin (:func:`~models.stoic.member.age_bin`: 58 -> 55).  A
    missing or impossible age becomes 65 years, "the median of the STOIC dataset".
    """
    notes: list[str] = []
    binned = age_bin(age_years)
    if binned is None:
        years = AGE_DEFAULT_YEARS
        notes.append(f"patient age unknown: {AGE_DEFAULT_YEARS:.0f} years used, as the authors did")
    else:
        years = float(binned)
    age = float(np.clip(years / 100.0, *AGE_CLIP))
    sex_value = {"M": 1.0, "F": 0.0}.get((sex or "").upper(), 0.5)
    if sex_value == 0.5:
        notes.append("patient sex unknown or other: 0.5 used, as the authors did")
    return age, sex_value, tuple(notes)


def slice_features(network: VisionTransformer, slices: Tensor, batch_size: int = 8) -> np.ndarray:
    """SJ ``iBOTExtractor``: CLS tokens averaged over slices, then over the slices and their
    vertical flips (``torch.flip(image, dims=(2,))`` on ``(Z, 3, H, W)``).

    The network runs where its parameters are, in float32 on every device: its features are what
    the fitted regressions read, not probabilities (:mod:`models.device`).

    Parameters
    ----------
    network : VisionTransformer
        The feature extractor (24 blocks for X_full, 16 for X_lung).
    slices : torch.Tensor
        ``(Z, 3, H, W)`` normalised slices.
    batch_size : int
        Slices per forward pass (memory bound only; the result does not depend on it).

    Returns
    -------
    numpy.ndarray
        The ``embed_dim`` feature vector (float64, as the logistic regressions were fit).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(network.parameters()).device
    means = []
    with inference_context(device, bf16=False):
        for view in (slices, torch.flip(slices, dims=(2,))):
            tokens = [network(to_device(batch, device)).double().cpu() for batch in torch.split(view, batch_size)]
            means.append(torch.cat(tokens).mean(0))
        result: np.ndarray = torch.stack(means).mean(0).numpy()
    return result


@dataclass(frozen=True)
class LogisticHead:
    """One fitted logistic regression: ``sigmoid(x . coef + intercept)``."""

    coef: np.ndarray
    intercept: float

    def probability(self, features: np.ndarray) -> float:
        """The positive-class probability of one feature vector.

        Raises
        ------
        ValueError
            If the feature length differs from the coefficients'.
        """
        if features.shape != self.coef.shape:
            raise ValueError(f"{features.shape[0]} features for {self.coef.shape[0]} coefficients")
        logit = float(np.dot(features, self.coef) + self.intercept)
        return float(1.0 / (1.0 + math.exp(-logit))) if logit > -700 else 0.0


@dataclass(frozen=True)
class SimonjHeads:
    """The four regressions and the two blend weights of SJ ``training/train.py`` (``balaitous.npz``).

    ``heads[(key, output)]`` for key ``full``/``lung`` and output ``covid``/``severe``; the severity
    heads take the features followed by age and sex.  ``alpha[output]`` weighs the ``full`` head
    (the lung head gets ``1 - alpha``); ``C`` records the chosen regularisation for the card.
    """

    heads: Mapping[tuple[str, str], LogisticHead]
    alpha: Mapping[str, float]
    C: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = {(k, o) for k in _KEYS for o in _OUTPUTS} - set(self.heads)
        if missing or set(self.alpha) != set(_OUTPUTS):
            raise ValueError(f"heads need (full|lung, covid|severe) and alpha per output; missing {sorted(missing)}")
        if any(not 0.0 <= a <= 1.0 for a in self.alpha.values()):
            raise ValueError(f"blend weights must lie in [0, 1], got {dict(self.alpha)}")

    def tensors(self) -> dict[str, Tensor]:
        """The safetensors entries (``heads.coef_full_covid``, ..., ``heads.alpha_severe``)."""
        out: dict[str, Tensor] = {}
        for (key, output), head in self.heads.items():
            out[f"heads.coef_{key}_{output}"] = torch.from_numpy(np.asarray(head.coef, dtype=np.float64))
            out[f"heads.intercept_{key}_{output}"] = torch.tensor([head.intercept], dtype=torch.float64)
            if (key, output) in self.C:
                out[f"heads.C_{key}_{output}"] = torch.tensor([self.C[(key, output)]], dtype=torch.float64)
        for output, alpha in self.alpha.items():
            out[f"heads.alpha_{output}"] = torch.tensor([alpha], dtype=torch.float64)
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> SimonjHeads:
        """Inverse of :meth:`tensors` (keys without the ``heads.`` prefix)."""
        heads = {
            (k, o): LogisticHead(tensors[f"coef_{k}_{o}"].double().numpy(), float(tensors[f"intercept_{k}_{o}"][0]))
            for k in _KEYS
            for o in _OUTPUTS
        }
        chosen = {(k, o): float(tensors[f"C_{k}_{o}"][0]) for k in _KEYS for o in _OUTPUTS if f"C_{k}_{o}" in tensors}
        return cls(heads=heads, alpha={o: float(tensors[f"alpha_{o}"][0]) for o in _OUTPUTS}, C=chosen)


@dataclass(frozen=True)
class SimonjInput:
    """The two slice stacks ``(Z, 3, 224, 224)`` (CT and lung-masked CT), age and sex features, and
    what the preprocessing did (``record``) and assumed (``notes``)."""

    full: Tensor
    lung: Tensor
    age: float
    sex: float
    record: Mapping[str, Any]
    notes: tuple[str, ...]


def _vit_options(card_architecture: Mapping[str, Any]) -> dict[str, Any]:
    return {k: card_architecture[k] for k in ("patch_size", "embed_dim", "num_heads", "mlp_ratio")}


class SimonjMember:
    """The simon.j member: two ViTs (X_full, X_lung), four logistic regressions and two blends.

    Parameters
    ----------
    full : VisionTransformer
        The CT-fine-tuned iBOT ViT-L/16, all 24 blocks.
    lung : VisionTransformer
        The ImageNet-22k iBOT ViT-L/16, first 16 blocks, on the lung-masked CT.
    heads : SimonjHeads
        Regressions and blend weights.
    card : mapping
        Model card (``"demo": true`` for generated weights).
    batch_size : int
        Slices per forward pass.
    device : torch.device or str, optional
        Where both networks run (CPU by default); the regressions run on the host in float64.

    Raises
    ------
    ValueError
        If the regressions do not match the networks' feature width (+2 for severity).
    """

    NAME: ClassVar[str] = NAME
    VERSION: ClassVar[str] = VERSION
    DESCRIPTION: ClassVar[str] = DESCRIPTION

    def __init__(
        self,
        full: VisionTransformer,
        lung: VisionTransformer,
        heads: SimonjHeads,
        card: Mapping[str, Any],
        *,
        batch_size: int = 8,
        device: torch.device | str | None = None,
    ) -> None:
        for key, network in (("full", full), ("lung", lung)):
            for output, extra in (("covid", 0), ("severe", 2)):
                if heads.heads[(key, output)].coef.shape != (network.embed_dim + extra,):
                    raise ValueError(
                        f"{key}/{output} regression has {heads.heads[(key, output)].coef.shape} coefficients, "
                        f"the network gives {network.embed_dim} features (+{extra})"
                    )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.name = NAME
        self.card: dict[str, Any] = dict(card)
        self.device = torch.device(device or "cpu")
        self.full = place_network(full.eval().requires_grad_(False), self.device)
        self.lung = place_network(lung.eval().requires_grad_(False), self.device)
        self.heads = heads
        self.batch_size = batch_size

    @staticmethod
    def make_card(*, full: Mapping[str, Any], lung_depth: int, demo: bool, **provenance: Any) -> dict[str, Any]:
        """A model card: architecture (ViT options, depths), preprocessing, output, provenance."""
        return {
            "format": MEMBER_CARD_FORMAT,
            "member": NAME,
            "version": VERSION,
            "description": DESCRIPTION,
            "architecture": {**dict(full), "lung_depth": lung_depth},
            "preprocessing": {
                "spacing_mm_xyz": list(SPACING_MM),
                "size": SIZE,
                "pad_hu": PAD_HU,
                "drop_fraction_each_end": DROP_FRACTION,
                "clean_lung_mask": {"hu_threshold": CLEAN_HU_THRESHOLD, "percentile": CLEAN_PERCENTILE},
                "window_hu": list(WINDOW_HU),
                "imagenet_mean": list(IMAGENET_MEAN),
                "imagenet_std": list(IMAGENET_STD),
                "source": "SJ inference/algorithm/balaitous.py, transforms.py; models spec section 1",
            },
            "output": "P = alpha * LR_full + (1 - alpha) * LR_lung per output; severity heads add age/100, sex",
            "demo": demo,
            **provenance,
        }

    @classmethod
    def parameter_count(cls, **small_overrides: Any) -> int:
        """Parameters of both networks (full size: 303 299 584 + 202 529 792), counted on the meta device."""
        options = {**{k: VIT_L16[k] for k in ("patch_size", "embed_dim", "num_heads", "mlp_ratio")}, **small_overrides}
        lung_depth = int(options.pop("lung_depth", LUNG_DEPTH))
        depth = int(options.pop("depth", FULL_DEPTH))
        with torch.device("meta"):
            full = VisionTransformer(depth=depth, **options)
            lung = VisionTransformer(depth=lung_depth, **options)
        return count_parameters(full) + count_parameters(lung)

    @classmethod
    def demo(
        cls, seed: int, *, batch_size: int = 8, device: torch.device | str | None = None, **small_overrides: Any
    ) -> SimonjMember:
        """Generated, deterministic, untrained weights (card ``"demo": true``) on ``device``: never clinical.

        The networks get iBOT's initialisation under torch seeds ``seed`` and ``seed + 1`` (the
        caller's random state is untouched); regression coefficients are N(0, 1/d) and
        intercepts 0 from ``numpy.random.default_rng(seed)``; both blends are 0.5.

        Parameters
        ----------
        seed : int
            Seed of everything generated.
        batch_size : int
            Slices per forward pass.
        device : torch.device or str, optional
            Where the networks run.
        **small_overrides
            ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``patch_size``, ``lung_depth``
            for quick tests (ViT-L/16 with 24 and 16 blocks by default).
        """
        options: dict[str, Any] = {k: VIT_L16[k] for k in ("patch_size", "embed_dim", "num_heads", "mlp_ratio")}
        unknown = set(small_overrides) - {*options, "depth", "lung_depth"}
        if unknown:
            raise TypeError(f"unknown simon.j overrides {sorted(unknown)}")
        options.update({k: v for k, v in small_overrides.items() if k in options})
        depth = int(small_overrides.get("depth", FULL_DEPTH))
        lung_depth = int(small_overrides.get("lung_depth", LUNG_DEPTH))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            full = VisionTransformer(depth=depth, **options)
            torch.manual_seed(seed + 1)
            lung = VisionTransformer(depth=lung_depth, **options)
        rng = np.random.default_rng(seed)
        heads: dict[tuple[str, str], LogisticHead] = {}
        for key, network in (("full", full), ("lung", lung)):
            for output, extra in (("covid", 0), ("severe", 2)):
                size = network.embed_dim + extra
                heads[(key, output)] = LogisticHead(rng.normal(0.0, 1.0 / math.sqrt(size), size), 0.0)
        card = cls.make_card(
            full={**options, "depth": depth},
            lung_depth=lung_depth,
            demo=True,
            seed=seed,
            provenance="generated demonstration weights: never trained, no clinical meaning",
        )
        return cls(
            full, lung, SimonjHeads(heads, {"covid": 0.5, "severe": 0.5}), card, batch_size=batch_size, device=device
        )

    @classmethod
    def from_safetensors(
        cls, path: Path | str, *, batch_size: int = 8, device: torch.device | str | None = None
    ) -> SimonjMember:
        """Load a file written by :meth:`save` (``full.*``, ``lung.*``, ``heads.*`` and the card) onto ``device``.

        Raises
        ------
        ValueError
            For a file of another member or format, or tensors that do not fit the card.
        """
        tensors, card = read_member_file(Path(path), NAME)
        architecture = card["architecture"]
        options = _vit_options(architecture)
        full = VisionTransformer(depth=int(architecture["depth"]), **options)
        lung = VisionTransformer(depth=int(architecture["lung_depth"]), **options)
        full.load_state_dict(prefixed(tensors, "full"), strict=True)
        lung.load_state_dict(prefixed(tensors, "lung"), strict=True)
        heads = SimonjHeads.from_tensors(prefixed(tensors, "heads"))
        return cls(full, lung, heads, card, batch_size=batch_size, device=device)

    def save(self, path: Path | str) -> Path:
        """Write networks, regressions and card to one safetensors file."""
        tensors = {f"full.{k}": v for k, v in self.full.state_dict().items()}
        tensors.update({f"lung.{k}": v for k, v in self.lung.state_dict().items()})
        tensors.update(self.heads.tensors())
        return write_member_file(Path(path), tensors, self.card)

    def preprocess(self, inputs: MemberInputs) -> SimonjInput:
        """Steps 1-5, 7 and 8 of the module docstring: both slice stacks and the age/sex features.

        Raises
        ------
        MemberUnavailable
            When the lung mask is empty or leaves no slice.
        """
        data: dict[Hashable, Any] = {
            IMAGE: inputs.volume.hu,
            LEFT: inputs.lung_left,
            RIGHT: inputs.lung_right,
            GEOMETRY: inputs.volume.geometry,
        }
        try:
            out = cast(dict[Hashable, Any], build_transforms()(data))
        except RuntimeError as error:  # MONAI's Compose wraps a transform's exception; unwrap ours
            if isinstance(error.__cause__, MemberUnavailable | ValueError):
                raise error.__cause__ from None
            raise
        age, sex, notes = age_sex_features(inputs.age_years, inputs.sex)
        notes = (
            "lung mask: the pipeline's left/right lung masks resampled to 1.5 x 1.5 x 5 mm in place of the "
            "authors' U-Net R231",
            *notes,
        )
        return SimonjInput(
            full=imagenet_normalise(out[IMAGE]),
            lung=imagenet_normalise(out[LUNG_IMAGE]),
            age=age,
            sex=sex,
            record=dict(out[RECORD]),
            notes=notes,
        )

    def features(self, prepared: SimonjInput) -> tuple[np.ndarray, np.ndarray]:
        """X_full and X_lung (steps 6 and 7)."""
        return (
            slice_features(self.full, prepared.full, self.batch_size),
            slice_features(self.lung, prepared.lung, self.batch_size),
        )

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """P(COVID-19) and P(severe) of one series (step 8), with each regression's output in ``details``."""
        prepared = self.preprocess(inputs)
        x_full, x_lung = self.features(prepared)
        age_sex = np.asarray([prepared.age, prepared.sex])
        details: dict[str, float] = {
            "slices": float(prepared.full.shape[0]),
            "age_feature": prepared.age,
            "sex_feature": prepared.sex,
        }
        blended: dict[str, float] = {}
        for output in _OUTPUTS:
            p = {}
            for key, x in (("full", x_full), ("lung", x_lung)):
                features = np.concatenate([x, age_sex]) if output == "severe" else x
                p[key] = self.heads.heads[(key, output)].probability(features)
                details[f"lr_{key}_{output}"] = p[key]
            alpha = self.heads.alpha[output]
            details[f"alpha_{output}"] = alpha
            blended[output] = alpha * p["full"] + (1.0 - alpha) * p["lung"]
        notes = prepared.notes
        if self.card.get("demo"):
            notes = ("demonstration weights: the probabilities have no clinical meaning", *notes)
        return MemberOutput(p_covid=blended["covid"], p_severe=blended["severe"], notes=notes, details=details)


#: torchvision's published ``vit_l_16`` count (with its final LayerNorm and 1000-class head); the
#: 24-block CLS extractor lacks those 2 048 + 1 025 000 parameters (tests check the difference).
VIT_L16_PUBLISHED_PARAMETERS = 304_326_632


def summary() -> list[dict[str, Any]]:
    """Parameters and FLOPs of the two ViT-L/16 extractors for one 3 x 224 x 224 slice (meta device).

    Each kept slice is run twice per network (the slice and its vertical flip), so a prediction
    costs ``2 x slices`` passes of each; ``forward_passes_per_prediction`` counts one slice.
    FLOPs leave out attention's matrix products, LayerNorm and GELU (the
    :func:`models.zoo.count_flops` convention).
    """
    rows = []
    for key, depth in (("full", FULL_DEPTH), ("lung", LUNG_DEPTH)):
        with torch.device("meta"):
            network = VisionTransformer(depth=depth, **_vit_options(VIT_L16))
        rows.append(
            summary_row(
                f"{NAME}_vit_l16_{key}_{depth}_blocks",
                network,
                (3, SIZE, SIZE),
                forward_passes=2,
                source=(
                    f"SJ inference/algorithm/vit.py vit_large, first {depth} blocks, no final norm or head; "
                    f"torchvision vit_l_16 publishes {VIT_L16_PUBLISHED_PARAMETERS} with both"
                ),
            )
        )
    return rows
