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
import functools
import json
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

import numpy as np
import torch
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform
from scipy import ndimage
from torch import Tensor, nn

from models import PIPELINE_VERSION
from models.device import place_network
from models.findings import Geometry
from models.stoic.member import MemberInputs, MemberOutput, age_bin
from models.stoic.storage import MEMBER_CARD_FORMAT, read_member_file, sitk_resample, write_member_file
from models.zoo import count_flops, count_parameters
from models.zoo.catalog import NO_REFERENCE, ParameterReference

__all__ = [
    "GEOMETRY",
    "IMAGE",
    "LESIONS",
    "LUNGS",
    "RECORD",
    "AsChannelTensord",
    "ClipIntensityd",
    "MemberConfig",
    "PadCentreCropd",
    "PreparedInput",
    "ScaleToUnitd",
    "SimpleItkResampled",
    "ZScored",
    "ZoomToShaped",
    "SideInputFlops",
    "VolumeMember",
    "bounding_box",
    "build_networks",
    "check_inputs",
    "inference_ready",
    "load_member_file",
    "make_card",
    "network_seed",
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
    shape = [int(round(n * s / ns)) for n, s, ns in zip(geometry.shape, geometry.spacing, spacing_zyx, strict=True)]
    if min(shape) < 1:
        raise ValueError(f"resampling {array.shape} to {tuple(spacing_zyx)} mm leaves an empty axis")
    return sitk_resample(np.asarray(array, dtype=np.float32), geometry, spacing_zyx, shape, outside_value=outside_value)


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
    ``CenterCrop``).  The record gets the start of the crop per axis (negative where padded)
    under ``record_key``.
    """

    def __init__(
        self, keys: Sequence[str], shape: Sequence[int], pad_value: float = 0.0, record_key: str = "crop_start"
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape needs three positive sizes, got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.pad_value = pad_value
        self.record_key = record_key

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
        _record(d, **{self.record_key: tuple(starts)})
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
        "format": MEMBER_CARD_FORMAT,
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
        f"{group}.{i}.{key}": value
        for group, modules in networks.items()
        for i, module in enumerate(modules)
        for key, value in module.state_dict().items()
    }
    return write_member_file(path, tensors, card)


def load_member_file(path: Path, member: str) -> tuple[dict[str, list[dict[str, Tensor]]], dict[str, Any]]:
    """State dicts per group (in index order) and the card of a file from :func:`save_member_file`.

    Raises
    ------
    ValueError
        If the file has no card, a card of another format or member, or networks that do not
        match the card.
    """
    tensors, card = read_member_file(path, member)
    states: dict[str, dict[int, dict[str, Tensor]]] = {}
    for key, value in tensors.items():
        match = _TENSOR_KEY.match(key)
        if match is None:
            raise ValueError(f"{path}: tensor {key!r} has no {{group}}.{{index}}. prefix")
        states.setdefault(match.group(1), {}).setdefault(int(match.group(2)), {})[match.group(3)] = value
    expected = {str(g): int(n) for g, n in card["groups"].items()}
    found = {g: len(v) for g, v in states.items()}
    if found != expected or any(sorted(v) != list(range(len(v))) for v in states.values()):
        raise ValueError(f"{path}: the card lists networks {expected}, the file holds {found}")
    return {g: [v[i] for i in range(len(v))] for g, v in states.items()}, card


def network_seed(seed: int, group_position: int, index: int) -> int:
    """The torch seed of network ``index`` of the ``group_position``-th group of a demo member."""
    return 1_000_000 * seed + 1_000 * group_position + index


def build_networks(factory: Callable[[], _T], count: int, seed: int, group_position: int = 0) -> list[_T]:
    """``count`` networks from ``factory``, network ``i`` built under :func:`network_seed`."""
    networks = []
    for i in range(count):
        with seeded(network_seed(seed, group_position, i)):
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
    source: str,
    reference: ParameterReference = NO_REFERENCE,
) -> dict[str, Any]:
    """One JSON row for ``lungcds models summary``: parameters, input shape, FLOPs per pass.

    ``network`` should be built on ``torch.device("meta")`` (nothing is allocated);
    ``forward_passes`` is how many passes one prediction of the member makes with it;
    ``reference`` is the count it is compared with and where that count comes from
    (:class:`models.zoo.catalog.ParameterReference`: published, computed from the authors' code,
    or none).  FLOPs follow :func:`models.zoo.count_flops` (2 x MACs of convolutions and linear
    layers, BN, ReLU modules and pooling; LayerNorm and GELU are not counted).
    """
    params = count_parameters(network)
    return {
        "name": name,
        "parameters": params,
        "input_shape": [int(s) for s in input_shape],
        "flops": count_flops(network, input_shape),
        "forward_passes_per_prediction": forward_passes,
        **reference.fields(params),
        "source": source,
    }


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples of a config dataclass (recursively)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


@dataclass(frozen=True)
class MemberConfig:
    """Base of the members' configurations: architecture and preprocessing parameters.

    Subclasses are frozen dataclasses whose defaults are the published values; the card stores
    :meth:`as_dict` and a file is rebuilt with :meth:`from_dict`.
    """

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists)."""
        result: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`as_dict`.

        Raises
        ------
        ValueError
            For keys the configuration does not have.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
        return cls(**{k: _tuples(v) for k, v in data.items()})


