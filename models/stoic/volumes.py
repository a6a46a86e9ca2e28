"""Shared pieces of the 3D STOIC2021 members: preprocessing transforms, patient inputs, weight files.

The five volume members (baseline, Code 1055, Flying Bird, uaux2, deakin_team; thesis chapter 4,
Table 4.1) each run their authors' own preprocessing (``../shared/spec/models.md`` section 1).
The steps they have in common are here as MONAI dictionary transforms (house rule 4) that work on
numpy arrays in the authors' order of operations, so that a clip followed by a rescale is exactly
the arithmetic the public code did:

* :class:`SimpleItkResampled` is the ``resample()`` of the baseline and uaux2 repositories
  (BL/BLF ``algorithm/preprocess.py``, UX ``algorithm/preprocess.py``): ``sitk.Resample`` on the
  scan's own grid (origin and direction kept, no reorientation), linear interpolation, output
  size ``round(n * spacing / new_spacing)`` per axis and 0 HU outside the scan;
* :class:`ClipIntensityd`, :class:`ScaleToUnitd`, :class:`ZScored` are the intensity steps;
* :class:`ZoomToShaped` is ``scipy.ndimage.zoom`` to a fixed shape (Code 1055: cubic; Flying Bird:
  linear), with scipy's defaults as the authors called it;
* :class:`PadCentreCropd` is AUCMEDI's ``Padding(mode="constant")`` then ``Crop(mode="center")``.

Arrays stay in the volume's own index order ``[z, y, x]`` (slices sorted along the slice normal,
:mod:`models.findings`), which is the order SimpleITK gives for the STOIC ``.mha`` files the
members were trained on; no member reoriented its input.

Weight files: one safetensors file per member; each network's state dict under the prefix
``{group}.{index}.`` (e.g. ``severe.3.conv1.weight`` for the fourth severity fold) and a JSON
model card in the metadata key ``model_card`` (as :mod:`models.corads.ensemble`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from scipy import ndimage
from torch import Tensor, nn

from models import PIPELINE_VERSION
from models.findings import Geometry
from models.stoic.member import MemberInputs, age_bin
from models.zoo import count_flops, count_parameters

__all__ = [
    "CARD_FORMAT",
    "GEOMETRY",
    "IMAGE",
    "LESIONS",
    "LUNGS",
    "MODEL_CARD_KEY",
    "RECORD",
    "AsChannelTensord",
    "ClipIntensityd",
    "PadCentreCropd",
    "PreparedInput",
    "ScaleToUnitd",
    "SimpleItkResampled",
    "ZScored",
    "ZoomToShaped",
    "SideInputFlops",
    "bounding_box",
    "build_networks",
    "check_inputs",
    "inference_ready",
    "load_member_file",
    "make_card",
    "remove_small_components",
    "resample_like_simpleitk",
    "run_transforms",
    "save_member_file",
    "seeded",
    "sex_note",
    "stoic_age_fraction",
    "summary_row",
]

IMAGE, LUNGS, LESIONS, GEOMETRY, RECORD = "image", "lungs", "lesions", "geometry", "record"
#: safetensors metadata key of the model card (as the CO-RADS ensemble files).
MODEL_CARD_KEY = "model_card"
#: ``format`` of every STOIC volume-member card written by this code.
CARD_FORMAT = "lungcds.stoic-member/1"

_TENSOR_KEY = re.compile(r"^([a-z_]+)\.(\d+)\.(.+)$")
_T = TypeVar("_T")


@dataclass(frozen=True)
class PreparedInput:
    """A member's network input(s) for one series, and what the preprocessing did.

    ``tensors`` are float32 without a batch axis (e.g. ``"image"`` ``(1, 240, 240, 240)``);
    ``record`` holds shapes, spacings, crop positions and intensity facts for tests and reports;
    ``notes`` are sentences about the patient inputs (missing age, unused sex...).
    """

    tensors: Mapping[str, Tensor]
    record: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def check_inputs(inputs: MemberInputs) -> None:
    """Raise ``ValueError`` unless every mask lies on the volume's grid (same shape).

    Members crop and resample masks with the CT, so a mask on another grid would silently
    select the wrong voxels.
    """
    shape = inputs.volume.hu.shape
    masks = {"lungs": inputs.lungs, "lung_left": inputs.lung_left, "lung_right": inputs.lung_right}
    if inputs.lesions is not None:
        masks["lesions"] = inputs.lesions
    for name, mask in masks.items():
        if mask.shape != shape:
            raise ValueError(f"{name} mask shape {mask.shape} differs from the volume's {shape}")


def stoic_age_fraction(age_years: float | None) -> float | None:
    """The STOIC age bin on [0, 1]: 35 -> 0, 45 -> 0.2, ..., 85 -> 1 (None when unknown).

    Flying Bird (FB ``inference/classification/interface_severe.py``, ``age_mapping``) and uaux2
    (UX ``inference/process.py``, ``(age - 35) / 50`` of the binned STOIC age) both use this scale.
    """
    binned = age_bin(age_years)
    return None if binned is None else (binned - 35) / 50.0


def sex_note(member: str, sex: str | None, used: bool) -> str:
    """A sentence saying whether and how the patient's sex entered ``member``."""
    shown = sex if sex else "unknown"
    if not used:
        return f"{member} does not use the patient's sex (given: {shown})"
    return f"{member} used sex {shown}"


