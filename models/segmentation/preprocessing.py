"""Dictionary transforms that bring a CT into a network's frame, and the record to come back.

House rule 4 asks for preprocessing as a MONAI ``Compose`` of dictionary transforms.  The
transforms here work on a plain ``dict`` whose ``"image"`` is a ``[z, y, x]`` HU array on the
CT's own grid, with ``"spacing"`` (z, y, x mm) and ``"direction"`` (the :class:`Geometry`
direction matrix) beside it, and any masks under other keys.  Each step records what it did, so
that :func:`to_ct_grid` can bring a network output back onto the CT's grid exactly:

1. :class:`ToCanonicald` permutes and flips the axes so that axis 0 runs to the patient's head,
   axis 1 to the back and axis 2 to the patient's left (a head-first supine axial series as
   loaded: identity direction).  A network trained on that orientation then sees prone,
   feet-first or coronal acquisitions the same way, and its "left" classes mean the patient's
   left.  Oblique directions are snapped to the nearest axes (as nnU-Net does).
2. :class:`CropToMaskd` crops to the bounding box of a mask plus a margin (the lungs: outside
   them every output is discarded, so computing there only costs time).
3. :class:`Resampled` resamples to a target spacing (or a fixed shape) with trilinear
   interpolation for images and nearest-neighbour for label maps.

Intensity scaling, channels and the tensor conversion are MONAI's own transforms
(``ScaleIntensityRanged``, ``EnsureChannelFirstd``, ``RepeatChanneld``, ``EnsureTyped``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.compose import Compose
from monai.transforms.intensity.dictionary import ScaleIntensityRanged
from monai.transforms.transform import MapTransform
from monai.transforms.utility.dictionary import EnsureChannelFirstd, EnsureTyped, RepeatChanneld

__all__ = [
    "CROP_KEY",
    "CROP_SHAPE_KEY",
    "DIRECTION_KEY",
    "ORIENTATION_KEY",
    "SPACING_KEY",
    "CropToMaskd",
    "IntensityWindow",
    "Orientation",
    "Resampled",
    "ToCanonicald",
    "build_preprocessing",
    "crop_spacing",
    "to_ct_grid",
]

#: Keys of the records the transforms leave in the data dictionary.
ORIENTATION_KEY = "orientation"
CROP_KEY = "crop_box"
CROP_SHAPE_KEY = "crop_shape"
SPACING_KEY = "spacing"
DIRECTION_KEY = "direction"


@dataclass(frozen=True)
class IntensityWindow:
    """Clip HU to ``[lower, upper]``, then map that range linearly onto ``[out_lower, out_upper]``.

    nnU-Net's CT normalisation (clip to a foreground percentile range, subtract the foreground
    mean, divide by its standard deviation) is this with ``out = (bound - mean) / std``; see
    :meth:`zscore`.
    """

    lower: float
    upper: float
    out_lower: float = 0.0
    out_upper: float = 1.0

    def __post_init__(self) -> None:
        if not self.upper > self.lower:
            raise ValueError(f"upper ({self.upper}) must exceed lower ({self.lower})")
        if self.out_upper == self.out_lower:
            raise ValueError("the output range must not be empty")

    @classmethod
    def zscore(cls, lower: float, upper: float, mean: float, std: float) -> IntensityWindow:
        """nnU-Net CT normalisation: clip to ``[lower, upper]``, then ``(x - mean) / std``."""
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        return cls(lower, upper, (lower - mean) / std, (upper - mean) / std)


@dataclass(frozen=True)
class Orientation:
    """How the CT's array axes map onto the canonical ones.

    ``order[c]`` is the CT array axis that becomes canonical axis ``c``; ``flips[c]`` says whether
    canonical axis ``c`` is reversed after the transposition.
    """

    order: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def from_direction(cls, direction: Sequence[Sequence[float]]) -> Orientation:
        """The orientation of a :class:`Geometry` direction (columns: x, y, z axes in LPS)."""
        matrix = np.asarray(direction, dtype=float)
        if matrix.shape != (3, 3):
            raise ValueError(f"direction must be 3x3, got shape {matrix.shape}")
        order = [0, 0, 0]
        flips = [False, False, False]
        taken: set[int] = set()
        for array_axis in range(3):
            vector = matrix[:, 2 - array_axis]  # array axis 0 is z, the third column
            patient = int(np.argmax(np.abs(vector)))
            if patient in taken:
                raise ValueError(f"direction {matrix.tolist()} maps two array axes onto one patient axis")
            taken.add(patient)
            canonical = 2 - patient  # patient x (left) -> axis 2, y (posterior) -> 1, z (head) -> 0
            order[canonical] = array_axis
            flips[canonical] = bool(vector[patient] < 0)
        return cls((order[0], order[1], order[2]), (flips[0], flips[1], flips[2]))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """CT array (``[z, y, x]`` leading axes) to canonical orientation."""
        out = np.transpose(array, self.order)
        axes = tuple(c for c, flip in enumerate(self.flips) if flip)
        return np.ascontiguousarray(np.flip(out, axes) if axes else out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Canonical array back to the CT's axis order and directions."""
        axes = tuple(c for c, flip in enumerate(self.flips) if flip)
        out = np.flip(array, axes) if axes else array
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.order)))

    def permute(self, values: Sequence[float]) -> tuple[float, float, float]:
        """Per-axis values (e.g. spacing) in CT order to canonical order."""
        return (float(values[self.order[0]]), float(values[self.order[1]]), float(values[self.order[2]]))