ConfigT = TypeVar("ConfigT", bound=MemberConfig)


class VolumeMember(Generic[ConfigT]):
    """Loading, saving and demo weights shared by the volume members (each a ``StoicMember``).

    A subclass names itself (``NAME``, ``VERSION``, ``DESCRIPTION``), says which configuration it
    takes (``CONFIG``), how many networks of which group a configuration has
    (:meth:`network_groups`) and how to build one (:meth:`build_network`), and implements
    ``preprocess`` and ``predict``.

    Parameters
    ----------
    networks : mapping of str to sequence of torch.nn.Module
        The member's networks by group (e.g. five severity folds); they are put in eval mode.
    card : mapping
        The model card (:func:`make_card`); its ``config`` rebuilds the configuration.
    device : torch.device or str, optional
        Where the networks run (CPU by default); they are moved there once, and each prediction
        copies its inputs there with :func:`models.device.to_device`.

    Raises
    ------
    ValueError
        If the networks do not match the groups the configuration asks for.
    """

    NAME: ClassVar[str]
    VERSION: ClassVar[str]
    DESCRIPTION: ClassVar[str]
    CONFIG: ClassVar[type[MemberConfig]]

    def __init__(
        self,
        networks: Mapping[str, Sequence[nn.Module]],
        card: Mapping[str, Any],
        *,
        device: torch.device | str | None = None,
    ) -> None:
        self.name: str = self.NAME
        self.card: dict[str, Any] = dict(card)
        self.config = cast(ConfigT, self.CONFIG.from_dict(card["config"]))
        expected = self.network_groups(self.config)
        found = {group: len(modules) for group, modules in networks.items()}
        if found != expected:
            raise ValueError(f"{self.NAME} with this configuration needs networks {expected}, got {found}")
        self.device = torch.device(device or "cpu")
        self.networks: dict[str, list[nn.Module]] = {
            group: [place_network(inference_ready(module), self.device) for module in modules]
            for group, modules in networks.items()
        }

    @classmethod
    def network_groups(cls, config: ConfigT) -> dict[str, int]:
        """Networks per group that ``config`` asks for."""
        raise NotImplementedError

    @classmethod
    def build_network(cls, config: ConfigT, group: str) -> nn.Module:
        """A freshly initialised network of ``group``."""
        raise NotImplementedError

    @classmethod
    def from_safetensors(cls, path: Path | str, *, device: torch.device | str | None = None) -> Self:
        """Load a member file written by :meth:`save` (or by the training code), to run on ``device``.

        Raises
        ------
        ValueError
            For a file of another member, or state dicts that do not fit the architecture.
        """
        states, card = load_member_file(Path(path), cls.NAME)
        config = cast(ConfigT, cls.CONFIG.from_dict(card["config"]))
        networks: dict[str, list[nn.Module]] = {}
        for group, group_states in states.items():
            networks[group] = []
            for state in group_states:
                network = cls.build_network(config, group)
                network.load_state_dict(state, strict=True)
                networks[group].append(network)
        return cls(networks, card, device=device)

    @classmethod
    def demo(cls, seed: int = 0, *, device: torch.device | str | None = None, **overrides: Any) -> Self:
        """The member with generated, deterministic, untrained weights (card ``"demo": true``), on ``device``.

        Network ``i`` of the ``k``-th group is initialised under the torch seed
        :func:`network_seed` ``(seed, k, i)`` (the caller's random state is left alone), so groups
        differ from each other; ``overrides`` replace configuration defaults, e.g.
        a small input shape and fewer folds for tests.  The outputs mean nothing clinically.
        """
        config = cast(ConfigT, cls.CONFIG(**overrides))
        groups = cls.network_groups(config)
        networks = {
            group: build_networks(functools.partial(cls.build_network, config, group), count, seed, position)
            for position, (group, count) in enumerate(groups.items())
        }
        card = make_card(
            member=cls.NAME,
            version=cls.VERSION,
            description=cls.DESCRIPTION,
            config=config.as_dict(),
            groups=groups,
            demo=True,
            seed=seed,
            weights="generated demonstration weights: never trained, no clinical meaning",
        )
        return cls(networks, card, device=device)

    @classmethod
    def trained(
        cls,
        config: ConfigT,
        networks: Mapping[str, Sequence[nn.Module]],
        *,
        device: torch.device | str | None = None,
        **provenance: Any,
    ) -> Self:
        """The member from trained networks, on ``device``, with a card recording ``provenance``."""
        card = make_card(
            member=cls.NAME,
            version=cls.VERSION,
            description=cls.DESCRIPTION,
            config=config.as_dict(),
            groups={group: len(modules) for group, modules in networks.items()},
            demo=False,
            **provenance,
        )
        return cls(networks, card, device=device)

    def save(self, path: Path | str) -> Path:
        """Write the member's networks and card to one safetensors file."""
        return save_member_file(Path(path), self.networks, self.card)

    def weight_notes(self) -> tuple[str, ...]:
        """A sentence for outputs of generated weights (none for trained ones)."""
        return ("generated demonstration weights: never trained, no clinical meaning",) if self.card["demo"] else ()

    def preprocess(self, inputs: MemberInputs) -> PreparedInput:
        """The networks' input(s) for one series."""
        raise NotImplementedError

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """P(COVID-19) and/or P(severe) for one series."""
        raise NotImplementedError