def _sitk_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a ``[z, y, x]`` array with the geometry's spacing, origin, direction."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    sz, sy, sx = geometry.spacing
    image.SetSpacing((float(sx), float(sy), float(sz)))  # type: ignore[no-untyped-call]
    image.SetOrigin(tuple(float(v) for v in geometry.origin))  # type: ignore[no-untyped-call]
    image.SetDirection(tuple(float(v) for row in geometry.direction for v in row))  # type: ignore[no-untyped-call]
    return image


def resample_like_simpleitk(
    array: np.ndarray, geometry: Geometry, spacing_zyx: Sequence[float], outside_value: float = 0.0
) -> tuple[np.ndarray, Geometry]:
    """Linear resampling as the STOIC baseline's ``resample()``: same origin and direction, new
    spacing, ``int(round(n * spacing / new_spacing))`` voxels per axis, ``outside_value`` beyond
    the scan (SimpleITK treats points within half a voxel of the edge as inside).

    Returns
    -------
    tuple
        The float32 ``[z, y, x]`` array and its geometry.
    """
    image = _sitk_image(array, geometry)
    new_spacing = (float(spacing_zyx[2]), float(spacing_zyx[1]), float(spacing_zyx[0]))
    size = [int(round(n * s / ns)) for n, s, ns in zip(image.GetSize(), image.GetSpacing(), new_spacing, strict=True)]  # type: ignore[no-untyped-call]
    if min(size) < 1:
        raise ValueError(f"resampling {array.shape} to {tuple(spacing_zyx)} mm leaves an empty axis")
    resampled = sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),  # type: ignore[no-untyped-call]
        new_spacing,
        image.GetDirection(),  # type: ignore[no-untyped-call]
        float(outside_value),
        sitk.sitkFloat32,
    )
    out = sitk.GetArrayFromImage(resampled).astype(np.float32, copy=False)
    new_geometry = Geometry(
        origin=geometry.origin,
        spacing=(float(spacing_zyx[0]), float(spacing_zyx[1]), float(spacing_zyx[2])),
        direction=geometry.direction,
        shape=(out.shape[0], out.shape[1], out.shape[2]),
    )
    return out, new_geometry


def _record(d: dict[Hashable, Any], **facts: Any) -> None:
    d[RECORD] = {**d.get(RECORD, {}), **facts}


