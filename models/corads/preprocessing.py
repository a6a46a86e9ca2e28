"""CO-RADS network input exactly as thesis section 3.3.4, as a Compose of dictionary transforms.

"The CT scans were clipped between -1100 and 300 Hounsfield units, normalized between 0 and 1,
and resampled to a voxel spacing of 1.5 mm^3 using linear interpolation. [...] any slices with
a distance of 10 mm or more to the lung mask were discarded and the remaining slices were
cropped to 240 x 240 pixels around the center of the mask. [...] we uniformly sampled 128
axial slices along the z-axis" (T§3.3.4; identical in seed 001 §4.5).  The lesion map goes into
the second channel and zeros into the third; without a lesion map the CT fills all three
(T§3.3.3, "Lesion map as prior information").

Choices the text leaves open, made here and recorded in :class:`PreprocessingRecord`:

* **Orientation.**  Arrays are first permuted and flipped to the nearest canonical axial grid,
  ``[z, y, x]`` = (inferior to superior, anterior to posterior, patient right to left), i.e.
  the identity direction in DICOM LPS; a residual obliquity is kept in the geometry, not
  resampled away.  Slices are then "axial" whatever the acquisition orientation.
* **Resampling grid.**  The 1.5 mm grid starts at the centre of the first voxel and covers the
  original extent; linear interpolation is separable along the three axes (exactly trilinear).
  The lung mask is interpolated the same way and thresholded at 0.5; a lesion map is
  interpolated linearly and not thresholded ("resampled the same way").
* **Distance to the mask** is along z: a slice is kept when some mask slice lies less than
  10 mm away (so slices inside the mask's extent always stay).
* **Centre of the mask** is the centre of its bounding box in the axial plane, so that the
  crop centres both lungs even when one is much smaller; crops that leave the image are padded
  with 0 (air at -1100 HU after scaling).
* **Uniform sampling** takes the kept slices at indices ``round(linspace(0, n - 1, 128))``
  (half up): every kept slice when there are exactly 128, slices repeated when fewer.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import torch
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform

from models.findings import Geometry, Volume

__all__ = [
    "CropAroundMaskd",
    "DropSlicesFarFromMaskd",
    "PreprocessedInput",
    "PreprocessingConfig",
    "PreprocessingRecord",
    "ReorientToAxiald",
    "ResampleToSpacingd",
    "SampleSlicesd",
    "StackChannelsd",
    "WindowIntensityd",
    "build_transforms",
    "preprocess",
]

IMAGE, LUNG, LESION, GEOMETRY, RECORD, INPUT = "image", "lung", "lesion", "geometry", "record", "input"
_ARRAYS = (IMAGE, LUNG, LESION)


@dataclass(frozen=True)
class PreprocessingConfig:
    """Parameters of T§3.3.4; the defaults are the thesis' values.

    Attributes
    ----------
    hu_window : tuple of float
        Clipping window in HU, mapped linearly to [0, 1] (-1100, 300).
    spacing_mm : float
        Isotropic voxel size after resampling (1.5 mm).
    slice_margin_mm : float
        Slices this far or farther from the lung mask are dropped (10 mm).
    crop_size : tuple of int
        Axial crop ``(rows, columns)`` around the mask centre (240 x 240).
    slices : int
        Axial slices sampled uniformly from the kept range (128).
    """

    hu_window: tuple[float, float] = (-1100.0, 300.0)
    spacing_mm: float = 1.5
    slice_margin_mm: float = 10.0
    crop_size: tuple[int, int] = (240, 240)
    slices: int = 128

    def __post_init__(self) -> None:
        low, high = self.hu_window
        if not low < high:
            raise ValueError(f"hu_window must be increasing, got {self.hu_window}")
        if self.spacing_mm <= 0 or self.slice_margin_mm <= 0:
            raise ValueError(f"spacing and margin must be positive, got {self.spacing_mm}, {self.slice_margin_mm}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1 or self.slices < 1:
            raise ValueError(f"crop_size needs two positive sizes and slices >= 1, got {self.crop_size}, {self.slices}")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one network input: 3 channels, slices, rows, columns."""
        return (3, self.slices, self.crop_size[0], self.crop_size[1])

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for model cards."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingConfig:
        """Inverse of :meth:`as_dict`."""
        return cls(
            hu_window=(float(data["hu_window"][0]), float(data["hu_window"][1])),
            spacing_mm=float(data["spacing_mm"]),
            slice_margin_mm=float(data["slice_margin_mm"]),
            crop_size=(int(data["crop_size"][0]), int(data["crop_size"][1])),
            slices=int(data["slices"]),
        )


