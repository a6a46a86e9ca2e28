"""I3Dr network inputs exactly as thesis section 2.4.4, as a Compose of dictionary transforms.

"Prior to presenting the CT scans to a model, they were clipped between -1100 and 300 HU and the
voxel values were scaled to the range [0,1].  After this, the CT scans were isotropically
resampled to 1.6 mm^3 with linear interpolation.  A lobe segmentation was used to mask out all
voxels outside of the region of interest.  This region was either a lung mask or a mask of a
single lobe, depending on the model being trained.  The resulting volumes were centered around
the region of interest and cropped to 240x240x240 voxels" (T§2.4.4).

The orientation, windowing and resampling transforms are those of the CO-RADS preprocessing
(:mod:`models.corads.preprocessing`: canonical axial LPS grid, separable trilinear resampling
on a grid that starts at the first voxel centre, masks resampled linearly and thresholded at
0.5).  :class:`CropRegionsd` then makes one input per region: the image is multiplied by the
region's mask (outside the region 0, the value of -1100 HU after scaling) and cropped to the
block centred on the centre of the region's bounding box, padded with 0 where the block leaves
the image.  All regions of a scan (the lungs for model A, the five lobes for model B) share the
oriented, windowed and resampled image, which is computed once.

The inputs have one channel; the CT is copied into three channels (:func:`replicate_channels`)
only after augmentation, as T§2.4.5 does ("the CT scans were copied along the channel dimension
after applying data augmentation").
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
from torch import Tensor

from models.corads.preprocessing import ReorientToAxiald, ResampleToSpacingd, WindowIntensityd
from models.findings import Geometry, Volume

__all__ = [
    "I3drPreprocessingConfig",
    "CropRegionsd",
    "RegionInput",
    "RegionRecord",
    "build_transforms",
    "preprocess_regions",
    "replicate_channels",
    "stack_regions",
]

IMAGE, GEOMETRY, RECORD = "image", "geometry", "record"
_REGION_PREFIX, _INPUT_PREFIX, _CROPPED_PREFIX = "region:", "input:", "cropped:"


@dataclass(frozen=True)
class I3drPreprocessingConfig:
    """Parameters of T§2.4.4; the defaults are the thesis' values.

    Attributes
    ----------
    hu_window : tuple of float
        Clipping window in HU, mapped linearly to [0, 1] ((-1100, 300)).
    spacing_mm : float
        Isotropic voxel size after linear resampling (1.6 mm).
    size : tuple of int
        The ``(z, y, x)`` block cropped around each region ((240, 240, 240)).
    """

    hu_window: tuple[float, float] = (-1100.0, 300.0)
    spacing_mm: float = 1.6
    size: tuple[int, int, int] = (240, 240, 240)

    def __post_init__(self) -> None:
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError(f"hu_window must be increasing, got {self.hu_window}")
        if self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if len(self.size) != 3 or min(self.size) < 1:
            raise ValueError(f"size needs three positive sizes, got {self.size}")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one network input after channel replication: 3 channels and the block."""
        return (3, *self.size)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for model cards."""
        return {"hu_window": list(self.hu_window), "spacing_mm": self.spacing_mm, "size": list(self.size)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> I3drPreprocessingConfig:
        """Inverse of :meth:`as_dict`."""
        low, high = (float(v) for v in data["hu_window"])
        z, y, x = (int(v) for v in data["size"])
        return cls(hu_window=(low, high), spacing_mm=float(data["spacing_mm"]), size=(z, y, x))


@dataclass(frozen=True)
class RegionRecord:
    """What the preprocessing did for one region, in patient coordinates where that helps.

    Attributes
    ----------
    region : str
        Region name (``lungs`` or a lobe of :data:`models.findings.LOBE_NAMES`).
    axes, flipped, obliquity_deg
        Reorientation to the canonical axial grid (as in the CO-RADS record).
    resampled_shape : tuple of int
        Shape of the isotropic grid.
    spacing_mm : float
        Its voxel size.
    region_voxels : int
        Voxels of the region on the isotropic grid.
    region_centre_mm : tuple of float
        Centre of the region's bounding box, DICOM LPS (x, y, z) in mm.
    crop_start : tuple of int
        First ``(z, y, x)`` index of the block on the isotropic grid (negative where padded).
    padded : bool
        Whether the block reached outside the image (filled with 0).
    voxels_outside_block : int
        Region voxels that did not fit in the block (0 unless the region is larger than it).
    """

    region: str
    axes: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]
    obliquity_deg: float
    resampled_shape: tuple[int, int, int]
    spacing_mm: float
    region_voxels: int
    region_centre_mm: tuple[float, float, float]
    crop_start: tuple[int, int, int]
    padded: bool
    voxels_outside_block: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RegionInput:
    """One region's network input before channel replication.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``config.size`` block, values in [0, 1], 0 outside the region.
    mask : numpy.ndarray
        The region's boolean mask on the same block.
    record : RegionRecord
        What was done.
    """

    image: np.ndarray
    mask: np.ndarray
    record: RegionRecord


def _crop(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, bool]:
    """The block of ``size`` at ``start`` (zero-padded outside the array) and whether it was padded."""
    index, pad = [], []
    for n, s, k in zip(array.shape, start, size, strict=True):
        lo, hi = max(s, 0), min(s + k, n)
        index.append(slice(lo, max(lo, hi)))
        pad.append((lo - s, s + k - max(lo, hi)))
    part = array[tuple(index)]
    padded = any(before or after for before, after in pad)
    return (np.pad(part, pad) if padded else part), padded


class CropRegionsd(MapTransform):
    """Per region: zero the image outside the region, crop the block centred on it (T§2.4.4).

    For every key ``k`` in ``region_keys`` (boolean masks on the image's grid) it adds
    ``"input:k"`` (float32 block) and ``"cropped:k"`` (the mask on the block), and records the
    region's centre and crop under ``record["regions"][k]``.  The centre is the centre of the
    region's bounding box, so a block of even size has the region centre half a voxel before its
    middle.  Region masks are removed from the dictionary afterwards (they are large and no
    longer needed).

    Raises
    ------
    ValueError
        If a region is empty (there is nothing to centre on).
    """

    def __init__(
        self,
        region_keys: Sequence[str],
        size: tuple[int, int, int],
        image_key: str = IMAGE,
        geometry_key: str = GEOMETRY,
    ) -> None:
        super().__init__(region_keys)
        self.size = size
        self.image_key = image_key
        self.geometry_key = geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Adds the per-region blocks and records; drops the full-size region masks."""
        d = dict(data)
        image: np.ndarray = d[self.image_key]
        geometry: Geometry = d[self.geometry_key]
        record = dict(d.get(RECORD, {}))
        regions: dict[str, dict[str, Any]] = dict(record.get("regions", {}))
        for key in self.key_iterator(d):
            mask: np.ndarray = d.pop(key)
            name = str(key).removeprefix(_REGION_PREFIX)
            found = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
            if any(f.size == 0 for f in found):
                raise ValueError(f"region {name!r} is empty after resampling: there is nothing to centre on")
            centre = [(f[0] + f[-1]) / 2.0 for f in found]
            start = [math.floor(c - (k - 1) / 2.0 + 0.5) for c, k in zip(centre, self.size, strict=True)]
            cropped_mask, padded = _crop(mask, start, self.size)
            cropped_image, _ = _crop(image, start, self.size)
            d[_INPUT_PREFIX + name] = np.where(cropped_mask, cropped_image, np.float32(0.0)).astype(np.float32)
            d[_CROPPED_PREFIX + name] = np.ascontiguousarray(cropped_mask)
            total = int(np.count_nonzero(mask))
            regions[name] = {
                "region_voxels": total,
                "region_centre_mm": geometry.index_to_patient((centre[0], centre[1], centre[2])),
                "crop_start": (start[0], start[1], start[2]),
                "padded": padded,
                "voxels_outside_block": total - int(np.count_nonzero(cropped_mask)),
            }
        record["regions"] = regions
        d[RECORD] = record
        return d


def build_transforms(config: I3drPreprocessingConfig, regions: Sequence[str]) -> Compose:
    """The chain of T§2.4.4 on a dict with ``image`` (HU), ``geometry`` and one boolean mask per
    region under ``"region:<name>"``; it adds ``"input:<name>"``, ``"cropped:<name>"`` and ``record``."""
    region_keys = [_REGION_PREFIX + name for name in regions]
    return Compose(
        [
            ReorientToAxiald([IMAGE, *region_keys]),
            WindowIntensityd([IMAGE], config.hu_window),
            ResampleToSpacingd([IMAGE, *region_keys], config.spacing_mm, mask_keys=region_keys),
            CropRegionsd(region_keys, config.size),
        ]
    )


def preprocess_regions(
    volume: Volume, regions: Mapping[str, np.ndarray], config: I3drPreprocessingConfig | None = None
) -> dict[str, RegionInput]:
    """One masked, centred network input per region of one series (T§2.4.4).

    Parameters
    ----------
    volume : Volume
        The CT in HU on its own grid, any orientation.
    regions : mapping of str to numpy.ndarray
        Boolean masks on the volume's grid, e.g. ``{"lungs": ...}`` for model A and the five
        lobes for model B.
    config : I3drPreprocessingConfig, optional
        The thesis' parameters by default.

    Returns
    -------
    dict of str to RegionInput
        Per region, the block (0 outside the region), its mask and the record, in the order of
        ``regions``.

    Raises
    ------
    ValueError
        If the volume has non-finite values, a mask is not boolean or not on the volume's grid,
        a region is empty, or the orientation is ambiguous.
    """
    config = config or I3drPreprocessingConfig()
    if not regions:
        raise ValueError("at least one region is needed")
    if not np.isfinite(volume.hu).all():
        raise ValueError("the volume holds non-finite HU values")
    for name, mask in regions.items():
        if mask.shape != volume.hu.shape or mask.dtype != np.bool_:
            raise ValueError(f"mask {name!r} must be boolean {volume.hu.shape}, got {mask.dtype} {mask.shape}")
        if not mask.any():
            raise ValueError(f"region {name!r} is empty: there is nothing to centre on")
    data: dict[Hashable, Any] = {IMAGE: volume.hu, GEOMETRY: volume.geometry}
    data.update({_REGION_PREFIX + name: mask for name, mask in regions.items()})
    try:
        out = cast(dict[Hashable, Any], build_transforms(config, list(regions))(data))
    except RuntimeError as error:  # MONAI's Compose wraps a transform's exception; unwrap ours
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        raise
    record: dict[str, Any] = out[RECORD]
    inputs = {}
    for name in regions:
        region: dict[str, Any] = record["regions"][name]
        inputs[name] = RegionInput(
            image=out[_INPUT_PREFIX + name],
            mask=out[_CROPPED_PREFIX + name],
            record=RegionRecord(
                region=name,
                axes=tuple(record["axes"]),
                flipped=tuple(record["flipped"]),
                obliquity_deg=float(record["obliquity_deg"]),
                resampled_shape=tuple(record["resampled_shape"]),
                spacing_mm=float(record["spacing_mm"]),
                region_voxels=int(region["region_voxels"]),
                region_centre_mm=tuple(region["region_centre_mm"]),
                crop_start=tuple(region["crop_start"]),
                padded=bool(region["padded"]),
                voxels_outside_block=int(region["voxels_outside_block"]),
            ),
        )
    return inputs


def stack_regions(inputs: Sequence[RegionInput] | Sequence[np.ndarray]) -> Tensor:
    """Blocks of one scan as a float32 tensor ``(R, 1, D, H, W)`` (one channel, before replication)."""
    arrays = [item.image if isinstance(item, RegionInput) else item for item in inputs]
    return torch.from_numpy(np.stack([np.asarray(a, dtype=np.float32) for a in arrays]))[:, None]


def replicate_channels(x: Tensor) -> Tensor:
    """Copy a one-channel input ``(..., 1, D, H, W)`` into the three channels I3D expects (T§2.4.5).

    Raises
    ------
    ValueError
        If the channel axis (fourth from last) does not have size 1.
    """
    if x.ndim < 4 or x.shape[-4] != 1:
        raise ValueError(f"expected (..., 1, D, H, W), got {tuple(x.shape)}")
    return x.expand(*x.shape[:-4], 3, *x.shape[-3:])