class SimpleItkResampled(MapTransform):
    """Resample arrays with :func:`resample_like_simpleitk`; ``mask_keys`` are thresholded at 0.5.

    The geometry under ``geometry`` is replaced by the new grid's; the record gets
    ``resampled_shape`` and ``spacing_mm``.
    """

    def __init__(
        self,
        keys: Sequence[str],
        spacing_zyx: Sequence[float],
        outside_value: float = 0.0,
        mask_keys: Sequence[str] = (LUNGS, LESIONS),
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(spacing_zyx) != 3 or min(spacing_zyx) <= 0:
            raise ValueError(f"spacing needs three positive values, got {tuple(spacing_zyx)}")
        self.spacing_zyx = tuple(float(s) for s in spacing_zyx)
        self.outside_value = float(outside_value)
        self.mask_keys = tuple(mask_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays on the new grid."""
        d = dict(data)
        geometry: Geometry = d[GEOMETRY]
        new_geometry = geometry
        for key in self.key_iterator(d):
            is_mask = key in self.mask_keys
            array, new_geometry = resample_like_simpleitk(
                np.asarray(d[key], dtype=np.float32), geometry, self.spacing_zyx, 0.0 if is_mask else self.outside_value
            )
            d[key] = array >= 0.5 if is_mask else array
        d[GEOMETRY] = new_geometry
        _record(d, resampled_shape=new_geometry.shape, spacing_mm=self.spacing_zyx)
        return d


class ClipIntensityd(MapTransform):
    """``np.clip`` to ``[low, high]`` (float32)."""

    def __init__(self, keys: Sequence[str], low: float, high: float) -> None:
        super().__init__(keys)
        if not low < high:
            raise ValueError(f"clip range must be increasing, got [{low}, {high}]")
        self.low, self.high = np.float32(low), np.float32(high)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Clipped arrays."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = np.clip(np.asarray(d[key], dtype=np.float32), self.low, self.high)
        return d


class ScaleToUnitd(MapTransform):
    """``(x - low) / (high - low)``: the window ``[low, high]`` onto ``[0, 1]`` (no clipping here)."""

    def __init__(self, keys: Sequence[str], low: float, high: float) -> None:
        super().__init__(keys)
        if not low < high:
            raise ValueError(f"window must be increasing, got [{low}, {high}]")
        self.low, self.width = np.float32(low), np.float32(high - low)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Rescaled arrays."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (np.asarray(d[key], dtype=np.float32) - self.low) / self.width
        return d


class ZScored(MapTransform):
    """``(x - mean) / sd`` with fixed, published statistics (not the volume's own)."""

    def __init__(self, keys: Sequence[str], mean: float, sd: float) -> None:
        super().__init__(keys)
        if sd <= 0:
            raise ValueError(f"sd must be positive, got {sd}")
        self.mean, self.sd = np.float32(mean), np.float32(sd)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Standardised arrays."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (np.asarray(d[key], dtype=np.float32) - self.mean) / self.sd
        return d


class ZoomToShaped(MapTransform):
    """``scipy.ndimage.zoom(array, shape / array.shape, order)`` with scipy's defaults.

    This is the resize of Code 1055 (``Zoom``, order 3) and Flying Bird (``zoom(..., order=1)``):
    corners map onto corners, and the factor of each axis is its own (no aspect ratio kept).
    ``mask_keys`` use order 0.  The record gets ``zoom_factors`` (per array axis).
    """

    def __init__(
        self, keys: Sequence[str], shape: Sequence[int], order: int, mask_keys: Sequence[str] = (LUNGS, LESIONS)
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape needs three positive sizes, got {tuple(shape)}")
        if order not in range(6):
            raise ValueError(f"spline order must be 0-5, got {order}")
        self.shape = tuple(int(s) for s in shape)
        self.order = order
        self.mask_keys = tuple(mask_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays of ``shape``."""
        d = dict(data)
        factors: tuple[float, ...] = ()
        for key in self.key_iterator(d):
            array = np.asarray(d[key])
            factors = tuple(n / m for n, m in zip(self.shape, array.shape, strict=True))
            if key in self.mask_keys:
                d[key] = ndimage.zoom(array.astype(np.uint8), factors, order=0) > 0
            else:
                d[key] = ndimage.zoom(array.astype(np.float32, copy=False), factors, order=self.order)
            if d[key].shape != self.shape:
                raise ValueError(f"zoom gave {d[key].shape}, expected {self.shape}")
        _record(d, zoom_factors=factors)
        return d


class PadCentreCropd(MapTransform):
    """AUCMEDI 0.4 ``Padding(mode="constant")`` then ``Crop(mode="center")`` to ``shape``.

    Padding brings every axis to at least its target size with ``pad_value``, ``diff // 2``
    before and the rest after; the centre crop starts at ``(n - size) // 2`` (volumentations
    ``CenterCrop``).  The record gets ``crop_start`` (negative where padded).
    """

    def __init__(self, keys: Sequence[str], shape: Sequence[int], pad_value: float = 0.0) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape needs three positive sizes, got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.pad_value = pad_value

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays of ``shape``."""
        d = dict(data)
        starts: list[int] = []
        for key in self.key_iterator(d):
            array = np.asarray(d[key])
            before = [max(s - n, 0) // 2 for s, n in zip(self.shape, array.shape, strict=True)]
            after = [max(s - n, 0) - b for s, n, b in zip(self.shape, array.shape, before, strict=True)]
            padded = np.pad(array, list(zip(before, after, strict=True)), constant_values=self.pad_value)
            offsets = [(n - s) // 2 for n, s in zip(padded.shape, self.shape, strict=True)]
            index = tuple(slice(o, o + s) for o, s in zip(offsets, self.shape, strict=True))
            d[key] = padded[index]
            starts = [o - b for o, b in zip(offsets, before, strict=True)]
        _record(d, crop_start=tuple(starts))
        return d


class AsChannelTensord(MapTransform):
    """The array as a float32 torch tensor with a leading channel axis, repeated ``channels`` times."""

    def __init__(self, keys: Sequence[str], channels: int = 1) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Tensors ``(channels, *array.shape)``."""
        d = dict(data)
        for key in self.key_iterator(d):
            array = np.ascontiguousarray(np.asarray(d[key], dtype=np.float32))
            tensor = torch.from_numpy(array).unsqueeze(0)
            d[key] = tensor.repeat(self.channels, *([1] * array.ndim)) if self.channels > 1 else tensor
        return d


def run_transforms(transforms: Compose, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
    """Apply a Compose, re-raising our own ``ValueError`` instead of MONAI's wrapping RuntimeError."""
    try:
        return cast(dict[Hashable, Any], transforms(dict(data)))
    except RuntimeError as error:
        cause = error.__cause__
        while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ValueError):
            raise cause from None
        raise


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without face-connected components of fewer than ``min_size`` voxels.

    The same as ``skimage.morphology.remove_small_objects(mask, min_size)`` (connectivity 1),
    which Flying Bird applied to the lungmask R231 output (FB ``_process_mask``).
    """
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 1))
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return cast(np.ndarray, keep[labels])


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Inclusive ``(first, last)`` index of the mask along each axis; None for an empty mask."""
    box: list[tuple[int, int]] = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append((int(hits[0]), int(hits[-1])))
    return tuple(box)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's CPU random state seeded with ``seed`` inside, the caller's restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def inference_ready(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with gradients off (house rule 12: built once, kept)."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def make_card(
    *,
    member: str,
    version: str,
    description: str,
    config: Mapping[str, Any],
    groups: Mapping[str, int],
    demo: bool,
    **provenance: Any,
) -> dict[str, Any]:
    """A model card: what the file is, how to rebuild its networks, where the weights came from.

    Parameters
    ----------
    member : str
        Registry name (``stoic_baseline``...).
    version : str
        Version of the member's implementation.
    description : str
        One sentence a radiologist can read.
    config : mapping
        The member's architecture and preprocessing parameters (JSON).
    groups : mapping
        Networks per group (``{"severe": 5, "covid": 5}``); the file holds exactly these.
    demo : bool
        True for generated weights that were never trained.
    **provenance
        Training data, metrics, hyperparameters, seeds...
    """
    return {
        "format": CARD_FORMAT,
        "member": member,
        "version": version,
        "description": description,
        # Through JSON, so that the card equals itself after a round trip through a file.
        "config": json.loads(json.dumps(dict(config))),
        "groups": {str(k): int(v) for k, v in groups.items()},
        "demo": demo,
        "code_version": f"lungcds models {PIPELINE_VERSION}, {member} {version}",
        **json.loads(json.dumps(provenance)),
    }


def save_member_file(path: Path, networks: Mapping[str, Sequence[nn.Module]], card: Mapping[str, Any]) -> Path:
    """Write every network's state dict (``{group}.{i}.`` prefixes) and the card to one file.

    Raises
    ------
    ValueError
        If the networks do not match the card's ``groups``.
    """
    counts = {group: len(modules) for group, modules in networks.items()}
    if counts != dict(card["groups"]):
        raise ValueError(f"the card lists networks {dict(card['groups'])}, got {counts}")
    tensors = {
        f"{group}.{i}.{key}": value.detach().to("cpu").contiguous()
        for group, modules in networks.items()
        for i, module in enumerate(modules)
        for key, value in module.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={MODEL_CARD_KEY: json.dumps(dict(card), sort_keys=True)})
    return path


def load_member_file(path: Path, member: str) -> tuple[dict[str, list[dict[str, Tensor]]], dict[str, Any]]:
    """State dicts per group (in index order) and the card of a file from :func:`save_member_file`.

    Raises
    ------
    ValueError
        If the file has no card, a card of another format or member, or networks that do not
        match the card.
    """
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if MODEL_CARD_KEY not in metadata:
        raise ValueError(f"{path} has no {MODEL_CARD_KEY!r} metadata; it is not a STOIC member file")
    card: dict[str, Any] = json.loads(metadata[MODEL_CARD_KEY])
    if card.get("format") != CARD_FORMAT or card.get("member") != member:
        raise ValueError(f"{path}: card {card.get('format')!r} for {card.get('member')!r}, expected {member!r}")
    states: dict[str, dict[int, dict[str, Tensor]]] = {}
    for key, value in load_file(str(path)).items():
        match = _TENSOR_KEY.match(key)
        if match is None:
            raise ValueError(f"{path}: tensor {key!r} has no {{group}}.{{index}}. prefix")
        states.setdefault(match.group(1), {}).setdefault(int(match.group(2)), {})[match.group(3)] = value
    expected = {str(g): int(n) for g, n in card["groups"].items()}
    found = {g: len(v) for g, v in states.items()}
    if found != expected or any(sorted(v) != list(range(len(v))) for v in states.values()):
        raise ValueError(f"{path}: the card lists networks {expected}, the file holds {found}")
    return {g: [v[i] for i in range(len(v))] for g, v in states.items()}, card


def build_networks(factory: Callable[[], _T], count: int, seed: int) -> list[_T]:
    """``count`` networks from ``factory``, network ``i`` built under the torch seed ``1000 * seed + i``."""
    networks = []
    for i in range(count):
        with seeded(1000 * seed + i):
            networks.append(factory())
    return networks


class SideInputFlops(nn.Module):
    """``network(x, zeros(N, features))``: lets the FLOP counter, which feeds one tensor, run a
    network that also takes patient features (Flying Bird's age, uaux2's metadata)."""

    def __init__(self, network: nn.Module, features: int) -> None:
        super().__init__()
        self.network = network
        self.features = features

    def forward(self, x: Tensor) -> Tensor:
        """The wrapped network's output with all-zero side features."""
        out: Tensor = self.network(x, x.new_zeros(x.shape[0], self.features))
        return out


def summary_row(
    name: str,
    network: nn.Module,
    input_shape: Sequence[int],
    *,
    forward_passes: int,
    published_parameters: int | None,
    source: str,
) -> dict[str, Any]:
    """One JSON row for ``lungcds models summary``: parameters, input shape, FLOPs per pass.

    ``network`` should be built on ``torch.device("meta")`` (nothing is allocated);
    ``forward_passes`` is how many passes one prediction of the member makes with it.
    FLOPs follow :func:`models.zoo.count_flops` (2 x MACs of convolutions and linear layers,
    BN, ReLU modules and pooling; LayerNorm and GELU are not counted).
    """
    params = count_parameters(network)
    return {
        "name": name,
        "parameters": params,
        "input_shape": [int(s) for s in input_shape],
        "flops": count_flops(network, input_shape),
        "forward_passes_per_prediction": forward_passes,
        "published_parameters": published_parameters,
        "parameters_relative_difference": (
            None if published_parameters is None else (params - published_parameters) / published_parameters
        ),
        "source": source,
    }