class ToCanonicald(MapTransform):
    """Reorient the arrays under ``keys`` to the canonical orientation (module docstring, step 1).

    Reads ``data["direction"]``; records an :class:`Orientation` under ``"orientation"`` and
    replaces ``data["spacing"]`` by the canonical-order spacing.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Reoriented copy of ``data``."""
        out = dict(data)
        orientation = Orientation.from_direction(out[DIRECTION_KEY])
        for key in self.key_iterator(out):
            out[key] = orientation.apply(np.asarray(out[key]))
        out[ORIENTATION_KEY] = orientation
        out[SPACING_KEY] = orientation.permute(out[SPACING_KEY])
        return out


class CropToMaskd(MapTransform):
    """Crop the arrays under ``keys`` to the bounding box of ``data[mask_key]`` plus a margin.

    Records the box (a tuple of slices) under ``"crop_box"`` and the cropped shape under
    ``"crop_shape"``.  An empty mask, or ``mask_key=None``, keeps the whole array (and still
    records the box), so that a missing lung mask degrades to whole-volume processing instead of
    failing.

    Parameters
    ----------
    keys : sequence of str
        Arrays to crop (the image and every mask on the same grid).
    mask_key : str or None
        The mask whose bounding box is kept; it may but need not be among ``keys``.
    margin_mm : float
        Margin added on every side, in mm (converted with ``data["spacing"]``).
    """

    def __init__(self, keys: Sequence[str], mask_key: str | None, margin_mm: float) -> None:
        super().__init__(keys)
        if margin_mm < 0:
            raise ValueError(f"margin_mm must not be negative, got {margin_mm}")
        self.mask_key = mask_key
        self.margin_mm = margin_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Cropped copy of ``data``."""
        out = dict(data)
        shape = np.asarray(out[next(iter(self.key_iterator(out)))]).shape
        box = [slice(0, size) for size in shape]
        mask = None if self.mask_key is None else np.asarray(out[self.mask_key], dtype=bool)
        if mask is not None and mask.any():
            for axis, size in enumerate(mask.shape):
                hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
                pad = int(np.ceil(self.margin_mm / float(out[SPACING_KEY][axis])))
                box[axis] = slice(max(0, int(hit[0]) - pad), min(size, int(hit[-1]) + 1 + pad))
        crop = tuple(box)
        for key in self.key_iterator(out):
            out[key] = np.ascontiguousarray(np.asarray(out[key])[crop])
        out[CROP_KEY] = crop
        out[CROP_SHAPE_KEY] = tuple(s.stop - s.start for s in crop)
        return out


def _resample(array: np.ndarray, shape: tuple[int, ...], nearest: bool) -> np.ndarray:
    """Resample a ``[z, y, x]`` array to ``shape`` with voxel edges aligned (align_corners=False)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if nearest:
        result = F.interpolate(tensor, size=shape, mode="nearest-exact")
    else:
        result = F.interpolate(tensor, size=shape, mode="trilinear", align_corners=False)
    out: np.ndarray = result[0, 0].numpy()
    return out.astype(array.dtype, copy=False) if nearest else out