@dataclass(frozen=True)
class PreprocessingRecord:
    """What the preprocessing did to one series, in patient coordinates where that helps.

    Attributes
    ----------
    axes : tuple of int
        Source array axis that became each canonical ``[z, y, x]`` axis.
    flipped : tuple of bool
        Whether each canonical axis was reversed.
    obliquity_deg : float
        Largest angle between a canonical axis and its patient axis (0 for axial acquisitions).
    resampled_shape : tuple of int
        Shape of the isotropic grid.
    spacing_mm : float
        Its voxel size.
    kept_slices : tuple of int
        Indices (isotropic grid) of the slices closer than the margin to the lung mask.
    sampled_slices : tuple of int
        Indices (isotropic grid) of the slices that form the network input, in order.
    mask_centre_mm : tuple of float
        Centre of the lung mask's bounding box, DICOM LPS (x, y, z) in mm.
    crop_centre_mm : tuple of float
        Centre of the network input block, LPS (x, y, z) in mm.
    crop_start : tuple of int
        First row and column of the crop on the isotropic grid (negative when padded).
    padded : bool
        Whether the crop reached outside the image and was padded with air.
    lesion_map_used : bool
        True when channel 2 holds a lesion map, False when it repeats the CT.
    """

    axes: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]
    obliquity_deg: float
    resampled_shape: tuple[int, int, int]
    spacing_mm: float
    kept_slices: tuple[int, ...]
    sampled_slices: tuple[int, ...]
    mask_centre_mm: tuple[float, float, float]
    crop_centre_mm: tuple[float, float, float]
    crop_start: tuple[int, int]
    padded: bool
    lesion_map_used: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PreprocessedInput:
    """A network input ``(3, slices, rows, columns)`` float32 tensor and how it was made."""

    tensor: torch.Tensor
    record: PreprocessingRecord


class ReorientToAxiald(MapTransform):
    """Permute and flip arrays to the nearest canonical axial grid (identity LPS direction).

    The geometry under ``geometry_key`` is updated; the chosen axes, flips and remaining
    obliquity go into the record.  A direction matrix with no unambiguous nearest axis per
    array axis (45-degree obliquity) is refused.
    """

    def __init__(self, keys: Sequence[str], geometry_key: str = GEOMETRY) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.geometry_key = geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Reoriented arrays and geometry."""
        d = dict(data)
        geometry: Geometry = d[self.geometry_key]
        direction = np.asarray(geometry.direction, dtype=float)
        # Array axis k (0 = z, 1 = y, 2 = x) points along direction column 2 - k.
        columns = [direction[:, 2 - k] for k in range(3)]
        patient_axis = [int(np.argmax(np.abs(c))) for c in columns]
        if sorted(patient_axis) != [0, 1, 2]:
            raise ValueError(f"direction {direction.round(3).tolist()} has no unambiguous axial orientation")
        # Canonical axis j (z, y, x) is patient axis 2 - j (S, P, L).
        axes = tuple(patient_axis.index(2 - j) for j in range(3))
        flipped = tuple(bool(columns[axes[j]][2 - j] < 0) for j in range(3))
        for key in self.key_iterator(d):
            array = np.transpose(d[key], axes)
            flip_axes = tuple(j for j in range(3) if flipped[j])
            d[key] = np.ascontiguousarray(np.flip(array, flip_axes) if flip_axes else array)
        shape = geometry.shape
        first = tuple(float(shape[k] - 1) if flipped[axes.index(k)] else 0.0 for k in range(3))
        new_columns = [(-1.0 if flipped[j] else 1.0) * columns[axes[j]] for j in range(3)]
        new_direction = np.column_stack([new_columns[2], new_columns[1], new_columns[0]])
        d[self.geometry_key] = Geometry(
            origin=geometry.index_to_patient((first[0], first[1], first[2])),
            spacing=(geometry.spacing[axes[0]], geometry.spacing[axes[1]], geometry.spacing[axes[2]]),
            direction=tuple((float(r[0]), float(r[1]), float(r[2])) for r in new_direction),
            shape=(shape[axes[0]], shape[axes[1]], shape[axes[2]]),
        )
        obliquity = math.degrees(math.acos(min(1.0, float(np.min(np.abs(np.diag(new_direction)))))))
        d[RECORD] = {**d.get(RECORD, {}), "axes": axes, "flipped": flipped, "obliquity_deg": obliquity}
        return d


class WindowIntensityd(MapTransform):
    """Clip to a HU window and scale it linearly to [0, 1] (T§3.3.4: [-1100, 300])."""

    def __init__(self, keys: Sequence[str], window: tuple[float, float]) -> None:
        super().__init__(keys)
        self.low, self.high = float(window[0]), float(window[1])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays as float32 in [0, 1]."""
        d = dict(data)
        for key in self.key_iterator(d):
            clipped = np.clip(np.asarray(d[key], dtype=np.float32), self.low, self.high)
            d[key] = (clipped - np.float32(self.low)) / np.float32(self.high - self.low)
        return d