class Resampled(MapTransform):
    """Resample ``[z, y, x]`` arrays to a target spacing or to a fixed shape.

    Exactly one of ``spacing`` and ``shape`` is given.  With a spacing, the output has
    ``round(n * s / target)`` voxels per axis and the recorded ``data["spacing"]`` is the exact
    spacing that results (the extent is preserved).  Voxel edges stay aligned, so
    :func:`to_ct_grid` inverts the mapping exactly.

    Parameters
    ----------
    keys : sequence of str
        Arrays to resample.
    spacing : tuple of float, optional
        Target spacing (z, y, x) in mm, in canonical order.
    shape : tuple of int, optional
        Target shape (z, y, x).
    nearest_keys : sequence of str
        Keys that are label maps (nearest-neighbour); all others are interpolated linearly.
    """

    def __init__(
        self,
        keys: Sequence[str],
        spacing: tuple[float, float, float] | None = None,
        shape: tuple[int, int, int] | None = None,
        nearest_keys: Sequence[str] = (),
    ) -> None:
        super().__init__(keys)
        if (spacing is None) == (shape is None):
            raise ValueError("give exactly one of spacing and shape")
        if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
            raise ValueError(f"spacing must be three positive values, got {spacing}")
        if shape is not None and (len(shape) != 3 or min(shape) < 1):
            raise ValueError(f"shape must be three positive sizes, got {shape}")
        self.spacing = spacing
        self.shape = shape
        self.nearest_keys = frozenset(nearest_keys)

    def target_shape(self, shape: Sequence[int], spacing: Sequence[float]) -> tuple[int, int, int]:
        """Output shape for an input of ``shape`` at ``spacing``."""
        if self.shape is not None:
            return self.shape
        assert self.spacing is not None
        sizes = [max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, self.spacing, strict=True)]
        return (sizes[0], sizes[1], sizes[2])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Resampled copy of ``data``."""
        out = dict(data)
        first = next(iter(self.key_iterator(out)))
        before = np.asarray(out[first]).shape
        after = self.target_shape(before, out[SPACING_KEY])
        for key in self.key_iterator(out):
            out[key] = _resample(np.asarray(out[key]), after, nearest=key in self.nearest_keys)
        spacing = out[SPACING_KEY]
        out[SPACING_KEY] = tuple(float(n * s / m) for n, s, m in zip(before, spacing, after, strict=True))
        return out


def build_preprocessing(
    *,
    window: IntensityWindow,
    crop_mask_key: str | None,
    crop_margin_mm: float,
    spacing: tuple[float, float, float] | None = None,
    shape: tuple[int, int, int] | None = None,
    mask_keys: Sequence[str] = (),
    label_keys: Sequence[str] = (),
    channels: int = 1,
) -> Compose:
    """The preprocessing chain of one network, as a ``Compose`` of dictionary transforms.

    Parameters
    ----------
    window : IntensityWindow
        HU clip and scaling of the network (per paper).
    crop_mask_key : str or None
        Crop to this mask's bounding box (plus ``crop_margin_mm``); ``None`` keeps the volume.
    crop_margin_mm : float
        Margin around the mask's bounding box.
    spacing, shape
        Exactly one: the network's voxel spacing (z, y, x mm) or its fixed input shape.
    mask_keys : sequence of str
        Masks that are reoriented and cropped but stay at CT resolution (for post-processing).
    label_keys : sequence of str
        Label maps that follow the image onto the network grid (nearest-neighbour; training).
    channels : int
        Input channels; the grey image is repeated (S4 uses 3, Fig. 1).

    Returns
    -------
    monai.transforms.Compose
        Maps ``{"image", "spacing", "direction", masks...}`` to a dict whose ``"image"`` is a
        ``[channels, z, y, x]`` float32 tensor, with the records :func:`to_ct_grid` needs.
    """
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    arrays = ["image", *mask_keys, *label_keys]
    steps: list[Any] = [
        ToCanonicald(arrays),
        CropToMaskd(arrays, crop_mask_key, crop_margin_mm),
        Resampled(["image", *label_keys], spacing=spacing, shape=shape, nearest_keys=label_keys),
        ScaleIntensityRanged(
            "image", window.lower, window.upper, window.out_lower, window.out_upper, clip=True, dtype=np.float32
        ),
        EnsureChannelFirstd("image", channel_dim="no_channel"),
    ]
    if channels > 1:
        steps.append(RepeatChanneld("image", channels))
    steps.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(steps)


def to_ct_grid(
    canonical_crop: np.ndarray, data: Mapping[Hashable, Any], ct_shape: Sequence[int], fill: int | bool = 0
) -> np.ndarray:
    """Place an array on the canonical, cropped CT-resolution grid back onto the CT's grid.

    Parameters
    ----------
    canonical_crop : numpy.ndarray
        Array of shape ``data["crop_shape"]`` (canonical orientation, CT resolution).
    data : mapping
        The output of the preprocessing chain (its orientation and crop records).
    ct_shape : sequence of int
        The CT's ``[z, y, x]`` shape.
    fill : int or bool
        Value outside the crop box.

    Returns
    -------
    numpy.ndarray
        Array of ``ct_shape`` with the dtype of ``canonical_crop``.
    """
    orientation: Orientation = data[ORIENTATION_KEY]
    box: tuple[slice, ...] = data[CROP_KEY]
    if tuple(canonical_crop.shape) != tuple(data[CROP_SHAPE_KEY]):
        raise ValueError(f"array shape {canonical_crop.shape} differs from the crop {data[CROP_SHAPE_KEY]}")
    canonical_shape = tuple(int(ct_shape[a]) for a in orientation.order)
    full = np.full(canonical_shape, fill, dtype=canonical_crop.dtype)
    full[box] = canonical_crop
    return orientation.invert(full)


def crop_spacing(data: Mapping[Hashable, Any], ct_spacing: Sequence[float]) -> tuple[float, float, float]:
    """Canonical-order spacing of the CT-resolution crop (for distances in post-processing)."""
    orientation: Orientation = data[ORIENTATION_KEY]
    return orientation.permute(ct_spacing)