def _resample_axis(array: np.ndarray, axis: int, spacing: float, new_spacing: float) -> np.ndarray:
    """Linear interpolation along one axis onto a grid that starts at the first sample."""
    n = array.shape[axis]
    count = int(math.floor((n - 1) * spacing / new_spacing + 1e-6)) + 1
    position = np.arange(count) * (new_spacing / spacing)
    low = np.clip(np.floor(position).astype(np.intp), 0, n - 1)
    high = np.minimum(low + 1, n - 1)
    shape = [1] * array.ndim
    shape[axis] = count
    fraction = (position - low).astype(np.float32).reshape(shape)
    below = np.take(array, low, axis=axis)
    above = np.take(array, high, axis=axis)
    result: np.ndarray = below + (above - below) * fraction
    return result


class ResampleToSpacingd(MapTransform):
    """Trilinear resampling to isotropic voxels (T§3.3.4: 1.5 mm); masks thresholded at 0.5."""

    def __init__(
        self, keys: Sequence[str], spacing_mm: float, mask_keys: Sequence[str] = (LUNG,), geometry_key: str = GEOMETRY
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.spacing_mm = float(spacing_mm)
        self.mask_keys = tuple(mask_keys)
        self.geometry_key = geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays on the isotropic grid; geometry and record updated."""
        d = dict(data)
        geometry: Geometry = d[self.geometry_key]
        # Finest axis first: it shrinks most, so the later passes touch fewer voxels.
        order = sorted(range(3), key=lambda axis: geometry.spacing[axis])
        for key in self.key_iterator(d):
            array = np.asarray(d[key], dtype=np.float32)
            for axis in order:
                array = _resample_axis(array, axis, geometry.spacing[axis], self.spacing_mm)
            d[key] = array >= 0.5 if key in self.mask_keys else array
        shape = np.asarray(d[self.first_key(d)]).shape
        d[self.geometry_key] = Geometry(
            origin=geometry.origin,
            spacing=(self.spacing_mm,) * 3,
            direction=geometry.direction,
            shape=(shape[0], shape[1], shape[2]),
        )
        d[RECORD] = {**d.get(RECORD, {}), "resampled_shape": tuple(shape), "spacing_mm": self.spacing_mm}
        return d


def _mask_slices(mask: np.ndarray) -> np.ndarray:
    """Indices of the slices that contain mask voxels; raises for an empty mask."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    if slices.size == 0:
        raise ValueError("the lung mask is empty: there is nothing to centre the CO-RADS input on")
    return slices


class DropSlicesFarFromMaskd(MapTransform):
    """Keep only slices less than ``margin_mm`` along z from a slice of the mask (T§3.3.4: 10 mm)."""

    def __init__(
        self, keys: Sequence[str], margin_mm: float, mask_key: str = LUNG, geometry_key: str = GEOMETRY
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.margin_mm = float(margin_mm)
        self.mask_key = mask_key
        self.geometry_key = geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays restricted to the kept slices (indices recorded on the isotropic grid)."""
        d = dict(data)
        spacing_z = d[self.geometry_key].spacing[0]
        mask_slices = _mask_slices(d[self.mask_key])
        all_slices = np.arange(d[self.mask_key].shape[0])
        distance = np.abs(all_slices[:, None] - mask_slices[None, :]).min(axis=1) * spacing_z
        kept = all_slices[distance < self.margin_mm]
        for key in self.key_iterator(d):
            d[key] = d[key][kept]
        d[RECORD] = {**d.get(RECORD, {}), "kept_slices": tuple(int(k) for k in kept)}
        return d


def _crop_axis(array: np.ndarray, axis: int, start: int, size: int) -> np.ndarray:
    """``size`` samples from ``start`` along ``axis``, zero-padded outside the array."""
    n = array.shape[axis]
    lo, hi = max(start, 0), min(start + size, n)
    index = [slice(None)] * array.ndim
    index[axis] = slice(lo, hi)
    part = array[tuple(index)]
    if lo - start == 0 and start + size - hi == 0:
        return part
    pad = [(0, 0)] * array.ndim
    pad[axis] = (lo - start, start + size - hi)
    return np.pad(part, pad)


class CropAroundMaskd(MapTransform):
    """Crop rows and columns to ``size`` around the mask's bounding-box centre, padding with 0."""

    def __init__(
        self, keys: Sequence[str], size: tuple[int, int], mask_key: str = LUNG, geometry_key: str = GEOMETRY
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.size = size
        self.mask_key = mask_key
        self.geometry_key = geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Cropped arrays; mask and crop centres recorded in LPS mm."""
        d = dict(data)
        mask: np.ndarray = d[self.mask_key]
        record = d.get(RECORD, {})
        kept = record.get("kept_slices", tuple(range(mask.shape[0])))
        geometry: Geometry = d[self.geometry_key]
        rows = np.flatnonzero(mask.any(axis=(0, 2)))
        columns = np.flatnonzero(mask.any(axis=(0, 1)))
        mask_slices = np.asarray(kept)[_mask_slices(mask)]
        centre = [
            (mask_slices[0] + mask_slices[-1]) / 2.0,
            (rows[0] + rows[-1]) / 2.0,
            (columns[0] + columns[-1]) / 2.0,
        ]
        starts = [math.floor(centre[axis] - (self.size[axis - 1] - 1) / 2.0 + 0.5) for axis in (1, 2)]
        padded = False
        for key in self.key_iterator(d):
            array = d[key]
            for axis, start in zip((1, 2), starts, strict=True):
                size = self.size[axis - 1]
                padded |= start < 0 or start + size > array.shape[axis]
                array = _crop_axis(array, axis, start, size)
            d[key] = array
        block_centre = (
            (kept[0] + kept[-1]) / 2.0,
            starts[0] + (self.size[0] - 1) / 2.0,
            starts[1] + (self.size[1] - 1) / 2.0,
        )
        d[RECORD] = {
            **record,
            "mask_centre_mm": geometry.index_to_patient((centre[0], centre[1], centre[2])),
            "crop_centre_mm": geometry.index_to_patient(block_centre),
            "crop_start": (starts[0], starts[1]),
            "padded": padded,
        }
        return d


class SampleSlicesd(MapTransform):
    """Take ``count`` slices at uniformly spaced indices (T§3.3.4: 128 axial slices)."""

    def __init__(self, keys: Sequence[str], count: int) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.count = int(count)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays of ``count`` slices; their isotropic-grid indices recorded."""
        d = dict(data)
        record = d.get(RECORD, {})
        n = np.asarray(d[self.first_key(d)]).shape[0]
        chosen = np.floor(np.linspace(0.0, n - 1.0, self.count) + 0.5).astype(np.intp)
        for key in self.key_iterator(d):
            d[key] = d[key][chosen]
        kept = record.get("kept_slices", tuple(range(n)))
        d[RECORD] = {**record, "sampled_slices": tuple(int(kept[i]) for i in chosen)}
        return d


class StackChannelsd(MapTransform):
    """The 3-channel float32 tensor: CT, lesion map, zeros, or the CT three times (T§3.3.3)."""

    def __init__(self, image_key: str = IMAGE, lesion_key: str = LESION, output_key: str = INPUT) -> None:
        super().__init__([image_key, lesion_key], allow_missing_keys=True)
        self.image_key, self.lesion_key, self.output_key = image_key, lesion_key, output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Adds ``output_key`` (a torch tensor) and records whether a lesion map was used."""
        d = dict(data)
        image = np.asarray(d[self.image_key], dtype=np.float32)
        lesion = d.get(self.lesion_key)
        if lesion is None:
            channels = [image, image, image]
        else:
            channels = [image, np.asarray(lesion, dtype=np.float32), np.zeros_like(image)]
        d[self.output_key] = torch.from_numpy(np.ascontiguousarray(np.stack(channels)))
        d[RECORD] = {**d.get(RECORD, {}), "lesion_map_used": lesion is not None}
        return d


def build_transforms(config: PreprocessingConfig) -> Compose:
    """The chain of T§3.3.4 on a dict with ``image`` (HU), ``lung`` (bool), ``geometry`` and
    optionally ``lesion``; it adds ``input`` (the tensor) and ``record``."""
    return Compose(
        [
            ReorientToAxiald(_ARRAYS),
            WindowIntensityd([IMAGE], config.hu_window),
            ResampleToSpacingd(_ARRAYS, config.spacing_mm),
            DropSlicesFarFromMaskd(_ARRAYS, config.slice_margin_mm),
            CropAroundMaskd(_ARRAYS, config.crop_size),
            SampleSlicesd(_ARRAYS, config.slices),
            StackChannelsd(),
        ]
    )


def preprocess(
    volume: Volume,
    lung_mask: np.ndarray,
    lesion_map: np.ndarray | None = None,
    config: PreprocessingConfig | None = None,
) -> PreprocessedInput:
    """The CO-RADS network input of one series (T§3.3.3-3.3.4).

    Parameters
    ----------
    volume : Volume
        The CT in HU on its own grid, with geometry (any orientation).
    lung_mask : numpy.ndarray
        Boolean lung mask on the volume's grid, used only to choose slices and centre the crop.
    lesion_map : numpy.ndarray, optional
        Lesion segmentation or probability map on the volume's grid (values in [0, 1]); it
        becomes channel 2, with zeros in channel 3.  Without it the CT fills all three.
    config : PreprocessingConfig, optional
        The thesis' parameters by default.

    Returns
    -------
    PreprocessedInput
        ``tensor`` of shape ``config.input_shape`` (float32) and the record of what was done.

    Raises
    ------
    ValueError
        If a mask does not match the volume's shape, the lung mask is not boolean or is empty,
        or the orientation is ambiguous.
    """
    config = config or PreprocessingConfig()
    if lung_mask.shape != volume.hu.shape or lung_mask.dtype != np.bool_:
        raise ValueError(f"lung mask must be boolean {volume.hu.shape}, got {lung_mask.dtype} {lung_mask.shape}")
    if lesion_map is not None and lesion_map.shape != volume.hu.shape:
        raise ValueError(f"lesion map shape {lesion_map.shape} differs from the volume's {volume.hu.shape}")
    data: dict[Hashable, Any] = {IMAGE: volume.hu, LUNG: lung_mask, GEOMETRY: volume.geometry}
    if lesion_map is not None:
        data[LESION] = lesion_map
    try:
        out = cast(dict[Hashable, Any], build_transforms(config)(data))
    except RuntimeError as error:  # MONAI's Compose wraps a transform's exception; unwrap ours
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        raise
    return PreprocessedInput(tensor=out[INPUT], record=PreprocessingRecord(**out[RECORD]))
